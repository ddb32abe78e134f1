"""Self-play transitions: one replay item per (game, seat) per tick, built from a step with numpy.

An item is what a value-based learner needs from one seat's point of view: the seat's compact
view before the step (codes/armies planes, as the seat sees them through fog), its action,
its reward, its view after the step, and whether the episode ended. After a same-step
autoreset, "after" is the finished episode's last view (final observations), never the new
episode's first one. `done` is termination only (bootstrap from the next state when it is
False); `truncated` marks episodes cut by the tick limit, where a learner may bootstrap.
"""

from __future__ import annotations

from typing import NamedTuple, Protocol

import numpy as np

from ..engine import GameConfig
from ..wire.replay import FieldSpec, field_spec


class Planes(Protocol):
    """Anything with codes uint8 [games, players, tiles] and armies uint16 (Observation, a reply)."""

    codes: np.ndarray
    armies: np.ndarray


class StepFlags(Protocol):
    """What a step reports per game (PoolStep and the client's StepReply both do)."""

    rewards: np.ndarray
    terminated: np.ndarray
    truncated: np.ndarray
    reset: np.ndarray


class CapturedPlanes(NamedTuple):
    codes: np.ndarray
    armies: np.ndarray


def transition_spec(config: GameConfig) -> dict[str, FieldSpec]:
    tiles = (config.tiles,)
    return {
        "obs_codes": field_spec(np.uint8, tiles),
        "obs_armies": field_spec(np.uint16, tiles),
        "action": field_spec(np.int32),
        "reward": field_spec(np.float32),
        "next_codes": field_spec(np.uint8, tiles),
        "next_armies": field_spec(np.uint16, tiles),
        "done": field_spec(np.bool_),
        "truncated": field_spec(np.bool_),
        "game_id": field_spec(np.uint64),
        "player": field_spec(np.uint8),
    }


def capture(view: Planes) -> CapturedPlanes:
    """A copy of the planes a step is about to overwrite (client buffers are updated in place)."""
    return CapturedPlanes(np.array(view.codes), np.array(view.armies))


def make_transitions(
    ids: np.ndarray,
    before: Planes,
    actions: np.ndarray,
    step: StepFlags,
    after: Planes,
    final: Planes | None,
    seats: np.ndarray | None = None,
) -> dict[str, np.ndarray]:
    """Items of `transition_spec`, game-major then seat: G games x S seats rows, no Python loop.

    `final` holds one row per game with `step.reset` set (in order), as StepResponse and PoolStep do.
    """
    games, players, tiles = before.codes.shape
    seats = np.arange(players) if seats is None else np.asarray(seats, np.int64)
    rows = games * seats.size
    next_codes = after.codes[:, seats]
    next_armies = after.armies[:, seats]
    finished = np.flatnonzero(step.reset)
    if finished.size:
        if final is None or final.codes.shape[0] != finished.size:
            raise ValueError(f"{finished.size} games reset but the final views hold a different count")
        next_codes[finished] = final.codes[:, seats]
        next_armies[finished] = final.armies[:, seats]
    terminated = np.asarray(step.terminated, np.bool_)
    return {
        "obs_codes": before.codes[:, seats].reshape(rows, tiles),
        "obs_armies": before.armies[:, seats].reshape(rows, tiles),
        "action": np.asarray(actions, np.int32)[:, seats].reshape(rows),
        "reward": np.asarray(step.rewards, np.float32)[:, seats].reshape(rows),
        "next_codes": next_codes.reshape(rows, tiles),
        "next_armies": next_armies.reshape(rows, tiles),
        "done": np.repeat(terminated, seats.size),
        "truncated": np.repeat(np.asarray(step.truncated, np.bool_) & ~terminated, seats.size),
        "game_id": np.repeat(np.asarray(ids, np.uint64), seats.size),
        "player": np.tile(seats.astype(np.uint8), games),
    }
