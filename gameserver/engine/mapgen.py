"""Seeded map generation: a pure function of (seed, config), run in parallel over a batch.

Each map: generals placed at random at least `general_distance` apart (Manhattan), then an
exact number of mountains and cities on the remaining tiles, cities holding 40..50 army.
A map is kept only when every general can reach general 0 over tiles that are neither
mountain nor city (generals-bots requires the same); otherwise the same PRNG stream draws
again, so the result still depends on the seed alone.
"""

import numba as nb
import numpy as np

from .config import CITY, CITY_ARMY_MAX, CITY_ARMY_MIN, GENERAL, MOUNTAIN, PLAIN, RUNNING
from .rng import below, next_u64

MAX_ATTEMPTS = 1000  # connectivity/distance retries before a map is declared impossible
_GENERAL_TRIES = 64  # draws per general before the whole attempt restarts
_SEED_SALT = np.uint64(0x6A09E667F3BCC909)


@nb.njit(inline="always", cache=True)
def _place_generals(rng, generals_out, n_players, height, width, min_distance) -> bool:
    for p in range(n_players):
        placed = False
        for _ in range(_GENERAL_TRIES):
            t = below(rng, height * width)
            r, c = t // width, t % width
            ok = True
            for q in range(p):
                o = generals_out[q]
                if abs(o // width - r) + abs(o % width - c) < min_distance:
                    ok = False
                    break
            if ok:
                generals_out[p] = t
                placed = True
                break
        if not placed:
            return False
    return True


@nb.njit(inline="always", cache=True)
def _generals_connected(terrain_row, generals_row, height, width, queue, seen) -> bool:
    """BFS from general 0 over plain/general tiles; True when every general is reached."""
    seen[:] = 0
    start = generals_row[0]
    queue[0] = start
    seen[start] = 1
    head, tail = 0, 1
    while head < tail:
        t = queue[head]
        head += 1
        r, c = t // width, t % width
        for k in range(4):
            nr = r + (-1, 1, 0, 0)[k]
            nc = c + (0, 0, -1, 1)[k]
            if nr < 0 or nr >= height or nc < 0 or nc >= width:
                continue
            n = nr * width + nc
            if seen[n] == 0 and (terrain_row[n] == PLAIN or terrain_row[n] == GENERAL):
                seen[n] = 1
                queue[tail] = n
                tail += 1
    for p in range(generals_row.shape[0]):  # noqa: SIM110 (numba has no all() over generators)
        if seen[generals_row[p]] == 0:
            return False
    return True


@nb.njit(cache=True)
def _generate_one(
    g,
    seed,
    armies,
    owner,
    terrain,
    generals,
    structures,
    alive,
    tick,
    winner,
    status,
    seeds_out,
    height,
    width,
    n_mountains,
    n_cities,
    min_distance,
    perm,
    queue,
    seen,
) -> bool:
    tiles = height * width
    n_players = generals.shape[1]
    rng = np.empty(1, np.uint64)
    rng[0] = seed ^ _SEED_SALT
    next_u64(rng)
    for _ in range(MAX_ATTEMPTS):
        if not _place_generals(rng, generals[g], n_players, height, width, min_distance):
            continue
        terrain[g, :] = PLAIN
        owner[g, :] = 0
        armies[g, :] = 0
        for p in range(n_players):
            terrain[g, generals[g, p]] = GENERAL
        # Partial Fisher-Yates over the non-general tiles picks mountains, then cities.
        n_free = 0
        for t in range(tiles):
            if terrain[g, t] == PLAIN:
                perm[n_free] = t
                n_free += 1
        for k in range(n_mountains + n_cities):
            j = k + below(rng, n_free - k)
            perm[k], perm[j] = perm[j], perm[k]
            t = perm[k]
            if k < n_mountains:
                terrain[g, t] = MOUNTAIN
            else:
                terrain[g, t] = CITY
                armies[g, t] = CITY_ARMY_MIN + below(rng, CITY_ARMY_MAX - CITY_ARMY_MIN + 1)
                structures[g, k - n_mountains] = t
        if not _generals_connected(terrain[g], generals[g], height, width, queue, seen):
            continue
        for p in range(n_players):
            t = generals[g, p]
            owner[g, t] = p + 1
            armies[g, t] = 1
            structures[g, n_cities + p] = t
            alive[g, p] = True
        tick[g] = 0
        winner[g] = -1
        status[g] = RUNNING
        seeds_out[g] = seed
        return True
    return False


@nb.njit(inline="always", cache=True)
def _generate_range(
    lo,
    hi,
    armies,
    owner,
    terrain,
    generals,
    structures,
    alive,
    tick,
    winner,
    status,
    seeds_out,
    seeds,
    height,
    width,
    n_mountains,
    n_cities,
    min_distance,
    failed,
):
    tiles = height * width
    perm = np.empty(tiles, np.int16)
    queue = np.empty(tiles, np.int16)
    seen = np.empty(tiles, np.uint8)
    for g in range(lo, hi):
        failed[g] = not _generate_one(
            g,
            seeds[g],
            armies,
            owner,
            terrain,
            generals,
            structures,
            alive,
            tick,
            winner,
            status,
            seeds_out,
            height,
            width,
            n_mountains,
            n_cities,
            min_distance,
            perm,
            queue,
            seen,
        )


@nb.njit(parallel=True, nogil=True, cache=True)
def generate_parallel(
    armies,
    owner,
    terrain,
    generals,
    structures,
    alive,
    tick,
    winner,
    status,
    seeds_out,
    seeds,
    height,
    width,
    n_mountains,
    n_cities,
    min_distance,
    failed,
    n_chunks,
):
    """Generate map i into row i from seeds[i]; failed[i] = True when its constraints were unsatisfiable."""
    n = seeds.shape[0]
    for chunk in nb.prange(n_chunks):
        _generate_range(
            chunk * n // n_chunks,
            (chunk + 1) * n // n_chunks,
            armies,
            owner,
            terrain,
            generals,
            structures,
            alive,
            tick,
            winner,
            status,
            seeds_out,
            seeds,
            height,
            width,
            n_mountains,
            n_cities,
            min_distance,
            failed,
        )


@nb.njit(nogil=True, cache=True)
def generate_serial(
    armies,
    owner,
    terrain,
    generals,
    structures,
    alive,
    tick,
    winner,
    status,
    seeds_out,
    seeds,
    height,
    width,
    n_mountains,
    n_cities,
    min_distance,
    failed,
    n_chunks,
):
    _generate_range(
        0,
        seeds.shape[0],
        armies,
        owner,
        terrain,
        generals,
        structures,
        alive,
        tick,
        winner,
        status,
        seeds_out,
        seeds,
        height,
        width,
        n_mountains,
        n_cities,
        min_distance,
        failed,
    )
