"""Given maps: generals-bots grid strings and generals.io replays loaded into games of a pool."""

from __future__ import annotations

import numpy as np
import pytest
from peer_adapter import PEER_AGENTS, our_state, peer_game, peer_state
from test_replays import play_to_the_end

from gameserver.engine import GameBatch, GameConfig, generate
from gameserver.engine.config import CITY, GENERAL, MOUNTAIN, PLAIN
from gameserver.engine.maps import NO_STRUCTURE, GameMap, MapBatch, load_maps
from gameserver.pool import GamePool
from gameserver.rl.replay_files import dumps, export_replay, import_replay, replay_game
from gameserver.wire import codec

GRID = """
A..#....
.3.#..x.
...#....
........
..#.9...
.#.....B
"""
# 6x8, the most cities of a game: round(0.07 * 48) = 3
CONFIG = GameConfig(6, 8, city_density=0.07, min_general_distance=3, max_ticks=200)


def test_a_grid_loaded_into_a_game_is_the_grid_given():
    game_map = GameMap.from_grid(GRID)
    assert game_map.to_grid() == GRID.strip()
    pool = GamePool(CONFIG, capacity=1)
    (game,) = pool.create(1, maps=[game_map])
    slot = pool.slots_of([game])[0]
    batch = pool.batch
    assert GameMap.of_game(batch, slot) == game_map
    assert GameMap.of_game(batch, slot).to_grid() == GRID.strip()
    # the same start generals-bots makes of the same string: armies, ownership, neutral land
    peer = peer_game(batch.terrain[slot], batch.armies[slot], batch.generals[slot], 6, 8)
    np.testing.assert_array_equal(
        our_state(batch.armies[slot], batch.owner[slot], batch.terrain[slot], 6, 8), peer_state(peer)
    )
    assert batch.tick[slot] == 0 and batch.alive[slot].all() and batch.winner[slot] == -1


def test_a_grid_game_plays_as_generals_bots_plays_the_same_string():
    game_map = GameMap.from_grid(GRID)
    pool = GamePool(CONFIG, capacity=1)
    ids = pool.create(1, maps=[game_map])
    slot = pool.slots_of(ids)[0]
    peer = peer_game(pool.batch.terrain[slot], pool.batch.armies[slot], pool.batch.generals[slot], 6, 8)
    rng = np.random.default_rng(0)
    for _ in range(120):
        bits = np.unpackbits(pool.masks(ids)[0], axis=-1, bitorder="little")[:, : CONFIG.tiles * 4]
        moves = np.array([rng.choice(np.flatnonzero(row)) if row.any() else -1 for row in bits])
        flat = np.where(moves < 0, -1, moves * 2).astype(np.int32)
        pool.step(ids, flat[None], observe=False)
        peer_actions = {
            agent: [1, 0, 0, 0, 0] if m < 0 else [0, m // 4 // 8, m // 4 % 8, m % 4, 0]
            for agent, m in zip(PEER_AGENTS, moves, strict=True)
        }
        peer.step(peer_actions)
        batch = pool.batch
        np.testing.assert_array_equal(
            our_state(batch.armies[slot], batch.owner[slot], batch.terrain[slot], 6, 8), peer_state(peer)
        )


def test_maps_with_different_city_counts_share_one_batch_and_grow_right():
    """0, 2 and 3 cities under a config of 3; a general on the last tile: the padding of a map
    with fewer cities must grow nothing (an index -1 would wrap onto that tile)."""
    no_cities = GameMap.from_grid("A.......\n........\n...##...\n........\n........\n.......B")
    two = GameMap.from_grid("A.......\n..1.....\n...##...\n.....x..\n........\n.......B")
    three = GameMap.from_grid(GRID)
    pool = GamePool(CONFIG, capacity=4)
    ids = pool.create(3, maps=[no_cities, two, three])
    slots = pool.slots_of(ids)
    structures = pool.batch.structures[slots]
    assert (structures[:, :3] == NO_STRUCTURE).sum(axis=1).tolist() == [3, 1, 0]
    for _ in range(4):
        pool.step(ids, np.full((3, 2), -1, np.int32), observe=False)
    last = CONFIG.tiles - 1
    assert pool.batch.armies[slots, last].tolist() == [3, 3, 3]  # the general: 1 + 2 growths
    assert pool.batch.armies[slots[1], 1] == 0  # plain stays plain
    assert pool.batch.armies[slots[1], [10, 29]].tolist() == [41, 50]  # neutral cities do not grow
    state = pool.snapshot(ids)  # a snapshot of padded games restores
    other = GamePool(CONFIG, capacity=4)
    other.adopt(ids, codec.decode_snapshot(state))
    np.testing.assert_array_equal(other.batch.structures[other.slots_of(ids)], structures)


def test_a_game_from_a_replays_map_replays_to_the_replays_result(tmp_path):
    config = GameConfig(8, 8, max_ticks=300)
    first, final, actions = play_to_the_end(config, 3)  # player 0 wins at tick 62
    path = tmp_path / "game.json"
    path.write_text(dumps(export_replay(first, 0, actions, winner=int(final.winner[0]))))
    replay = import_replay(path)  # a path, as well as the text
    assert replay.map == GameMap.of_game(first, 0)
    pool = GamePool(replay.config, capacity=2)
    ids = pool.create(1, maps=[replay.map])
    for row in replay.actions:
        pool.step(ids, row[None], observe=False)
    slot = pool.slots_of(ids)[0]
    assert pool.batch.winner[slot] == final.winner[0] != -1
    for name in ("armies", "owner", "terrain", "alive", "tick", "status"):
        np.testing.assert_array_equal(getattr(pool.batch, name)[slot], getattr(final, name)[0], err_msg=name)
    np.testing.assert_array_equal(replay_game(import_replay(str(path))).owner, final.owner)


def test_a_map_game_exports_and_replays_with_fewer_cities_than_its_config():
    pool = GamePool(CONFIG, capacity=1)
    two = GameMap.from_grid("A.......\n..1.....\n...##...\n.....x..\n........\n.......B")
    ids = pool.create(1, maps=[two])
    first = GameBatch.allocate(CONFIG, 1)
    for name, array in pool.batch.arrays().items():
        getattr(first, name)[0] = array[pool.slots_of(ids)[0]]
    actions = np.array([[(0 * 4 + 3) * 2, -1]] * 3, np.int32)
    replay = import_replay(dumps(export_replay(first, 0, actions)))
    assert replay.config == CONFIG and replay.map == two
    assert replay_game(replay).owner[0, 1] == 1


def test_reset_onto_given_maps_keeps_the_ids():
    pool = GamePool(CONFIG, capacity=2)
    ids = pool.create(2)
    game_map = GameMap.from_grid(GRID)
    pool.reset(ids[1:], maps=[game_map])
    assert GameMap.of_game(pool.batch, pool.slots_of(ids[1:])[0]) == game_map
    assert GameMap.of_game(pool.batch, pool.slots_of(ids[:1])[0]) != game_map


@pytest.mark.parametrize(
    "maps, problem",
    [
        ([GameMap.from_grid("A..\n...\n..B\n...")], "4x3"),
        ([GameMap.from_grid(GRID.replace(".", "1", 1))], "4 cities"),
        ("A..B", "one map per game"),
        ([], "one map per game"),
    ],
)
def test_maps_that_do_not_fit_change_nothing(maps, problem):
    pool = GamePool(CONFIG, capacity=1)
    before = {name: array.copy() for name, array in pool.batch.arrays().items()}
    with pytest.raises(ValueError, match=problem):
        pool.create(1, maps=maps)
    assert pool.active_games == 0 and pool.capacity == 1
    assert all(np.array_equal(before[name], array) for name, array in pool.batch.arrays().items())


@pytest.mark.parametrize(
    "grid, problem",
    [
        ("A..\n..", "every row as long"),
        ("A..\n.?B", "'\\?'"),
        ("A..\n..A", "general letter"),
        ("A..\n.C.", "'C'"),
        ("A..\n...", "2 to 8 generals"),
    ],
)
def test_bad_grid_strings_are_refused_naming_the_problem(grid, problem):
    with pytest.raises(ValueError, match=problem):
        GameMap.from_grid(grid)


def test_generated_maps_read_back_as_their_own_grid():
    """A generated start written as a grid and read back is the same map."""
    batch = GameBatch.allocate(GameConfig(10, 10), 3)
    generate(batch, [0, 1, 2], [1, 2, 3])
    for slot in range(3):
        game_map = GameMap.of_game(batch, slot)
        assert GameMap.from_grid(game_map.to_grid()) == game_map
        assert (game_map.terrain.reshape(-1) == batch.terrain[slot]).all()
        assert set(np.unique(game_map.terrain).tolist()) <= {PLAIN, MOUNTAIN, CITY, GENERAL}
        assert (game_map.terrain.reshape(-1)[batch.generals[slot]] == GENERAL).all()


def test_import_replay_names_a_missing_file(tmp_path):
    with pytest.raises(ValueError, match=r"cannot read .*missing\.json"):
        import_replay(str(tmp_path / "missing.json"))
    with pytest.raises(ValueError, match="JSONDecodeError"):
        import_replay("{")


def _one_map_at_a_time(config: GameConfig, maps: list[GameMap]) -> GameBatch:
    """load_maps as it was written first, map by map: the vectorised one must equal it."""
    fresh = GameBatch.allocate(config, len(maps))
    fresh.structures[:] = NO_STRUCTURE
    for i, game_map in enumerate(maps):
        cities = game_map.cities
        fresh.terrain[i] = game_map.terrain.reshape(-1)
        fresh.armies[i] = game_map.armies.reshape(-1)
        fresh.armies[i, game_map.generals] = 1
        fresh.owner[i, game_map.generals] = np.arange(1, config.players + 1)
        fresh.generals[i] = game_map.generals
        fresh.structures[i, : cities.size] = cities
        fresh.structures[i, config.cities :] = game_map.generals
    fresh.alive[:] = True
    return fresh


def test_a_map_batch_loads_bit_for_bit_as_one_map_at_a_time():
    config = GameConfig(9, 7, players=3, city_density=0.1)
    generated = GameBatch.allocate(config, 12)
    generate(generated, np.arange(12), np.arange(12) + 100)
    maps = [GameMap.of_game(generated, slot) for slot in range(12)]
    fewer = maps[5].terrain.copy()
    fewer[fewer == CITY] = PLAIN  # no cities at all
    maps[5] = GameMap(fewer, np.zeros_like(maps[5].armies), maps[5].generals)
    batch = MapBatch.of(maps)
    assert len(batch) == 12 and all(batch.game_map(i) == maps[i] for i in range(12))
    expected = _one_map_at_a_time(config, maps)
    for given in (maps, batch):
        loaded = GameBatch.allocate(config, 12)
        load_maps(loaded, np.arange(12), given, np.arange(12))
        for name, array in expected.arrays().items():
            if name != "seed":
                np.testing.assert_array_equal(getattr(loaded, name), array, err_msg=name)
        assert loaded.seed.tolist() == list(range(12))


def test_a_map_batch_takes_any_integer_dtype_range_checked():
    game_map = GameMap.from_grid(GRID)
    wide = MapBatch(
        game_map.terrain[None].astype(np.int64),
        game_map.armies[None].astype(np.uint64),
        game_map.generals[None].astype(np.int64),
    )
    assert (
        wide.terrain.dtype == np.uint8 and wide.armies.dtype == np.int32 and wide.generals.dtype == np.int16
    )
    assert wide.game_map(0) == game_map
    with pytest.raises(ValueError, match="terrain must hold integers"):
        MapBatch(game_map.terrain[None].astype(np.float32), game_map.armies[None], game_map.generals[None])


def _bad(change) -> MapBatch:
    ok = MapBatch.of([GameMap.from_grid(GRID)] * 3)
    terrain, armies, generals = ok.terrain.copy(), ok.armies.astype(np.int64), ok.generals.copy()
    change(terrain, armies, generals)
    return MapBatch(terrain, armies, generals)


@pytest.mark.parametrize(
    "change, problem",
    [
        (lambda t, a, g: t.__setitem__((1, 2, 2), 7), r"maps\[1\]: terrain codes"),
        (lambda t, a, g: g.__setitem__((2, 1), 48), r"maps\[2\]: generals must be tile indices in \[0, 48\)"),
        (lambda t, a, g: g.__setitem__((0, 1), 0), r"maps\[0\]: generals must be distinct"),
        (lambda t, a, g: t.__setitem__((2, 0, 1), GENERAL), r"maps\[2\]: the GENERAL tiles"),
        (lambda t, a, g: a.__setitem__((1, 1, 1), 1 << 31), r"maps\[1\]: city armies"),
        (lambda t, a, g: a.__setitem__((1, 1, 1), -1), r"maps\[1\]: city armies"),
    ],
)
def test_a_bad_map_in_a_batch_is_named_with_its_problem(change, problem):
    with pytest.raises(ValueError, match=problem):
        _bad(change)


def test_a_map_batch_that_does_not_fit_the_config_changes_nothing():
    pool = GamePool(CONFIG, capacity=1)
    before = {name: array.copy() for name, array in pool.batch.arrays().items()}
    crowded = GameMap.from_grid(GRID.replace(".", "1", 1))  # 4 cities, the config holds 3
    for maps, problem in (
        (MapBatch.of([GameMap.from_grid(GRID), crowded]), r"maps\[1\] has 4 cities"),
        (MapBatch.of([GameMap.from_grid(GRID)]), "one map per game: 2 games, 1 maps"),
        (MapBatch.of([GameMap.from_grid("A...\n....\n....\n...B")] * 2), "the maps are 4x4"),
    ):
        with pytest.raises(ValueError, match=problem):
            pool.create(2, maps=maps)
    assert pool.active_games == 0 and pool.capacity == 1
    assert all(np.array_equal(before[name], array) for name, array in pool.batch.arrays().items())
