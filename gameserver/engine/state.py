"""Structure-of-arrays storage for a batch of games.

Every field is one array over all slots (`capacity` games), so a kernel walks plain
contiguous memory and a pool grows by reallocating a handful of arrays. A 20x20
two-player game takes about 2.5 KB: armies (int32) dominate.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import numpy as np

from .config import GameConfig


@dataclass
class GameBatch:
    """The exact state of `capacity` games sharing one `GameConfig`.

    armies      int32[capacity, tiles]      exact army on every tile
    owner       uint8[capacity, tiles]      0 = nobody, p + 1 = player p
    terrain     uint8[capacity, tiles]      PLAIN / MOUNTAIN / CITY / GENERAL
    generals    int16[capacity, players]    tile index of each player's general
    structures  int16[capacity, structures] tiles that grow every 2 ticks (cities, generals)
    alive       bool[capacity, players]     False once a player's general is captured
    tick        int32[capacity]             half-turns played
    winner      int8[capacity]              -1 until one side is left
    status      uint8[capacity]             RUNNING / TERMINATED / TRUNCATED
    seed        uint64[capacity]            the seed the slot's map was generated from
    """

    config: GameConfig
    armies: np.ndarray
    owner: np.ndarray
    terrain: np.ndarray
    generals: np.ndarray
    structures: np.ndarray
    alive: np.ndarray
    tick: np.ndarray
    winner: np.ndarray
    status: np.ndarray
    seed: np.ndarray

    @classmethod
    def allocate(cls, config: GameConfig, capacity: int) -> GameBatch:
        """Zeroed storage for `capacity` games (slots hold no valid game until generated)."""
        if isinstance(capacity, bool) or not isinstance(capacity, int | np.integer) or capacity < 0:
            raise ValueError(f"capacity must be a non-negative int, got {capacity!r}")
        n, t, p = int(capacity), config.tiles, config.players
        return cls(
            config=config,
            armies=np.zeros((n, t), np.int32),
            owner=np.zeros((n, t), np.uint8),
            terrain=np.zeros((n, t), np.uint8),
            generals=np.zeros((n, p), np.int16),
            structures=np.zeros((n, config.structures), np.int16),
            alive=np.zeros((n, p), np.bool_),
            tick=np.zeros(n, np.int32),
            winner=np.full(n, -1, np.int8),
            status=np.zeros(n, np.uint8),
            seed=np.zeros(n, np.uint64),
        )

    @property
    def capacity(self) -> int:
        return self.armies.shape[0]

    def arrays(self) -> dict[str, np.ndarray]:
        """The per-slot arrays by field name (everything but the config)."""
        return {f.name: getattr(self, f.name) for f in fields(self) if f.name != "config"}

    def resized(self, capacity: int) -> GameBatch:
        """A copy with `capacity` slots: existing slots keep their games, new slots are zero."""
        grown = GameBatch.allocate(self.config, capacity)
        keep = min(capacity, self.capacity)
        for name, array in self.arrays().items():
            getattr(grown, name)[:keep] = array[:keep]
        return grown

    def nbytes_per_game(self) -> int:
        """Resident bytes one slot takes."""
        return sum(a.nbytes for a in self.arrays().values()) // max(self.capacity, 1)
