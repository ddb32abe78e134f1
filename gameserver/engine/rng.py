"""A tiny counter-free PRNG (splitmix64) usable inside numba kernels.

numba's `np.random` keeps one hidden state per thread, so results would depend on how
prange splits the batch. Map generation must be a pure function of its seed, so each map
carries its own 64-bit state through these functions instead.
"""

import numba as nb
import numpy as np

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_MIX1 = np.uint64(0xBF58476D1CE4E5B9)
_MIX2 = np.uint64(0x94D049BB133111EB)


@nb.njit(inline="always", cache=True)
def next_u64(state: np.ndarray) -> np.uint64:
    """Advance state[0] and return 64 random bits."""
    state[0] += _GOLDEN
    z = state[0]
    z = (z ^ (z >> np.uint64(30))) * _MIX1
    z = (z ^ (z >> np.uint64(27))) * _MIX2
    return z ^ (z >> np.uint64(31))


@nb.njit(inline="always", cache=True)
def below(state: np.ndarray, n: int) -> int:
    """A random int in [0, n) (Lemire's multiply-shift; the bias is < n / 2**32, irrelevant here)."""
    r = next_u64(state) >> np.uint64(32)
    return int((r * np.uint64(n)) >> np.uint64(32))
