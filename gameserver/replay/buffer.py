"""Experience replay: a ring of numpy columns, uniform or prioritized sampling, rate limited.

A buffer holds items of a fixed spec (one numpy column per field, e.g. the self-play
transitions of `rl.transitions`), inserted and sampled in batches: every operation is a few
vectorised copies plus, when prioritized, O(log n) per item in the numba sum tree.

Every item gets a key (its insertion number, uint64). Samples return keys, and priorities are
updated by key: an item overwritten since it was sampled is skipped instead of handing its
priority to whatever now holds its slot.

Prioritized sampling (Schaul et al. 2016): item i is drawn with P(i) = p_i / sum_k p_k where
p_i = (priority_i + eps) ** alpha; new items get the largest priority seen so far, so each is
likely sampled at least once. Importance weights undo the bias: w_i = (N * P(i)) ** -beta,
divided by the largest weight in the buffer, (N * min_k P(k)) ** -beta, so w_i = (min P / P(i))
** beta lies in (0, 1].
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from ..wire.replay import FieldSpec, field_spec
from .rate_limiter import RateLimiter
from .sumtree import SumTree


@dataclass
class SampleBatch:
    """Sampled items: `fields` columns [n, ...], their keys, P(i) and importance weights."""

    keys: np.ndarray
    fields: dict[str, np.ndarray]
    probabilities: np.ndarray
    weights: np.ndarray


class Sampler(Protocol):
    """Where the buffer's draws come from; slots are ring positions in [0, size)."""

    name: str

    def set(self, slots: np.ndarray, priorities: np.ndarray | None) -> None:
        """New or re-prioritized items (None: new items at the default priority)."""
        ...

    def sample(self, n: int, size: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """n slots drawn with replacement and their probabilities."""
        ...

    def min_probability(self, size: int) -> float: ...


class UniformSampler:
    """Every stored item equally likely; priorities are accepted and ignored."""

    name = "uniform"

    def set(self, slots: np.ndarray, priorities: np.ndarray | None) -> None:
        return None

    def sample(self, n: int, size: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        return rng.integers(0, size, n), np.full(n, 1.0 / size)

    def min_probability(self, size: int) -> float:
        return 1.0 / size


class PrioritizedSampler:
    """Proportional prioritization over a SumTree (O(log n) per update and per draw)."""

    name = "prioritized"

    def __init__(self, capacity: int, alpha: float = 0.6, eps: float = 1e-6) -> None:
        if not 0.0 <= alpha <= 1.0:
            raise ValueError(f"alpha must be in [0, 1], got {alpha!r}")
        if not eps > 0:
            raise ValueError(f"eps must be > 0, got {eps!r}")
        self.alpha = float(alpha)
        self.eps = float(eps)
        self.tree = SumTree(capacity)
        self.max_priority = 1.0

    def set(self, slots: np.ndarray, priorities: np.ndarray | None) -> None:
        if priorities is None:
            values = np.full(slots.size, self.max_priority)
        else:
            values = np.asarray(priorities, np.float64)
            if values.size:
                self.max_priority = max(self.max_priority, float(values.max()))
        self.tree.update(slots, (values + self.eps) ** self.alpha)

    def sample(self, n: int, size: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        slots = self.tree.sample(rng.random(n))
        return slots, self.tree.priorities(slots) / self.tree.total

    def min_probability(self, size: int) -> float:
        return self.tree.min / self.tree.total


class ReplayBuffer:
    """`capacity` items of `spec`, oldest overwritten first; thread-safe (one lock).

    `insert` and `sample_batch` wait for the rate limiter (up to `timeout` seconds, None:
    forever; then RateLimitTimeout). Bad input raises ValueError naming the problem, before
    anything changes.
    """

    def __init__(
        self,
        spec: Mapping[str, FieldSpec],
        capacity: int,
        *,
        prioritized: bool = False,
        alpha: float = 0.6,
        beta: float = 0.4,
        eps: float = 1e-6,
        rate_limiter: RateLimiter | None = None,
        seed: int = 0,
        sampler: Sampler | None = None,
    ) -> None:
        if isinstance(capacity, bool) or not isinstance(capacity, int) or capacity < 1:
            raise ValueError(f"capacity must be a positive int, got {capacity!r}")
        if not spec:
            raise ValueError("spec names no field")
        _check_beta(beta)
        self.spec = {name: field_spec(*s) for name, s in spec.items()}
        self.capacity = capacity
        self.beta = float(beta)
        if sampler is None:
            sampler = PrioritizedSampler(capacity, alpha, eps) if prioritized else UniformSampler()
        self.sampler = sampler
        self.limiter = rate_limiter or RateLimiter()
        self._rng = np.random.default_rng(seed)
        self._columns = {name: np.zeros((capacity, *s.shape), s.dtype) for name, s in self.spec.items()}
        self._keys = np.zeros(capacity, np.uint64)
        self._next_key = 0

    @property
    def size(self) -> int:
        return min(self._next_key, self.capacity)

    def item_bytes(self) -> int:
        return sum(s.dtype.itemsize * math.prod(s.shape) for s in self.spec.values())

    def insert(
        self, fields: Mapping[str, object], priorities: object = None, *, timeout: float | None = None
    ) -> np.ndarray:
        """Append a batch: each field an array [n, *shape]; returns the n new keys (uint64)."""
        n, columns = self._check_fields(fields)
        values = None if priorities is None else _check_priorities(priorities, (n,))
        with self.limiter.condition:
            self.limiter.wait_insert(timeout)
            first_key = self._next_key
            start = first_key % self.capacity
            slots = (start + np.arange(n)) % self.capacity
            keys = np.arange(first_key, first_key + n, dtype=np.uint64)
            for name, column in columns.items():
                _write_ring(self._columns[name], start, column)
            _write_ring(self._keys, start, keys)
            self.sampler.set(slots, values)
            self._next_key += n
            self.limiter.record(inserted=n)
        return keys

    def sample_batch(
        self, size: int, beta: float | None = None, *, timeout: float | None = None
    ) -> SampleBatch:
        """`size` items drawn with replacement, with their importance weights for `beta`."""
        if isinstance(size, bool) or not isinstance(size, int | np.integer) or size < 1:
            raise ValueError(f"batch size must be a positive int, got {size!r}")
        beta = self.beta if beta is None else _check_beta(beta)
        with self.limiter.condition:
            self.limiter.wait_sample(timeout)
            stored = self.size
            slots, probabilities = self.sampler.sample(int(size), stored, self._rng)
            least = self.sampler.min_probability(stored)
            batch = SampleBatch(
                keys=self._keys[slots],
                fields={name: column[slots] for name, column in self._columns.items()},
                probabilities=probabilities,
                weights=((least / probabilities) ** beta).astype(np.float32),
            )
            self.limiter.record(sampled=int(size))
        return batch

    def update_priorities(self, keys: object, priorities: object) -> int:
        """New priorities for sampled items, by key; returns how many were still stored."""
        key_array = np.asarray(keys)
        if key_array.ndim != 1 or (key_array.size and not np.issubdtype(key_array.dtype, np.integer)):
            raise ValueError(f"keys must be a 1-D integer array, got {key_array.dtype} {key_array.shape}")
        if key_array.size and key_array.min() < 0:
            raise ValueError("keys must be non-negative")
        values = _check_priorities(priorities, key_array.shape)
        key_array = key_array.astype(np.uint64, copy=False)
        with self.limiter.condition:
            if key_array.size and int(key_array.max()) >= self._next_key:
                raise ValueError(f"keys never issued: {key_array[key_array >= self._next_key][:8].tolist()}")
            slots = (key_array % np.uint64(self.capacity)).astype(np.int64)
            live = self._keys[slots] == key_array
            self.sampler.set(slots[live], values[live])
        return int(np.count_nonzero(live))

    def info(self) -> dict[str, object]:
        with self.limiter.condition:
            return {
                "capacity": self.capacity,
                "size": self.size,
                "inserted": self.limiter.inserted,
                "sampled": self.limiter.sampled,
                "sampler": self.sampler.name,
                "alpha": getattr(self.sampler, "alpha", 0.0),
                "beta": self.beta,
                "item_bytes": self.item_bytes(),
                "rate_limiter": self.limiter.settings(),
            }

    def _check_fields(self, fields: Mapping[str, object]) -> tuple[int, dict[str, np.ndarray]]:
        missing, unknown = set(self.spec) - set(fields), set(fields) - set(self.spec)
        if missing or unknown:
            raise ValueError(
                f"fields must be exactly {sorted(self.spec)}: missing {sorted(missing)}, "
                f"unknown {sorted(unknown)}"
            )
        columns = {name: np.asarray(fields[name]) for name in self.spec}
        n = next(iter(columns.values())).shape[:1]
        for name, column in columns.items():
            want = self.spec[name]
            if column.shape != (*n, *want.shape):
                raise ValueError(
                    f"field {name} must have shape {['n', *want.shape]} "
                    f"with one n for all fields, got {list(column.shape)}"
                )
            if not np.can_cast(column.dtype, want.dtype, "safe"):
                raise ValueError(
                    f"field {name} must be {want.dtype} (or safely castable), got {column.dtype}"
                )
        if not n or not 1 <= n[0] <= self.capacity:
            raise ValueError(
                f"a batch holds 1 to {self.capacity} items (the capacity), got {n[0] if n else 0}"
            )
        return n[0], columns


def _write_ring(column: np.ndarray, start: int, values: np.ndarray) -> None:
    """Write values at ring positions start, start+1, ... wrapping once: two slice copies."""
    first = min(values.shape[0], column.shape[0] - start)
    column[start : start + first] = values[:first]
    column[: values.shape[0] - first] = values[first:]


def _check_priorities(priorities: object, shape: tuple[int, ...]) -> np.ndarray:
    values = np.asarray(priorities)
    numeric = np.issubdtype(values.dtype, np.integer) or np.issubdtype(values.dtype, np.floating)
    if values.shape != shape or (values.size and not numeric):
        raise ValueError(
            f"priorities must be numbers of shape {list(shape)}, got {values.dtype} {values.shape}"
        )
    values = values.astype(np.float64)
    if values.size and not (np.isfinite(values).all() and values.min() >= 0):
        raise ValueError("priorities must be finite and >= 0")
    return values


def _check_beta(beta: float) -> float:
    if not isinstance(beta, int | float) or not 0.0 <= beta <= 1.0:
        raise ValueError(f"beta must be in [0, 1], got {beta!r}")
    return float(beta)
