"""Fog-of-war observations and action masks, per game of a batch.

Visibility is a 3x3 dilation of a player's owned tiles. It is computed on flat byte
planes, not per tile: a horizontal pass (OR with the left and right neighbours, masked at
the board's edges) then a vertical pass (OR with the rows above and below, with a zero row
padded at either end). Every loop below is branch-free over contiguous bytes, so LLVM
vectorises it; a first design on 64-bit bit rows spent its time expanding bits back to
tiles and ran 4x slower.
"""

import numba as nb
import numpy as np

from .config import CITY, FOG_OBSTACLE, KIND_OFFSET, MOUNTAIN

_ARMY_CAP = 65535
_OBSTACLE_CODE = FOG_OBSTACLE << 4


@nb.njit(inline="always", cache=True)
def observe_scratch(height, width):
    """Per-thread scratch for observe_game: planes padded so neighbour reads need no bounds checks."""
    tiles = height * width
    mine = np.zeros(tiles + 2, np.uint8)  # mine[t + 1]: one zero byte either end
    spread = np.zeros(tiles + 2 * width, np.uint8)  # spread[t + width]: one zero row either end
    edges = np.empty((2, tiles), np.uint8)  # [0]: tile has a left neighbour, [1]: a right one
    for t in range(tiles):
        c = t % width
        edges[0, t] = c != 0
        edges[1, t] = c != width - 1
    codes = np.empty((2, tiles), np.uint8)  # [0]: code when seen, [1]: code in fog
    capped = np.empty(tiles, np.uint16)
    return mine, spread, edges, codes, capped


@nb.njit(inline="always", cache=True)
def observe_game(g, armies, owner, terrain, codes_out, armies_out, land_out, army_out, scratch) -> None:
    """Write every player's view of game g: codes_out/armies_out [P, tiles], land/army totals [P]."""
    mine, spread, edges, codes, capped = scratch
    tiles = armies.shape[1]
    width = (spread.shape[0] - tiles) // 2
    arm = armies[g]
    own = owner[g]
    ter = terrain[g]
    seen_code = codes[0]
    fog_code = codes[1]
    for t in range(tiles):
        kind = np.int32(ter[t])
        seen_code[t] = ((kind + KIND_OFFSET) << 4) | own[t]
        fog_code[t] = _OBSTACLE_CODE * np.int32((kind == MOUNTAIN) | (kind == CITY))
        capped[t] = min(arm[t], _ARMY_CAP)
    here = mine[1 : tiles + 1]
    left = mine[0:tiles]
    right = mine[2 : tiles + 2]
    row = spread[width : width + tiles]
    up = spread[0:tiles]
    down = spread[2 * width : 2 * width + tiles]
    has_left = edges[0]
    has_right = edges[1]
    for p in range(codes_out.shape[0]):
        code = p + 1
        land = 0
        army = 0
        for t in range(tiles):
            m = own[t] == code
            here[t] = m
            land += np.int32(m)
            army += arm[t] * np.int32(m)
        land_out[p] = land
        army_out[p] = army
        for t in range(tiles):
            row[t] = here[t] | (left[t] & has_left[t]) | (right[t] & has_right[t])
        view_codes = codes_out[p]
        view_armies = armies_out[p]
        for t in range(tiles):
            keep = -np.int32(up[t] | row[t] | down[t])  # all ones when visible
            view_codes[t] = fog_code[t] ^ ((seen_code[t] ^ fog_code[t]) & keep)
            view_armies[t] = capped[t] & keep


@nb.njit(inline="always", cache=True)
def mask_game(g, armies, owner, terrain, height, width, masks_out) -> None:
    """Set bit t*4+d of masks_out[p] per legal move: owned tile, army > 1, target on board, not a mountain."""
    masks_out[:, :] = 0
    for r in range(height):
        for c in range(width):
            t = r * width + c
            o = owner[g, t]
            if o == 0 or armies[g, t] < 2:
                continue
            for d in range(4):
                nr = r + (-1, 1, 0, 0)[d]
                nc = c + (0, 0, -1, 1)[d]
                if nr < 0 or nr >= height or nc < 0 or nc >= width or terrain[g, nr * width + nc] == MOUNTAIN:
                    continue
                bit = t * 4 + d
                masks_out[o - 1, bit >> 3] |= np.uint8(1 << (bit & 7))
