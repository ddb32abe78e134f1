"""generals-bots' own observation format, so its agents and reward functions run unmodified.

`obs_format="generals"` hands each seat what generals-bots 2.5.0's `Game.agent_observation`
returns: a `generals.core.observation.Observation` with planes in its dtypes (armies int16,
generals/cities/mountains/neutral_cells/owned_cells/opponent_cells bool, fog_cells and
structures_in_fog int64) and Python ints for the counts, timestep and priority. Its agents'
`act()` take that object; its reward functions do bitwise arithmetic on the bool planes.
Armies past 32767 saturate there, as int16 cannot hold them (generals-bots would wrap).

`pad_to` pads boards to `pad_to x pad_to` on the right and bottom the way generals-bots pads
(`Observation.pad_observation`): mountains in the padding, every other plane 0.

The `generals` package (generals-bots) is only needed for the Observation objects: batched
fields (the vector env's format) are plain numpy.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from gymnasium import spaces

from ..engine import GameConfig
from ..engine.config import CITY, FOG, FOG_OBSTACLE, GENERAL, KIND_OFFSET, MOUNTAIN

PLANES = (
    "armies", "generals", "cities", "mountains", "neutral_cells", "owned_cells", "opponent_cells",
    "fog_cells", "structures_in_fog",
)  # fmt: skip
COUNTS = ("owned_land_count", "owned_army_count", "opponent_land_count", "opponent_army_count", "timestep")
FIELDS = (*PLANES, *COUNTS, "priority")  # generals-bots Observation's fields, in its order
_INT64_PLANES = ("fog_cells", "structures_in_fog")  # 1 - bool visibility there: int64
_ARMY_MAX = int(np.iinfo(np.int16).max)


def board_size(config: GameConfig, pad_to: int | None) -> tuple[int, int]:
    """(rows, cols) of the observed board: the config's, or pad_to x pad_to (checked to fit)."""
    if pad_to is None:
        return config.height, config.width
    if isinstance(pad_to, bool) or not isinstance(pad_to, int) or pad_to < max(config.height, config.width):
        raise ValueError(
            f"pad_to must be an int >= the board's sides ({config.height}x{config.width}), got {pad_to!r}"
        )
    return pad_to, pad_to


def pad_board(a: np.ndarray, pad_to: int | None, fill: int = 0) -> np.ndarray:
    """Pad [..., H, W] to [..., pad_to, pad_to] on the right and bottom with `fill` (None: as is)."""
    if pad_to is None:
        return a
    height, width = a.shape[-2:]
    out = np.full((*a.shape[:-2], pad_to, pad_to), fill, a.dtype)
    out[..., :height, :width] = a
    return out


def pad_planes(planes: np.ndarray, pad_to: int | None, mountains: int) -> np.ndarray:
    """Pad [..., C, H, W] planes to pad_to x pad_to: zeros, and mountains (1) in channel `mountains`."""
    if pad_to is None:
        return planes
    height, width = planes.shape[-2:]
    out = pad_board(planes, pad_to)
    out[..., mountains, height:, :] = 1
    out[..., mountains, :, width:] = 1
    return out


def generals_fields(
    codes: np.ndarray,
    armies: np.ndarray,
    land: np.ndarray,
    army: np.ndarray,
    tick: np.ndarray,
    config: GameConfig,
    seats: int,
    pad_to: int | None = None,
) -> dict[str, np.ndarray]:
    """The first `seats` seats' generals-bots fields: planes [games, seats, H, W], counts [games, seats].

    `codes`/`armies` [games, players, tiles] and `land`/`army` [games, players] cover every seat
    (opponent counts sum all other seats); `tick` is [games].
    """
    games = codes.shape[0]
    h, w = config.height, config.width
    kind = (codes[:, :seats] >> 4).reshape(games, seats, h, w)
    owner = (codes[:, :seats] & 15).reshape(games, seats, h, w)
    seat = np.arange(1, seats + 1, dtype=np.uint8).reshape(1, seats, 1, 1)
    visible_owner = kind >= KIND_OFFSET
    mountain = kind == MOUNTAIN + KIND_OFFSET
    planes = {
        "armies": np.minimum(armies[:, :seats], _ARMY_MAX).astype(np.int16).reshape(games, seats, h, w),
        "generals": kind == GENERAL + KIND_OFFSET,
        "cities": kind == CITY + KIND_OFFSET,
        "mountains": mountain,
        "neutral_cells": visible_owner & (owner == 0) & ~mountain,
        "owned_cells": owner == seat,
        "opponent_cells": (owner != 0) & (owner != seat),
        "fog_cells": (kind == FOG).astype(np.int64),
        "structures_in_fog": (kind == FOG_OBSTACLE).astype(np.int64),
    }
    planes = {name: pad_board(plane, pad_to, int(name == "mountains")) for name, plane in planes.items()}
    land = land.astype(np.int64)
    army = army.astype(np.int64)
    counts = {
        "owned_land_count": land[:, :seats],
        "owned_army_count": army[:, :seats],
        "opponent_land_count": land.sum(axis=1, keepdims=True) - land[:, :seats],
        "opponent_army_count": army.sum(axis=1, keepdims=True) - army[:, :seats],
        "timestep": np.broadcast_to(tick.astype(np.int64)[:, None], (games, seats)).copy(),
        "priority": np.zeros((games, seats), np.int64),
    }
    return {name: (planes | counts)[name] for name in FIELDS}


def generals_space(config: GameConfig, pad_to: int | None, army_bound: int) -> spaces.Dict:
    """One seat's space of generals-bots fields (the kinds generals-bots' PettingZoo env declares)."""
    dims = board_size(config, pad_to)
    binary = spaces.MultiBinary(dims)
    tiles = config.tiles
    bounds = {
        "owned_land_count": tiles + 1,
        "opponent_land_count": tiles + 1,
        "owned_army_count": army_bound + 1,
        "opponent_army_count": army_bound + 1,
        "timestep": config.max_ticks + 1,
        "priority": 1,
    }
    fields: dict[str, spaces.Space] = {
        "armies": spaces.Box(0, _ARMY_MAX, dims, np.int16),
        **{name: binary for name in PLANES[1:] if name not in _INT64_PLANES},
        **{name: spaces.Box(0, 1, dims, np.int64) for name in _INT64_PLANES},
        **{name: spaces.Discrete(bound) for name, bound in bounds.items()},
    }
    return spaces.Dict({name: fields[name] for name in FIELDS})


def to_observation(fields: dict[str, Any]) -> Any:
    """One seat's fields -> a generals-bots `Observation` (counts as Python ints, as generals-bots has)."""
    try:
        from generals.core.observation import Observation
    except ImportError as e:  # pragma: no cover - generals-bots is in the `peers` extra
        raise ImportError(
            'obs_format="generals" hands out generals-bots Observation objects: pip install generals-bots'
        ) from e
    return Observation(
        **{name: fields[name] for name in PLANES},
        **{name: int(fields[name]) for name in (*COUNTS, "priority")},
    )
