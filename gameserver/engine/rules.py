"""The rules of one tick, as numba functions over one game of a batch.

Semantics follow generals-bots 2.5.0 `Game.step` exactly for two players, generalised to
up to 8 (FFA):
- Movers are the alive players whose action is a move with its destination on the board;
  a pass or an off-board move does nothing, which is why generals-bots can fall back to
  seat order when one appears.
- Move order among movers (`order_movers`): the first mover (in seat order) whose
  destination is another mover's source goes first, the rest follow in seat order;
  otherwise movers into their own tiles go first (seat order), then the rest; otherwise
  larger moving army (source army - 1) first, ties in seat order.
- A move takes army - 1 (or army // 2 when split) from a tile its player still owns,
  re-read at its turn (an earlier move this tick may have changed it); nothing happens if
  that is < 1 or the destination is a mountain. Into an own tile: armies add. Otherwise
  the larger side keeps the difference; a tie keeps the defender with 0.
- Capturing a general eliminates its player and hands all its land to the capturer. With
  one side left the game ends at once (remaining moves and growth are skipped, as in
  generals-bots); in FFA the captured general becomes a city and play goes on.
- Growth after the moves: +1 on every owned tile every 50 ticks, +1 on owned generals and
  cities every 2 ticks. Truncation when the tick limit is reached.
"""

import numba as nb

from .config import (
    CITY,
    GENERAL,
    LAND_GROWTH_INTERVAL,
    MOUNTAIN,
    RUNNING,
    STRUCTURE_GROWTH_INTERVAL,
    TERMINATED,
    TRUNCATED,
)

_DR = (-1, 1, 0, 0)
_DC = (0, 0, -1, 1)


@nb.njit(inline="always", cache=True)
def decode_movers(actions, alive_row, height, width, who, src, dst, split) -> int:
    """Fill the mover arrays from one game's flat actions; return the number of movers."""
    n = 0
    for p in range(actions.shape[0]):
        a = actions[p]
        if a < 0 or not alive_row[p]:
            continue
        d = (a >> 1) & 3
        t = a >> 3
        r = t // width
        c = t - r * width
        nr = r + _DR[d]
        nc = c + _DC[d]
        if nr < 0 or nr >= height or nc < 0 or nc >= width:
            continue
        who[n] = p
        src[n] = t
        dst[n] = nr * width + nc
        split[n] = a & 1
        n += 1
    return n


@nb.njit(inline="always", cache=True)
def order_movers(n, who, src, dst, owner_row, armies_row, order) -> None:
    """Write the move order (indices into the mover arrays) into order[:n]."""
    first = -1
    for i in range(n):
        for j in range(n):
            if i != j and dst[i] == src[j]:
                first = i
                break
        if first >= 0:
            break
    if first >= 0:
        order[0] = first
        k = 1
        for i in range(n):
            if i != first:
                order[k] = i
                k += 1
        return
    k = 0
    for i in range(n):
        if owner_row[dst[i]] == who[i] + 1:
            order[k] = i
            k += 1
    if k > 0:
        for i in range(n):
            if owner_row[dst[i]] != who[i] + 1:
                order[k] = i
                k += 1
        return
    # Larger moving army first; insertion sort keeps seat order on ties (stable).
    for i in range(n):
        order[i] = i
    for i in range(1, n):
        cur = order[i]
        key = armies_row[src[cur]]
        j = i - 1
        while j >= 0 and armies_row[src[order[j]]] < key:
            order[j + 1] = order[j]
            j -= 1
        order[j + 1] = cur


@nb.njit(inline="always", cache=True)
def eliminate(g, loser, capturer, owner, terrain, generals, alive, winner, status, rewards_row) -> bool:
    """Hand the loser's land to the capturer; return True when that ends the game."""
    alive[g, loser] = False
    rewards_row[loser] = -1.0
    lost = loser + 1
    won = capturer + 1
    for t in range(owner.shape[1]):
        if owner[g, t] == lost:
            owner[g, t] = won
    left = 0
    for p in range(alive.shape[1]):
        if alive[g, p]:
            left += 1
    if left == 1:
        winner[g] = capturer
        status[g] = TERMINATED
        rewards_row[capturer] = 1.0
        return True
    terrain[g, generals[g, loser]] = CITY
    return False


@nb.njit(inline="always", cache=True)
def grow(g, tick, armies, owner, structures) -> None:
    """Army growth at the end of a tick that did not end the game."""
    if tick % LAND_GROWTH_INTERVAL == 0:
        for t in range(armies.shape[1]):
            armies[g, t] += owner[g, t] != 0
    if tick % STRUCTURE_GROWTH_INTERVAL == 0:
        for k in range(structures.shape[1]):
            t = structures[g, k]
            if t >= 0 and owner[g, t] != 0:  # t < 0: a map with fewer cities than the config's
                armies[g, t] += 1


@nb.njit(inline="always", cache=True)
def step_game(
    g,
    actions,
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
    rewards_row,
    who,
    src,
    dst,
    split,
    order,
) -> None:
    """Advance game slot g by one tick with actions[p] for each player p."""
    rewards_row[:] = 0.0
    if status[g] != RUNNING:
        return
    n = decode_movers(actions, alive[g], height, width, who, src, dst, split)
    order_movers(n, who, src, dst, owner[g], armies[g], order)
    ended = False
    for k in range(n):
        i = order[k]
        p = who[i]
        if not alive[g, p]:
            continue
        s = src[i]
        army = armies[g, s]
        moving = (army >> 1) if split[i] else army - 1
        if moving < 1 or owner[g, s] != p + 1:
            continue
        t = dst[i]
        if terrain[g, t] == MOUNTAIN:
            continue
        armies[g, s] = army - moving
        defender = owner[g, t]
        if defender == p + 1:
            armies[g, t] += moving
            continue
        held = armies[g, t]
        if held >= moving:
            armies[g, t] = held - moving
            continue
        armies[g, t] = moving - held
        owner[g, t] = p + 1
        captured_general = defender != 0 and terrain[g, t] == GENERAL and generals[g, defender - 1] == t
        if captured_general and eliminate(
            g, defender - 1, p, owner, terrain, generals, alive, winner, status, rewards_row
        ):
            ended = True
            break
    tick[g] += 1
    if ended:
        return
    grow(g, tick[g], armies, owner, structures)
    if tick[g] >= max_ticks:
        status[g] = TRUNCATED
