"""Bridge between GameFleet's engine arrays and generals-bots 2.5.0, the reference ("the peer").

Only conversions live here: our map -> a generals-bots `Grid` string, and both sides' state and
observations -> the same plain numpy planes, so a test can compare them with one `array_equal`.
No rule is re-implemented here: the peer's own `Game.step` is the reference.
"""

from __future__ import annotations

import numpy as np
from generals.core.game import Game
from generals.core.grid import Grid

from gameserver.engine import config as C

# Seat p of our engine is agent PEER_AGENTS[p] of the peer: Game gives agents[i] the general
# written chr(ord("A") + i) in the grid string, and seat order is the order of this list.
PEER_AGENTS = ("p0", "p1")

# generals-bots Observation fields, in the order our planes are stacked.
OBS_PLANES = (
    "armies",
    "generals",
    "cities",
    "mountains",
    "neutral_cells",
    "owned_cells",
    "opponent_cells",
    "fog_cells",
    "structures_in_fog",
)
OBS_SCALARS = (
    "owned_land_count",
    "owned_army_count",
    "opponent_land_count",
    "opponent_army_count",
    "timestep",
)

# State planes compared every tick: armies and each side's ownership (as generals-bots keeps them).
STATE_PLANES = ("armies", "owned by p0", "owned by p1", "neutral")


def grid_string(
    terrain: np.ndarray, armies: np.ndarray, generals: np.ndarray, height: int, width: int
) -> str:
    """A 2-player start (one game's terrain/armies/generals rows) as a generals-bots grid string.

    '.' plain, '#' mountain, 'A'/'B' the generals of seats 0/1, a city of army 40 + k -> digit k
    (0..9), 50 -> 'x'. Raises ValueError for anything generals-bots cannot express.
    """
    if generals.shape != (2,):
        raise ValueError(f"generals-bots plays 2 players; got generals {generals.tolist()}")
    chars = np.full(height * width, ".", dtype="<U1")
    chars[terrain == C.MOUNTAIN] = "#"
    for t in np.flatnonzero(terrain == C.CITY):
        army = int(armies[t])
        if not C.CITY_ARMY_MIN <= army <= C.CITY_ARMY_MAX:
            raise ValueError(f"city at tile {t} has army {army}, outside 40..50")
        chars[t] = "x" if army == 50 else str(army - 40)
    if not (terrain[generals] == C.GENERAL).all():
        raise ValueError(f"generals {generals.tolist()} are not GENERAL tiles")
    chars[generals[0]] = "A"
    chars[generals[1]] = "B"
    return "\n".join("".join(row) for row in chars.reshape(height, width))


def peer_game(terrain: np.ndarray, armies: np.ndarray, generals: np.ndarray, height: int, width: int) -> Game:
    """A generals-bots Game at the same start as one of our freshly generated games."""
    return Game(Grid(grid_string(terrain, armies, generals, height, width)), list(PEER_AGENTS))


def peer_state(game: Game) -> np.ndarray:
    """int64[4, H, W]: armies, ownership of p0, of p1, neutral (passable and unowned)."""
    ch = game.channels
    return np.stack(
        [
            ch.armies.astype(np.int64),
            ch.ownership[PEER_AGENTS[0]].astype(np.int64),
            ch.ownership[PEER_AGENTS[1]].astype(np.int64),
            ch.ownership_neutral.astype(np.int64),
        ]
    )


def our_state(
    armies: np.ndarray, owner: np.ndarray, terrain: np.ndarray, height: int, width: int
) -> np.ndarray:
    """int64[..., 4, H, W] from our armies/owner/terrain rows [..., HW], in peer_state's layout."""
    shape = (*armies.shape[:-1], height, width)
    planes = [
        armies.astype(np.int64),
        (owner == 1).astype(np.int64),
        (owner == 2).astype(np.int64),
        ((owner == 0) & (terrain != C.MOUNTAIN)).astype(np.int64),
    ]
    return np.stack([p.reshape(shape) for p in planes], axis=-3)


def peer_planes(obs) -> np.ndarray:
    """int64[9, H, W]: a generals-bots Observation's board fields, in OBS_PLANES order."""
    return np.stack([np.asarray(getattr(obs, name)).astype(np.int64) for name in OBS_PLANES])


def peer_scalars(obs) -> np.ndarray:
    return np.array([int(getattr(obs, name)) for name in OBS_SCALARS], np.int64)


def our_planes(codes: np.ndarray, armies: np.ndarray, player: int, height: int, width: int) -> np.ndarray:
    """Decode our observation of `player` (codes/armies [..., HW]) into int64[..., 9, H, W].

    Two players only: the opponent is seat 1 - player. The decoding follows the codes' contract:
    kind = code >> 4 (FOG, FOG_OBSTACLE, or KIND_OFFSET + terrain when visible), owner code = code & 15.
    """
    kind = codes >> 4
    own = codes & 15
    visible = kind >= C.KIND_OFFSET
    planes = [
        armies.astype(np.int64),
        kind == C.KIND_OFFSET + C.GENERAL,
        kind == C.KIND_OFFSET + C.CITY,
        kind == C.KIND_OFFSET + C.MOUNTAIN,
        visible & (own == 0) & (kind != C.KIND_OFFSET + C.MOUNTAIN),
        own == player + 1,
        own == (1 - player) + 1,
        kind == C.FOG,
        kind == C.FOG_OBSTACLE,
    ]
    shape = (*codes.shape[:-1], height, width)
    return np.stack([np.asarray(p, np.int64).reshape(shape) for p in planes], axis=-3)


def our_scalars(land: np.ndarray, army: np.ndarray, tick: int, player: int) -> np.ndarray:
    """Our global land/army totals ([P] rows) and tick in peer_scalars' order, for `player`."""
    other = 1 - player
    return np.array([land[player], army[player], land[other], army[other], tick], np.int64)


def first_difference(ours: np.ndarray, theirs: np.ndarray, names: tuple[str, ...]) -> str:
    """Describe the first differing entry of two [F, H, W] (or [F]) stacks: field, tile, both values."""
    diff = np.argwhere(ours != theirs)
    if diff.size == 0:
        return "no difference"
    where = tuple(int(x) for x in diff[0])
    field = names[where[0]]
    n = len(diff)
    if len(where) == 3:
        return (
            f"field {field!r}, first differing tile (row {where[1]}, col {where[2]}): "
            f"ours {ours[where]} vs generals-bots {theirs[where]} ({n} entries differ)"
        )
    return f"field {field!r}: ours {ours[where]} vs generals-bots {theirs[where]}"
