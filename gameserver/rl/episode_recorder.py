"""Record a batch of autoresetting games and hand back each finished episode as a replay.

Nothing about a game's map needs to travel: a map is a pure function of (config, seed) and
each next episode's seed follows from the last one and the game id (`pool.derive_seeds`), so
the recorder regenerates first states locally, also for games played on a remote fleet.
It keeps every game's moves since its episode began in a ring of max_ticks + 1 ticks (no
episode is longer), int16 (flat moves are below 64 * 64 * 8 = 32768).
"""

from __future__ import annotations

import numpy as np

from ..engine import GameBatch, GameConfig, generate
from ..engine.config import PASS
from ..pool import derive_seeds
from .replay_files import export_replay


class EpisodeRecorder:
    """Moves of `ids` (maps from `seeds`), and replays of the first `limit` episodes that finish."""

    def __init__(self, config: GameConfig, ids: np.ndarray, seeds: np.ndarray, *, limit: int) -> None:
        self.config = config
        self.ids = np.array(ids, np.uint64)
        self.seeds = np.array(seeds, np.uint64)
        if self.seeds.shape != self.ids.shape:
            raise ValueError(f"one seed per game: {self.ids.size} ids, {self.seeds.size} seeds")
        self.remaining = limit
        self._moves = np.full((config.max_ticks + 1, self.ids.size, config.players), PASS, np.int16)
        self._start = np.zeros(self.ids.size, np.int64)
        self._step = 0

    def record(self, actions: np.ndarray, finished: np.ndarray, rewards: np.ndarray) -> list[dict]:
        """Note one step's actions [games, players]; `finished` marks games whose episode just ended
        (and restarted: autoreset), `rewards` [games, players] name the winners (+1). Returns the
        replays of those episodes, up to the limit."""
        self._moves[self._step % self._moves.shape[0]] = actions
        self._step += 1
        ended = np.flatnonzero(finished)
        if not ended.size:
            return []
        taken = ended[: max(self.remaining, 0)]
        won = np.asarray(rewards)[taken] > 0
        winners = np.where(won.any(axis=1), won.argmax(axis=1), -1)
        replays = self._export(taken, winners) if taken.size else []
        self.remaining -= taken.size
        self.seeds[ended] = derive_seeds(self.seeds[ended], self.ids[ended])
        self._start[ended] = self._step
        return replays

    def _export(self, games: np.ndarray, winners: np.ndarray) -> list[dict]:
        first = GameBatch.allocate(self.config, games.size)
        generate(first, np.arange(games.size), self.seeds[games])
        replays = []
        for row, (game, winner) in enumerate(zip(games.tolist(), winners.tolist(), strict=True)):
            ticks = (self._start[game] + np.arange(self._step - self._start[game])) % self._moves.shape[0]
            moves = self._moves[ticks, game]
            replays.append(export_replay(first, row, moves, game_id=str(self.ids[game]), winner=winner))
        return replays
