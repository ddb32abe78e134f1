"""FleetRegistry: a fleet's Redis connection, its key naming, and the shard registry in it.

Everything here needs no game records, so it imports no engine: the operator (whose pod has a
read-only root filesystem, where numba cannot write its cache) builds on this module alone.
FleetStore (store.py) adds the game records and the action log on top of it.

Keys (all under `gamefleet:<fleet>:`, all expiring `ttl_s` after their last write):
  shards            HASH shard address -> JSON load report
  heartbeats        ZSET shard address -> Redis server time of its last heartbeat
  alive:<shard>     STRING set by a running shard: its absence means Redis lost the shard's data
  drain             HASH pod name -> unix time the operator asked that shard to drain
  claim:<name>      STRING holder of a short lease (one shard at a time recovers a dead shard)
  owners            SET shards that have recorded games (written by FleetStore.put_games)
  holder:<shard>    STRING the token of the process that may write as that shard, or "fenced by
                    ..." once another shard took its games over (fencing.py)
  generation        HASH id, started, lost: changes only when Redis loses the fleet's data
  clean:<shard>     STRING set by a shard that recorded every game at its clean exit
The record and log keys are store.py's.

The client never retries a command on its own: a retried XADD could log one step twice, and
replay would then play it twice. A failure is a StoreUnavailableError instead.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TypeVar

import redis
from redis.backoff import NoBackoff
from redis.client import Pipeline
from redis.retry import Retry

from . import fencing
from .breaker import CircuitBreaker

T = TypeVar("T")
_RELEASE_CLAIM = (
    "if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) end return 0"
)


class StoreUnavailableError(ConnectionError):
    """Redis could not be reached or refused a write (the service answers UNAVAILABLE: nothing
    changed, retry).

    `applied`: the call it failed had already taken effect in memory (a step runs while its log
    entry travels): it is not acknowledged, and the records catch up once Redis answers. That
    answers ABORTED, not UNAVAILABLE: a client that retried it blindly would play the step twice.
    """

    applied = False

    @property
    def status_code(self) -> str:
        return "ABORTED" if self.applied else "UNAVAILABLE"

    @property
    def status_details(self) -> str:
        if self.applied:  # Redis failed while the step ran: done here, not durable, not acknowledged
            return (
                "durability store unavailable: the step was applied but its log entry was not "
                f"confirmed, so it is not acknowledged; read the games before retrying: {self}"
            )
        return f"durability store unavailable, the call changed nothing (on-redis-error=fail): {self}"


class FencedError(StoreUnavailableError):
    """Another shard took this shard's games over (fenced it): nothing it holds is its own now.
    UNAVAILABLE even for a step that ran here: the fenced shard drops its games unwritten, and
    the survivor's copy never saw the step, so a retry through a fresh ring plays it once."""

    status_code = "UNAVAILABLE"

    @property
    def status_details(self) -> str:
        return f"this shard's games were taken over by another shard: retry with a fresh topology ({self})"


class HolderLostError(StoreUnavailableError):
    """Redis holds no holder for this shard: it lost the fleet's data (the shard takes its slot back
    at its next heartbeat, then records its games again)."""


def refusal(error: redis.ResponseError | str) -> StoreUnavailableError:
    """An error reply of a fenced write (or its text) as what it means to the writer."""
    text = str(error)
    if text.startswith(fencing.FENCED):
        return FencedError(f"fenced: {text.removeprefix(fencing.FENCED).strip()}")
    if text.startswith(fencing.NO_HOLDER):
        return HolderLostError(f"redis lost this shard's holder: {text}")
    return StoreUnavailableError(f"redis refused the write: {text}")


def refusal_by_holder(held: bytes | None) -> StoreUnavailableError:
    """What a write gets whose token is not the holder's `held` (as a script would reply)."""
    reply = (
        f"{fencing.NO_HOLDER} no holder of this shard in Redis"
        if held is None
        else f"{fencing.FENCED} {held.decode()}"
    )
    return refusal(reply)


@dataclass(frozen=True)
class Generation:
    """The fleet's data in Redis since `started` (Redis time); `lost`: it began because Redis lost
    the data of an earlier one (a shard remembered it); `age_s`: how long ago it began."""

    id: str
    started: float
    lost: bool
    age_s: float


@dataclass(frozen=True)
class ShardInfo:
    address: str
    load: int  # active games
    capacity: int
    state: str  # SERVING or DRAINING
    heartbeat: float  # Redis server time (s) of the last heartbeat


def _client(target: str | redis.Redis, timeout_s: float) -> redis.Redis:
    """A client that never retries a command (see the module docstring) and returns bytes."""
    if isinstance(target, str):
        return redis.Redis.from_url(
            target,
            socket_timeout=timeout_s,
            socket_connect_timeout=timeout_s,
            retry=Retry(NoBackoff(), 0),
        )
    kwargs = target.get_connection_kwargs()
    retry = kwargs.get("retry")  # without one, a connection retries only for retry_on_error/_timeout
    retries = retry.get_retries() if retry is not None else int(bool(kwargs.get("retry_on_error")))
    if retries or kwargs.get("retry_on_timeout"):
        raise ValueError(
            "pass a redis client built with retry=Retry(NoBackoff(), 0) (or a URL): "
            "a retried XADD could log one step twice"
        )
    if kwargs.get("decode_responses"):
        raise ValueError("the redis client must return bytes (decode_responses=False)")
    return target


class FleetRegistry:
    """One fleet's keys in Redis, as far as the shard registry goes. Thread-safe (a pool of
    connections); every call may raise StoreUnavailableError."""

    def __init__(
        self,
        redis_target: str | redis.Redis,
        fleet: str,
        ttl_s: int,
        *,
        timeout_s: float = 2.0,
        breaker_s: float = 1.0,
    ) -> None:
        """`timeout_s`: the most one Redis command may take (connect, send, reply); `breaker_s`:
        after a command Redis did not answer, how long the next ones fail at once (breaker.py)."""
        if not fleet or ":" in fleet:
            raise ValueError(f"fleet must be a non-empty name without ':', got {fleet!r}")
        if isinstance(ttl_s, bool) or not isinstance(ttl_s, int) or ttl_s < 1:
            raise ValueError(f"ttl_s must be a positive int, got {ttl_s!r}")
        self.fleet = fleet
        self.ttl_s = ttl_s
        self.prefix = f"gamefleet:{fleet}:"
        if not timeout_s > 0:
            raise ValueError(f"timeout_s must be > 0, got {timeout_s!r}")
        self.redis = _client(redis_target, timeout_s)
        self.breaker = CircuitBreaker(breaker_s)
        self._tokens: dict[str, str] = {}  # shard -> this process's holder token (hold)

    def key(self, *parts: object) -> str:
        """The fleet's key named by `parts` (every key of the fleet shares its prefix: see purge)."""
        return self.prefix + ":".join(str(p) for p in parts)

    def _call(self, fn: Callable[..., T], *args: object, **kwargs: object) -> T:
        try:
            self.breaker.before()
            result = fn(*args, **kwargs)
        except (redis.RedisError, OSError) as error:
            self.breaker.failed(error)
            raise StoreUnavailableError(f"redis unavailable: {type(error).__name__}: {error}") from error
        self.breaker.succeeded()
        return result

    def _script(self, source: str, keys: Sequence[str], args: Sequence[object]) -> object:
        """Run a fencing script; its error replies raise what they mean (FencedError, ...)."""
        try:
            return self._call(self.redis.eval, source, len(keys), *keys, *args)
        except StoreUnavailableError as error:
            if isinstance(error.__cause__, redis.ResponseError):
                raise refusal(error.__cause__) from error.__cause__
            raise

    def _pipeline(self, fill: Callable[[Pipeline], object]) -> list:
        """Run the commands `fill` queues in one round trip."""

        def run() -> list:
            pipe = self.redis.pipeline(transaction=False)
            fill(pipe)
            return pipe.execute()

        return self._call(run)

    def owners(self) -> list[str]:
        """Shards that have recorded games (and not yet handed them all over)."""
        return sorted(o.decode() for o in self._call(self.redis.smembers, self.key("owners")))

    def heartbeat(
        self, address: str, load: int, capacity: int, state: str = "SERVING", *, dead_after_s: float = 30.0
    ) -> None:
        """Report a shard alive with its load; forget shards silent for `dead_after_s`."""
        if state not in ("SERVING", "DRAINING"):
            raise ValueError(f"state must be SERVING or DRAINING, got {state!r}")
        now = self._now()
        info = json.dumps({"load": int(load), "capacity": int(capacity), "state": state})
        shards, beats = self.key("shards"), self.key("heartbeats")
        dead = self._call(self.redis.zrangebyscore, beats, "-inf", now - dead_after_s)

        def fill(pipe: Pipeline) -> None:
            if dead:
                pipe.zrem(beats, *dead)
                pipe.hdel(shards, *dead)
            pipe.hset(shards, address, info)
            pipe.zadd(beats, {address: now})
            pipe.expire(shards, self.ttl_s)
            pipe.expire(beats, self.ttl_s)

        self._pipeline(fill)

    def list_shards(self, alive_within_s: float) -> list[ShardInfo]:
        """Shards that heartbeat within the last `alive_within_s` seconds (Redis time), by address."""
        now = self._now()
        beats = self._call(
            self.redis.zrangebyscore, self.key("heartbeats"), now - alive_within_s, "+inf", withscores=True
        )
        if not beats:
            return []
        infos = self._call(self.redis.hmget, self.key("shards"), [a for a, _ in beats])
        shards = []
        for (address, when), raw in zip(beats, infos, strict=True):
            if raw is not None:
                info = json.loads(raw)
                shards.append(
                    ShardInfo(address.decode(), info["load"], info["capacity"], info["state"], when)
                )
        return sorted(shards, key=lambda s: s.address)

    def remove_shard(self, address: str) -> None:
        """A clean shutdown: leave the registry at once instead of by expiry."""
        self._pipeline(
            lambda p: [p.zrem(self.key("heartbeats"), address), p.hdel(self.key("shards"), address)]
        )

    # Holders and the generation (fencing.py) ---------------------------------------------

    def token(self, shard: str) -> str:
        """This process's holder token for `shard` (made on first use; `hold` writes it)."""
        return self._tokens.setdefault(shard, secrets.token_hex(8))

    def hold(self, shard: str, *, renew: bool = False) -> str:
        """Become the one process that writes as `shard`, fencing any earlier one (a restart, a
        zombie); `renew`: with a new token (after this process was fenced). Returns the token."""
        if renew:
            self._tokens.pop(shard, None)
        token = self.token(shard)
        self._call(self.redis.set, self.key("holder", shard), token, ex=self.ttl_s)
        return token

    def reclaim(self, shard: str) -> bool:
        """After Redis lost its data: hold `shard` again unless a fence stands; whether it holds."""
        return bool(
            self._script(fencing.RECLAIM, [self.key("holder", shard)], [self.token(shard), self.ttl_s])
        )

    def fence(self, shard: str, by: str) -> None:
        """Stop `shard` writing (before taking its games over): its writes fail until it holds again."""
        self._call(self.redis.set, self.key("holder", shard), f"{fencing.FENCED} by {by}", ex=self.ttl_s)

    def holder_token(self, shard: str) -> str | None:
        """What `holder:<shard>` says (a token, a fence, or None)."""
        raw = self._call(self.redis.get, self.key("holder", shard))
        return None if raw is None else raw.decode()

    def mark_clean(self, shard: str) -> None:
        """The shard exits having recorded every game as it stands: its restart restores exactly."""
        self._call(self.redis.set, self.key("clean", shard), 1, ex=self.ttl_s)

    def take_clean(self, shard: str) -> bool:
        """Whether the shard's last process exited clean (and forget it: the next exit says anew)."""
        key = self.key("clean", shard)
        found, _ = self._pipeline(lambda p: [p.get(key), p.delete(key)])
        return found is not None

    def generation(self, known: str | None) -> Generation:
        """The fleet's generation, begun now if Redis has none (`known`: the id this shard saw
        last, so a new generation after it is marked lost)."""
        ident, started, lost, now = self._script(
            fencing.GENERATION,
            [self.key("generation")],
            [secrets.token_hex(8), int(known is not None), self.ttl_s],
        )
        return Generation(ident.decode(), float(started), lost == b"1", float(now) - float(started))

    def orphaned_shards(self, alive_within_s: float) -> list[str]:
        """Shards with recorded games that no longer heartbeat: their games await recovery."""
        alive = {s.address for s in self.list_shards(alive_within_s)}
        return [owner for owner in self.owners() if owner not in alive]

    def drain_requested(self, pod: str) -> bool:
        """Whether the operator asked this shard (by pod name) to drain (operator/README.md)."""
        return bool(self._call(self.redis.hexists, self.key("drain"), pod))

    def request_drain(self, pod: str, at: float) -> None:
        """The operator asks the shard `pod` to drain (`at`: unix time of the request)."""
        key = self.key("drain")
        self._pipeline(lambda p: [p.hset(key, pod, at), p.expire(key, self.ttl_s)])

    def cancel_drain(self, pod: str) -> None:
        """The fleet scaled back up: the shard `pod` returns to SERVING."""
        self._call(self.redis.hdel, self.key("drain"), pod)

    def claim(self, name: str, holder: str, ttl_s: float) -> bool:
        """Take the lease `name` for `ttl_s` seconds unless someone else holds it."""
        key = self.key("claim", name)
        taken = self._call(self.redis.set, key, holder, nx=True, px=max(1, int(ttl_s * 1000)))
        return bool(taken) or self._call(self.redis.get, key) == holder.encode()

    def release_claim(self, name: str, holder: str) -> None:
        """Give the lease back if `holder` still holds it (else it expired and another took it)."""
        self._call(self.redis.eval, _RELEASE_CLAIM, 1, self.key("claim", name), holder)

    def purge(self) -> int:
        """Delete every key of the fleet; returns how many (the fleet is gone for good)."""

        def unlink_all() -> int:
            keys = list(self.redis.scan_iter(match=f"{self.prefix}*", count=1000))
            return self.redis.unlink(*keys) if keys else 0

        return self._call(unlink_all)

    def _now(self) -> float:
        """Redis server time: every shard and the operator compare heartbeats on one clock."""
        seconds, micros = self._call(self.redis.time)
        return seconds + micros / 1e6
