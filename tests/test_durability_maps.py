"""Durability of games on given maps: no seed regenerates them, so a kill must still recover them
bit for bit. A create's games are recorded before it returns; a reset onto given maps logs the
maps themselves ("maps" entries), replayed by recovery. The calls are played on a durable pool
(Durability.wrap) and a plain reference GamePool, the durable one is "killed" (its writer stops
without flushing) and its games recovered from a real redis-server into a fresh pool."""

from __future__ import annotations

import numpy as np
import pytest
from test_recovery import KEY, actions_for, assert_same_games, durable

from gameserver.engine import GameBatch, GameConfig, generate
from gameserver.engine.config import CITY, PLAIN
from gameserver.engine.maps import GameMap, MapBatch
from gameserver.fleet.durability import Durability
from gameserver.fleet.recovery import recover
from gameserver.fleet.store import FleetStore, StoreUnavailableError
from gameserver.pool import GamePool

CONFIG = GameConfig(height=8, width=8, max_ticks=60)  # test_recovery's: its durable() makes these


@pytest.fixture
def store(redis_server):
    return FleetStore(redis_server.url, "test", ttl_s=600, timeout_s=0.5)


def some_maps(n: int, seed: int) -> list[GameMap]:
    """Maps of CONFIG, every other one stripped of its cities (mixed city counts in one batch)."""
    batch = GameBatch.allocate(CONFIG, n)
    generate(batch, np.arange(n), np.arange(n) + seed)
    maps = []
    for slot in range(n):
        game_map = GameMap.of_game(batch, slot)
        if slot % 2:
            terrain = game_map.terrain.copy()
            terrain[terrain == CITY] = PLAIN
            game_map = GameMap(terrain, np.zeros_like(game_map.armies), game_map.generals)
        maps.append(game_map)
    return maps


def play(pools: list, steps: int, start: int = 0) -> None:
    reference = pools[0]
    for t in range(start, start + steps):
        ids = reference.ids
        moves = actions_for(reference, ids, t)
        for pool in pools:
            pool.step(ids, moves)


@pytest.mark.parametrize("autoreset", [False, True], ids=["no-autoreset", "autoreset"])
@pytest.mark.parametrize("snapshot_every", [1000, 3], ids=["replayed-from-the-log", "recorded-in-rounds"])
def test_log_mode_kill_recovers_games_on_given_maps_bit_exact(store, autoreset, snapshot_every):
    durability, pool = durable(store, autoreset=autoreset, seed=5, snapshot_every=snapshot_every)
    reference = GamePool(CONFIG, 8, autoreset=autoreset, seed=5)
    maps = some_maps(6, 100)
    seeds = np.arange(6, dtype=np.uint64) + 40
    for p in (pool, reference):
        p.create(6, seeds, key_hash=KEY, maps=maps)  # given maps
        p.create(4, key_hash=KEY)  # and generated ones, in the same pool
    play([reference, pool], 25)
    ids = reference.ids
    again = some_maps(4, 200)
    for p in (pool, reference):
        p.reset(ids[[1, 3, 6, 8]], maps=again)  # keeps the seeds
        p.reset(ids[[0, 9]], seeds=np.array([7, 2**63 + 1], np.uint64), maps=MapBatch.of(again[:2]))
        p.reset(ids[[2]])  # a generated map among them
    play([reference, pool], 40, start=25)
    durability.close(flush=False)  # the kill: queued snapshots are dropped

    fresh = GamePool(CONFIG, 4, autoreset=autoreset)
    recovered = recover(store, fresh, key_hashes=[KEY])
    np.testing.assert_array_equal(recovered, reference.ids)
    assert_same_games(reference, fresh, reference.ids)


def test_a_maps_entry_is_replayed_when_no_record_follows_it(store):
    """The reset onto maps is only in the log (no round after it): recovery rebuilds it from there."""
    durability, pool = durable(store, snapshot_every=1000)
    reference = GamePool(CONFIG, 8)
    for p in (pool, reference):
        p.create(3, key_hash=KEY, maps=some_maps(3, 1))
    pool.flush()  # every game recorded: what follows is in the log only
    given = some_maps(3, 50)
    for p in (pool, reference):
        p.reset(p.ids, maps=given)
    play([reference, pool], 5)
    kinds = [entry.kind for entry in store.read_log("shard-a", (0, 0))]
    assert "maps" in kinds and "reset" not in kinds
    durability.close(flush=False)
    fresh = GamePool(CONFIG, 4)
    recover(store, fresh, key_hashes=[KEY])
    assert_same_games(reference, fresh, reference.ids)
    first = GameMap.of_game(fresh.batch, fresh.slots_of(reference.ids[:1])[0])
    assert first.terrain.tolist() == given[0].terrain.tolist()  # the map given, not a generated one


def test_bad_maps_log_nothing_and_change_nothing(store):
    durability, pool = durable(store)
    ids = pool.create(2, key_hash=KEY, maps=some_maps(2, 3))
    before = store.log_length("shard-a")
    state = {name: a.copy() for name, a in pool.batch.arrays().items()}
    crowded = GameMap.from_grid("A1234567\n" + "........\n" * 6 + ".......B")  # 7 cities, config holds 3
    for maps in ([crowded, crowded], some_maps(1, 3), [GameMap.from_grid("A...\n....\n....\n...B")] * 2):
        with pytest.raises(ValueError):
            pool.reset(ids, maps=maps)
        with pytest.raises(ValueError):
            pool.create(2, key_hash=KEY, maps=maps)
    assert store.log_length("shard-a") == before
    for name, array in pool.batch.arrays().items():
        np.testing.assert_array_equal(array, state[name], err_msg=name)
    np.testing.assert_array_equal(pool.ids, ids)
    durability.close()


def test_off_mode_passes_maps_through():
    durability = Durability(None, "shard-a", "off")
    pool = durability.wrap(GamePool(CONFIG, 4))
    maps = some_maps(2, 9)
    ids = pool.create(2, maps=maps)
    pool.reset(ids[:1], maps=maps[1:])
    assert GameMap.of_game(pool.batch, pool.slots_of(ids[:1])[0]).terrain.tolist() == maps[1].terrain.tolist()
    durability.close()


def test_fail_mode_refuses_map_calls_while_redis_is_down_and_changes_nothing(redis_server, store):
    durability, pool = durable(store, retry_s=0.0)
    ids = pool.create(2, key_hash=KEY, maps=some_maps(2, 4))
    state = {name: a.copy() for name, a in pool.batch.arrays().items()}
    redis_server.kill()
    with pytest.raises(StoreUnavailableError):
        pool.reset(ids, maps=some_maps(2, 6))
    with pytest.raises(StoreUnavailableError):
        pool.create(2, key_hash=KEY, maps=some_maps(2, 6))
    np.testing.assert_array_equal(pool.ids, ids)
    for name, array in pool.batch.arrays().items():
        np.testing.assert_array_equal(
            array[pool.slots_of(ids)], state[name][pool.slots_of(ids)], err_msg=name
        )
    durability.close(flush=False)
