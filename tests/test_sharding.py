"""Consistent-hash ring: stable placement, ~1/N movement on topology change, bounded imbalance."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gameserver.sharding import HashRing, key_hashes, make_game_ids, placement_hash

KEYS = np.random.default_rng(0).integers(0, 2**32, 100_000, dtype=np.uint64)


def _names(n: int) -> list[str]:
    return [f"gamefleet-shard-{i}.gamefleet-shards:50051" for i in range(n)]


def _owners(ring: HashRing) -> np.ndarray:
    return np.array(ring.shards)[ring.shard_index_of_hashes(KEYS)]


@settings(max_examples=12, deadline=None)
@given(n=st.integers(1, 15))
def test_adding_a_shard_moves_about_one_in_n_plus_one_keys_and_only_to_the_new_shard(n):
    before = HashRing(_names(n))
    after = before.with_shards(_names(n + 1))
    old, new = _owners(before), _owners(after)
    moved = old != new
    ideal = 1 / (n + 1)
    assert 0.6 * ideal <= moved.mean() <= 1.4 * ideal
    assert set(new[moved]) == {_names(n + 1)[-1]}


@settings(max_examples=12, deadline=None)
@given(n=st.integers(2, 16), leaving=st.integers(0, 15))
def test_removing_a_shard_moves_exactly_its_keys(n, leaving):
    names = _names(n)
    gone = names[leaving % n]
    before = HashRing(names)
    after = before.with_shards([s for s in names if s != gone])
    old, new = _owners(before), _owners(after)
    assert np.array_equal(old != new, old == gone)


@pytest.mark.parametrize("n", [2, 3, 4, 8, 16])
def test_load_is_balanced_within_25_percent_of_the_mean(n):
    counts = np.bincount(HashRing(_names(n)).shard_index_of_hashes(KEYS), minlength=n)
    assert counts.max() <= 1.25 * counts.mean()
    assert counts.min() >= 0.75 * counts.mean()


def test_game_ids_carry_their_placement_key():
    key = "trainer-7/batch-3"
    ids = make_game_ids(placement_hash(key), np.arange(5))
    assert (key_hashes(ids) == placement_hash(key)).all()
    assert (ids & np.uint64(0xFFFFFFFF)).tolist() == [0, 1, 2, 3, 4]
    ring = HashRing(_names(4))
    assert set(np.array(ring.shards)[ring.shard_index_of_games(ids)]) == {ring.shard_of_key(key)}


def test_placement_is_the_same_in_every_ring_built_from_the_same_shards():
    a, b = HashRing(_names(5)), HashRing(list(_names(5)))
    assert np.array_equal(a.shard_index_of_hashes(KEYS), b.shard_index_of_hashes(KEYS))
    assert placement_hash("abc") == placement_hash("abc") != placement_hash("abd")


@pytest.mark.parametrize(
    ("shards", "vnodes", "message"),
    [([], 10, "at least one shard"), (["a", "a"], 10, "distinct"), (["a"], 0, "virtual_nodes")],
)
def test_bad_rings_are_refused(shards, vnodes, message):
    with pytest.raises(ValueError, match=message):
        HashRing(shards, vnodes)
