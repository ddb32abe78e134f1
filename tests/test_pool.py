"""GamePool: ids never reused, slots reused, growth keeps games, resets in place, autoreset, adoption."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gameserver.engine import GameBatch, GameConfig, generate, observe
from gameserver.pool import GamePool, IdSource, PoolFullError, UnknownGameError, derive_seeds
from gameserver.sharding import key_hashes, placement_hash
from gameserver.wire import codec

CONFIG = GameConfig(height=6, width=7, players=2, max_ticks=40)


def legal_actions(pool: GamePool, ids: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A random legal move (or a pass, 1 in 8) for every player, from the pool's masks."""
    bits = np.unpackbits(pool.masks(ids), axis=-1, bitorder="little")[..., : pool.config.tiles * 4]
    scores = rng.random(bits.shape) * bits
    moves = scores.argmax(-1) * 2 + rng.integers(0, 2, scores.shape[:2])
    passes = (scores.max(-1) == 0) | (rng.random(scores.shape[:2]) < 0.125)
    return np.where(passes, -1, moves).astype(np.int32)


def passes(n: int) -> np.ndarray:
    return np.full((n, CONFIG.players), -1, np.int32)


def state(pool: GamePool, ids: np.ndarray) -> dict[str, np.ndarray]:
    """A copy of these games' exact state, in the order of ids."""
    slots = pool.slots_of(ids)
    return {name: a[slots].copy() for name, a in pool.batch.arrays().items()}


def same(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> bool:
    return a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)


def fresh_map(seed: int) -> dict[str, np.ndarray]:
    """The game the engine generates from one seed, outside any pool."""
    batch = GameBatch.allocate(CONFIG, 1)
    generate(batch, [0], [seed])
    return {name: a[:1] for name, a in batch.arrays().items()}


def test_ids_are_sequential_and_map_to_distinct_slots() -> None:
    pool = GamePool(CONFIG, capacity=8)
    ids = pool.create(5)
    assert ids.dtype == np.uint64 and ids.tolist() == [1, 2, 3, 4, 5]
    assert sorted(pool.slots_of(ids).tolist()) == [0, 1, 2, 3, 4]
    assert pool.active_games == 5 and pool.ids.tolist() == ids.tolist()


def test_ids_carry_the_placement_key_hash() -> None:
    pool = GamePool(CONFIG, capacity=4)
    key = placement_hash("trainer-7")
    ids = pool.create(2, key_hash=key)
    assert key_hashes(ids).tolist() == [key, key]
    assert (pool.create(1) & np.uint64(0xFFFFFFFF)).tolist() == [3]  # the local counter is per source
    assert np.array_equal(pool.slots_of(ids), [0, 1]) and pool.ids.tolist() == [3, *ids.tolist()]


def test_pools_sharing_an_id_source_never_share_an_id() -> None:
    source = IdSource()
    a = GamePool(CONFIG, capacity=2, id_source=source)
    b = GamePool(GameConfig(height=8, width=8), capacity=2, id_source=source)
    ids = np.concatenate([a.create(2), b.create(2), a.create(1)])
    assert len(set(ids.tolist())) == 5
    assert a.contains(ids).tolist() == [True, True, False, False, True]


def test_released_slot_is_reused_but_its_id_never_is() -> None:
    pool = GamePool(CONFIG, capacity=4)
    ids = pool.create(4)
    freed = pool.slots_of(ids[1:3])
    pool.release(ids[1:3])
    new = pool.create(2)
    assert set(new.tolist()).isdisjoint(ids.tolist())
    assert sorted(pool.slots_of(new).tolist()) == sorted(freed.tolist())
    with pytest.raises(UnknownGameError):
        pool.step(ids[1:2], passes(1))
    assert pool.capacity == 4


def test_unknown_ids_are_listed_and_nothing_changes() -> None:
    pool = GamePool(CONFIG, capacity=4)
    ids = pool.create(3)
    pool.release(ids[:1])
    before = state(pool, ids[1:])
    with pytest.raises(UnknownGameError) as caught:
        pool.step(np.array([ids[1], 99, ids[0], ids[2]], np.uint64), passes(4))
    assert isinstance(caught.value, KeyError)
    assert sorted(caught.value.ids.tolist()) == [int(ids[0]), 99]
    assert "[99, 1]" in str(caught.value)
    assert same(state(pool, ids[1:]), before)
    assert pool.contains(ids).tolist() == [False, True, True]


def test_error_lists_only_some_of_many_unknown_ids() -> None:
    pool = GamePool(CONFIG, capacity=2)
    with pytest.raises(UnknownGameError, match=r"and 92 more"):
        pool.observe(np.arange(100, 200))


@pytest.mark.parametrize(
    ("method", "args"),
    [
        ("step", (passes(2),)),
        ("reset", ()),
        ("release", ()),
        ("observe", ()),
        ("masks", ()),
    ],
)
def test_duplicate_ids_in_one_call_are_refused(method: str, args: tuple) -> None:
    pool = GamePool(CONFIG, capacity=4)
    ids = pool.create(3)
    before = state(pool, ids)
    with pytest.raises(ValueError, match=r"distinct.*\[2\]"):
        getattr(pool, method)(np.array([2, 2], np.uint64), *args)
    assert same(state(pool, ids), before) and pool.active_games == 3


@pytest.mark.parametrize(
    ("ids", "problem"),
    [
        (np.array([1.0]), "integers"),
        (np.array([-1, 1]), "non-negative"),
        (np.array([[1]]), "1-D"),
    ],
)
def test_malformed_ids_are_a_value_error(ids: np.ndarray, problem: str) -> None:
    pool = GamePool(CONFIG, capacity=2)
    pool.create(1)
    with pytest.raises(ValueError, match=problem):
        pool.slots_of(ids)


def test_bad_actions_change_no_game() -> None:
    pool = GamePool(CONFIG, capacity=4)
    ids = pool.create(3)
    before = state(pool, ids)
    actions = passes(3)
    actions[2, 1] = CONFIG.num_actions
    with pytest.raises(ValueError, match="out of range"):
        pool.step(ids, actions)
    assert same(state(pool, ids), before)


def test_growth_doubles_and_keeps_every_game_intact() -> None:
    pool = GamePool(CONFIG, capacity=2, max_games=64)
    ids = pool.create(2)
    rng = np.random.default_rng(0)
    for _ in range(5):
        pool.step(ids, legal_actions(pool, ids, rng))
    before = state(pool, ids)
    more = pool.create(3)
    assert pool.capacity == 8  # 2 -> 4 -> 8 holds 5 games
    assert same(state(pool, ids), before)
    assert np.array_equal(pool.slots_of(more), [2, 3, 4])
    pool.create(20)
    assert pool.capacity == 32 and same(state(pool, ids), before)


def test_growth_stops_at_max_games_with_a_clear_error() -> None:
    pool = GamePool(CONFIG, capacity=2, max_games=6)
    ids = pool.create(5)
    assert pool.capacity == 6  # doubling is capped at the limit
    before = state(pool, ids)
    with pytest.raises(PoolFullError, match="max_games=6") as caught:
        pool.create(2)
    assert isinstance(caught.value, ValueError)
    assert pool.active_games == 5 and pool.capacity == 6 and same(state(pool, ids), before)
    assert pool.create(1).tolist() == [6]  # the refused create consumed no id


def test_bad_seeds_neither_grow_the_pool_nor_use_ids() -> None:
    pool = GamePool(CONFIG, capacity=2)
    with pytest.raises(ValueError, match="one entry per new game"):
        pool.create(3, seeds=[1, 2])
    with pytest.raises(ValueError, match="non-negative"):
        pool.create(2, seeds=[1, -2])
    assert pool.capacity == 2 and pool.active_games == 0
    assert pool.create(1).tolist() == [1]


def test_create_with_seeds_gives_the_engine_map_of_that_seed() -> None:
    pool = GamePool(CONFIG, capacity=2)
    ids = pool.create(2, seeds=[11, 12])
    assert same(state(pool, ids[1:]), fresh_map(12))


def test_reset_regenerates_in_place_without_reallocating() -> None:
    pool = GamePool(CONFIG, capacity=4, seed=5)
    ids = pool.create(3)
    rng = np.random.default_rng(1)
    for _ in range(6):
        pool.step(ids, legal_actions(pool, ids, rng))
    batch, arrays, slots = pool.batch, pool.batch.arrays(), pool.slots_of(ids)
    untouched = state(pool, ids[2:])
    pool.reset(ids[:2])
    assert pool.batch is batch and all(a is arrays[k] for k, a in pool.batch.arrays().items())
    assert np.array_equal(pool.slots_of(ids), slots)
    first_seed = derive_seeds(5, ids[:1])
    assert same(state(pool, ids[:1]), fresh_map(int(derive_seeds(first_seed, ids[:1])[0])))
    assert pool.batch.tick[slots[:2]].tolist() == [0, 0]
    assert same(state(pool, ids[2:]), untouched)
    pool.reset(ids[1:2], seeds=[77])
    assert same(state(pool, ids[1:2]), fresh_map(77))


def test_each_reset_is_a_new_episode_with_a_new_map() -> None:
    pool = GamePool(CONFIG, capacity=1)
    ids = pool.create(1)
    seeds = []
    for _ in range(3):
        seeds.append(int(pool.batch.seed[pool.slots_of(ids)][0]))
        pool.reset(ids)
    assert len(set(seeds)) == 3


def test_step_writes_observations_into_a_wire_buffer() -> None:
    pool = GamePool(CONFIG, capacity=4)
    ids = pool.create(3)
    buffer, views = codec.allocate_observation(CONFIG, 3)
    result = pool.step(ids, passes(3), out=views)
    assert result.observation is views
    assert np.array_equal(views.codes, pool.observe(ids).codes)
    received = codec.unpack_observation(buffer.tobytes(), 3, CONFIG.players, CONFIG.tiles)
    assert received.tick.tolist() == [1, 1, 1]


def test_step_without_observe_returns_no_observation() -> None:
    pool = GamePool(CONFIG, capacity=2)
    ids = pool.create(2)
    result = pool.step(ids, passes(2), observe=False)
    assert result.observation is None and result.final_observation is None
    assert result.rewards.shape == (2, CONFIG.players) and not result.reset.any()


def test_without_autoreset_finished_games_stay_finished() -> None:
    pool = GamePool(GameConfig(height=6, width=7, max_ticks=3), capacity=2)
    ids = pool.create(2)
    for _ in range(3):
        result = pool.step(ids, passes(2))
    assert result.truncated.all() and not result.reset.any()
    assert pool.observe(ids).tick.tolist() == [3, 3]


def play(pool_seed: int, ticks: int) -> tuple[GamePool, np.ndarray, list]:
    """Random play with autoreset; returns the pool, its ids and every step result."""
    pool = GamePool(CONFIG, capacity=8, seed=pool_seed, autoreset=True)
    ids = pool.create(6)
    rng = np.random.default_rng(42)
    return pool, ids, [pool.step(ids, legal_actions(pool, ids, rng)) for _ in range(ticks)]


def test_autoreset_is_deterministic() -> None:
    pool_a, ids_a, results_a = play(pool_seed=3, ticks=100)
    pool_b, ids_b, results_b = play(pool_seed=3, ticks=100)
    assert same(state(pool_a, ids_a), state(pool_b, ids_b))
    for a, b in zip(results_a, results_b, strict=True):
        assert np.array_equal(a.reset, b.reset) and np.array_equal(a.rewards, b.rewards)
        assert np.array_equal(a.observation.codes, b.observation.codes)
    assert sum(int(r.reset.sum()) for r in results_a) >= 12  # every game finished at least twice
    pool_c, ids_c, _ = play(pool_seed=4, ticks=100)
    assert not np.array_equal(
        pool_c.batch.seed[pool_c.slots_of(ids_c)], pool_a.batch.seed[pool_a.slots_of(ids_a)]
    )


def test_autoreset_reports_the_finished_step_and_starts_the_next_episode() -> None:
    pool = GamePool(CONFIG, capacity=4, seed=8, autoreset=True)
    ids = pool.create(3)
    rng = np.random.default_rng(5)
    while True:
        ticks_before = pool.observe(ids).tick.copy()
        seeds_before = pool.batch.seed[pool.slots_of(ids)]
        result = pool.step(ids, legal_actions(pool, ids, rng))
        if result.reset.any():
            break
    rows = np.flatnonzero(result.reset)
    assert np.array_equal(result.reset, result.terminated | result.truncated)
    assert np.array_equal(result.final_observation.tick, ticks_before[rows] + 1)  # the last view
    assert (result.observation.tick[rows] == 0).all()  # the new episode's first view
    assert np.array_equal(result.observation.codes[rows], pool.observe(ids[rows]).codes)
    assert np.array_equal(
        pool.batch.seed[pool.slots_of(ids[rows])], derive_seeds(seeds_before[rows], ids[rows])
    )
    kept = np.flatnonzero(~result.reset)
    assert (result.observation.tick[kept] == ticks_before[kept] + 1).all()


def test_autoreset_without_observe_still_resets() -> None:
    pool = GamePool(GameConfig(height=6, width=7, max_ticks=2), capacity=2, autoreset=True)
    ids = pool.create(2)
    pool.step(ids, passes(2), observe=False)
    result = pool.step(ids, passes(2), observe=False)
    assert result.reset.all() and result.truncated.all() and result.final_observation is None
    assert pool.batch.tick[pool.slots_of(ids)].tolist() == [0, 0]


def test_masks_and_observe_follow_the_ids_order() -> None:
    pool = GamePool(CONFIG, capacity=4)
    ids = pool.create(3)
    reordered = ids[[2, 0, 1]]
    assert np.array_equal(pool.masks(reordered)[0], pool.masks(ids[2:])[0])
    assert np.array_equal(
        pool.observe(reordered).codes[1], observe(pool.batch, pool.slots_of(ids[:1])).codes[0]
    )


def test_memory_accounts_for_every_slot() -> None:
    pool = GamePool(CONFIG, capacity=4)
    small = pool.memory_bytes()
    assert small >= 4 * pool.batch.nbytes_per_game()
    pool.create(5)
    assert pool.memory_bytes() >= 8 * pool.batch.nbytes_per_game() > small


@pytest.mark.parametrize(
    "kwargs",
    [{"capacity": 0}, {"capacity": 8, "max_games": 4}, {"capacity": True}, {"seed": -1}, {"seed": 1 << 64}],
)
def test_bad_pool_parameters_are_refused(kwargs: dict) -> None:
    with pytest.raises(ValueError):
        GamePool(CONFIG, **kwargs)


def test_bad_key_hash_is_refused_and_uses_no_id() -> None:
    pool = GamePool(CONFIG, capacity=2)
    for key_hash in (-1, 1 << 32, True):
        with pytest.raises(ValueError, match="key_hash"):
            pool.create(1, key_hash=key_hash)
    assert pool.create(1).tolist() == [1]


def test_adopted_games_keep_their_ids_and_play_on_identically() -> None:
    key = placement_hash("migrating")
    old = GamePool(CONFIG, capacity=4, autoreset=True)
    ids = old.create(3, key_hash=key)
    rng = np.random.default_rng(3)
    for _ in range(30):
        old.step(ids, legal_actions(old, ids, rng))
    moved = ids[[2, 0]]
    new = GamePool(CONFIG, capacity=1, seed=99, autoreset=True)
    new.create(1, key_hash=placement_hash("resident"))
    new.adopt(moved, codec.decode_snapshot(old.snapshot(moved)))
    assert new.capacity == 4 and same(state(new, moved), state(old, moved))
    assert new.contains(ids).tolist() == [True, False, True]
    assert new.create(1, key_hash=key)[0] > ids.max()  # its counter moved past the adopted ids
    for _ in range(60):  # autoresets included: their seeds follow from the map seed and id alone
        actions = legal_actions(old, moved, rng)
        a, b = old.step(moved, actions), new.step(moved, actions)
        assert np.array_equal(a.reset, b.reset) and np.array_equal(a.observation.codes, b.observation.codes)
    assert same(state(new, moved), state(old, moved))


@pytest.mark.parametrize(
    ("ids", "config", "problem"),
    [
        ([1, 2], GameConfig(height=8, width=8), "differs from the pool"),
        ([1], CONFIG, "1 ids for a snapshot of 2 games"),
        ([5, 5], CONFIG, "distinct"),
        ([3, 4], CONFIG, r"already live in this pool: \[3\]"),
    ],
)
def test_bad_adoption_changes_nothing(ids: list[int], config: GameConfig, problem: str) -> None:
    source = GamePool(config, capacity=2)
    snapshot = codec.decode_snapshot(source.snapshot(source.create(2)))
    pool = GamePool(CONFIG, capacity=4)
    live = pool.create(3)
    before = state(pool, live)
    with pytest.raises(ValueError, match=problem):
        pool.adopt(np.array(ids, np.uint64), snapshot)
    assert same(state(pool, live), before) and pool.active_games == 3


@given(
    st.lists(
        st.tuples(st.sampled_from(["create", "release"]), st.integers(0, 5), st.integers(0, 3)), max_size=30
    )
)
@settings(max_examples=40, deadline=None)
def test_id_map_matches_a_dict_model(ops: list[tuple[str, int, int]]) -> None:
    pool = GamePool(CONFIG, capacity=1, max_games=64)
    model: dict[int, int] = {}  # id -> slot
    issued: set[int] = set()
    for op, n, key in ops:
        if op == "create":
            ids = pool.create(n, key_hash=key * 0x9E3779B1 % (1 << 32))
            assert issued.isdisjoint(ids.tolist())
            issued.update(ids.tolist())
            model.update(zip(ids.tolist(), pool.slots_of(ids).tolist(), strict=True))
        else:
            gone = sorted(model)[:n]
            pool.release(np.array(gone, np.uint64))
            for game in gone:
                del model[game]
        assert pool.ids.tolist() == sorted(model)
        assert len(set(model.values())) == len(model)  # one game per slot
        if model:
            assert pool.slots_of(np.array(list(model), np.uint64)).tolist() == list(model.values())


def test_a_selection_is_resolved_once_and_recognised_when_the_same_ids_come_again() -> None:
    pool = GamePool(CONFIG, 8)
    ids = pool.create(4)
    first = pool.select(ids)
    assert pool.select(ids.copy()) is first  # a trainer's batch, call after call
    assert pool.select(first) is first
    np.testing.assert_array_equal(first.slots, pool.slots_of(ids))


def test_a_callers_array_changed_after_select_does_not_change_the_selection() -> None:
    pool = GamePool(CONFIG, 8)
    ids = pool.create(4)
    chosen = pool.select(ids)
    ids[0] = ids[1]  # the caller reuses its buffer
    assert len(set(chosen.ids.tolist())) == 4
    with pytest.raises(ValueError, match="distinct"):
        pool.select(ids)  # the changed array is checked anew


def test_a_release_makes_earlier_selections_stale() -> None:
    pool = GamePool(CONFIG, 8)
    ids = pool.create(4)
    chosen = pool.select(ids)
    pool.release(ids[:1])
    with pytest.raises(UnknownGameError):
        pool.step(chosen, passes(4))  # re-resolved: the released game is named, nothing steps
    later = pool.select(ids[1:])
    assert later.version != chosen.version and pool.step(later, passes(3)).rewards.shape == (3, 2)


def test_another_pools_selection_is_not_trusted() -> None:
    source = IdSource()
    a, b = GamePool(CONFIG, 8, id_source=source), GamePool(CONFIG, 8, id_source=source)
    chosen = a.select(a.create(2))
    b.create(2)  # same version (0) and free slots in b as in a
    with pytest.raises(UnknownGameError):
        b.select(chosen)


def test_unguessable_ids_start_at_random_run_on_and_redraw_around_live_games():
    from gameserver.pool import UnguessableIds

    draws = []

    def taken(ids: np.ndarray) -> bool:
        draws.append(ids)
        return len(draws) < 3  # the first two draws meet live games

    ids = UnguessableIds(taken).peek(5, key_hash=9)
    assert len(draws) == 3 and np.array_equal(ids, draws[-1])
    assert np.all(ids >> np.uint64(32) == 9) and np.all(np.diff(ids) == 1)  # one run: the log stores 16 bytes
    starts = {int(UnguessableIds(lambda _: False).peek(1, key_hash=9)[0]) for _ in range(8)}
    assert len(starts) == 8  # no counter to guess from
    with pytest.raises(ValueError, match="no free run of 4 game ids"):
        UnguessableIds(lambda _: True).peek(4, key_hash=9)
    with pytest.raises(ValueError, match="key_hash must be a 32-bit unsigned int"):
        UnguessableIds(lambda _: False).peek(1, key_hash=2**32)
