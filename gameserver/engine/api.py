"""The engine's public functions: validate a whole request, then run one batch kernel.

Validation happens before any kernel runs, so a bad request raises ValueError and changes
no game. Kernels never see Python objects, only arrays and ints.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import numba as nb
import numpy as np

from .buffers import EngineStep, Observation
from .checks import check_actions, check_slots, integer_array, mask_bytes
from .config import TERMINATED, TRUNCATED
from .kernels import mask_parallel, mask_serial, observe_parallel, observe_serial, step_parallel, step_serial
from .mapgen import generate_parallel, generate_serial
from .state import GameBatch

_NO_OUTPUT = Observation(
    codes=np.zeros((0, 1, 1), np.uint8),
    armies=np.zeros((0, 1, 1), np.uint16),
    land=np.zeros((0, 1), np.int32),
    army=np.zeros((0, 1), np.int32),
    tick=np.zeros(0, np.int32),
)


SERIAL_BELOW = 64  # batches smaller than this run on the calling thread: waking the pool costs more


def chunks(games: int) -> int:
    """Work items for a parallel kernel: a few per thread balances uneven games cheaply."""
    return min(games, nb.get_num_threads() * 4)


def _check_output(batch: GameBatch, out: Observation, games: int) -> None:
    p, t = batch.config.players, batch.config.tiles
    expected = {
        "codes": ((games, p, t), np.uint8),
        "armies": ((games, p, t), np.uint16),
        "land": ((games, p), np.int32),
        "army": ((games, p), np.int32),
        "tick": ((games,), np.int32),
    }
    for name, (shape, dtype) in expected.items():
        array = getattr(out, name)
        if array.shape != shape or array.dtype != dtype or not array.flags.c_contiguous:
            raise ValueError(
                f"out.{name} must be a C-contiguous {np.dtype(dtype)} array of shape {shape}, "
                f"got {array.dtype} {array.shape}"
            )


def generate(batch: GameBatch, slots: object, seeds: object, *, checked: bool = False) -> None:
    """(Re)generate the maps of `slots` from `seeds` in place; the games start at tick 0.
    (`checked`: the slots are, as in `step`; seeds are always checked.)"""
    s = slots if checked else check_slots(batch, slots)
    sd = integer_array("seeds", seeds, 1)
    if sd.shape != s.shape:
        raise ValueError(f"seeds must have one entry per slot ({s.size}), got {sd.shape}")
    if sd.size and sd.min() < 0:
        raise ValueError("seeds must be non-negative")
    cfg = batch.config
    failed = np.zeros(s.size, np.bool_)
    # Maps are drawn into fresh storage and copied in only when every one succeeded, so an
    # impossible config raises without touching the batch.
    fresh = GameBatch.allocate(cfg, s.size)
    kernel = generate_serial if s.size < SERIAL_BELOW else generate_parallel
    kernel(
        fresh.armies,
        fresh.owner,
        fresh.terrain,
        fresh.generals,
        fresh.structures,
        fresh.alive,
        fresh.tick,
        fresh.winner,
        fresh.status,
        fresh.seed,
        sd.astype(np.uint64),
        cfg.height,
        cfg.width,
        cfg.mountains,
        cfg.cities,
        cfg.general_distance,
        failed,
        chunks(s.size),
    )
    if failed.any():
        raise ValueError(
            f"could not generate a map for seeds {sd[failed][:8].tolist()}: generals cannot be placed "
            f"{cfg.general_distance} apart and connected; lower min_general_distance or the densities"
        )
    for name, array in batch.arrays().items():
        array[s] = getattr(fresh, name)


class StepVariant(NamedTuple):
    """A kernel pair run instead of step_parallel/step_serial: each takes their arguments, then
    `args`. Built on kernels.step_range with its own per-game `after` (e.g. the shard's delta
    encoding, fused into the pass that writes the views), so callers add work per game without
    the engine knowing what it is."""

    parallel: Callable[..., None]
    serial: Callable[..., None]
    args: tuple


def step(
    batch: GameBatch,
    slots: object,
    actions: object,
    out: Observation | None = None,
    *,
    checked: bool = False,
    variant: StepVariant | None = None,
) -> EngineStep:
    """Advance each game in `slots` by one tick; with `out`, also write post-step observations.

    `checked`: the caller has validated `slots` (`check_slots`) and `actions` (`check_actions`)
    at its own edge (a pool resolving ids, a server decoding a request), so they are not
    checked again here. `variant`: run its kernels instead (same results, plus their own).
    """
    if checked:
        s, a = slots, actions
    else:
        s = check_slots(batch, slots)
        a = check_actions(batch, actions, s.size)
    if out is not None:
        _check_output(batch, out, s.size)
    cfg = batch.config
    view = out if out is not None else _NO_OUTPUT
    rewards = np.zeros((s.size, cfg.players), np.float32)
    kernels = variant or StepVariant(step_parallel, step_serial, ())
    kernel = kernels.serial if s.size < SERIAL_BELOW else kernels.parallel
    kernel(
        (
            batch.armies,
            batch.owner,
            batch.terrain,
            batch.generals,
            batch.structures,
            batch.alive,
            batch.tick,
            batch.winner,
            batch.status,
        ),
        s,
        a,
        (cfg.height, cfg.width, cfg.max_ticks),
        rewards,
        out is not None,
        (view.codes, view.armies, view.land, view.army, view.tick),
        chunks(s.size),
        *kernels.args,
    )
    status = batch.status[s]
    return EngineStep(rewards=rewards, terminated=status == TERMINATED, truncated=status == TRUNCATED)


def observe(
    batch: GameBatch, slots: object, out: Observation | None = None, *, checked: bool = False
) -> Observation:
    """Every player's fog-of-war view of the games in `slots` (`checked`: as in `step`)."""
    s = slots if checked else check_slots(batch, slots)
    if out is None:
        out = Observation.allocate(batch.config, s.size)
    else:
        _check_output(batch, out, s.size)
    cfg = batch.config
    kernel = observe_serial if s.size < SERIAL_BELOW else observe_parallel
    kernel(
        batch.armies,
        batch.owner,
        batch.terrain,
        batch.tick,
        s,
        cfg.height,
        cfg.width,
        out.codes,
        out.armies,
        out.land,
        out.army,
        out.tick,
        chunks(s.size),
    )
    return out


def action_masks(
    batch: GameBatch, slots: object, out: np.ndarray | None = None, *, checked: bool = False
) -> np.ndarray:
    """Legal moves, bit-packed: uint8[B, P, mask_bytes], bit t*4+d (little bit order).

    `out`: written in place and returned (every byte: the kernel clears each row first), e.g. a
    client's shared view, which then needs no copy of the masks."""
    s = slots if checked else check_slots(batch, slots)
    cfg = batch.config
    shape = (s.size, cfg.players, mask_bytes(cfg.tiles))
    if out is None:
        out = np.zeros(shape, np.uint8)
    elif out.shape != shape or out.dtype != np.uint8 or not out.flags.c_contiguous or not out.flags.writeable:
        raise ValueError(
            f"out must be a writable C-contiguous uint8 array of shape {shape}, got {out.dtype} {out.shape}"
        )
    kernel = mask_serial if s.size < SERIAL_BELOW else mask_parallel
    kernel(batch.armies, batch.owner, batch.terrain, s, cfg.height, cfg.width, out)
    return out
