"""Flat action encoding: one int per player, `((row * W + col) * 4 + direction) * 2 + split`, -1 = pass."""

from __future__ import annotations

import numpy as np

from .config import DIRECTION_COLS, DIRECTION_ROWS, PASS


def flat_action(row: int, col: int, direction: int, split: bool | int, width: int) -> int:
    """The flat index of one move (no range check: the engine validates whole batches)."""
    return ((row * width + col) * 4 + direction) * 2 + int(bool(split))


def from_generals_bots(actions: np.ndarray, height: int, width: int) -> np.ndarray:
    """Convert generals-bots actions [..., 5] = [pass, row, col, direction, split] to flat int32.

    A pass, a source off the board or a destination off the board becomes PASS: generals-bots
    treats all three as doing nothing, so the conversion loses no behaviour.
    """
    a = np.asarray(actions)
    if a.ndim < 1 or a.shape[-1] != 5 or not np.issubdtype(a.dtype, np.integer):
        raise ValueError(f"generals-bots actions must be an integer array [..., 5], got {a.dtype} {a.shape}")
    to_pass, row, col, direction, split = (a[..., i].astype(np.int64) for i in range(5))
    if np.any((direction < 0) | (direction > 3)):
        raise ValueError("generals-bots action direction must be in 0..3")
    dest_row = row + np.asarray(DIRECTION_ROWS)[direction]
    dest_col = col + np.asarray(DIRECTION_COLS)[direction]
    on_board = (
        (row >= 0)
        & (row < height)
        & (col >= 0)
        & (col < width)
        & (dest_row >= 0)
        & (dest_row < height)
        & (dest_col >= 0)
        & (dest_col < width)
    )
    flat = ((row * width + col) * 4 + direction) * 2 + (split != 0)
    return np.where((to_pass == 0) & on_board, flat, PASS).astype(np.int32)
