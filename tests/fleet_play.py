"""Self-play through a fleet that may fail under it, checked against an in-process reference.

A Trainer plays batches of games (one placement key each) through a FleetClient, one
SubmitBatchActions per batch per round, and keeps a reference GamePool per batch that
steps exactly the acknowledged actions. When a call fails (a shard killed, Redis down),
the trainer reads the games' views until the fleet answers, and decides from them whether
the failed call was applied after all (a log entry written, the reply lost): the views
must equal the reference either before or after that call, nothing else.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np

from gameserver.agents import expander_actions, random_actions
from gameserver.client import FleetClient, GameFleetError
from gameserver.engine import GameConfig
from gameserver.fleet.recovery import recover
from gameserver.fleet.store import FleetStore
from gameserver.pool import GamePool
from gameserver.sharding import HashRing, placement_hash

CONFIG = GameConfig(height=8, width=8, max_ticks=5000)
_FIELDS = ("codes", "armies", "land", "army", "tick")


@dataclass
class Batch:
    key: str
    ids: np.ndarray  # the fleet's ids
    reference: GamePool
    ref_ids: np.ndarray
    acked: int = 0  # acknowledged steps (including a failed call found applied)
    views: object = None  # the last views the fleet sent
    failures: list[GameFleetError] = field(default_factory=list)


def keys_on(shards: list[str], prefix: str) -> list[str]:
    """One placement key per shard (by the ring every router and shard builds from the registry)."""
    ring, keys = HashRing(sorted(shards)), {}
    for i in range(1000):
        keys.setdefault(ring.shard_of_key(f"{prefix}{i}"), f"{prefix}{i}")
    return [keys[s] for s in shards]


def views_equal(views: object, reference: GamePool, ids: np.ndarray) -> bool:
    expected = reference.observe(ids)
    return all(np.array_equal(getattr(views, name), getattr(expected, name)) for name in _FIELDS)


class Trainer:
    def __init__(self, client: FleetClient, keys: list[str], games: int, seed: int = 0) -> None:
        self.client = client
        self.rng = np.random.default_rng(seed)
        self.batches = []
        for key in keys:
            seeds = self.rng.integers(0, 2**62, games)
            created = client.create(games, CONFIG, seeds=seeds, placement_key=key)
            reference = GamePool(CONFIG, games)
            ref_ids = reference.create(games, seeds, key_hash=placement_hash(key))
            batch = Batch(key, created.ids, reference, ref_ids, views=created.observations)
            assert views_equal(batch.views, reference, ref_ids)
            self.batches.append(batch)

    def actions(self, batch: Batch) -> np.ndarray:
        v = batch.views
        args = (v.codes, v.armies, v.tick, CONFIG.height, CONFIG.width, batch.acked)
        moves = expander_actions(*args)
        moves[:, 1] = random_actions(*args)[:, 1]
        return moves

    def round(self, timeout_s: float = 30.0) -> None:
        """One step of every batch; a failed call is retried until the fleet serves it (or it
        turns out applied), so every round advances every game by exactly one tick."""
        for batch in self.batches:
            self.step(batch, timeout_s)

    def step(self, batch: Batch, timeout_s: float = 30.0) -> None:
        moves = self.actions(batch)
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                batch.views = self.client.step(batch.ids, moves).observations
                self._apply(batch, moves)
                return
            except GameFleetError as error:
                batch.failures.append(error)
                if self._resync(batch, moves, deadline):
                    return

    def _apply(self, batch: Batch, moves: np.ndarray) -> None:
        batch.reference.step(batch.ref_ids, moves)
        batch.acked += 1

    def _resync(self, batch: Batch, moves: np.ndarray, deadline: float) -> bool:
        """Read the games' views once the fleet answers; True when the failed call was applied."""
        while True:
            try:
                views = self.client.states(batch.ids)
                break
            except GameFleetError as error:
                if time.monotonic() > deadline:
                    raise AssertionError(f"the fleet did not serve {batch.key} again: {error}") from error
                time.sleep(0.05)
        batch.views = views
        if views_equal(views, batch.reference, batch.ref_ids):
            if time.monotonic() > deadline:
                raise AssertionError(f"{batch.key}: the fleet kept refusing the step: {batch.failures[-1]}")
            time.sleep(0.02)
            return False
        self._apply(batch, moves)  # applied (logged) though unacknowledged: it must be exactly that
        assert views_equal(views, batch.reference, batch.ref_ids), f"{batch.key}: state lost or corrupt"
        return True


def recovered_equal_reference(redis_url: str, fleet: str, batches: list[Batch]) -> None:
    """Recover every game from Redis alone (the shards are dead) and compare full states bit for bit."""
    store = FleetStore(redis_url, fleet, ttl_s=600)
    pools: list[GamePool] = []

    def into(config: GameConfig, autoreset: bool) -> GamePool:
        pools.append(GamePool(config, 1, autoreset=autoreset))
        return pools[-1]

    keys = [placement_hash(b.key) for b in batches]
    ids = recover(store, into, key_hashes=keys)
    assert ids.size == sum(b.ids.size for b in batches)
    (pool,) = pools
    for batch in batches:
        mine, theirs = pool.slots_of(batch.ids), batch.reference.slots_of(batch.ref_ids)
        for name, array in batch.reference.batch.arrays().items():
            np.testing.assert_array_equal(
                getattr(pool.batch, name)[mine], array[theirs], err_msg=f"{batch.key}: {name}"
            )


def wait_for(condition: object, what: str, timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)
