"""Scripted agents as numba kernels over observations (so they run on a client or a shard alike).

Both read only what their seat sees (codes/armies planes of gameserver.engine.Observation)
and return flat actions [games, players]. Randomness is a pure function of (seed, game
index, seat, tick), so a self-play run is reproducible.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence

import numba as nb
import numpy as np

from .engine.api import SERIAL_BELOW
from .engine.config import CITY, GENERAL, KIND_OFFSET, MOUNTAIN, PASS
from .engine.rng import below, next_u64

_SEEN_MOUNTAIN = MOUNTAIN + KIND_OFFSET
_SEEN_CITY = CITY + KIND_OFFSET
_SEEN_GENERAL = GENERAL + KIND_OFFSET
_K_GAME = np.uint64(0xD1B54A32D192ED03)
_K_SEAT = np.uint64(0x8CB92BA72F3D8DD7)


@nb.njit(inline="always", cache=True)
def _seat_rng(state, seed, game, seat, tick):
    state[0] = np.uint64(seed) ^ (np.uint64(game) * _K_GAME) ^ (np.uint64(seat + 1) * _K_SEAT)
    state[0] ^= np.uint64(tick) << np.uint64(40)
    next_u64(state)


@nb.njit(inline="always", cache=True)
def _move_score(codes, armies, src, dst, seat_code, greedy) -> int:
    """Score a move from an owned tile with army > 1: -1 illegal; random agent: 1 for any legal move;
    expander: captures first, bigger prizes first."""
    kind = codes[dst] >> 4
    if kind == _SEEN_MOUNTAIN:
        return -1
    if not greedy:
        return 1
    owner = codes[dst] & 15
    if owner == seat_code:
        return 1 + min(armies[src], 1000) // 100  # consolidate: big stacks move first
    moving = armies[src] - 1
    if moving <= armies[dst]:
        return 0  # a losing attack
    if kind == _SEEN_GENERAL:
        return 400
    if kind == _SEEN_CITY:
        return 300
    return 200 if owner != 0 else 100


@nb.njit(inline="always", cache=True)
def _choose(codes, armies, tick, height, width, seed, greedy, split_percent, out, g, rng, first):
    """Pick game g's move for every seat: uniformly among legal moves, or among the best-scored.
    Its draws are keyed by its index in the caller's numbering, `first + g`."""
    players, tiles = codes.shape[1], codes.shape[2]
    for p in range(players):
        _seat_rng(rng, seed, first + g, p, tick[g])
        best = -1
        count = 0
        chosen = PASS
        for t in range(tiles):
            if (codes[g, p, t] & 15) != p + 1 or armies[g, p, t] < 2:
                continue
            r = t // width
            c = t - r * width
            for d in range(4):
                nr = r + (-1, 1, 0, 0)[d]
                nc = c + (0, 0, -1, 1)[d]
                if nr < 0 or nr >= height or nc < 0 or nc >= width:
                    continue
                score = _move_score(codes[g, p], armies[g, p], t, nr * width + nc, p + 1, greedy)
                if score < 0 or score < best:
                    continue
                if score > best:
                    best = score
                    count = 0
                count += 1
                if below(rng, count) == 0:  # reservoir sampling among the best
                    chosen = (t * 4 + d) * 2
        if chosen != PASS and below(rng, 100) < split_percent:
            chosen += 1
        out[g, p] = chosen


@nb.njit(parallel=True, nogil=True, cache=True)
def _scripted_parallel(codes, armies, tick, height, width, seed, greedy, split_percent, out, first):
    for g in nb.prange(codes.shape[0]):
        _choose(
            codes,
            armies,
            tick,
            height,
            width,
            seed,
            greedy,
            split_percent,
            out,
            g,
            np.empty(1, np.uint64),
            first,
        )


@nb.njit(nogil=True, cache=True)
def _scripted_serial(codes, armies, tick, height, width, seed, greedy, split_percent, out, first):
    rng = np.empty(1, np.uint64)
    for g in range(codes.shape[0]):
        _choose(codes, armies, tick, height, width, seed, greedy, split_percent, out, g, rng, first)


def _scripted(
    codes, armies, tick, height, width, seed, greedy, split_percent, parallel=True, first=0
) -> np.ndarray:
    out = np.empty(codes.shape[:2], np.int32)
    kernel = _scripted_parallel if parallel and codes.shape[0] >= SERIAL_BELOW else _scripted_serial
    kernel(codes, armies, tick, height, width, seed, greedy, split_percent, out, first)
    return out


def random_actions(
    codes: np.ndarray,
    armies: np.ndarray,
    tick: np.ndarray,
    height: int,
    width: int,
    seed: int,
    split_percent: int = 25,
    *,
    parallel: bool = True,
    first: int = 0,
) -> np.ndarray:
    """A uniformly random legal move for every seat (PASS when a seat has none). `parallel=False`
    keeps to the calling thread: no OpenMP threads left spinning beside a co-located shard.
    `first`: the batch's first game's index where it was cut from a larger batch (the games then
    draw as they would there)."""
    return _scripted(codes, armies, tick, height, width, seed, False, split_percent, parallel, first)


def expander_actions(
    codes: np.ndarray,
    armies: np.ndarray,
    tick: np.ndarray,
    height: int,
    width: int,
    seed: int,
    *,
    first: int = 0,
) -> np.ndarray:
    """Greedy expansion: capture the richest tile it can win (general, city, enemy, neutral), else
    regroup (`first` as in random_actions)."""
    return _scripted(codes, armies, tick, height, width, seed, True, 0, first=first)


AGENTS: dict[str, Callable[..., np.ndarray]] = {"expander": expander_actions, "random": random_actions}


def check_agents(names: Iterable[str]) -> None:
    """ValueError naming the unknown agents ("" is not an agent: it leaves a seat to its player)."""
    unknown = set(names) - set(AGENTS)
    if unknown:
        raise ValueError(f"unknown agents {sorted(unknown)}; choose from {sorted(AGENTS)}")


def play_seats(
    agents: Sequence[str],
    codes: np.ndarray,
    armies: np.ndarray,
    tick: np.ndarray,
    height: int,
    width: int,
    seed: int,
    out: np.ndarray,
) -> None:
    """Write out[:, seat] for every seat that names an agent in `agents` ("": leave the seat)."""
    for seat, name in enumerate(agents):
        if name:
            out[:, seat] = AGENTS[name](codes, armies, tick, height, width, seed + seat)[:, seat]
