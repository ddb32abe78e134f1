"""Batch kernels: loops over the games of a batch (`nogil`, so callers' threads overlap).

Each kernel has a parallel form (a few chunks per thread; a chunk allocates its scratch
once, then walks its games so a game's arrays stay in cache from step to observe) and a
serial form for small batches, where waking the thread pool costs more than the work.
"""

import numba as nb
import numpy as np

from .config import RUNNING
from .fog import mask_game, observe_game, observe_scratch
from .rules import step_game


@nb.njit(inline="always", cache=True)
def no_after(i, finished, after_args, k):
    """The plain step's per-game hook: nothing."""
    return k


@nb.njit(inline="always", cache=True)
def step_range(lo, hi, state, slots, actions, dims, rewards, observe, view, after, after_args, k):
    """Step games slots[lo:hi] (state: the batch's arrays; dims: height, width, max_ticks); when
    `observe`, write each one's views into row i of `view` and then call
    `k = after(i, finished, after_args, k)` while they are still in cache; returns k.

    `after` lets a variant kernel (e.g. the shard's delta encoding) work on each game's fresh
    planes without a second pass; the engine's own kernels pass `no_after`."""
    armies, owner, terrain, generals, structures, alive, tick, winner, status = state
    height, width, max_ticks = dims
    codes_out, armies_out, land_out, army_out, tick_out = view
    movers = np.empty((5, actions.shape[1]), np.int32)
    view_scratch = observe_scratch(height, width)
    for i in range(lo, hi):
        g = slots[i]
        step_game(
            g,
            actions[i],
            armies,
            owner,
            terrain,
            generals,
            structures,
            alive,
            tick,
            winner,
            status,
            height,
            width,
            max_ticks,
            rewards[i],
            movers[0],
            movers[1],
            movers[2],
            movers[3],
            movers[4],
        )
        if observe:
            observe_game(
                g, armies, owner, terrain, codes_out[i], armies_out[i], land_out[i], army_out[i], view_scratch
            )
            tick_out[i] = tick[g]
            k = after(i, status[g] != RUNNING, after_args, k)
    return k


@nb.njit(parallel=True, nogil=True, cache=True)
def step_parallel(state, slots, actions, dims, rewards, observe, view, n_chunks):
    """Step slots[i] with actions[i]; when `observe`, also write the post-step views of game i."""
    n = slots.shape[0]
    for chunk in nb.prange(n_chunks):
        lo, hi = chunk * n // n_chunks, (chunk + 1) * n // n_chunks
        step_range(lo, hi, state, slots, actions, dims, rewards, observe, view, no_after, (), 0)


@nb.njit(nogil=True, cache=True)
def step_serial(state, slots, actions, dims, rewards, observe, view, n_chunks):
    step_range(0, slots.shape[0], state, slots, actions, dims, rewards, observe, view, no_after, (), 0)


@nb.njit(inline="always", cache=True)
def _observe_range(
    lo,
    hi,
    armies,
    owner,
    terrain,
    tick,
    slots,
    height,
    width,
    codes_out,
    armies_out,
    land_out,
    army_out,
    tick_out,
):
    view_scratch = observe_scratch(height, width)
    for i in range(lo, hi):
        g = slots[i]
        observe_game(
            g, armies, owner, terrain, codes_out[i], armies_out[i], land_out[i], army_out[i], view_scratch
        )
        tick_out[i] = tick[g]


@nb.njit(parallel=True, nogil=True, cache=True)
def observe_parallel(
    armies,
    owner,
    terrain,
    tick,
    slots,
    height,
    width,
    codes_out,
    armies_out,
    land_out,
    army_out,
    tick_out,
    n_chunks,
):
    n = slots.shape[0]
    for chunk in nb.prange(n_chunks):
        _observe_range(
            chunk * n // n_chunks,
            (chunk + 1) * n // n_chunks,
            armies,
            owner,
            terrain,
            tick,
            slots,
            height,
            width,
            codes_out,
            armies_out,
            land_out,
            army_out,
            tick_out,
        )


@nb.njit(nogil=True, cache=True)
def observe_serial(
    armies,
    owner,
    terrain,
    tick,
    slots,
    height,
    width,
    codes_out,
    armies_out,
    land_out,
    army_out,
    tick_out,
    n_chunks,
):
    _observe_range(
        0,
        slots.shape[0],
        armies,
        owner,
        terrain,
        tick,
        slots,
        height,
        width,
        codes_out,
        armies_out,
        land_out,
        army_out,
        tick_out,
    )


@nb.njit(parallel=True, nogil=True, cache=True)
def mask_parallel(armies, owner, terrain, slots, height, width, masks_out):
    for i in nb.prange(slots.shape[0]):
        mask_game(slots[i], armies, owner, terrain, height, width, masks_out[i])


@nb.njit(nogil=True, cache=True)
def mask_serial(armies, owner, terrain, slots, height, width, masks_out):
    for i in range(slots.shape[0]):
        mask_game(slots[i], armies, owner, terrain, height, width, masks_out[i])
