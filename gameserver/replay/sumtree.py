"""Sum and min trees over priorities, as numba kernels: O(log n) per update and per sample.

Prioritized replay samples item i with probability p_i / sum(p). A flat array would make
each sample batch O(n) (a cumulative sum); a complete binary tree whose inner nodes hold the
sums of their children makes an update a walk from a leaf to the root and a sample a walk
from the root to a leaf. The min tree beside it gives the smallest priority (the largest
importance weight, used to normalise weights) in O(1).

Layout: `leaves` is a power of two; node 1 is the root, node k's children are 2k and 2k+1,
leaf i is node leaves + i. Inner nodes are recomputed from their children on every update
(never adjusted by a difference), so rounding errors do not accumulate over millions of
updates. Leaves that hold no item have priority 0 (sum tree) and +inf (min tree).
"""

from __future__ import annotations

import numba as nb
import numpy as np


class SumTree:
    """Priorities of `capacity` slots with O(log n) batch updates and stratified sampling."""

    def __init__(self, capacity: int) -> None:
        if isinstance(capacity, bool) or not isinstance(capacity, int | np.integer) or capacity < 1:
            raise ValueError(f"capacity must be a positive int, got {capacity!r}")
        self.capacity = int(capacity)
        self.leaves = 1 << (self.capacity - 1).bit_length()
        self.sums = np.zeros(2 * self.leaves, np.float64)
        self.mins = np.full(2 * self.leaves, np.inf, np.float64)

    @property
    def total(self) -> float:
        return float(self.sums[1])

    @property
    def min(self) -> float:
        """The smallest priority of any slot set so far (+inf when none is)."""
        return float(self.mins[1])

    def priorities(self, slots: np.ndarray) -> np.ndarray:
        return self.sums[self.leaves + np.asarray(slots, np.int64)]

    def update(self, slots: np.ndarray, priorities: np.ndarray) -> None:
        """Set these slots' priorities (in order: a repeated slot keeps its last value)."""
        slots = np.asarray(slots, np.int64)
        values = np.asarray(priorities, np.float64)
        if slots.shape != values.shape or slots.ndim != 1:
            raise ValueError(f"slots {slots.shape} and priorities {values.shape} must be 1-D of one length")
        if slots.size and (slots.min() < 0 or slots.max() >= self.capacity):
            raise ValueError(f"slots must be in [0, {self.capacity})")
        if values.size and not (np.isfinite(values).all() and values.min() >= 0):
            raise ValueError("priorities must be finite and >= 0")
        _update(self.sums, self.mins, self.leaves, slots, values)

    def sample(self, uniforms: np.ndarray) -> np.ndarray:
        """Slots for stratified draws: draw i lands in [i, i+1) * total / n, placed by uniforms[i].

        Stratification (as in Schaul et al. 2016) spreads a batch over the whole priority mass,
        which lowers the variance of a batch against n independent draws while keeping every
        draw's marginal probability p_i / total.
        """
        if not self.total > 0:
            raise ValueError("no slot has a positive priority")
        out = np.empty(len(uniforms), np.int64)
        _sample(self.sums, self.leaves, np.asarray(uniforms, np.float64), out)
        return out


@nb.njit(nogil=True, cache=True)
def _update(sums, mins, leaves, slots, values):
    for k in range(slots.shape[0]):
        node = leaves + slots[k]
        sums[node] = values[k]
        mins[node] = values[k]
        node >>= 1
        while node >= 1:
            left = 2 * node
            sums[node] = sums[left] + sums[left + 1]
            mins[node] = min(mins[left], mins[left + 1])
            node >>= 1


@nb.njit(nogil=True, cache=True)
def _sample(sums, leaves, uniforms, out):
    n = uniforms.shape[0]
    total = sums[1]
    for i in range(n):
        mass = (i + uniforms[i]) * total / n
        node = 1
        while node < leaves:
            left = 2 * node
            # Rounding can leave `mass` a hair above a subtree's sum: never step into an empty one.
            if mass < sums[left] or sums[left + 1] <= 0.0:
                node = left
            else:
                mass -= sums[left]
                node = left + 1
        out[i] = node - leaves
