"""The store's Redis client (redis-py's own Connection) against the hand-written one it replaced.

Run: `python -m gameserver.bench.store [--rounds 20]`. It starts its own redis-server (a free
127.0.0.1 port, `--save "" --appendonly no`), stops it at the end, and prints per-call medians
in microseconds with each variant's ratio to the hand-written client.

The hand-written client (its own RESP encoder, reply parser and socket I/O on a redis-py
connection's socket, store.py before this benchmark) is kept here, as the baseline, so the
choice can be measured again (another redis-py, hiredis, another machine).

(a) log step: one batch step's entry as LogAppender writes it (ids of a 4096-game batch as one
    run, int16 actions [4096, 2]): hand-written (XADD + EXPIRE, both replies read); LogAppender
    (redis-py: the fencing script, packed and sent as one buffer, one reply); and
    redis-py's send_packed_command(pack_commands(...)) as is (one send per memoryview).
(b) put_games: 1024 records of 20x20 2-player games (encode_records of a real GameBatch) over
    16 placement keys: hand-written; FleetStore.put_games (a pooled redis-py Connection, one
    buffer); and a redis-py pipeline (transaction=False).

Rounds alternate the variants' order (A B C, C B A, ...) so load from other processes on a
shared machine falls on all alike; every call is timed on its own, after one untimed round.
For scale, the run also times what each path sits next to: a 4096-game GamePool.step (the step a
log entry overlaps) and encode_records of the 1024 records (the rest of a snapshot round).

Recorded (`python -m gameserver.bench.store --rounds 40`, three runs; a shared 2-core VM,
redis-py 8.2.0 without hiredis, Python 3.11): (a) hand-written 71.5-73.5 us, LogAppender
82.0-84.1 us (x1.14-1.15: +10.5 us next to a 720-750 us step), send_packed_command as is
x1.21; (b) hand-written 1886-2025 us, put_games 2189-2288 us (x1.13-1.16, next to 840-1050 us
of encode_records), pipeline 5896-6232 us (x2.95-3.31). So the store uses redis-py (one buffer).

Since fencing (fleet/fencing.py) the store's paths do more than the unfenced hand-written ones,
so their ratios are what fencing costs (`--rounds 20`, same VM): (a) LogAppender is one EVAL
of a script that checks the holder, then XADD + EXPIRE: 102-105 us against 72-75 us (x1.41,
+30 us next to a 750-860 us step); (b) records through the script took 6.0 ms (x3.0: Lua copies
every record), so put_games WATCHes the holder and writes in MULTI/EXEC instead: 2.44 ms (x1.28).
"""

from __future__ import annotations

import argparse
import contextlib
import select
import shutil
import socket
import statistics
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator

import numpy as np
import redis

from ..engine import GameBatch, GameConfig, generate
from ..fleet.records import EntryId, encode_records
from ..fleet.store import _DATA_DTYPES, FleetStore, _raw, _runs, parse_entry_id
from ..pool import GamePool

BOARD = GameConfig()  # 20x20, 2 players
STEP_GAMES = 4096
PUT_GAMES = 1024
PUT_KEYS = 16  # placement keys the records spread over (one HSET + EXPIRE each)
STEP_CALLS = 200  # per variant per round
PUT_CALLS = 5


@contextlib.contextmanager
def redis_server() -> Iterator[str]:
    """A redis-server of this run's own on a free port, without persistence; yields its URL."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with tempfile.TemporaryDirectory() as directory:
        options = ["--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
        server = subprocess.Popen(
            [shutil.which("redis-server") or "redis-server", *options, "--dir", directory],
            stdout=subprocess.DEVNULL,
        )
        try:
            client, deadline = redis.Redis(port=port), time.monotonic() + 10
            while True:
                try:
                    client.ping()
                    break
                except redis.ConnectionError:
                    if server.poll() is not None or time.monotonic() > deadline:
                        raise RuntimeError("redis-server did not start") from None
                    time.sleep(0.02)
            client.close()
            yield f"redis://127.0.0.1:{port}/0"
        finally:
            server.terminate()
            server.wait()


# The hand-written client (the baseline) ------------------------------------------------------


def _resp(*args: bytes | str | int | memoryview) -> bytes:
    """One command in RESP, as a single buffer."""
    parts = [b"*%d\r\n" % len(args)]
    for arg in args:
        data = str(arg).encode() if isinstance(arg, str | int) else arg
        parts += [b"$%d\r\n" % len(data), data, b"\r\n"]
    return b"".join(parts)


def _parse_replies(data: bytes, count: int) -> list | None:
    """`count` replies (simple string, integer, bulk string or null), None while incomplete."""
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


class HandWritten:
    """Our own I/O on a redis-py connection's socket: one sendall of pre-built RESP, a short parse."""

    def __init__(self, connection: redis.connection.AbstractConnection) -> None:
        self.connection = connection

    def send(self, requests: list[bytes]) -> None:
        connection = self.connection
        if connection._sock is not None:  # readable before a request: Redis hung up, reconnect
            poll = select.poll()
            poll.register(connection._sock, select.POLLIN)
            if poll.poll(0):
                connection.disconnect()
        if connection._sock is None:
            connection.connect()
        for request in requests:
            connection._sock.sendall(request)

    def receive(self, replies: int) -> list:
        data = b""
        while (parsed := _parse_replies(data, replies)) is None:
            chunk = self.connection._sock.recv(65536)
            if not chunk:
                raise ConnectionError("connection closed by Redis")
            data += chunk
        return parsed


class HandWrittenAppender:
    """LogAppender as it was on the hand-written client."""

    def __init__(self, store: FleetStore, shard: str) -> None:
        self._key = store.key("log", shard)
        self._expire = _resp("EXPIRE", self._key, store.ttl_s)
        self._raw = HandWritten(store.redis.connection_pool.make_connection())
        self._ids: np.ndarray | None = None
        self._ids_field: tuple[str, memoryview] = ("ids", memoryview(b""))

    def send(self, kind: str, ids: np.ndarray, data: np.ndarray | None = None) -> None:
        self._raw.send([_resp("XADD", self._key, "*", *_fields(self, kind, ids, data)) + self._expire])

    def receive(self) -> EntryId:
        entry, _ = self._raw.receive(2)
        return parse_entry_id(entry)

    def close(self) -> None:
        self._raw.connection.disconnect()


def _fields(appender: object, kind: str, ids: np.ndarray, data: np.ndarray | None) -> list:
    """LogAppender's entry fields (the ids' encoding reused while the same array comes again)."""
    if ids is not appender._ids:
        runs = _runs(ids)
        appender._ids_field = (
            ("runs", _raw(runs, "<u8")) if runs.size < ids.size else ("ids", _raw(ids, "<u8"))
        )
        appender._ids = ids
    fields = ["k", kind, *appender._ids_field]
    if data is not None:
        fields += ["d", _raw(data, _DATA_DTYPES.get(kind, data.dtype))]
    return fields


def _put_commands(store: FleetStore, owner: str, ids: np.ndarray, records: np.ndarray) -> list[tuple]:
    """put_games' commands: HSET + EXPIRE per key hash, then register the key hashes as owner's."""
    key_hashes = ids >> np.uint64(32)
    fields = [str(i).encode() for i in ids.tolist()]
    unique = np.unique(key_hashes).tolist()
    commands: list[tuple] = []
    for key_hash in unique:
        key = store.key("snap", f"{key_hash:08x}")
        rows = np.flatnonzero(key_hashes == key_hash).tolist()
        commands += [("HSET", key, *[a for r in rows for a in (fields[r], records[r].data)])]
        commands += [("EXPIRE", key, store.ttl_s)]
    commands += [("SADD", store.key("keys", owner), *unique), ("SADD", store.key("owners"), owner)]
    for key in (store.key("keys", owner), store.key("owners")):
        commands += [("EXPIRE", key, store.ttl_s)]
    return commands


def put_games_hand_written(store: FleetStore, owner: str, ids: np.ndarray, records: np.ndarray) -> None:
    """put_games as it was: pre-built RESP, one send, our parse, on a pooled connection."""
    commands = [_resp(*command) for command in _put_commands(store, owner, ids, records)]
    pool = store.redis.connection_pool
    connection = pool.get_connection()
    try:
        raw = HandWritten(connection)
        raw.send(commands)
        raw.receive(len(commands))
    finally:
        pool.release(connection)


# redis-py as it comes ------------------------------------------------------------------------


class PackedAppender(HandWrittenAppender):
    """LogAppender on redis-py's `send_packed_command(pack_commands(...))` as is: it sends each
    memoryview (the ids, the actions) on its own."""

    def __init__(self, store: FleetStore, shard: str) -> None:
        super().__init__(store, shard)
        self._expire_args = ("EXPIRE", self._key, store.ttl_s)
        self.connection = self._raw.connection

    def send(self, kind: str, ids: np.ndarray, data: np.ndarray | None = None) -> None:
        connection = self.connection
        connection.connect()
        try:
            stale = connection.can_read()
        except redis.ConnectionError:
            stale = True
        if stale:
            connection.disconnect()
            connection.connect()
        xadd = ("XADD", self._key, "*", *_fields(self, kind, ids, data))
        connection.send_packed_command(connection.pack_commands([xadd, self._expire_args]))

    def receive(self) -> EntryId:
        entry = self.connection.read_response()
        self.connection.read_response()
        return parse_entry_id(entry)


def put_games_pipeline(store: FleetStore, owner: str, ids: np.ndarray, records: np.ndarray) -> None:
    """put_games through a redis-py pipeline. Records go as bytes: as memoryviews the pipeline
    sends each one on its own (about twice slower again)."""
    pipe = store.redis.pipeline(transaction=False)
    for command in _put_commands(store, owner, ids, records):
        args = [a.tobytes() if isinstance(a, memoryview) else a for a in command[2:]]
        pipe.execute_command(command[0], command[1], *args)
    pipe.execute()


# The run -------------------------------------------------------------------------------------


def measure(
    variants: dict[str, Callable[[], object]], rounds: int, calls: int, label: str
) -> dict[str, float]:
    """Median seconds per call of each variant, rounds alternating the order (A B C, C B A, ...)."""
    samples: dict[str, list[float]] = {name: [] for name in variants}
    names = list(variants)
    for round_ in range(rounds + 1):  # round 0 warms up, untimed
        for name in names if round_ % 2 else reversed(names):
            call, times = variants[name], samples[name]
            for _ in range(calls):
                start = time.perf_counter()
                call()
                if round_:
                    times.append(time.perf_counter() - start)
        print(".", end="", flush=True)
    print(f" {label}: {rounds} rounds")
    return {name: statistics.median(times) for name, times in samples.items()}


def report(title: str, medians: dict[str, float]) -> None:
    base = next(iter(medians.values()))
    print(title)
    for name, median in medians.items():
        print(f"  {name:<44} {median * 1e6:9.1f} us   x{median / base:.2f}")


def main(argv: list[str] | None = None) -> int:
    """Run both comparisons against a fresh redis-server; print medians and ratios."""
    parser = argparse.ArgumentParser(
        prog="python -m gameserver.bench.store", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--rounds", type=int, default=20, help="timed rounds per comparison (default 20)")
    args = parser.parse_args(argv)
    print(f"redis-py {redis.__version__}, hiredis parser: {redis.utils.HIREDIS_AVAILABLE}")
    rng = np.random.default_rng(0)
    with redis_server() as url:
        store = FleetStore(url, "bench", ttl_s=600)
        for shard in ("store", "bench-shard"):
            store.hold(shard)  # FleetStore's writes are fenced (fencing.py); the hand-written ones not

        ids = (np.uint64(7) << np.uint64(32)) + np.arange(STEP_GAMES, dtype=np.uint64)
        actions = rng.integers(-1, BOARD.num_actions, (STEP_GAMES, BOARD.players)).astype(np.int16)
        appenders = {
            "hand-written": HandWrittenAppender(store, "hand"),
            "LogAppender (redis-py, one buffer)": store.appender("store"),
            "redis-py send_packed_command as is": PackedAppender(store, "packed"),
        }

        def step_of(appender: object) -> Callable[[], object]:
            return lambda: (appender.send("step", ids, actions), appender.receive())

        steps = measure({n: step_of(a) for n, a in appenders.items()}, args.rounds, STEP_CALLS, "log step")
        for appender in appenders.values():
            appender.close()

        batch = GameBatch.allocate(BOARD, PUT_GAMES)
        generate(batch, np.arange(PUT_GAMES), np.arange(PUT_GAMES))
        keys = np.repeat(np.arange(PUT_KEYS, dtype=np.uint64), PUT_GAMES // PUT_KEYS)
        put_ids = (keys << np.uint64(32)) + np.arange(PUT_GAMES, dtype=np.uint64)
        records = encode_records(batch, "bench-shard", (1, 0), True, True)
        puts = measure(
            {
                "hand-written": lambda: put_games_hand_written(store, "bench-shard", put_ids, records),
                "FleetStore.put_games (redis-py, one buffer)": lambda: store.put_games(
                    "bench-shard", put_ids, records
                ),
                "redis-py pipeline": lambda: put_games_pipeline(store, "bench-shard", put_ids, records),
            },
            args.rounds,
            PUT_CALLS,
            "put_games",
        )
        encode = measure(
            {"encode": lambda: encode_records(batch, "bench-shard", (1, 0), True, True)}, 3, 5, "context"
        )["encode"]
        store.purge()

    pool = GamePool(BOARD, STEP_GAMES, seed=1)
    pool_ids = pool.create(STEP_GAMES)
    step = measure({"step": lambda: pool.step(pool_ids, actions)}, 3, 10, "context")["step"]
    report(f"(a) log step: XADD + EXPIRE, {STEP_GAMES} ids as a run, int16 actions [{STEP_GAMES}, 2]", steps)
    report(f"(b) put_games: {PUT_GAMES} records of {records.shape[1]} bytes over {PUT_KEYS} keys", puts)
    print(f"context: GamePool.step of {STEP_GAMES} games {step * 1e6:.0f} us (the step an entry overlaps)")
    print(
        f"context: encode_records of {PUT_GAMES} games {encode * 1e6:.0f} us (the rest of a snapshot round)"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
