"""Seat play: open-seat games, whose seats are held by different clients.

A self-play client moves every seat of its games in one call; in seat play each client
moves one seat, so a game's tick is assembled from several calls. JoinGame hands out a
seat and a random 64-bit token (`secrets`); a seat call names, for each of its games, the
seat it acts for and that seat's token. A game steps once every seat has acted, or when its
turn deadline has passed since its first pending move: seats that have not acted pass, and
a deadline of 0 waits for every seat (unjoined seats included). A seat call returns once all
of its games have stepped (a long poll; GameStepStatus WAITING is never answered) with its
seat's rows only (see seat_calls.py). A call that fails (its game closed: ABORTED) or is
cancelled (the client hung up or timed out) takes its moves back from the games that have
not stepped yet, so the seat can simply call again.

The table is numpy arrays with one row per open-seat game (tokens, pending moves, which
seats acted and which call waits for each, deadlines), so recording a call of thousands of
games is a few vector operations. Games that become ready together step together, in one
ShardGames.step per pool, on a task of their own: a caller that hangs up cannot cancel the
step that other seats wait for. One loop timer, armed for the earliest due game, fires the
deadlines. Everything here runs on the server's event loop, except `SeatCall.take`.
"""

from __future__ import annotations

import asyncio
import logging
import math
import secrets

import grpc
import numpy as np

from ..engine import GameConfig
from ..engine.actions import from_generals_bots
from ..engine.config import MAX_PLAYERS, PASS
from ..wire.errors import (
    Aborted,
    AlreadyExists,
    FailedPrecondition,
    GameFleetError,
    InvalidArgument,
    PermissionDenied,
    ResourceExhausted,
    as_service_error,
)
from ..wire.generated import batch_pb2 as pb
from ..wire.messages import read_tensor
from .games import Route, ShardGames, ShardStep
from .seat_calls import SeatCall

log = logging.getLogger(__name__)
MAX_DEADLINE_MS = 3_600_000.0
_SHOWN = 8  # offending games named in an error
_FIRST_ROWS = 64


def turn_deadline(request: pb.CreateBatchGamesRequest) -> float:
    """The create request's turn deadline in seconds (0: wait for every seat)."""
    ms = request.turn_deadline_ms
    if not request.open_seats and ms != 0:
        raise InvalidArgument("turn_deadline_ms applies to open-seat games only (set open_seats)")
    if not 0 <= ms <= MAX_DEADLINE_MS:  # also refuses NaN
        raise InvalidArgument(f"turn_deadline_ms must be in [0, {MAX_DEADLINE_MS:.0f}], got {ms}")
    return ms / 1000.0


def read_seat_moves(
    request: pb.SubmitBatchActionsRequest, config: GameConfig, games: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A seat call's moves int32 [games], seats [games] and tokens uint64 [games], checked."""
    for field in ("actions", "seats", "seat_tokens"):
        if not request.HasField(field):
            raise InvalidArgument(
                f"{field} is missing: seat play takes actions int32 [games], seats int32 [games] "
                "and seat_tokens uint64 [games]"
            )
    if request.delta:
        raise InvalidArgument("delta: seat calls get full planes (delta views are kept per game, not seat)")
    actions = _integers(request.actions, "actions")
    if actions.shape == (games, 5):
        actions = from_generals_bots(actions, config.height, config.width)
    elif actions.shape != (games,):
        raise InvalidArgument(
            f"actions: seat play takes one move per game, [{games}] flat moves or [{games}, 5] "
            f"generals-bots moves, got shape {list(actions.shape)}"
        )
    if actions.min() < PASS or actions.max() >= config.num_actions:
        raise InvalidArgument(
            f"actions must be in [-1, {config.num_actions}), got [{actions.min()}, {actions.max()}]"
        )
    seats = _integers(request.seats, "seats")
    if seats.shape != (games,) or seats.min() < 0 or seats.max() >= config.players:
        raise InvalidArgument(
            f"seats must be [{games}] integers in [0, {config.players}), "
            f"got {seats.dtype} {list(seats.shape)} in [{seats.min()}, {seats.max()}]"
        )
    tokens = read_tensor(request.seat_tokens, "seat_tokens")
    if tokens.dtype != np.uint64 or tokens.shape != (games,):
        raise InvalidArgument(
            f"seat_tokens must be uint64 [{games}], got {tokens.dtype} {list(tokens.shape)}"
        )
    return actions.astype(np.int32), seats.astype(np.intp), tokens


def _integers(tensor: pb.Tensor, field: str) -> np.ndarray:
    array = read_tensor(tensor, field)
    if not np.issubdtype(array.dtype, np.integer) or array.size == 0:
        raise InvalidArgument(
            f"{field} must hold integers, one per game, got {array.dtype} {list(array.shape)}"
        )
    return array


class SeatTable:
    """The open-seat games of a shard: seats, tokens and pending moves, and their stepping."""

    def __init__(self, games: ShardGames) -> None:
        self._games = games
        self._index = (np.zeros(0, np.uint64), np.zeros(0, np.intp))  # open ids ascending, their row
        self._used = np.zeros(0, np.bool_)
        self._game = np.zeros(0, np.uint64)  # id of each row
        self._pool = np.zeros(0, np.int32)  # PoolEntry.index: games of one pool step in one call
        self._has_seat = np.zeros((0, MAX_PLAYERS), np.bool_)  # seat < players
        self._shard_plays = np.zeros((0, MAX_PLAYERS), np.bool_)  # the shard's agent holds it (roles.py)
        self._token = np.zeros((0, MAX_PLAYERS), np.uint64)  # 0: free seat
        self._action = np.zeros((0, MAX_PLAYERS), np.int32)  # this tick's moves, PASS until acted
        self._acted = np.zeros((0, MAX_PLAYERS), np.bool_)
        self._waiter = np.zeros((0, MAX_PLAYERS), np.int64)  # SeatCall.ident of the acting call
        self._position = np.zeros((0, MAX_PLAYERS), np.intp)  # the game's place in that call
        self._deadline = np.zeros(0)  # seconds, 0: wait for every seat
        self._due = np.zeros(0)  # loop time the tick steps at, inf: no deadline running
        self._calls: dict[int, SeatCall] = {}
        self._next_call = 1
        self._timer: asyncio.TimerHandle | None = None
        self._steps: set[asyncio.Task] = set()

    @property
    def open_games(self) -> int:
        return self._index[0].size

    @property
    def waiting_calls(self) -> int:
        """Seat calls waiting for their games to step (long polls in flight)."""
        return len(self._calls)

    def open(self, route: Route, deadline: float, shard_seats: tuple[bool, ...] = ()) -> None:
        """Register newly created games (one pool) as open-seat games, every seat free but those
        the shard plays itself (`shard_seats`: per seat): they never wait for a client."""
        ids, players = route.ids, route.config.players
        rows = self._free_rows(ids.size)
        self._used[rows] = True
        self._game[rows] = ids
        self._pool[rows] = route.groups[0][0].index
        self._has_seat[rows] = np.arange(MAX_PLAYERS) < players
        self._shard_plays[rows] = False
        self._shard_plays[rows, : len(shard_seats)] = shard_seats
        self._token[rows] = 0
        self._action[rows] = PASS
        self._acted[rows] = False
        self._waiter[rows] = 0
        self._deadline[rows] = deadline
        self._due[rows] = math.inf
        live, where = self._index
        order = np.argsort(ids)
        at = np.searchsorted(live, ids[order])
        self._index = (np.insert(live, at, ids[order]), np.insert(where, at, rows[order]))

    def join(self, game_id: int, seat: int) -> tuple[int, int]:
        """Take `seat` of a live game (-1: the lowest free one); returns (seat, token)."""
        row = int(self._rows(np.array([game_id], np.uint64))[0])
        players = int(self._has_seat[row].sum())
        free = (self._token[row, :players] == 0) & ~self._shard_plays[row, :players]
        if seat == -1:
            if not free.any():
                raise ResourceExhausted(f"game {game_id} is full: all {players} seats are taken")
            seat = int(np.argmax(free))
        elif not 0 <= seat < players:
            raise InvalidArgument(f"seat: game {game_id} has seats 0..{players - 1} (-1: any), got {seat}")
        elif self._shard_plays[row, seat]:
            raise AlreadyExists(f"game {game_id} seat {seat} is played by the shard's agent")
        elif not free[seat]:
            raise AlreadyExists(f"game {game_id} seat {seat} is already taken")
        token = 0
        while token == 0:  # 0 marks a free seat
            token = secrets.randbits(64)
        self._token[row, seat] = token
        return seat, token

    def refuse_self_play(self, ids: np.ndarray) -> None:
        """A self-play call ([games, players] moves) must not name open-seat games."""
        if self.open_games:
            open_ids = ids[self._find(ids)[1]]
            if open_ids.size:
                raise FailedPrecondition(
                    f"games {open_ids[:_SHOWN].tolist()} have open seats: submit one move per game "
                    "with seats and seat_tokens (JoinGame), not [games, players] moves"
                )

    async def submit(
        self,
        route: Route,
        actions: np.ndarray,
        seats: np.ndarray,
        tokens: np.ndarray,
        *,
        observe: bool,
        masks: bool,
    ) -> bytes:
        """Record one seat's move per game; answer once every game of the call has stepped."""
        ids = route.ids
        rows = self._rows(ids)
        held = self._token[rows, seats]
        wrong = (held != tokens) | (held == 0) | self._shard_plays[rows, seats]  # 0: nobody joined
        if wrong.any():
            shown = [
                f"game {g} seat {s}" for g, s in zip(ids[wrong][:_SHOWN], seats[wrong][:_SHOWN], strict=True)
            ]
            unjoined = " (some not joined at all)" if (held[wrong] == 0).any() else ""
            raise PermissionDenied(
                f"seat_tokens: {wrong.sum()} of {ids.size} tokens do not hold their seat{unjoined}: "
                f"{', '.join(shown)}; JoinGame hands out each seat's token"
            )
        again = self._acted[rows, seats]
        if again.any():
            shown = [
                f"game {g} seat {s}" for g, s in zip(ids[again][:_SHOWN], seats[again][:_SHOWN], strict=True)
            ]
            raise FailedPrecondition(
                f"{', '.join(shown)}: already acted this tick (a call for it waits for the other seats)"
            )
        loop = asyncio.get_running_loop()
        finals = observe and any(entry.pool.autoreset for entry in route.entries)
        call = SeatCall(
            self._next_call,
            route.config,
            ids.size,
            observe=observe,
            masks=masks,
            finals=finals,
            future=loop.create_future(),
        )
        self._next_call += 1
        self._calls[call.ident] = call
        first = ~self._acted[rows].any(axis=1) & (self._deadline[rows] > 0)
        self._action[rows, seats] = actions
        self._acted[rows, seats] = True
        self._waiter[rows, seats] = call.ident
        self._position[rows, seats] = np.arange(ids.size)
        self._due[rows[first]] = loop.time() + self._deadline[rows[first]]
        self._play(rows[(self._acted[rows] | ~self._has_seat[rows] | self._shard_plays[rows]).all(axis=1)])
        self._arm(float(self._due[rows].min()))
        try:
            await call.future
        except BaseException:  # refused by a close, or the caller hung up
            self._withdraw(rows, seats, call.ident)
            raise
        finally:
            del self._calls[call.ident]
        return call.reply()

    def release(self, ids: np.ndarray) -> None:
        """Closed games: free their rows, and fail the calls waiting on them."""
        found, hit = self._find(ids)
        if not hit.any():
            return
        rows = found[hit]
        waiting = self._waiter[rows]
        for ident in np.unique(waiting[waiting != 0]).tolist():
            call = self._calls.get(ident)
            if call is not None:
                game, seat = (int(i[0]) for i in np.nonzero(waiting == ident))
                call.fail(Aborted(f"game {ids[hit][game]} was closed while seat {seat} waited for its tick"))
        self._used[rows] = False
        self._waiter[rows] = 0
        self._due[rows] = math.inf
        live, where = self._index
        keep = ~np.isin(live, ids[hit])
        self._index = (live[keep], where[keep])

    def _withdraw(self, rows: np.ndarray, seats: np.ndarray, ident: int) -> None:
        """Take back a failed call's moves from the games that have not stepped yet."""
        pending = self._waiter[rows, seats] == ident
        rows, seats = rows[pending], seats[pending]
        self._action[rows, seats] = PASS
        self._acted[rows, seats] = False
        self._waiter[rows, seats] = 0
        self._due[rows[~self._acted[rows].any(axis=1)]] = math.inf

    def _find(self, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(row, found) of each id."""
        live, where = self._index
        if live.size == 0:
            return np.zeros(ids.size, np.intp), np.zeros(ids.size, np.bool_)
        pos = np.minimum(np.searchsorted(live, ids), live.size - 1)
        return where[pos], live[pos] == ids

    def _rows(self, ids: np.ndarray) -> np.ndarray:
        """The rows of live games that must be open-seat games."""
        rows, found = self._find(ids)
        if not found.all():
            raise FailedPrecondition(
                f"games {ids[~found][:_SHOWN].tolist()} are self-play games (created without "
                "open_seats): they have no seats to join; submit [games, players] moves instead"
            )
        return rows

    def _free_rows(self, n: int) -> np.ndarray:
        free = np.flatnonzero(~self._used)
        if free.size < n:
            old = self._used.size
            capacity = max(_FIRST_ROWS, old)
            while capacity - self.open_games < n:
                capacity *= 2
            names = ("_used", "_game", "_pool", "_has_seat", "_shard_plays", "_token", "_action", "_acted",
                     "_waiter", "_position", "_deadline", "_due")  # fmt: skip
            for name in names:
                array = getattr(self, name)
                grown = np.zeros((capacity, *array.shape[1:]), array.dtype)
                grown[:old] = array
                setattr(self, name, grown)
            self._due[old:] = math.inf
            free = np.flatnonzero(~self._used)
        return free[:n]

    def _play(self, rows: np.ndarray) -> None:
        """Step these games with their pending moves (one task per pool); their next tick starts."""
        if rows.size == 0:
            return
        ids, pools = self._game[rows], self._pool[rows]
        actions, waiters, positions = self._action[rows], self._waiter[rows], self._position[rows]
        self._action[rows] = PASS
        self._acted[rows] = False
        self._waiter[rows] = 0
        self._due[rows] = math.inf
        for pool in np.unique(pools):
            part = pools == pool
            task = asyncio.create_task(self._step(ids[part], actions[part], waiters[part], positions[part]))
            self._steps.add(task)
            task.add_done_callback(self._steps.discard)

    async def _step(
        self, ids: np.ndarray, actions: np.ndarray, waiters: np.ndarray, positions: np.ndarray
    ) -> None:
        calls = [call for w in np.unique(waiters[waiters != 0]) if (call := self._calls.get(int(w)))]
        seated = [np.nonzero(waiters == call.ident) for call in calls]

        def deliver(stepped: ShardStep) -> None:
            for call, (rows, seats) in zip(calls, seated, strict=True):
                call.take(rows, seats, positions[rows, seats], stepped)

        try:
            route = self._games.route(ids)
            await self._games.step(
                route,
                actions[:, : route.config.players],
                observe=any(call.views is not None for call in calls),
                masks=any(call.masks is not None for call in calls),
                delta=False,
                finish=deliver,
            )
        except Exception as error:
            failure = as_service_error(error)
            if failure is None:
                log.exception("seat step failed", exc_info=error)
                failure = GameFleetError(
                    f"internal error: {type(error).__name__}: {error}", grpc.StatusCode.INTERNAL
                )
            for call in calls:
                call.fail(failure)
            return
        for call, (rows, _) in zip(calls, seated, strict=True):
            call.stepped(rows.size)

    def _arm(self, when: float) -> None:
        """Have the deadline timer fire at `when` (loop time) unless it fires earlier already."""
        if when == math.inf or (self._timer is not None and self._timer.when() <= when):
            return
        if self._timer is not None:
            self._timer.cancel()
        self._timer = asyncio.get_running_loop().call_at(when, self._fire)

    def _fire(self) -> None:
        self._timer = None
        self._play(np.flatnonzero(self._due <= asyncio.get_running_loop().time()))
        if self._due.size:
            self._arm(float(self._due.min()))
