"""Fencing against a real redis-server (fencing.py, durability.py): once another shard fenced this
one, Redis refuses its writes and the shard refuses every change, in every recording mode and
both on-redis-error modes, so nothing it does after the fence is acknowledged or recorded."""

from __future__ import annotations

import time

import numpy as np
import pytest
from test_recovery import CONFIG, KEY, durable, play

from gameserver.fleet.registry import FencedError
from gameserver.fleet.store import FleetStore
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
