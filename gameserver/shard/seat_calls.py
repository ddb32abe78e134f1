"""One waiting seat call: its reply, filled in game by game as its games step.

The games of one seat call step at different moments (each when all of its seats have
acted, or at its deadline), possibly in several pools on worker threads. Each step copies
this call's rows into these buffers while its views are valid (inside ShardGames' `finish`);
once every game has stepped, the buffers are framed as one StepResponse, in request order.

A seat sees its own seat only: codes, armies, masks and rewards carry one seat
([games, 1, ...]), the seat the request named for that game. land, army and tick are every
player's, as in self-play (generals.io shows every player's land and army to all).
"""

from __future__ import annotations

import asyncio

import numpy as np

from ..engine import GameConfig, Observation, mask_bytes
from ..wire import replies as wire
from ..wire.errors import GameFleetError
from .games import ShardStep

_PER_GAME = ("terminated", "truncated", "reset", "status")


def _seat_views(config: GameConfig, games: int) -> Observation:
    """Observation buffers with one seat's planes and every player's counts."""
    tiles, players = config.tiles, config.players
    return Observation(
        codes=np.zeros((games, 1, tiles), np.uint8),
        armies=np.zeros((games, 1, tiles), np.uint16),
        land=np.zeros((games, players), np.int32),
        army=np.zeros((games, players), np.int32),
        tick=np.zeros(games, np.int32),
    )


class SeatCall:
    """The reply buffers of one seat call of `games` games, and the future its caller awaits."""

    def __init__(
        self,
        ident: int,
        config: GameConfig,
        games: int,
        *,
        observe: bool,
        masks: bool,
        finals: bool,
        future: asyncio.Future,
    ) -> None:
        self.ident = ident
        self.future = future
        self.remaining = games  # games not stepped yet
        self.rewards = np.zeros((games, 1), np.float32)
        self.terminated = np.zeros(games, np.bool_)
        self.truncated = np.zeros(games, np.bool_)
        self.reset = np.zeros(games, np.bool_)
        self.status = np.zeros(games, np.uint8)
        self.views = _seat_views(config, games) if observe else None
        self.masks = np.zeros((games, 1, mask_bytes(config.tiles)), np.uint8) if observe and masks else None
        self.final = _seat_views(config, games) if observe and finals else None

    def take(self, rows: np.ndarray, seats: np.ndarray, positions: np.ndarray, stepped: ShardStep) -> None:
        """Copy rows `rows` of a step (seat `seats` of each) to this call's `positions`.

        Runs in the step's worker, under its pool locks; other steps write other positions."""
        self.rewards[positions, 0] = stepped.rewards[rows, seats]
        for name in _PER_GAME:
            getattr(self, name)[positions] = getattr(stepped, name)[rows]
        if self.views is not None:
            _copy_views(self.views, positions, stepped.views.observation, rows, seats)
        if self.masks is not None:
            self.masks[positions, 0] = stepped.views.masks[rows, seats]
        if self.final is not None and stepped.final is not None:
            reset = stepped.reset[rows]
            finals = np.searchsorted(np.flatnonzero(stepped.reset), rows[reset])
            _copy_views(self.final, positions[reset], stepped.final, finals, seats[reset])

    def stepped(self, games: int) -> None:
        """`games` more of this call's games have stepped (on the event loop)."""
        self.remaining -= games
        if self.remaining == 0 and not self.future.done():
            self.future.set_result(None)

    def fail(self, error: GameFleetError) -> None:
        if not self.future.done():
            self.future.set_exception(error)

    def reply(self) -> bytes:
        """The StepResponse, once every game has stepped."""
        observed = final = None
        if self.views is not None:
            observed = wire.observations(self.views, self.masks)
            if self.final is not None and self.reset.any():
                rows = np.flatnonzero(self.reset)
                final = wire.observations(Observation(*(a[rows] for a in _fields(self.final))))
        return wire.step_response(
            self.rewards, self.terminated, self.truncated, self.status, self.reset, observed, final
        ).to_bytes()


def _fields(obs: Observation) -> tuple[np.ndarray, ...]:
    return obs.codes, obs.armies, obs.land, obs.army, obs.tick


def _copy_views(
    out: Observation, positions: np.ndarray, source: Observation, rows: np.ndarray, seats: np.ndarray
) -> None:
    out.codes[positions, 0] = source.codes[rows, seats]
    out.armies[positions, 0] = source.armies[rows, seats]
    out.land[positions] = source.land[rows]
    out.army[positions] = source.army[rows]
    out.tick[positions] = source.tick[rows]
