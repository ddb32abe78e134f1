"""FleetStore: the Redis side of durability (game records, the action log) on top of the
fleet's registry (registry.py: connection, key naming, shard registry, errors), and nothing else.

Keys (all under `gamefleet:<fleet>:`, all expiring `ttl_s` after their last write), besides
registry.py's:
  snap:<key hash>   HASH game id -> game record (records.py: owner, log position, snapshot)
  log:<shard>       STREAM one entry per batch call of that shard (step, reset, close, ...)
  keys:<shard>      SET key hashes that shard has recorded games for (what to recover)
  owners            SET shards that have recorded games (finds dead shards' games)

Games are grouped by placement key hash because a key is the unit of placement: when the
ring moves a key, all its games move, and one HGETALL fetches them. A record names its
owner, so a key's games spread over several shards (after a ring change) are told apart.

Every write of games runs as a fencing script (fencing.py): it lands only while the writing
process holds its shard (`hold` first), so a shard that was failed over writes nothing after.

The client never retries a command on its own: a retried XADD could log one step twice,
and replay would then play it twice. A failure is a StoreUnavailableError instead.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import NoReturn

import numpy as np
import redis
from redis.client import Pipeline

from . import fencing
from .breaker import CircuitBreaker
from .records import EntryId, StoredGames, decode_records, record_owner
from .registry import FleetRegistry, ShardInfo, StoreUnavailableError, refusal, refusal_by_holder

__all__ = [
    "ORIGIN",
    "FleetStore",
    "LogAppender",
    "LogEntry",
    "ShardInfo",
    "StoreUnavailableError",
    "format_entry_id",
    "parse_entry_id",
]

ORIGIN: EntryId = (0, 0)  # before every entry
_READ_BATCH = 512  # stream entries per XRANGE
# Entry kinds: step, reset, maps (a reset onto given maps), close, create, adopt, mark (a position
# only). Their data's dtype:
# Step actions fit int16: the largest board has 64 * 64 * 8 = 2**15 flat moves (and -1, pass).
# A maps entry holds seeds and maps as bytes (records.encode_map_entry).
_DATA_DTYPES = {
    "step": np.dtype("<i2"),
    "reset": np.dtype("<u8"),
    "create": np.dtype("<u8"),
    "maps": np.dtype("u1"),
}


@dataclass(frozen=True)
class LogEntry:
    """A stream entry: what one batch call did to `ids` (`data`: actions or seeds, if any)."""

    id: EntryId
    kind: str
    ids: np.ndarray
    data: np.ndarray | None


def parse_entry_id(raw: bytes | str) -> EntryId:
    ms, _, seq = (raw.decode() if isinstance(raw, bytes) else raw).partition("-")
    return int(ms), int(seq or 0)


def format_entry_id(entry: EntryId) -> str:
    return f"{entry[0]}-{entry[1]}"


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


class FleetStore(FleetRegistry):
    """One fleet's keys in Redis: the registry's, plus game records and action logs. Thread-safe
    (a pool of connections); every call may raise StoreUnavailableError."""

    def _snap_key(self, key_hash: int) -> str:
        return self.key("snap", f"{key_hash:08x}")

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

    def put_games(self, owner: str, ids: np.ndarray, records: np.ndarray, token: str | None = None) -> None:
        """Write records (row i of `records` for game ids[i]) per key hash, and register the key
        hashes as `owner`'s, while `token` (default: this process's) holds `owner`: FencedError
        once another shard took `owner` over.

        Fenced by an optimistic transaction, not a script: WATCH the holder and read it, then
        MULTI .. EXEC the writes, which Redis drops if the holder changed in between. Megabytes
        of records (thousands per snapshot round) passed through Lua took Redis 3x as long
        (`python -m gameserver.bench.store`); this costs one round trip more."""
        ids = np.asarray(ids, np.uint64)
        if not ids.size:
            return
        key_hashes = ids >> np.uint64(32)
        unique = np.unique(key_hashes).tolist()
        fields = [str(i).encode() for i in ids.tolist()]
        commands: list[tuple] = [("MULTI",)]
        for key_hash in unique:
            key = self._snap_key(key_hash)
            rows = np.flatnonzero(key_hashes == key_hash).tolist()
            commands.append(("HSET", key, *[a for r in rows for a in (fields[r], records[r].data)]))
            commands.append(("EXPIRE", key, self.ttl_s))
        commands.append(("SADD", self.key("keys", owner), *unique))
        commands.append(("SADD", self.key("owners"), owner))
        commands += [("EXPIRE", key, self.ttl_s) for key in (self.key("keys", owner), self.key("owners"))]
        commands.append(("EXEC",))
        holder = self._holder_key(owner)
        pool = self.redis.connection_pool
        connection = self._call(pool.get_connection)
        try:
            link = _Link(connection, self.breaker)
            link.send([("WATCH", holder), ("GET", holder)])
            held = link.receive(2)[1]
            if held != (token or self._tokens[owner]).encode():
                link.send([("UNWATCH",)])
                link.receive(1)
                raise refusal_by_holder(held)
            link.send(commands)
            done = link.receive(len(commands))[-1]
            if done is None:  # EXEC dropped the writes
                raise StoreUnavailableError(f"the holder of {owner} changed during the write: retry")
            if failed := [reply for reply in done if isinstance(reply, redis.ResponseError)]:
                raise refusal(failed[0])
        finally:
            pool.release(connection)

    def drop_games(self, shard: str, ids: np.ndarray) -> None:
        """Delete the records of closed games, while this process holds `shard`."""
        ids = np.asarray(ids, np.uint64)
        if not ids.size:
            return
        hashes = ids >> np.uint64(32)
        unique = np.unique(hashes).tolist()
        args: list[object] = [self._tokens[shard]]
        for key_hash in unique:
            names = ids[hashes == key_hash].tolist()
            args += [len(names), *names]
        self._script(fencing.DROP_RECORDS, [self._holder_key(shard), *map(self._snap_key, unique)], args)

    def _holder_key(self, shard: str) -> str:
        if shard not in self._tokens:
            raise ValueError(f"this process does not hold shard {shard!r}: call hold() first")
        return self.key("holder", shard)

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

    def touch(self, shard: str, key_hashes: Sequence[int]) -> None:
        """Refresh the TTLs of a live shard's keys, so an idle game's record does not expire."""

        def fill(pipe: Pipeline) -> None:
            for key in (
                self.key("log", shard),
                self.key("keys", shard),
                self.key("owners"),
                self.key("holder", shard),
            ):
                pipe.expire(key, self.ttl_s)
            for key_hash in key_hashes:
                pipe.expire(self._snap_key(int(key_hash)), self.ttl_s)

        self._pipeline(fill)


class _Link:
    """A redis-py Connection driven directly, for the two bulk paths (put_games, LogAppender):
    redis-py packs the commands and parses the replies; the packed pieces go out joined, in one
    send. redis-py would send them piece by piece (one per memoryview, else ~6 KB each): a step's
    entry then takes about twice as long, and a pipeline 2-3x as long for a snapshot round
    (`python -m gameserver.bench.store`). A command is never retried; any error drops the
    connection, so no reply of it lingers for the next command, and raises StoreUnavailableError."""

    def __init__(self, connection: redis.connection.AbstractConnection, breaker: CircuitBreaker) -> None:
        self.connection = connection
        self.breaker = breaker

    def send(self, commands: list[tuple]) -> None:
        """Send `commands` (each a tuple of arguments), reconnecting first if Redis hung up."""
        connection = self.connection
        try:
            self.breaker.before()
            connection.connect()  # a no-op while connected
            try:  # readable before a request: Redis hung up (or restarted) since the last one
                stale = connection.can_read()
            except (redis.ConnectionError, redis.TimeoutError, OSError):
                stale = True
            if stale:
                connection.disconnect()
                connection.connect()
            connection.send_packed_command([b"".join(connection.pack_commands(commands))])
        except (OSError, redis.RedisError) as error:
            self._drop(error)

    def receive(self, replies: int) -> list:
        """The next `replies` replies; an error reply raises (StoreUnavailableError, FencedError, ...)."""
        try:
            answers = [self.connection.read_response() for _ in range(replies)]
        except redis.ResponseError as error:  # Redis answered: a fencing script refused the write
            self.breaker.failed(error)
            if replies > 1:
                self.connection.disconnect()  # the replies after it would linger
            raise refusal(error) from error
        except (OSError, redis.RedisError) as error:
            self._drop(error)
        self.breaker.succeeded()
        return answers

    def _drop(self, error: Exception) -> NoReturn:
        self.breaker.failed(error)
        self.connection.disconnect()
        raise StoreUnavailableError(f"redis unavailable: {type(error).__name__}: {error}") from error


class LogAppender:
    """XADDs to one shard's log from the step path, on a connection of its own (see _Link), in the
    fencing script (the shard must hold; its token is the one at construction).

    `send` and `receive` are apart so a caller can overlap the round trip with the work it
    logs. Every XADD comes with an EXPIRE (the TTL refresh). Ids go as runs of consecutive
    ids when that is shorter; the encoding of the last ids array is reused when the same array
    object comes again, so callers must not modify an ids array they have passed. Not
    thread-safe: one per caller.
    """

    def __init__(self, store: FleetStore, shard: str) -> None:
        self._script = ("EVAL", fencing.LOG_APPEND, 2, store._holder_key(shard), store.key("log", shard))
        self._script += (store._tokens[shard], store.ttl_s)
        self._raw = _Link(store.redis.connection_pool.make_connection(), store.breaker)  # its own connection
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
        self._raw.send([(*self._script, *fields)])

    def receive(self) -> EntryId:
        """The id of the entry sent last (once Redis has it, the call it logs is durable)."""
        (entry,) = self._raw.receive(1)
        return parse_entry_id(entry)

    def append(self, kind: str, ids: np.ndarray, data: np.ndarray | None = None) -> EntryId:
        self.send(kind, ids, data)
        return self.receive()

    def close(self) -> None:
        self._raw.connection.disconnect()
