"""A shard process: the BatchGameService in a grpc.aio server, with health checking (and reflection
on request: `--reflection`, which `gamefleet up` turns on).

Start-up compiles (or loads) every kernel a call can reach before the port reports
SERVING, so the first trainer step does not pay for numba. Shutdown reports NOT_SERVING
first (load balancers stop sending), then stops accepting calls and lets in-flight ones
finish within the grace period.

With FleetOptions (a Redis), the shard's pools are durable (fleet/durability.py), it heartbeats in
the fleet's registry and takes part in failover, drain and lazy moves (fleet/membership.py); on
SIGTERM it drains (hands its games to the other shards through Redis) before it stops, and
leaves the registry on a clean exit.

Shutdown budget on SIGTERM (serve_until_signal), each term bounded: the drain (at most
`drain_timeout_s`; 0 leaves at once), then in-flight calls (at most `grace`), then the
final flush of changed games to Redis. The operator's pod grace period is preStop + these two
bounds + a margin for the flush (operator render.py), so SIGKILL does not cut the flush short.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import signal
import socket
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numba
import numpy as np
from grpc import aio
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from ..engine import GameConfig
from ..fleet import moves
from ..fleet.durability import Durability, Mode, OnRedisError
from ..fleet.membership import FleetMember
from ..fleet.store import FleetStore
from ..pool import GamePool
from ..replay.sink import TransitionSink
from ..shared_views import SharedViewCache
from ..telemetry import collectors, metrics
from ..telemetry.grpc_server import interceptors
from ..wire.admission import RequestLimits
from ..wire.limits import MAX_GAMES, MAX_GAMES_PER_CALL, MAX_MESSAGE_BYTES, WORKERS, channel_options
from ..wire.reflection import enable_reflection
from ..wire.security import PLAINTEXT, Credentials, health_port
from ..wire.services import LIVENESS_SERVICE, SERVICE
from .deltas import DeltaViews
from .games import ShardGames
from .idle import IdleGames
from .seats import SeatTable
from .servicer import BatchGameServicer

log = logging.getLogger(__name__)
CLOSE_POLL_S = 0.2  # how often a closing shard looks whether its last game has closed


def warm_up() -> str:
    """Run every kernel once, serial and parallel sizes; returns numba's threading layer."""
    config = GameConfig()
    for games in (1, 64):
        pool = GamePool(config, capacity=games, autoreset=True)
        ids = pool.create(games)
        passes = np.full((games, config.players), -1, np.int32)
        pool.step(ids, passes)
        passes.flags.writeable = False  # a request's actions are a read-only view: its own specialisation
        step = pool.step(ids, passes)
        pool.masks(ids)
        DeltaViews(config.players, config.tiles).encode(ids, step.observation.codes, step.observation.armies)
    return numba.threading_layer()


@dataclass(frozen=True)
class FleetOptions:
    """How a shard joins a fleet that has a Redis (`gamefleet serve --redis ...`)."""

    redis_url: str
    fleet: str  # the fleet's name in Redis (the operator's GAMEFLEET_FLEET_ID)
    durability: Mode = "off"
    snapshot_every: int = 100
    on_redis_error: OnRedisError = "fail"
    key_ttl_s: int = 86400
    shard_name: str | None = None  # the pod name drain requests use (default: the advertised address)
    dead_after_s: float = 10.0  # heartbeat silence after which its games are recovered elsewhere
    heartbeat_s: float = 1.0
    redis_timeout_s: float = 2.0  # the most one Redis command may take
    redis_breaker_s: float = 1.0  # after one got no answer, the next fail at once for this long


def _advertised(host: str, port: int) -> str:
    return f"{socket.gethostname() if host in ('0.0.0.0', '::', '') else host}:{port}"


class ShardServer:
    """One shard on host:port (port 0 picks a free one; `address` tells which after `start`)."""

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        seed: int = 0,
        max_games_per_call: int = MAX_GAMES_PER_CALL,
        max_games: int = MAX_GAMES,
        max_message_bytes: int = MAX_MESSAGE_BYTES,
        requests: RequestLimits | None = None,
        max_memory_bytes: int | None = None,
        workers: int = WORKERS,
        fleet: FleetOptions | None = None,
        replay_address: str | None = None,
        game_defaults: GameConfig | None = None,
        drain_timeout_s: float = 60.0,
        reflection: bool = False,
        advertise: str | None = None,
        credentials: Credentials = PLAINTEXT,
        health_port: int | None = None,
        idle_close_s: float | None = None,
    ) -> None:
        self.health_port = health_port  # a plaintext port serving only health (probes where TLS is on)
        self.idle_close_s = idle_close_s  # close games no call touched for this long (None: never)
        self._idle: asyncio.Task | None = None
        self._health_server: aio.Server | None = None
        self.host, self.port = host, port
        # TLS and the fleet's token: for its port, and for the channels it opens (moves, replay)
        self.credentials = credentials
        # the address others reach it at (default: the bound host:port), and its name in replies
        self.advertise = advertise
        self.drain_timeout_s = drain_timeout_s  # SIGTERM: how long the drain may take (0: leave at once)
        self.reflection = reflection  # off unless asked: it maps the API for anyone who reaches the port
        self.game_defaults = game_defaults  # fields a create request leaves unset (None: the engine's)
        self.fleet = fleet
        # games created with push_transitions send their steps to this ReplayService
        self.transitions = TransitionSink(replay_address, credentials=credentials) if replay_address else None
        self.seed = seed
        self.max_games_per_call = max_games_per_call
        self.max_games = max_games
        self.max_message_bytes = max_message_bytes
        # memory (wire/admission.py): requests over the receive limit are refused by the gRPC core,
        # large ones served a few at a time; creates past max_memory_bytes refused (games.py)
        requests = requests or RequestLimits()
        self.max_request_bytes = requests.receive_bytes(max_games_per_call, max_games, max_message_bytes)
        self.large_calls = requests.gate()
        self.max_memory_bytes = max_memory_bytes
        self.workers = workers
        self.health = health.aio.HealthServicer()
        self.games: ShardGames | None = None
        self.seats: SeatTable | None = None  # the open-seat games (seat play)
        self.durability: Durability | None = None  # with FleetOptions
        self.member: FleetMember | None = None
        self._server: aio.Server | None = None
        self._executor: ThreadPoolExecutor | None = None
        self._shared_views: SharedViewCache | None = None
        self._servicer: BatchGameServicer | None = None

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def advertised(self) -> str:
        """The name its replies give (Created.shard, Topology) and the fleet registers it under."""
        return self.advertise or _advertised(self.host, self.port)

    async def start(self) -> None:
        layer = await asyncio.to_thread(warm_up)
        # The ~100k objects numba and grpc leave behind go to the permanent generation: a full
        # collection then takes milliseconds instead of ~100 ms, a stall every call in flight feels.
        gc.freeze()
        # numba's workqueue layer must not run parallel kernels from two threads at once.
        workers = 1 if layer == "workqueue" else self.workers
        self._executor = ThreadPoolExecutor(workers, thread_name_prefix="engine")
        server = aio.server(
            options=channel_options(self.max_message_bytes, self.max_request_bytes),
            interceptors=[*interceptors(), *self.credentials.server_interceptors(seat_play=True)],
        )
        self.port = self.credentials.add_port(server, self.address)
        moves.use(self.credentials)  # the channels to the shards it moves games with
        store = None
        if self.fleet is not None:
            f = self.fleet
            store = FleetStore(
                f.redis_url, f.fleet, f.key_ttl_s, timeout_s=f.redis_timeout_s, breaker_s=f.redis_breaker_s
            )
            self.durability = Durability(
                store,
                self.advertised,
                f.durability,
                snapshot_every=f.snapshot_every,
                on_redis_error=f.on_redis_error,
                heartbeat_s=f.heartbeat_s,
                capacity=self.max_games,
            )
        self.games = ShardGames(
            self._executor,
            seed=self.seed,
            max_games=self.max_games,
            max_memory=self.max_memory_bytes,
            durability=self.durability,
            transitions=self.transitions,
        )
        collectors.watch_games(self.games)
        collectors.watch_large_calls(self.large_calls)
        if self.durability is not None:
            collectors.watch_durability(self.durability)
        servicer = BatchGameServicer(
            self.games,
            name=self.advertised,
            max_games_per_call=self.max_games_per_call,
            max_message_bytes=self.max_message_bytes,
            game_defaults=self.game_defaults,
            fleet_token=self.credentials.token,
        )
        self.seats = servicer.seats
        self._servicer = servicer
        if self.idle_close_s:
            servicer.idle = IdleGames(self.idle_close_s, servicer.close_idle, lambda: self.games.live_ids)
            self._idle = asyncio.create_task(servicer.idle.run())
        self._shared_views = servicer.shared_views
        server.add_generic_rpc_handlers((self.large_calls.wrap(servicer.handler()),))
        if self.durability is not None:
            self.member = FleetMember(
                store,
                self.durability,
                self.games,
                pod=self.fleet.shard_name or self.durability.shard,
                dead_after_s=self.fleet.dead_after_s,
                health=self.health,
            )
            servicer.member = self.member
            server.add_generic_rpc_handlers((self.member.handler(),))
            await self.member.join()
        health_pb2_grpc.add_HealthServicer_to_server(self.health, server)
        if self.reflection:
            names = (SERVICE.full_name, health_pb2.DESCRIPTOR.services_by_name["Health"].full_name)
            enable_reflection(server, names)
        await server.start()
        self._server = server
        if self.health_port is not None:
            address = f"{self.host}:{self.health_port}"
            self._health_server, self.health_port = await health_port(self.health, address)
        for service in ("", SERVICE.full_name, LIVENESS_SERVICE):
            await self.health.set(service, health_pb2.HealthCheckResponse.SERVING)
        metrics.serving("shard", True)

    async def stop(self, grace: float = 5.0) -> None:
        """NOT_SERVING, refuse new calls, give in-flight calls `grace` seconds, then stop the workers."""
        if self._server is None:
            return
        await self.health.enter_graceful_shutdown()
        metrics.serving("shard", False)
        if self._idle is not None:
            self._idle.cancel()
        await self._server.stop(grace)
        self._server = None
        if self._health_server is not None:
            await self._health_server.stop(None)
        await asyncio.to_thread(self._executor.shutdown, wait=True)
        self._shared_views.close()
        if self.durability is not None:  # record what changed, leave the registry
            await asyncio.to_thread(self.durability.close, True)
        if self.transitions is not None:  # after the last step: send what is queued
            await asyncio.to_thread(self.transitions.close)

    async def leave(self, wait_for_games: bool = True) -> None:
        """SIGTERM: drain for at most the drain timeout. In a fleet whose games move (Redis,
        durability snapshot or log) the games go to the other shards (0: not at all, they stay in
        Redis for the survivors). Where nothing can move (no Redis, durability off), the shard takes
        no new games and, with `wait_for_games` (not on Ctrl-C), waits for its clients to close
        theirs, as Agones never deletes an allocated game server: the games still open at the
        timeout end with the process."""
        if self.member is not None and self.member.moves_games:
            await self.member.leave(self.drain_timeout_s)
            return
        if self.member is not None:
            await self.member.leave(0)  # DRAINING in the registry: routers take it off their rings
        await self._wait_for_games_to_close(self.drain_timeout_s if wait_for_games else 0.0)

    async def _wait_for_games_to_close(self, timeout_s: float) -> None:
        """No new games (UNAVAILABLE), readiness NOT_SERVING, then wait (bounded) for the last
        open game to close."""
        self._servicer.closing = True
        for service in ("", SERVICE.full_name):
            await self.health.set(service, health_pb2.HealthCheckResponse.NOT_SERVING)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while self.games.active_games and loop.time() < deadline:
            await asyncio.sleep(min(CLOSE_POLL_S, max(0.0, deadline - loop.time())))
        if self.games.active_games:
            log.warning("shard %s: %d games still open after %g s: they end with the shard",
                        self.address, self.games.active_games, timeout_s)  # fmt: skip

    async def serve_until_signal(self, grace: float = 5.0) -> None:
        """Start, print the address, run until SIGINT/SIGTERM, then shut down within the budget:
        drain (<= drain timeout), in-flight calls (<= `grace`), the final flush. SIGTERM (a pod's
        termination) waits for open games where they cannot move; SIGINT (Ctrl-C, `gamefleet up`
        ending its play) does not."""
        await self.start()
        stop = asyncio.Event()
        received: list[int] = []
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, lambda sig=sig: (received.append(sig), stop.set()))
        fleet = ""
        if self.durability is not None:
            fleet = (
                f" in fleet {self.fleet.fleet} as {self.durability.shard} (durability {self.durability.mode})"
            )
        print(f"gamefleet shard serving on {self.address}{fleet}", flush=True)
        await stop.wait()
        drain = self.drain_timeout_s
        print(f"gamefleet shard stopping: drain <= {drain:g} s, in-flight calls <= {grace:g} s", flush=True)
        await self.leave(wait_for_games=signal.SIGINT not in received)
        await self.stop(grace)
