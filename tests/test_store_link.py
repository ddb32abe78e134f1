"""The store's two bulk paths (put_games, LogAppender) on redis-py connections driven directly:
a Redis that restarted between calls costs nothing, and a failed call leaves no reply behind
for the next one (a command is never retried: a retried XADD would log a step twice)."""

from __future__ import annotations

import numpy as np
import pytest

from gameserver.fleet.registry import HolderLostError
from gameserver.fleet.store import FleetStore, StoreUnavailableError

IDS = np.array([5, 6, 7, 9], np.uint64)
ACTIONS = np.array([[1, -1], [3, 4], [0, 0], [2, 2]], np.int16)


@pytest.fixture
def store(redis_server) -> FleetStore:
    store = FleetStore(redis_server.url, "link", ttl_s=300, timeout_s=0.5)
    store.hold("a")
    return store


def records(n: int, size: int = 40) -> np.ndarray:
    return np.arange(n * size, dtype=np.uint8).reshape(n, size)


def test_an_appender_reconnects_when_redis_restarted_between_entries(redis_server, store):
    appender = store.appender("a")
    appender.append("step", IDS, ACTIONS)
    redis_server.kill()
    redis_server.start()  # empty, on the same port: the appender's socket is dead
    with pytest.raises(HolderLostError):  # and Redis no longer says this process writes as "a"
        appender.append("step", IDS, ACTIONS)
    assert store.reclaim("a")  # what the shard's heartbeat does on seeing a new generation
    entry = appender.append("step", IDS, ACTIONS)
    [logged] = store.read_log("a", (0, 0))
    assert logged.id == entry and logged.kind == "step"
    np.testing.assert_array_equal(logged.ids, IDS)
    np.testing.assert_array_equal(logged.data, ACTIONS.reshape(-1))
    appender.close()


def test_put_games_after_a_restart_writes_on_a_fresh_connection(redis_server, store):
    store.put_games("a", IDS, records(4))
    redis_server.kill()
    redis_server.start()
    assert store.reclaim("a")
    store.put_games("a", IDS, records(4))
    assert store.redis.hlen(store.key("snap", "00000000")) == 4
    assert store.key_hashes_of("a") == [0] and store.owners() == ["a"]


def test_an_error_reply_fails_the_entry_and_leaves_nothing_for_the_next(store):
    appender = store.appender("a")
    store.redis.set(store.key("log", "a"), "not a stream")
    appender.send("step", IDS, ACTIONS)
    with pytest.raises(StoreUnavailableError, match="WRONGTYPE"):
        appender.receive()
    store.redis.delete(store.key("log", "a"))
    entry = appender.append("close", IDS[:1])
    assert [e.id for e in store.read_log("a", (0, 0))] == [entry]
    appender.close()


def test_a_failed_put_games_leaves_no_reply_on_the_pooled_connection(store):
    store.redis.set(store.key("snap", "00000000"), "not a hash")
    with pytest.raises(StoreUnavailableError, match="WRONGTYPE"):
        store.put_games("a", IDS, records(4))
    for _ in range(3):  # whichever pooled connection comes next answers its own command
        assert store.redis.get(store.key("snap", "00000000")) == b"not a hash"


def test_redis_down_is_store_unavailable_on_both_paths(redis_server, store):
    appender = store.appender("a")
    appender.append("step", IDS, ACTIONS)
    redis_server.kill()
    with pytest.raises(StoreUnavailableError):
        appender.append("step", IDS, ACTIONS)
    with pytest.raises(StoreUnavailableError):
        store.put_games("a", IDS, records(4))
    appender.close()


def test_the_benchmark_behind_this_choice_runs(capsys):
    from gameserver.bench import store as bench

    assert bench.main(["--rounds", "1"]) == 0
    out = capsys.readouterr().out
    assert "LogAppender (redis-py, one buffer)" in out and "redis-py pipeline" in out
