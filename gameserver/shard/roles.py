"""What a shard adds to the steps of some games: seats it plays itself, and transitions it pushes.

A CreateBatchGames call may name a scripted agent per seat (`seat_agents`): the shard then
chooses those seats' moves from their own fog-of-war views (gameserver.agents, numba kernels over
the batch) and they replace whatever the caller sent for them, so a trainer plays its seats
against the shard's opponents in the usual [games, players] self-play call. In open-seat
games those seats cannot be joined and never hold a tick back: a client that joins another
seat plays against the shard. It may also ask
for `push_transitions`: every step of those games goes, as one item per (game, seat), to the
shard's ReplayService (replay/sink.py), with the moves actually played.

Both need the games' views before the step, so such games live in pools of their own (a
PoolRole is part of a pool's key) and only they pay for the extra observe.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np

from ..agents import check_agents, play_seats
from ..engine import GameConfig, Observation
from ..fleet.durability import PoolRecorder
from ..pool import PoolStep, Selection
from ..replay.sink import TransitionSink
from ..wire.errors import FailedPrecondition, InvalidArgument
from ..wire.generated import batch_pb2 as pb


@dataclass(frozen=True)
class PoolRole:
    """The shard's part in a pool's games: agent per seat ("" the caller's; () none), pushing."""

    agents: tuple[str, ...] = ()
    push: bool = False

    @property
    def plain(self) -> bool:
        return not self.agents and not self.push


PLAIN = PoolRole()  # the caller plays every seat, nothing is pushed


def read_role(
    request: pb.CreateBatchGamesRequest, config: GameConfig, sink: TransitionSink | None
) -> PoolRole:
    """The role a create call asks for, checked (INVALID_ARGUMENT / FAILED_PRECONDITION)."""
    agents = tuple(request.seat_agents)
    if agents:
        if len(agents) != config.players:
            raise InvalidArgument(f"seat_agents: one name per seat ({config.players}), got {len(agents)}")
        try:
            check_agents(name for name in agents if name)
        except ValueError as error:
            raise InvalidArgument(f"seat_agents: {error} (or '' for the caller's seat)") from None
        if not any(agents):
            agents = ()
    if request.push_transitions and sink is None:
        raise FailedPrecondition(
            "push_transitions: this shard has no replay service (start it with gamefleet serve "
            "--replay-address HOST:PORT)"
        )
    return PoolRole(agents, request.push_transitions)


def step_with_role(
    recorder: PoolRecorder,
    role: PoolRole,
    sink: TransitionSink | None,
    seed: int,
    chosen: Selection,
    moves: np.ndarray,
    observe: bool,
    out: Observation | None,
) -> PoolStep:
    """A pool's step (through its recorder) with the shard's seats played and the step pushed (out:
    the call's planes). `moves` are range-checked; the agents' moves are legal by construction."""
    config = recorder.config
    before = recorder.observe(chosen)  # its own buffers: they must outlive the step
    if role.agents:
        moves = moves.copy()
        h, w = config.height, config.width
        play_seats(role.agents, before.codes, before.armies, before.tick, h, w, seed, moves)
    if not role.push:
        return recorder.step(chosen, moves, observe, out, checked=True)
    planes = out if out is not None else Observation.allocate(config, chosen.size)
    result = recorder.step(chosen, moves, True, planes, checked=True)
    sink.push(config, chosen.ids, before, moves, result, result.observation, result.final_observation)
    if observe:
        return result
    return dataclasses.replace(result, observation=None, final_observation=None)
