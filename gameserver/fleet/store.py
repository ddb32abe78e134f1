"""FleetStore: the Redis side of durability and the shard registry, and nothing else.

Keys (all under `gamefleet:<fleet>:`, all expiring `ttl_s` after their last write):
  snap:<key hash>   HASH game id -> game record (records.py: owner, log position, snapshot)
  log:<shard>       STREAM one entry per batch call of that shard (step, reset, close, ...)
  keys:<shard>      SET key hashes that shard has recorded games for (what to recover)
  owners            SET shards that have recorded games (finds dead shards' games)
  shards            HASH shard address -> JSON load report
  heartbeats        ZSET shard address -> Redis server time of its last heartbeat
  alive:<shard>     STRING set by a running shard: its absence means Redis lost the shard's data
  drain             HASH pod name -> unix time the operator asked that shard to drain
  claim:<name>      STRING holder of a short lease (one shard at a time recovers a dead shard)

Games are grouped by placement key hash because a key is the unit of placement: when the
ring moves a key, all its games move, and one HGETALL fetches them. A record names its
owner, so a key's games spread over several shards (after a ring change) are told apart.

The client never retries a command on its own: a retried XADD could log one step twice,
and replay would then play it twice. A failure is a StoreUnavailableError instead.
"""

from __future__ import annotations

import json
import select
import socket
from collections import defaultdict
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import NoReturn, TypeVar

import numpy as np
import redis
from redis.backoff import NoBackoff
from redis.client import Pipeline
from redis.retry import Retry

from .records import EntryId, StoredGames, decode_records, record_owner

ORIGIN: EntryId = (0, 0)  # before every entry
_READ_BATCH = 512  # stream entries per XRANGE
# Entry kinds: step, reset, close, create, adopt, mark (a position only). Their data's dtype:
# Step actions fit int16: the largest board has 64 * 64 * 8 = 2**15 flat moves (and -1, pass).
_DATA_DTYPES = {"step": np.dtype("<i2"), "reset": np.dtype("<u8"), "create": np.dtype("<u8")}
T = TypeVar("T")
_RELEASE_CLAIM = (
    "if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) end return 0"
)


class StoreUnavailableError(ConnectionError):
    """Redis could not be reached or refused a write (the service answers UNAVAILABLE).

    `applied`: the call it failed had already taken effect in memory (a step runs while its log
    entry travels): it is not acknowledged, and the records catch up once Redis answers.
    """

    applied = False
    status_code = "UNAVAILABLE"

    @property
    def status_details(self) -> str:
        if self.applied:  # Redis failed while the step ran: done here, not durable, not acknowledged
            return (
                "durability store unavailable: the step was applied but its log entry was not "
                f"confirmed, so it is not acknowledged; read the games before retrying: {self}"
            )
        return f"durability store unavailable, the call changed nothing (on-redis-error=fail): {self}"


@dataclass(frozen=True)
class LogEntry:
    """A stream entry: what one batch call did to `ids` (`data`: actions or seeds, if any)."""

    id: EntryId
    kind: str
    ids: np.ndarray
    data: np.ndarray | None


@dataclass(frozen=True)
class ShardInfo:
    address: str
    load: int  # active games
    capacity: int
    state: str  # SERVING or DRAINING
    heartbeat: float  # Redis server time (s) of the last heartbeat


def parse_entry_id(raw: bytes | str) -> EntryId:
    ms, _, seq = (raw.decode() if isinstance(raw, bytes) else raw).partition("-")
    return int(ms), int(seq or 0)


def format_entry_id(entry: EntryId) -> str:
    return f"{entry[0]}-{entry[1]}"


def _resp(*args: bytes | str | memoryview) -> bytes:
    """One command in the Redis protocol (RESP), as a single buffer: one send per call."""
    parts = [b"*%d\r\n" % len(args)]
    for arg in args:
        data = arg.encode() if isinstance(arg, str) else arg
        parts += [b"$%d\r\n" % len(data), data, b"\r\n"]
    return b"".join(parts)


def _runs(ids: np.ndarray) -> np.ndarray:
    """Ids as (first, count) pairs of consecutive runs, in order: a trainer's batch of games is
    usually one run, 16 bytes in the log instead of 8 per game."""
    ids = np.asarray(ids, np.uint64)
    starts = np.flatnonzero(np.diff(ids, prepend=ids[:1] - np.uint64(2)) != 1)  # -2: the first always starts
    counts = np.diff(np.append(starts, ids.size)).astype(np.uint64)
    return np.stack([ids[starts], counts], axis=1).reshape(-1)


def _ids_from_runs(raw: bytes) -> np.ndarray:
    firsts, counts = np.frombuffer(raw, "<u8").reshape(-1, 2).T
    counts = counts.astype(np.int64)
    offsets = np.arange(counts.sum()) - np.repeat(np.cumsum(counts) - counts, counts)
    return np.repeat(firsts, counts) + offsets.astype(np.uint64)


def _raw(array: np.ndarray, dtype: str | np.dtype) -> memoryview:
    return memoryview(np.ascontiguousarray(array, dtype)).cast("B")


def _client(target: str | redis.Redis, timeout_s: float) -> redis.Redis:
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


class FleetStore:
    """One fleet's keys in Redis. Thread-safe (a pool of connections); every call may raise
    StoreUnavailableError."""

    def __init__(self, redis_target: str | redis.Redis, fleet: str, ttl_s: int, *, timeout_s: float = 2.0):
        if not fleet or ":" in fleet:
            raise ValueError(f"fleet must be a non-empty name without ':', got {fleet!r}")
        if isinstance(ttl_s, bool) or not isinstance(ttl_s, int) or ttl_s < 1:
            raise ValueError(f"ttl_s must be a positive int, got {ttl_s!r}")
        self.fleet = fleet
        self.ttl_s = ttl_s
        self.prefix = f"gamefleet:{fleet}:"
        self.redis = _client(redis_target, timeout_s)

    def key(self, *parts: object) -> str:
        return self.prefix + ":".join(str(p) for p in parts)

    def _snap_key(self, key_hash: int) -> str:
        return self.key("snap", f"{key_hash:08x}")

    def _call(self, fn: Callable[..., T], *args: object, **kwargs: object) -> T:
        try:
            return fn(*args, **kwargs)
        except redis.RedisError as error:
            raise StoreUnavailableError(f"redis unavailable: {type(error).__name__}: {error}") from error

    def _pipeline(self, fill: Callable[[Pipeline], object]) -> list:
        """Run the commands `fill` queues in one round trip."""

        def run() -> list:
            pipe = self.redis.pipeline(transaction=False)
            fill(pipe)
            return pipe.execute()

        return self._call(run)

    # Action log ---------------------------------------------------------------------------

    def appender(self, shard: str) -> LogAppender:
        """A writer of `shard`'s log on a connection of its own (one per caller thread)."""
        return LogAppender(self, shard)

    def read_log(self, shard: str, after: EntryId) -> Iterator[LogEntry]:
        """Entries strictly after `after`, oldest first, read in batches."""
        key, start = self.key("log", shard), "(" + format_entry_id(after)
        while True:
            batch = self._call(self.redis.xrange, key, start, "+", _READ_BATCH)
            for raw_id, fields in batch:
                kind = fields[b"k"].decode()
                raw = fields.get(b"d")
                data = None if raw is None else np.frombuffer(raw, _DATA_DTYPES[kind])
                runs = fields.get(b"runs")
                ids = np.frombuffer(fields[b"ids"], "<u8") if runs is None else _ids_from_runs(runs)
                yield LogEntry(parse_entry_id(raw_id), kind, ids, data)
            if len(batch) < _READ_BATCH:
                return
            start = "(" + batch[-1][0].decode()

    def trim_log(self, shard: str, keep_from: EntryId) -> int:
        """Drop the entries before `keep_from` (snapshots cover them); returns how many went."""
        return self._call(
            self.redis.xtrim, self.key("log", shard), minid=format_entry_id(keep_from), approximate=False
        )

    def log_length(self, shard: str) -> int:
        return self._call(self.redis.xlen, self.key("log", shard))

    # Game records -------------------------------------------------------------------------

    def put_games(self, owner: str, ids: np.ndarray, records: np.ndarray) -> None:
        """Write records (row i of `records` for game ids[i]) per key hash, and register the key
        hashes as `owner`'s: one buffer, one send (thousands of records per snapshot round)."""
        ids = np.asarray(ids, np.uint64)
        if not ids.size:
            return
        key_hashes = ids >> np.uint64(32)
        fields = [str(i).encode() for i in ids.tolist()]
        commands = []
        for key_hash in np.unique(key_hashes).tolist():
            key = self._snap_key(key_hash)
            pairs = [
                a
                for r in np.flatnonzero(key_hashes == key_hash).tolist()
                for a in (fields[r], records[r].data)
            ]
            commands += [_resp("HSET", key, *pairs), _resp("EXPIRE", key, str(self.ttl_s))]
        commands.append(_resp("SADD", self.key("keys", owner), *map(str, np.unique(key_hashes).tolist())))
        commands.append(_resp("SADD", self.key("owners"), owner))
        commands += [
            _resp("EXPIRE", key, str(self.ttl_s)) for key in (self.key("keys", owner), self.key("owners"))
        ]
        self._raw(commands)

    def _raw(self, commands: list[bytes]) -> list:
        """Send pre-built commands on a pooled connection and read their replies (raw I/O: see
        _RawConnection)."""
        pool = self.redis.connection_pool
        try:
            connection = pool.get_connection()
        except redis.RedisError as error:
            raise StoreUnavailableError(f"redis unavailable: {type(error).__name__}: {error}") from error
        raw = _RawConnection(connection)
        try:
            raw.send(commands)
            return raw.receive(len(commands))
        finally:
            pool.release(connection)

    def drop_games(self, ids: np.ndarray) -> None:
        """Delete the records of closed games."""
        ids = np.asarray(ids, np.uint64)

        def fill(pipe: Pipeline) -> None:
            for key_hash in np.unique(ids >> np.uint64(32)).tolist():
                pipe.hdel(
                    self._snap_key(key_hash), *map(str, ids[(ids >> np.uint64(32)) == key_hash].tolist())
                )

        if ids.size:
            self._pipeline(fill)

    def load_games(
        self, key_hashes: Sequence[int] | None = None, game_ids: Sequence[int] | None = None
    ) -> StoredGames:
        """The records of every game of these key hashes, or of these game ids (missing: skipped)."""
        if (key_hashes is None) == (game_ids is None):
            raise ValueError("give key_hashes or game_ids")
        if key_hashes is not None:
            replies = self._pipeline(lambda p: [p.hgetall(self._snap_key(int(k))) for k in key_hashes])
            found = [(int(field), value) for reply in replies for field, value in reply.items()]
        else:
            by_key: dict[int, list[int]] = defaultdict(list)
            for game_id in map(int, game_ids):
                by_key[game_id >> 32].append(game_id)
            groups = list(by_key.items())
            replies = self._pipeline(
                lambda p: [p.hmget(self._snap_key(k), [str(g) for g in gs]) for k, gs in groups]
            )
            found = [
                (g, value)
                for (_, gs), values in zip(groups, replies, strict=True)
                for g, value in zip(gs, values, strict=True)
                if value is not None
            ]
        return decode_records([g for g, _ in found], [v for _, v in found])

    def owners_of_games(self, game_ids: np.ndarray) -> list[str | None]:
        """The owner named in each game's record (None: no record, so no such game)."""
        ids = np.asarray(game_ids, np.uint64)
        hashes = ids >> np.uint64(32)
        groups = [(int(k), ids[hashes == k]) for k in np.unique(hashes).tolist()]
        replies = self._pipeline(
            lambda p: [p.hmget(self._snap_key(k), [str(g) for g in gs.tolist()]) for k, gs in groups]
        )
        found = {
            int(g): None if raw is None else record_owner(raw)
            for (_, gs), values in zip(groups, replies, strict=True)
            for g, raw in zip(gs.tolist(), values, strict=True)
        }
        return [found[int(g)] for g in ids.tolist()]

    def key_hashes_of(self, shard: str) -> list[int]:
        """The key hashes `shard` has recorded games for (a superset: closes do not prune it)."""
        return sorted(int(k) for k in self._call(self.redis.smembers, self.key("keys", shard)))

    def forget_key_hashes(self, shard: str, key_hashes: Sequence[int]) -> None:
        """After recovering them elsewhere: `shard` no longer owns these keys (nor, once none are
        left, any games)."""
        if not key_hashes:
            return
        keys = self.key("keys", shard)
        _, left = self._pipeline(lambda p: [p.srem(keys, *key_hashes), p.scard(keys)])
        if left == 0:
            self._call(self.redis.srem, self.key("owners"), shard)

    def owners(self) -> list[str]:
        return sorted(o.decode() for o in self._call(self.redis.smembers, self.key("owners")))

    def touch(self, shard: str, key_hashes: Sequence[int]) -> None:
        """Refresh the TTLs of a live shard's keys, so an idle game's record does not expire."""

        def fill(pipe: Pipeline) -> None:
            for key in (self.key("log", shard), self.key("keys", shard), self.key("owners")):
                pipe.expire(key, self.ttl_s)
            for key_hash in key_hashes:
                pipe.expire(self._snap_key(int(key_hash)), self.ttl_s)

        self._pipeline(fill)

    # Shard registry ------------------------------------------------------------------------

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

    def mark_alive(self, shard: str) -> bool:
        """Set (and refresh) the shard's marker key; True when it was missing: the first call,
        or Redis lost the shard's data (restarted empty, flushed, expired)."""
        key = self.key("alive", shard)
        created, _ = self._pipeline(
            lambda p: [p.set(key, 1, nx=True, ex=self.ttl_s), p.expire(key, self.ttl_s)]
        )
        return bool(created)

    def orphaned_shards(self, alive_within_s: float) -> list[str]:
        """Shards with recorded games that no longer heartbeat: their games await recovery."""
        alive = {s.address for s in self.list_shards(alive_within_s)}
        return [owner for owner in self.owners() if owner not in alive]

    def drain_requested(self, pod: str) -> bool:
        """Whether the operator asked this shard (by pod name) to drain (operator/README.md)."""
        return bool(self._call(self.redis.hexists, self.key("drain"), pod))

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
        seconds, micros = self._call(self.redis.time)
        return seconds + micros / 1e6


class _RawConnection:
    """A redis-py connection (it connects: TLS, AUTH, HELLO, SELECT) on whose socket we do our own
    I/O: one send of pre-built RESP, and a short parse of the replies. On the paths that run for
    every step or every snapshot round, redis-py's command machinery costs more than the round
    trip itself. Any error drops the connection, so a half-read reply never lingers."""

    def __init__(self, connection: redis.connection.AbstractConnection) -> None:
        self.connection = connection

    def send(self, requests: list[bytes]) -> None:
        try:
            sock = self._socket()
            for request in requests:
                sock.sendall(request)
        except (OSError, redis.RedisError) as error:
            self._drop(error)

    def receive(self, replies: int) -> list:
        try:
            sock, data = self.connection._sock, b""
            while (parsed := _parse_replies(data, replies)) is None:
                chunk = sock.recv(65536)
                if not chunk:
                    raise ConnectionError("connection closed by Redis")
                data += chunk
            return parsed
        except (OSError, redis.RedisError) as error:
            self._drop(error)

    def _socket(self) -> socket.socket:
        """The connected socket. Readable before a request means Redis hung up (or restarted)
        since the last one: reconnect rather than fail the request."""
        connection = self.connection
        if connection._sock is not None:
            poll = select.poll()  # not select(): a server's descriptors can pass FD_SETSIZE
            poll.register(connection._sock, select.POLLIN)
            if poll.poll(0):
                connection.disconnect()
        if connection._sock is None:
            connection.connect()
        return connection._sock

    def _drop(self, error: Exception) -> NoReturn:
        self.connection.disconnect()
        raise StoreUnavailableError(f"redis unavailable: {type(error).__name__}: {error}") from error


def _parse_replies(data: bytes, count: int) -> list | None:
    """`count` replies (simple string, integer, bulk string or null) from the start of `data`;
    None while incomplete. An error reply raises ResponseError."""
    replies, at = [], 0
    while len(replies) < count:
        end = data.find(b"\r\n", at)
        if end < 0:
            return None
        kind, line = data[at : at + 1], data[at + 1 : end]
        at = end + 2
        if kind == b"$" and int(line) >= 0:
            if len(data) < at + int(line) + 2:
                return None
            replies.append(data[at : at + int(line)])
            at += int(line) + 2
        elif kind in (b"$", b"_"):
            replies.append(None)
        elif kind == b":":
            replies.append(int(line))
        elif kind == b"+":
            replies.append(line)
        else:
            raise redis.ResponseError(line.decode(errors="replace"))
    return replies


class LogAppender:
    """XADDs to one shard's log from the step path, on a connection of its own (raw I/O).

    `send` and `receive` are apart so a caller can overlap the round trip with the work it
    logs. Every XADD travels with an EXPIRE (the TTL refresh). Ids go as runs of consecutive
    ids when that is shorter; the encoding of the last ids array is reused when the same array
    object comes again, so callers must not modify an ids array they have passed. Not
    thread-safe: one per caller.
    """

    def __init__(self, store: FleetStore, shard: str) -> None:
        self._key = store.key("log", shard)
        self._expire = _resp("EXPIRE", self._key, str(store.ttl_s))
        self._raw = _RawConnection(store.redis.connection_pool.make_connection())
        self._ids: np.ndarray | None = None  # the last ids array sent, and its encoding:
        self._ids_field: tuple[str, memoryview] = ("ids", memoryview(b""))  # a trainer resends it

    def send(self, kind: str, ids: np.ndarray, data: np.ndarray | None = None) -> None:
        if ids is not self._ids:
            runs = _runs(ids)
            self._ids_field = (
                ("runs", _raw(runs, "<u8")) if runs.size < ids.size else ("ids", _raw(ids, "<u8"))
            )
            self._ids = ids
        fields = ["k", kind, *self._ids_field]
        if data is not None:
            fields += ["d", _raw(data, _DATA_DTYPES.get(kind, data.dtype))]
        self._raw.send([_resp("XADD", self._key, "*", *fields) + self._expire])

    def receive(self) -> EntryId:
        """The id of the entry sent last (once Redis has it, the call it logs is durable)."""
        entry, _ = self._raw.receive(2)
        return parse_entry_id(entry)

    def append(self, kind: str, ids: np.ndarray, data: np.ndarray | None = None) -> EntryId:
        self.send(kind, ids, data)
        return self.receive()

    def close(self) -> None:
        self._raw.connection.disconnect()
