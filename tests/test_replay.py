"""Replay buffer: sum tree, prioritized and uniform sampling, importance weights, rate limiter."""

import threading
import time

import numpy as np
import pytest

from gameserver.replay.buffer import ReplayBuffer, field_spec
from gameserver.replay.rate_limiter import RateLimiter, RateLimitTimeout
from gameserver.replay.sumtree import SumTree

SPEC = {"obs": field_spec(np.uint8, (3,)), "action": field_spec(np.int32), "reward": field_spec(np.float32)}


def items(n, start=0):
    values = np.arange(start, start + n)
    return {
        "obs": np.repeat(values[:, None], 3, axis=1).astype(np.uint8),
        "action": values.astype(np.int32),
        "reward": values.astype(np.float32),
    }


def state(buffer):
    """Everything a refused call must leave as it was."""
    arrays = {name: column.copy() for name, column in buffer._columns.items()}
    arrays["keys"] = buffer._keys.copy()
    if hasattr(buffer.sampler, "tree"):
        arrays["sums"] = buffer.sampler.tree.sums.copy()
        arrays["mins"] = buffer.sampler.tree.mins.copy()
    return arrays, buffer.info(), buffer._next_key


def assert_same_state(before, after):
    assert before[1:] == after[1:]
    assert before[0].keys() == after[0].keys()
    for name in before[0]:
        np.testing.assert_array_equal(before[0][name], after[0][name], err_msg=name)


# Sum tree -----------------------------------------------------------------------------------


def brute_force_levels(leaves: np.ndarray, width: int) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Every level's sums and mins computed from the leaves alone (root level first)."""
    sums, mins = np.zeros(width), np.full(width, np.inf)
    sums[: leaves.size], mins[: leaves.size] = leaves, leaves
    sum_levels, min_levels = [sums], [mins]
    while sum_levels[0].size > 1:
        sum_levels.insert(0, sum_levels[0].reshape(-1, 2).sum(axis=1))
        min_levels.insert(0, min_levels[0].reshape(-1, 2).min(axis=1))
    return sum_levels, min_levels


def test_sum_tree_updates_match_a_brute_force_recomputation():
    rng = np.random.default_rng(1)
    tree = SumTree(1000)  # not a power of two: 24 padding leaves stay empty
    reference = np.zeros(1000)
    for _ in range(50):
        slots = rng.integers(0, 1000, 64)  # repeats inside a batch: the last value wins
        values = rng.exponential(size=64) * rng.integers(0, 2, 64)  # zeros too
        tree.update(slots, values)
        for slot, value in zip(slots, values, strict=True):
            reference[slot] = value
    sum_levels, _ = brute_force_levels(reference, tree.leaves)
    for depth, level in enumerate(sum_levels):
        np.testing.assert_allclose(tree.sums[1 << depth : 2 << depth], level, rtol=1e-12, atol=1e-12)
    assert tree.total == pytest.approx(reference.sum(), rel=1e-12)
    np.testing.assert_array_equal(tree.priorities(np.arange(1000)), reference)


def test_min_tree_tracks_the_smallest_priority_set():
    tree = SumTree(6)
    assert tree.min == np.inf
    tree.update(np.array([0, 1, 2]), np.array([3.0, 0.5, 2.0]))
    assert tree.min == 0.5
    tree.update(np.array([1]), np.array([4.0]))
    assert tree.min == 2.0
    _, min_levels = brute_force_levels(np.array([3.0, 4.0, 2.0]), tree.leaves)
    for depth, level in enumerate(min_levels):
        np.testing.assert_array_equal(tree.mins[1 << depth : 2 << depth], level)


def test_an_update_rewrites_only_the_path_from_leaf_to_root():
    """O(log n): one update changes log2(leaves) + 1 nodes, the leaf and its ancestors."""
    tree = SumTree(1 << 16)
    tree.update(np.arange(1 << 16), np.ones(1 << 16))
    before = tree.sums.copy()
    tree.update(np.array([12345]), np.array([7.0]))
    changed = np.flatnonzero(tree.sums != before)
    node, path = (1 << 16) + 12345, []
    while node >= 1:
        path.append(node)
        node >>= 1
    assert sorted(changed.tolist()) == sorted(path) and len(path) == 17


def test_sum_tree_sampling_frequencies_are_proportional_to_priorities():
    """200,000 stratified draws in batches of 100 (seeded). Tolerance: every slot's frequency
    within 5 binomial standard deviations of p_i / sum(p) (a false alarm is below 1e-5 per
    slot even without stratification, which only lowers the variance); empty slots never drawn."""
    priorities = np.array([1.0, 2.0, 0.0, 4.0, 8.0, 0.5, 16.0, 3.0, 0.0, 1.5])
    tree = SumTree(priorities.size)
    tree.update(np.arange(priorities.size), priorities)
    rng = np.random.default_rng(42)
    draws = np.concatenate([tree.sample(rng.random(100)) for _ in range(2000)])
    counts = np.bincount(draws, minlength=priorities.size)
    expected = priorities / priorities.sum()
    sd = np.sqrt(expected * (1 - expected) / draws.size)
    assert np.all(np.abs(counts / draws.size - expected) <= 5 * sd + 1e-12), (counts, expected)
    assert counts[priorities == 0].sum() == 0


def test_sum_tree_refuses_bad_updates_and_sampling_an_empty_tree():
    tree = SumTree(4)
    with pytest.raises(ValueError, match="positive priority"):
        tree.sample(np.array([0.5]))
    for slots, values in (([4], [1.0]), ([-1], [1.0]), ([0], [-1.0]), ([0], [np.nan]), ([0, 1], [1.0])):
        with pytest.raises(ValueError):
            tree.update(np.array(slots), np.array(values))
    assert tree.total == 0


# Buffer -------------------------------------------------------------------------------------


def test_prioritized_sampling_follows_the_priorities_through_the_buffer():
    """Same tolerance as the tree test: 5 binomial sd per item, 100,000 draws in batches of 250."""
    buffer = ReplayBuffer(SPEC, 8, prioritized=True, alpha=1.0, eps=1e-9, seed=3)
    keys = buffer.insert(items(8))
    priorities = np.array([1, 1, 2, 2, 4, 4, 8, 0], np.float64)
    assert buffer.update_priorities(keys, priorities) == 8
    actions = np.concatenate([buffer.sample_batch(250).fields["action"] for _ in range(400)])
    counts = np.bincount(actions, minlength=8)
    expected = (priorities + 1e-9) / (priorities + 1e-9).sum()
    sd = np.sqrt(expected * (1 - expected) / actions.size)
    assert np.all(np.abs(counts / actions.size - expected) <= 5 * sd + 1e-6), counts


def test_importance_weights_follow_the_formula():
    """w_i = (N P(i))^-beta / max_j (N P(j))^-beta with P(i) = (p_i + eps)^alpha / sum_k (p_k + eps)^alpha."""
    alpha, beta, eps = 0.7, 0.5, 1e-3
    buffer = ReplayBuffer(SPEC, 16, prioritized=True, alpha=alpha, beta=0.1, eps=eps, seed=5)
    keys = buffer.insert(items(10))
    raw = np.array([0.0, 0.5, 1.0, 2.0, 3.0, 0.1, 7.0, 1.0, 0.2, 4.0])
    buffer.update_priorities(keys, raw)
    batch = buffer.sample_batch(64, beta=beta)
    scaled = (raw + eps) ** alpha
    probability = scaled / scaled.sum()
    drawn = batch.fields["action"]
    np.testing.assert_allclose(batch.probabilities, probability[drawn], rtol=1e-12)
    n = raw.size
    expected = (n * probability[drawn]) ** -beta / ((n * probability) ** -beta).max()
    np.testing.assert_allclose(batch.weights, expected, rtol=1e-6)
    np.testing.assert_array_equal(batch.keys, keys[drawn])
    assert buffer.sample_batch(8).weights.max() <= 1.0  # the server's default beta


def test_uniform_buffer_weights_are_one_and_every_item_is_drawn():
    buffer = ReplayBuffer(SPEC, 100, seed=1)
    buffer.insert(items(50))
    batch = buffer.sample_batch(5000)
    np.testing.assert_array_equal(batch.weights, 1.0)
    np.testing.assert_allclose(batch.probabilities, 1 / 50)
    assert set(batch.fields["action"].tolist()) == set(range(50))


def test_new_items_get_the_largest_priority_seen():
    buffer = ReplayBuffer(SPEC, 8, prioritized=True, alpha=1.0, eps=1e-9)
    keys = buffer.insert(items(2))
    buffer.update_priorities(keys, [5.0, 0.0])
    buffer.insert(items(1, start=2))
    np.testing.assert_allclose(buffer.sampler.tree.priorities(np.arange(3)), [5.0, 1e-9, 5.0], rtol=1e-6)


def test_ring_overwrites_the_oldest_and_stale_keys_are_skipped():
    buffer = ReplayBuffer(SPEC, 5, prioritized=True)
    first = buffer.insert(items(4))
    second = buffer.insert(items(3, start=4))  # wraps: keys 5 and 6 take slots 0 and 1
    np.testing.assert_array_equal(first, [0, 1, 2, 3])
    np.testing.assert_array_equal(second, [4, 5, 6])
    assert buffer.size == 5
    np.testing.assert_array_equal(buffer._columns["action"], [5, 6, 2, 3, 4])
    assert buffer.update_priorities(np.concatenate([first, second]), np.ones(7)) == 5  # keys 0, 1 are gone


BAD_INSERTS = {
    "missing field": lambda good: {k: v for k, v in good.items() if k != "reward"},
    "unknown field": lambda good: {**good, "extra": good["action"]},
    "unsafe dtype": lambda good: {**good, "action": good["action"].astype(np.int64)},
    "float for int": lambda good: {**good, "action": good["action"].astype(np.float32)},
    "wrong item shape": lambda good: {**good, "obs": good["obs"][:, :2]},
    "row counts differ": lambda good: {**good, "reward": good["reward"][:3]},
    "scalar": lambda good: {
        **good,
        "action": np.int32(1),
        "reward": np.float32(1),
        "obs": np.zeros(3, np.uint8),
    },
    "empty": lambda good: {k: v[:0] for k, v in good.items()},
    "over capacity": lambda good: items(9),
}


@pytest.mark.parametrize("case", BAD_INSERTS)
def test_bad_inserts_are_refused_and_change_nothing(case):
    buffer = ReplayBuffer(SPEC, 8, prioritized=True)
    buffer.insert(items(4))
    before = state(buffer)
    with pytest.raises(ValueError):
        buffer.insert(BAD_INSERTS[case](items(4, start=10)))
    assert_same_state(before, state(buffer))


@pytest.mark.parametrize(
    "keys, priorities",
    [([0, 1], [1.0]), ([0, 9], [1.0, 1.0]), ([0], [-1.0]), ([0], [np.inf]), ([-1], [1.0]), ([[0]], [[1.0]]),
     ([0.5], [1.0]), ([0], ["x"])],
)  # fmt: skip
def test_bad_priority_updates_are_refused_and_change_nothing(keys, priorities):
    buffer = ReplayBuffer(SPEC, 8, prioritized=True)
    buffer.insert(items(4))
    before = state(buffer)
    with pytest.raises(ValueError):
        buffer.update_priorities(np.array(keys), np.array(priorities))
    assert_same_state(before, state(buffer))


def test_bad_insert_priorities_and_sizes_are_refused():
    buffer = ReplayBuffer(SPEC, 8, prioritized=True)
    with pytest.raises(ValueError, match="priorities"):
        buffer.insert(items(2), priorities=[1.0])
    with pytest.raises(ValueError, match="priorities"):
        buffer.insert(items(2), priorities=[1.0, np.nan])
    with pytest.raises(ValueError, match="batch size"):
        buffer.sample_batch(0)
    with pytest.raises(ValueError, match="beta"):
        buffer.sample_batch(1, beta=1.5)
    assert buffer.size == 0


# Rate limiter -------------------------------------------------------------------------------

# samples_per_insert 2, min size 10, error buffer 4: min_diff 16, max_diff 24, diff = 2*inserted - sampled.
LIMITS = [
    # inserted, sampled, can_insert, can_sample
    (0, 0, True, False),  # below the minimum size: insert only
    (9, 0, True, False),
    (10, 0, True, True),  # diff 20
    (10, 4, True, True),  # diff 16 = min_diff: the last permitted sample
    (10, 5, True, False),  # diff 15
    (12, 0, True, True),  # diff 24 = max_diff: the last permitted insert
    (13, 0, False, True),  # diff 26: inserts wait for samples
    (13, 2, True, True),  # diff 24
    (100, 180, True, True),  # diff 20, far on
]


@pytest.mark.parametrize("inserted, sampled, can_insert, can_sample", LIMITS)
def test_rate_limiter_permits_within_the_band(inserted, sampled, can_insert, can_sample):
    limiter = RateLimiter(samples_per_insert=2.0, min_size_to_sample=10, error_buffer=4.0)
    limiter.inserted, limiter.sampled = inserted, sampled
    assert (limiter.can_insert(), limiter.can_sample()) == (can_insert, can_sample)


def test_rate_limiter_without_a_ratio_only_waits_for_the_minimum_size():
    limiter = RateLimiter(min_size_to_sample=3)
    limiter.inserted = 2
    assert limiter.can_insert() and not limiter.can_sample()
    limiter.inserted, limiter.sampled = 3, 10**9
    assert limiter.can_insert() and limiter.can_sample()


def test_rate_limiter_default_error_buffer_caps_samples_at_the_ratio():
    limiter = RateLimiter(samples_per_insert=1.5, min_size_to_sample=4)
    limiter.inserted, limiter.sampled = 10, 15
    assert limiter.can_sample()
    limiter.sampled = 16
    assert not limiter.can_sample()


@pytest.mark.parametrize(
    "kwargs", [{"samples_per_insert": 0}, {"min_size_to_sample": 0}, {"error_buffer": 1.0},
               {"samples_per_insert": 1.0, "error_buffer": -1.0}, {"min_size_to_sample": 1.5}],
)  # fmt: skip
def test_rate_limiter_refuses_bad_settings(kwargs):
    with pytest.raises(ValueError):
        RateLimiter(**kwargs)


def test_blocked_sample_times_out_and_changes_nothing():
    buffer = ReplayBuffer(SPEC, 8, rate_limiter=RateLimiter(min_size_to_sample=3))
    buffer.insert(items(2))
    before = state(buffer)
    start = time.monotonic()
    with pytest.raises(RateLimitTimeout, match="sample not permitted"):
        buffer.sample_batch(1, timeout=0.05)
    assert 0.04 <= time.monotonic() - start < 2
    assert_same_state(before, state(buffer))


def test_blocked_insert_times_out_until_samples_catch_up():
    buffer = ReplayBuffer(SPEC, 64, rate_limiter=RateLimiter(1.0, min_size_to_sample=2, error_buffer=2.0))
    buffer.insert(items(5))  # diff 5 > max_diff 4
    with pytest.raises(RateLimitTimeout, match="insert not permitted"):
        buffer.insert(items(1), timeout=0.05)
    buffer.sample_batch(1)  # diff 4
    buffer.insert(items(1), timeout=0.05)
    assert buffer.size == 6


def test_a_waiting_sampler_is_woken_by_an_insert_from_another_thread():
    buffer = ReplayBuffer(SPEC, 8, rate_limiter=RateLimiter(min_size_to_sample=4))
    got = []
    sampler = threading.Thread(target=lambda: got.append(buffer.sample_batch(2, timeout=10)))
    sampler.start()
    buffer.insert(items(3))
    time.sleep(0.05)
    assert sampler.is_alive() and not got  # 3 < 4: still blocked
    buffer.insert(items(1, start=3))
    sampler.join(5)
    assert len(got) == 1 and got[0].keys.size == 2
