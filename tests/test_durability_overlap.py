"""A step's log entry travels while the step runs (durability mode log, both on-redis-error modes):
what happens when Redis fails inside that window. The failure is injected at the one point a real
Redis death cannot be timed: between sending the entry and reading its confirmation."""

from __future__ import annotations

import numpy as np
import pytest
from test_recovery import CONFIG, KEY, actions_for, assert_same_games, durable, play

from gameserver.fleet.recovery import recover
from gameserver.fleet.store import FleetStore, LogAppender, StoreUnavailableError
from gameserver.pool import GamePool
from gameserver.wire.errors import as_service_error


@pytest.fixture
def store(redis_server):
    return FleetStore(redis_server.url, "overlap", ttl_s=600, timeout_s=0.5)


def redis_dies_before_the_confirmation(self: LogAppender) -> None:
    self._raw.connection.disconnect()  # what a failed read does: the reply is gone with the connection
    raise StoreUnavailableError("redis unavailable: ConnectionError: connection closed by Redis")


def test_fail_mode_a_step_whose_entry_fails_while_it_runs_is_applied_and_not_acknowledged(store, monkeypatch):
    durability, pool = durable(store, retry_s=0.0, snapshot_every=4)
    reference = GamePool(CONFIG, 8)
    for p in (pool, reference):
        ids = p.create(8, key_hash=KEY)
    play([reference, pool], 5, np.random.default_rng(0), churn=False)
    moves = actions_for(reference, ids, 5)
    monkeypatch.setattr(LogAppender, "receive", redis_dies_before_the_confirmation)
    with pytest.raises(StoreUnavailableError) as error:
        pool.step(ids, moves)
    monkeypatch.undo()
    assert error.value.applied
    status = as_service_error(error.value)
    # not UNAVAILABLE, which promises nothing changed: a blind retry would play the step twice
    assert status.code.name == "ABORTED" and "applied but its log entry was not confirmed" in status.details
    reference.step(ids, moves)  # it took effect here: the caller reads the games before retrying
    assert_same_games(reference, pool, ids)
    assert durability.degraded  # not durable until the pool has rewritten its records

    play([reference, pool], 5, np.random.default_rng(1), churn=False)  # the first call resynchronises
    assert not durability.degraded
    durability.close(flush=False)
    fresh = GamePool(CONFIG, 4)
    recover(store, fresh, key_hashes=[KEY])
    assert_same_games(reference, fresh, reference.ids)


def test_a_refused_step_before_its_entry_left_changes_nothing(redis_server, store):
    durability, pool = durable(store, retry_s=0.0)
    ids = pool.create(4, key_hash=KEY)
    state = {name: a.copy() for name, a in pool.batch.arrays().items()}
    redis_server.kill()
    with pytest.raises(StoreUnavailableError) as error:
        pool.step(ids, actions_for(pool, ids, 0))
    assert not error.value.applied
    assert "changed nothing" in as_service_error(error.value).details
    for name, array in pool.batch.arrays().items():
        np.testing.assert_array_equal(array, state[name], err_msg=name)
    durability.close(flush=False)


def test_deferred_confirmation_keeps_records_and_log_consistent(store):
    """A server's pools confirm a step's entry after building the reply; snapshot rounds (every
    step here) and the next call wait for it, so recovery stays exact."""
    durability, pool = durable(store, snapshot_every=1)
    pool.defer_confirmation = True
    reference = GamePool(CONFIG, 8)
    for p in (pool, reference):
        ids = p.create(8, key_hash=KEY)
    for t in range(30):
        moves = actions_for(reference, ids, t)
        reference.step(ids, moves)
        pool.step(ids, moves)
        if t % 3:  # otherwise the next call confirms it first
            pool.confirm()
        if t % 7 == 3:
            reference.reset(ids[:2])
            pool.reset(ids[:2])
    pool.confirm()
    assert not durability.degraded
    durability.close(flush=False)
    fresh = GamePool(CONFIG, 4)
    recover(store, fresh, key_hashes=[KEY])
    assert_same_games(reference, fresh, reference.ids)


def test_deferred_confirmation_failing_raises_applied_at_confirm(store, monkeypatch):
    durability, pool = durable(store, retry_s=0.0)
    pool.defer_confirmation = True
    ids = pool.create(4, key_hash=KEY)
    monkeypatch.setattr(LogAppender, "receive", redis_dies_before_the_confirmation)
    pool.step(ids, actions_for(pool, ids, 0))  # returns: the entry is only confirmed in confirm()
    with pytest.raises(StoreUnavailableError) as error:
        pool.confirm()
    monkeypatch.undo()
    assert error.value.applied and durability.degraded
    assert pool.observe(ids).tick.tolist() == [1] * 4
    durability.close(flush=False)
