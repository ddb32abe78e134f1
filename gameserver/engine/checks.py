"""Checks of a request's slots and actions, and mask sizes: plain numpy, no numba.

Apart from the kernels (api.py) so that the wire codec and the client use them without
loading numba.
"""

from __future__ import annotations

import numpy as np

from .config import PASS
from .state import GameBatch


def integer_array(name: str, values: object, ndim: int) -> np.ndarray:
    """`values` as an `ndim`-D integer array (empty arrays of any dtype pass); else ValueError."""
    array = np.asarray(values)
    if array.ndim != ndim:
        raise ValueError(f"{name} must be a {ndim}-D array, got shape {array.shape}")
    if array.size and not np.issubdtype(array.dtype, np.integer):
        raise ValueError(f"{name} must hold integers, got dtype {array.dtype}")
    return array


def check_slots(batch: GameBatch, slots: object) -> np.ndarray:
    """Slots as a contiguous int64 array, each in range and each at most once."""
    s = integer_array("slots", slots, 1)
    if s.size == 0:
        return s.astype(np.int64)
    low, high = s.min(), s.max()
    if low < 0 or high >= batch.capacity:
        bad = s[(s < 0) | (s >= batch.capacity)]
        raise ValueError(f"slots out of range [0, {batch.capacity}): {bad[:8].tolist()}")
    s = np.ascontiguousarray(s, np.int64)
    # Pools usually pass ascending slots: one pass proves uniqueness; otherwise sort.
    if s.size > 1 and not np.all(s[1:] > s[:-1]):
        ordered = np.sort(s)
        dup = ordered[1:][ordered[1:] == ordered[:-1]]
        if dup.size:
            raise ValueError(f"slots must be distinct in one call; repeated: {np.unique(dup)[:8].tolist()}")
    return s


def check_actions(batch: GameBatch, actions: object, games: int) -> np.ndarray:
    a = integer_array("actions", actions, 2)
    players = batch.config.players
    if a.shape != (games, players):
        raise ValueError(f"actions must have shape (games, players) = ({games}, {players}), got {a.shape}")
    limit = batch.config.num_actions
    if a.size and (a.min() < PASS or a.max() >= limit):
        bad = np.argwhere((a < PASS) | (a >= limit))[0]
        raise ValueError(
            f"action out of range [-1, {limit}) for game index {bad[0]}, player {bad[1]}: {a[tuple(bad)]}"
        )
    return np.ascontiguousarray(a, np.int32)


def mask_bytes(tiles: int) -> int:
    """Bytes of one player's bit-packed move mask (4 direction bits per tile)."""
    return (tiles * 4 + 7) // 8
