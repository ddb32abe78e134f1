"""Result containers the engine writes into: allocate once, reuse every step."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .config import GameConfig


@dataclass
class Observation:
    """Every player's fog-of-war view of B games.

    codes   uint8[B, P, tiles]   kind << 4 | owner code (see config: FOG, FOG_OBSTACLE, KIND_OFFSET)
    armies  uint16[B, P, tiles]  visible army, saturating at 65535; 0 in fog
    land    int32[B, P]          every player's land count (global, as in generals-bots)
    army    int32[B, P]          every player's total army
    tick    int32[B]
    """

    codes: np.ndarray
    armies: np.ndarray
    land: np.ndarray
    army: np.ndarray
    tick: np.ndarray

    @classmethod
    def allocate(cls, config: GameConfig, games: int) -> Observation:
        p, t = config.players, config.tiles
        return cls(
            codes=np.zeros((games, p, t), np.uint8),
            armies=np.zeros((games, p, t), np.uint16),
            land=np.zeros((games, p), np.int32),
            army=np.zeros((games, p), np.int32),
            tick=np.zeros(games, np.int32),
        )

    @property
    def games(self) -> int:
        return self.codes.shape[0]

    def nbytes_per_game(self) -> int:
        arrays = (self.codes, self.armies, self.land, self.army, self.tick)
        return sum(a.nbytes for a in arrays) // max(self.games, 1)


@dataclass
class EngineStep:
    """What the engine reports for one step of B slots: rewards float32[B, P], terminated/truncated
    bool[B]. (A pool adds autoreset and views: pool.PoolStep; a shard request: shard.games.ShardStep;
    the client reads wire.replies.StepReply.)"""

    rewards: np.ndarray
    terminated: np.ndarray
    truncated: np.ndarray
