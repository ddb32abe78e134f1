"""Checkpoints: bit-exact resume at any recorded step, retention, filesystem and Redis storage."""

import numpy as np
import pytest
from redis_fixture import RedisServer

from gameserver.agents import random_actions
from gameserver.engine import GameConfig
from gameserver.fleet.store import FleetStore
from gameserver.pool import GamePool
from gameserver.rl.checkpoints import (
    Checkpoint,
    CheckpointManager,
    FileCheckpoints,
    RedisCheckpoints,
    load_checkpoints,
    resume,
)

CONFIG = GameConfig(8, 8, max_ticks=40)  # short episodes: autoresets happen between checkpoints


def play(pool, ids, ticks, manager=None, seed=0):
    """Random legal moves; every tick's actions are returned (and recorded when a manager is given)."""
    played = []
    obs = pool.observe(ids)
    for tick in range(ticks):
        actions = random_actions(obs.codes, obs.armies, obs.tick, CONFIG.height, CONFIG.width, seed + tick)
        obs = pool.step(ids, actions).observation
        played.append(actions)
        if manager is not None:
            manager.record(actions)
    return played


def states_by_step(storage, name, ticks):
    """Record a run of `ticks` steps; returns the exact snapshot after every step."""
    pool = GamePool(CONFIG, 6, autoreset=True, seed=4)
    ids = pool.create(6)
    manager = CheckpointManager(storage, name, pool, ids, every=10, keep=100)
    snapshots = [pool.snapshot(ids)]
    obs = pool.observe(ids)
    for tick in range(ticks):
        actions = random_actions(obs.codes, obs.armies, obs.tick, CONFIG.height, CONFIG.width, tick)
        obs = pool.step(ids, actions).observation
        manager.record(actions)
        snapshots.append(pool.snapshot(ids))
    return ids, snapshots


@pytest.fixture
def files(tmp_path):
    return FileCheckpoints(tmp_path / "checkpoints")


def test_resume_at_every_recorded_step_is_bit_exact(files):
    ids, snapshots = states_by_step(files, "run", 95)
    assert [c.step for c in load_checkpoints(files, "run")] == [0, 10, 20, 30, 40, 50, 60, 70, 80, 90]
    for step in (0, 1, 9, 10, 37, 40, 41, 90):  # on checkpoints and between them, across autoresets
        pool, resumed_ids = resume(files, "run", step)
        np.testing.assert_array_equal(resumed_ids, ids)
        assert pool.snapshot(ids) == snapshots[step], step


def test_resume_without_a_step_takes_the_newest_checkpoint_and_plays_on_identically(files):
    pool = GamePool(CONFIG, 4, autoreset=True, seed=9)
    ids = pool.create(4)
    manager = CheckpointManager(files, "run", pool, ids, every=7, keep=3)
    play(pool, ids, 30, manager)  # checkpoints at 0, 7, 14, 21, 28
    resumed, resumed_ids = resume(files, "run")
    assert resumed.autoreset and resumed.config == CONFIG
    original = GamePool(CONFIG, 4, autoreset=True, seed=9)
    original.create(4)
    play(original, ids, 28)
    assert original.snapshot(ids) == resumed.snapshot(resumed_ids)
    play(original, ids, 25, seed=100)
    play(resumed, resumed_ids, 25, seed=100)
    assert original.snapshot(ids) == resumed.snapshot(resumed_ids)


def test_retention_keeps_the_newest_k(files):
    pool = GamePool(CONFIG, 2, seed=1)
    ids = pool.create(2)
    manager = CheckpointManager(files, "run", pool, ids, every=5, keep=3)
    play(pool, ids, 32, manager)
    assert files.numbers("run") == [4, 5, 6]
    assert [c.step for c in load_checkpoints(files, "run")] == [20, 25, 30]
    manager.save()  # off schedule: the 2 steps since 30
    kept = load_checkpoints(files, "run")
    assert [c.step for c in kept] == [25, 30, 32] and kept[-1].actions.shape == (2, 2, 2)
    assert len(list((files.directory / "run").iterdir())) == 3  # no temporary files left behind


def test_steps_outside_the_kept_checkpoints_are_refused(files):
    pool = GamePool(CONFIG, 2, seed=1)
    ids = pool.create(2)
    manager = CheckpointManager(files, "run", pool, ids, every=5, keep=2)
    play(pool, ids, 20, manager)  # kept: steps 15 and 20
    with pytest.raises(ValueError, match="not covered"):
        resume(files, "run", 14)
    with pytest.raises(ValueError, match="not covered"):
        resume(files, "run", 21)
    resume(files, "run", 17)
    with pytest.raises(FileNotFoundError):
        resume(files, "nothing")


def test_a_name_holds_one_run(files):
    pool = GamePool(CONFIG, 2, seed=1)
    ids = pool.create(2)
    CheckpointManager(files, "run", pool, ids, every=5, keep=2)
    with pytest.raises(ValueError, match="exist already"):
        CheckpointManager(files, "run", pool, ids, every=5, keep=2)


@pytest.mark.parametrize(
    "change", ["bad every", "unknown ids", "actions of another shape", "bad name"],
)  # fmt: skip
def test_bad_manager_input_is_refused(files, change):
    pool = GamePool(CONFIG, 2, seed=1)
    ids = pool.create(2)
    with pytest.raises((ValueError, KeyError)):
        if change == "bad every":
            CheckpointManager(files, "run", pool, ids, every=0, keep=2)
        elif change == "unknown ids":
            CheckpointManager(files, "run", pool, ids + np.uint64(99), every=2, keep=2)
        elif change == "bad name":
            CheckpointManager(files, "../up", pool, ids, every=2, keep=2)
        else:
            CheckpointManager(files, "run", pool, ids, every=2, keep=2).record(np.zeros((3, 2), np.int32))


def test_corrupt_checkpoints_are_refused():
    with pytest.raises(ValueError, match="checkpoint"):
        Checkpoint.from_bytes(b"not a checkpoint")


def test_redis_storage_round_trips_and_expires_with_the_store_ttl(tmp_path):
    with RedisServer(tmp_path) as server:
        store = FleetStore(server.url, "fleet-ckpt", ttl_s=120)
        storage = RedisCheckpoints(store)
        ids, snapshots = states_by_step(storage, "run", 25)
        assert storage.numbers("run") == [0, 1, 2]
        pool, _ = resume(storage, "run", 17)
        assert pool.snapshot(ids) == snapshots[17]
        key = store.key("ckpt", "run", 2)
        assert 0 < store.redis.ttl(key) <= 120 and 0 < store.redis.ttl(store.key("ckpts", "run")) <= 120
        storage.delete("run", 0)
        assert storage.numbers("run") == [1, 2]
        with pytest.raises(FileNotFoundError):
            storage.load("run", 0)
