"""Fencing against a real redis-server (fencing.py, durability.py): once another shard fenced this
one, Redis refuses its writes and the shard refuses every change, in every recording mode and
both on-redis-error modes, so nothing it does after the fence is acknowledged or recorded."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest
from test_recovery import CONFIG, KEY, durable, play

from gameserver.fleet.recovery import recover
from gameserver.fleet.registry import FencedError
from gameserver.fleet.store import FleetStore, StoreUnavailableError
from gameserver.pool import GamePool
from gameserver.wire.errors import as_service_error


@pytest.fixture
def store(redis_server):
    return FleetStore(redis_server.url, "fencing", ttl_s=600, timeout_s=0.5)


def wait_until(condition, timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


@pytest.mark.parametrize(
    ("mode", "on_error"), [("log", "fail"), ("log", "degrade"), ("snapshot", "fail")], ids=str
)
def test_a_fenced_shard_refuses_every_change_and_writes_nothing_after_the_fence(store, mode, on_error):
    durability, pool = durable(store, mode=mode, on_redis_error=on_error, snapshot_every=2)
    ids = pool.create(6, key_hash=KEY)
    play([pool], 4, np.random.default_rng(0), churn=False)
    pool.flush()
    records = store.redis.hgetall(store.key("snap", f"{KEY:08x}"))
    log_length = store.log_length("shard-a")
    store.fence("shard-a", by="shard-b")
    if mode == "snapshot":  # nothing synchronous to refuse: the next heartbeat finds the fence
        wait_until(lambda: durability.fenced)
    moves = np.full((ids.size, CONFIG.players), -1)
    with pytest.raises(FencedError) as refused:
        pool.step(ids, moves)
    for change in (lambda: pool.step(ids, moves), lambda: pool.create(2, key_hash=KEY), lambda: pool.flush()):
        with pytest.raises(FencedError):
            change()
    assert "FENCED by shard-b" in durability.fenced
    status = as_service_error(refused.value)
    assert status.code.name == "UNAVAILABLE" and "taken over by another shard" in status.details
    assert store.log_length("shard-a") == log_length
    assert store.redis.hgetall(store.key("snap", f"{KEY:08x}")) == records
    durability.close(flush=False)


def test_a_restarted_process_fences_the_one_before_it(store):
    """Two processes under one shard name (a restart while the old one still runs): the later
    one's hold fences the earlier, whose next log entry Redis refuses."""
    old_durability, old_pool = durable(store)
    ids = old_pool.create(4, key_hash=KEY)
    other = FleetStore(store.redis, store.fleet, ttl_s=600)
    new_durability, _ = durable(other)
    with pytest.raises(FencedError):
        old_pool.step(ids, np.full((ids.size, CONFIG.players), -1))
    assert store.holder_token("shard-a") == other.token("shard-a")
    for durability in (old_durability, new_durability):
        durability.close(flush=False)


def test_a_close_entry_outlives_a_trim_until_its_games_records_are_deleted(store, monkeypatch):
    """Closes are logged, their record deletions queued behind a snapshot round being written; that
    round's trim must keep the close entries (the records still say the games are live). Here the
    deletions then fail, and a kill follows: recovery must not bring the closed games back."""
    durability, pool = durable(store, snapshot_every=1000)
    ids = pool.create(4, key_hash=KEY)
    pool.step(ids, np.full((4, CONFIG.players), -1))
    writing, go_on, dropping = threading.Event(), threading.Event(), threading.Event()
    put_games, drop_games = store.put_games, store.drop_games

    def slow_put(*args, **kwargs):
        writing.set()
        go_on.wait(10)
        return put_games(*args, **kwargs)

    def failing_drop(*args, **kwargs):
        dropping.set()  # the round and its trim are done: the writer took the deletion next
        raise StoreUnavailableError("redis unavailable: the test drops no record")

    monkeypatch.setattr(store, "put_games", slow_put)
    monkeypatch.setattr(store, "drop_games", failing_drop)
    pool._round()  # a covering snapshot round, queued
    assert writing.wait(10)
    pool.release(ids[:1])  # logged now; its record deletion waits behind the round
    pool.release(ids[1:2])  # a later entry: the round's trim would reach up to here
    go_on.set()
    assert dropping.wait(10)
    assert [entry.kind for entry in store.read_log("shard-a", (0, 0))][-2:] == ["close", "close"]
    durability.close(flush=False)  # killed with the deletion undone
    monkeypatch.setattr(store, "drop_games", drop_games)
    store.hold("recovering")
    fresh = GamePool(CONFIG, 4)
    np.testing.assert_array_equal(recover(store, fresh, key_hashes=[KEY], writer="recovering"), ids[2:])
