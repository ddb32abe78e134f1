"""Hand-made boards for rule tests: a 1-game GameBatch from an ASCII map, and back.

A board is rows of whitespace-separated tokens, one per tile: KIND [OWNER] [ARMY]
    .      plain, nobody's (army 0)         .7     plain, nobody's, army 7
    #      mountain
    *      city, nobody's (army 40)         *45    a city holding 45
    *a3    city owned by player 0 (a), army 3
    a      plain owned by player 0 (army 1) b12    plain of player 1 with army 12
    A      general of player 0 (army 1)     B9     general of player 1, army 9
    Ab7    player 0's general, now owned by player 1, army 7
Players are a..h / A..H = seats 0..7; every seat needs its general. The batch's arrays are
filled directly, the way `generate` fills them: structures = the cities (row-major) then the
generals in seat order, and the GameConfig's city_density makes config.structures fit exactly.
"""

from __future__ import annotations

import re

import numpy as np

from gameserver.engine import GameBatch, GameConfig
from gameserver.engine import config as C
from gameserver.engine.actions import flat_action

_TOKEN = re.compile(r"^(?P<kind>[.#*a-hA-H])(?P<owner>[a-h])?(?P<army>\d+)?$")
UP, DOWN, LEFT, RIGHT = 0, 1, 2, 3
PASS = C.PASS


def _parse(text: str) -> list[list[re.Match]]:
    rows = [line.split() for line in text.strip().splitlines()]
    if not rows or any(len(r) != len(rows[0]) for r in rows):
        raise ValueError(f"board rows must have the same number of tiles:\n{text}")
    parsed = []
    for row in rows:
        matches = []
        for token in row:
            m = _TOKEN.match(token)
            if m is None:
                raise ValueError(f"bad board token {token!r}")
            matches.append(m)
        parsed.append(matches)
    return parsed


def _seat(letter: str) -> int:
    return ord(letter.lower()) - ord("a")


def board(
    text: str, *, tick: int = 0, max_ticks: int = 10_000, capacity: int = 1, slot: int = 0
) -> GameBatch:
    """A GameBatch whose game `slot` is the board drawn in `text` (other slots stay zeroed)."""
    parsed = _parse(text)
    height, width = len(parsed), len(parsed[0])
    tiles = height * width
    terrain = np.zeros(tiles, np.uint8)
    owner = np.zeros(tiles, np.uint8)
    armies = np.zeros(tiles, np.int32)
    generals: dict[int, int] = {}
    cities = []
    for t, m in enumerate(m for row in parsed for m in row):
        kind, own, army = m["kind"], m["owner"], m["army"]
        if kind == "#":
            if own or army:
                raise ValueError("a mountain has no owner and no army")
            terrain[t] = C.MOUNTAIN
            continue
        if kind == ".":
            if own:
                raise ValueError("write an owned plain tile as a, b, ...")
            default = 0
        elif kind == "*":
            terrain[t] = C.CITY
            cities.append(t)
            owner[t] = _seat(own) + 1 if own else 0
            default = 40
        elif kind.isupper():
            terrain[t] = C.GENERAL
            seat = _seat(kind)
            if seat in generals:
                raise ValueError(f"two generals for seat {seat}")
            generals[seat] = t
            owner[t] = _seat(own or kind) + 1
            default = 1
        else:
            if own:
                raise ValueError(f"bad board token {m.group(0)!r}")
            owner[t] = _seat(kind) + 1
            default = 1
        armies[t] = int(army) if army else default
    players = len(generals)
    if sorted(generals) != list(range(players)):
        raise ValueError(f"every seat needs a general; got seats {sorted(generals)}")
    config = GameConfig(
        height=height,
        width=width,
        players=players,
        mountain_density=0.0,
        city_density=len(cities) / tiles,
        min_general_distance=1,
        max_ticks=max_ticks,
    )
    assert config.cities == len(cities) and config.structures == len(cities) + players
    batch = GameBatch.allocate(config, capacity)
    batch.terrain[slot] = terrain
    batch.owner[slot] = owner
    batch.armies[slot] = armies
    batch.generals[slot] = [generals[p] for p in range(players)]
    batch.structures[slot] = cities + [generals[p] for p in range(players)]
    batch.alive[slot] = True
    batch.tick[slot] = tick
    batch.winner[slot] = -1
    batch.status[slot] = C.RUNNING
    return batch


def render(batch: GameBatch, slot: int = 0) -> str:
    """The board of game `slot` in canonical tokens (every army written), one line per row."""
    cfg = batch.config
    general_of = {int(t): p for p, t in enumerate(batch.generals[slot])}
    tokens = []
    for t in range(cfg.tiles):
        terrain, own, army = batch.terrain[slot, t], int(batch.owner[slot, t]), int(batch.armies[slot, t])
        owner_letter = chr(ord("a") + own - 1) if own else ""
        if terrain == C.MOUNTAIN:
            tokens.append("#")
        elif terrain == C.CITY:
            tokens.append(f"*{owner_letter}{army}")
        elif terrain == C.GENERAL:
            p = general_of.get(t)
            letter = "?" if p is None else chr(ord("A") + p)
            shown = "" if own == p + 1 else owner_letter
            tokens.append(f"{letter}{shown}{army}")
        elif own:
            tokens.append(f"{owner_letter}{army}")
        else:
            tokens.append(f".{army}" if army else ".")
    rows = [tokens[r * cfg.width : (r + 1) * cfg.width] for r in range(cfg.height)]
    return "\n".join(" ".join(f"{tok:<5}" for tok in row).rstrip() for row in rows)


def canonical(text: str) -> str:
    """`text` written the way render() writes it, so expected and actual boards compare as strings.

    Unlike board(), any board is accepted here (e.g. one where a captured general became a city).
    """

    def token(m: re.Match) -> str:
        kind, own, army = m["kind"], m["owner"] or "", m["army"]
        if kind == "#":
            return "#"
        if kind == ".":
            return f".{int(army)}" if army and int(army) else "."
        if kind == "*":
            return f"*{own}{int(army) if army else 40}"
        if kind.isupper():
            shown = own if own and own != kind.lower() else ""
            return f"{kind}{shown}{int(army) if army else 1}"
        return f"{kind}{int(army) if army else 1}"

    rows = [[token(m) for m in row] for row in _parse(text)]
    return "\n".join(" ".join(f"{tok:<5}" for tok in row).rstrip() for row in rows)


def move(row: int, col: int, direction: int, split: int = 0, *, width: int) -> int:
    return flat_action(row, col, direction, split, width)
