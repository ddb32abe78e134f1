"""Helpers of the pod tests of fleets on an external Redis (test_pods_redis_fleet.py): the Redis, the
fleet and its password Secret as a user writes them, and a client that plays games through the
router Service and remembers every step the fleet acknowledged.

The Redis is a real redis-server on the host, bound to the pod network's gateway: the one address
both the pods (their default route) and this process (the operator's thread, the test) reach. It
asks for a password, which the fleet gets the way a user gives it: a Secret in kmock that the
operator reads and the kubelet turns into the pods' GAMEFLEET_REDIS_PASSWORD."""

from __future__ import annotations

import base64
import copy
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import yaml
from gamefleet_operator.render import GRPC_PORT
from redis_fixture import RedisServer

from gameserver.client import FleetClient, Unavailable
from gameserver.engine import GameConfig
from gameserver.fleet.registry import FleetRegistry, ShardInfo

from .cluster import Cluster

T = TypeVar("T")
AUTOSCALED = Path(__file__).resolve().parents[2] / "manifests" / "examples" / "autoscaled.yaml"
SECRET = "gamefleet-redis"  # the example's passwordSecretRef
PASSWORD = "s3cret pass:word/@"  # characters a URL must quote: the operator's redis_url does
CONFIG = GameConfig(width=8, height=8, players=2)  # small boards: steps cost little on 2 cores
UNAVAILABLE_FOR = 60.0  # how long a call may keep answering UNAVAILABLE (a handover, a router roll)
CALL_TIMEOUT = 30.0


def fleet_id(name: str) -> str:
    """The fleet's name in Redis ($GAMEFLEET_FLEET_ID)."""
    return f"default.{name}"


def key_prefix(name: str) -> str:
    """Every Redis key of the fleet starts with this (gameserver/fleet/registry.py)."""
    return f"gamefleet:{fleet_id(name)}:"


class ExternalRedis(RedisServer):
    """A password-protected redis-server on `host` (the pod network's gateway), a free port."""

    def __init__(self, host: str, directory: Path, password: str = PASSWORD, port: int = 0) -> None:
        super().__init__(directory, host, password, port)
        self._registries: dict[str, FleetRegistry] = {}

    @property
    def address(self) -> str:
        """spec.redis.address."""
        return f"{self.host}:{self.port}"

    def registry(self, name: str) -> FleetRegistry:
        """The fleet's registry, read as the operator reads it (one connection pool per fleet)."""
        if name not in self._registries:
            self._registries[name] = FleetRegistry(self.url, fleet_id(name), 86400)
        return self._registries[name]

    def shards(self, name: str) -> dict[str, ShardInfo]:
        """Pod name -> what that shard last reported (live shards only)."""
        return {i.address.split(".", 1)[0]: i for i in self.registry(name).list_shards(30.0)}

    def keys(self, name: str) -> list[str]:
        with self.client(socket_timeout=5) as client:
            return sorted(k.decode() for k in client.scan_iter(match=f"{key_prefix(name)}*", count=1000))


def password_secret(password: str = PASSWORD) -> dict[str, Any]:
    """The Secret the example fleet's passwordSecretRef names (the operator reads `data` only)."""
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": SECRET, "namespace": "default"},
        "type": "Opaque",
        "data": {"password": base64.b64encode(password.encode()).decode()},
    }


def merge(base: dict[str, Any], changes: dict[str, Any]) -> dict[str, Any]:
    """`changes` laid over `base`, maps key by key (a copy)."""
    out = copy.deepcopy(base)
    for key, value in changes.items():
        out[key] = merge(out.get(key) or {}, value) if isinstance(value, dict) else value
    return out


def fleet_body(name: str, store: ExternalRedis, spec: dict[str, Any]) -> dict[str, Any]:
    """manifests/examples/autoscaled.yaml pointed at `store`, sized for a 2-core machine (one router,
    small capacity so load is reachable, short drains), with `spec` laid over it."""
    body = yaml.safe_load(AUTOSCALED.read_text())
    body["metadata"]["name"] = name
    body["spec"] = merge(
        body["spec"],
        {
            "redis": {"address": store.address},
            "resources": {"requests": {"cpu": "100m", "memory": "256Mi"}, "limits": {"memory": "1Gi"}},
            "router": {"replicas": 1},
            "game": {"capacityPerShard": 64},
            "drainTimeoutSeconds": 20,
            "autoscaling": {"scaleDownStabilisationSeconds": 5},
        },
    )
    body["spec"] = merge(body["spec"], spec)
    return body


@dataclass(eq=False)  # one batch is one set of games: compared by identity
class Batch:
    """Games of one create call: one placement key, so always on one shard, stepped together."""

    ids: np.ndarray
    acked: int = 0  # steps the fleet acknowledged (each game's tick)
    closed: bool = False


@dataclass
class Player:
    """Creates and steps games through the router Service `<fleet>.default.svc`, one call per batch
    (a call then touches one shard: it applies whole or not at all).

    A call answered UNAVAILABLE is retried: the client API documents that status as "no game
    changed" (gameserver/wire/errors.py), the answer of a draining shard, of games on the move, of a
    router going away. Any other failure leaves its outcome unknown: it is recorded in `errors` and
    the player stops, so a test that asserts `errors == []` sees it. An acknowledged step is counted
    and its reply checked: each game's tick is exactly one past the last acknowledged one."""

    cluster: Cluster
    fleet: str
    batch_size: int = 2
    batches: list[Batch] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    retries: int = 0
    acks: list[float] = field(default_factory=list)  # monotonic time of each acknowledged step
    _client: FleetClient | None = None
    _stop: threading.Event = field(default_factory=threading.Event)

    @property
    def open(self) -> list[Batch]:
        return [b for b in self.batches if not b.closed]

    def _connect(self) -> FleetClient:
        addresses = self.cluster.resolve(f"{self.fleet}.default.svc")
        if not addresses:
            raise Unavailable(f"no ready router behind {self.fleet}.default.svc")
        self._client = FleetClient(f"{addresses[0]}:{GRPC_PORT}", timeout=CALL_TIMEOUT)
        return self._client

    def _drop(self) -> None:
        if self._client is not None:
            self._client.close_channel()
            self._client = None

    def call(self, method: Callable[[FleetClient], T]) -> T:
        """`method` on a router, retried while the fleet answers UNAVAILABLE (re-resolving the
        Service: the router may be the one that went)."""
        deadline = time.monotonic() + UNAVAILABLE_FOR
        while True:
            try:
                return method(self._client or self._connect())
            except Unavailable:
                self.retries += 1
                self._drop()
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)

    def create(self, batches: int) -> None:
        for _ in range(batches):
            created = self.call(lambda c: c.create(self.batch_size, CONFIG))
            assert (created.observations.tick == 0).all()
            self.batches.append(Batch(created.ids.copy()))

    def step(self, batch: Batch) -> None:
        noop = np.full((batch.ids.size, CONFIG.players), -1, np.int32)
        reply = self.call(lambda c: c.step(batch.ids, noop))
        ticks = reply.observations.tick
        if not (ticks == batch.acked + 1).all():
            raise AssertionError(f"games {batch.ids.tolist()}: acknowledged step {batch.acked + 1} at ticks "
                                 f"{ticks.tolist()}: a step was lost or applied twice")  # fmt: skip
        batch.acked += 1
        self.acks.append(time.monotonic())

    def step_all(self) -> None:
        for batch in self.open:
            self.step(batch)

    def close(self, batches: list[Batch]) -> None:
        for batch in batches:
            assert self.call(lambda c, b=batch: c.close(b.ids)) == batch.ids.size
            batch.closed = True

    def mismatches(self) -> list[str]:
        """Open games whose state (tick, from GetBatchStates) is not their acknowledged step count."""
        wrong = []
        for batch in self.open:
            ticks = self.call(lambda c, b=batch: c.states(b.ids)).tick
            if not (ticks == batch.acked).all():
                wrong.append(f"{batch.ids.tolist()}: acknowledged {batch.acked}, ticks {ticks.tolist()}")
        return wrong

    def acks_between(self, start: float, end: float) -> int:
        return sum(start <= at <= end for at in self.acks)

    def topology(self) -> list[str]:
        """The router's ring: pod names of the shards it routes to."""
        return sorted(s.split(".", 1)[0] for s in self.call(lambda c: c.topology()).shards)

    def holders(self) -> dict[str, list[Batch]]:
        """Ring member (pod name) -> the open batches the router's ring places there."""
        ring = self.call(lambda c: c.topology()).ring()
        found: dict[str, list[Batch]] = {}
        for batch in self.open:
            shard = ring.shards[int(ring.shard_index_of_games(batch.ids[:1])[0])]
            found.setdefault(shard.split(".", 1)[0], []).append(batch)
        return found

    # -- in the background -----------------------------------------------------------------------

    def _run(self, create_up_to: int) -> None:
        try:
            while not self._stop.is_set():
                if len(self.batches) < create_up_to:
                    self.create(1)
                self.step_all()
                self._stop.wait(0.02)  # pacing: leave the 2 cores to the pods
        except Exception as e:  # the outcome of that call is unknown: stop and say so
            at = time.strftime("%H:%M:%S", time.localtime()) + f".{int(time.time() * 1000) % 1000:03d}"
            self.errors.append(f"{at} {type(e).__name__}: {e}")

    @contextmanager
    def playing(self, create_up_to: int = 0) -> Iterator[Player]:
        """Step every open game over and over (creating batches up to `create_up_to`) in a thread."""
        self._stop.clear()
        thread = threading.Thread(target=self._run, args=(create_up_to,), name="player", daemon=True)
        thread.start()
        try:
            yield self
        finally:
            self._stop.set()
            thread.join(CALL_TIMEOUT + UNAVAILABLE_FOR)

    def finish(self) -> None:
        self._drop()
