"""Observation codes -> generals-bots' 15-channel tensor layout, so existing agents run unchanged.

generals-bots `Observation.as_tensor()` stacks: armies, generals, cities, mountains,
neutral_cells, owned_cells, opponent_cells, fog_cells, structures_in_fog, owned_land_count,
owned_army_count, opponent_land_count, opponent_army_count, timestep, priority. With more
than two players, "opponent" means every other player (cells and summed counts).
"""

from __future__ import annotations

import numpy as np

from ..engine.config import CITY, FOG, FOG_OBSTACLE, GENERAL, KIND_OFFSET, MOUNTAIN

CHANNELS = (
    "armies", "generals", "cities", "mountains", "neutral_cells", "owned_cells", "opponent_cells",
    "fog_cells", "structures_in_fog", "owned_land_count", "owned_army_count", "opponent_land_count",
    "opponent_army_count", "timestep", "priority",
)  # fmt: skip


def generals_planes(
    codes: np.ndarray,
    armies: np.ndarray,
    land: np.ndarray,
    army: np.ndarray,
    tick: np.ndarray,
    height: int,
    width: int,
    out: np.ndarray | None = None,
) -> np.ndarray:
    """float32 [games, players, 15, height, width] from one batch of observations (all seats)."""
    games, players, tiles = codes.shape
    if tiles != height * width:
        raise ValueError(f"codes have {tiles} tiles, expected {height}x{width}")
    if out is None:
        out = np.empty((games, players, len(CHANNELS), height, width), np.float32)
    kind = (codes >> 4).reshape(games, players, height, width)
    owner = (codes & 15).reshape(games, players, height, width)
    seat = np.arange(1, players + 1, dtype=np.uint8).reshape(1, players, 1, 1)
    visible = kind >= KIND_OFFSET
    out[:, :, 0] = armies.reshape(games, players, height, width)
    out[:, :, 1] = kind == GENERAL + KIND_OFFSET
    out[:, :, 2] = kind == CITY + KIND_OFFSET
    out[:, :, 3] = kind == MOUNTAIN + KIND_OFFSET
    out[:, :, 4] = visible & (owner == 0) & (kind != MOUNTAIN + KIND_OFFSET)
    out[:, :, 5] = owner == seat
    out[:, :, 6] = (owner != 0) & (owner != seat)
    out[:, :, 7] = kind == FOG
    out[:, :, 8] = kind == FOG_OBSTACLE
    total_land = land.sum(axis=1, keepdims=True)
    total_army = army.sum(axis=1, keepdims=True)
    scalars = (land, army, total_land - land, total_army - army)
    for channel, value in zip((9, 10, 11, 12), scalars, strict=True):
        out[:, :, channel] = value[:, :, None, None]
    out[:, :, 13] = tick[:, None, None, None]
    out[:, :, 14] = 0.0
    return out
