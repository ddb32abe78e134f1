"""Given maps: a board's terrain, city armies and generals, loaded into games instead of a generated map.

`GameMap` is one map; `GameMap.from_grid` reads generals-bots' grid strings (one line per row:
`.` plain, `#` mountain, a digit d a city of 40 + d army, `x` a city of 50, `A`, `B`, ... the
generals of players 0, 1, ...) and `to_grid` writes them. `load_maps` writes maps into slots of a
batch; the games start at tick 0 as a generated map's would.

A batch's `GameConfig` fixes the board size and the player count; its city count is the most
cities a map of the batch may hold. A map with fewer cities fills the rest of its `structures`
row with `NO_STRUCTURE` (the rules skip it), so maps of one board size with different city
counts share a batch. Mountain counts are free: mountains take no storage.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from .checks import integer_array
from .config import (
    CITY,
    CITY_ARMY_MAX,
    CITY_ARMY_MIN,
    GENERAL,
    MAX_PLAYERS,
    MOUNTAIN,
    PLAIN,
    RUNNING,
    GameConfig,
)
from .state import GameBatch

NO_STRUCTURE = -1  # a `structures` entry that holds no tile (a map with fewer cities than the config's)
_GENERAL_LETTERS = "ABCDEFGH"[:MAX_PLAYERS]


@dataclass(frozen=True, eq=False)
class GameMap:
    """terrain uint8[H, W] (PLAIN/MOUNTAIN/CITY/GENERAL), armies int32[H, W] (a city's army; 0
    elsewhere: generals start with 1), generals int16[P] (the tile index row * W + col of each
    player's general). Checked when made: ValueError names what is wrong."""

    terrain: np.ndarray
    armies: np.ndarray
    generals: np.ndarray

    def __post_init__(self) -> None:
        terrain, armies = np.asarray(self.terrain), np.asarray(self.armies)
        generals = np.asarray(self.generals)
        if terrain.ndim != 2 or armies.shape != terrain.shape:
            raise ValueError(
                f"terrain and armies must be 2-D of one shape, got {terrain.shape}, {armies.shape}"
            )
        if not (2 <= generals.size <= MAX_PLAYERS and generals.ndim == 1):
            raise ValueError(f"a map needs 2 to {MAX_PLAYERS} generals, got {generals.size}")
        flat = terrain.reshape(-1)
        if generals.min() < 0 or generals.max() >= flat.size or np.unique(generals).size != generals.size:
            raise ValueError(
                f"generals must be distinct tile indices in [0, {flat.size}): {generals.tolist()}"
            )
        if not np.isin(flat, (PLAIN, MOUNTAIN, CITY, GENERAL)).all():
            raise ValueError("terrain codes must be PLAIN, MOUNTAIN, CITY or GENERAL")
        if set(np.flatnonzero(flat == GENERAL).tolist()) != set(generals.tolist()):
            raise ValueError("the GENERAL tiles must be exactly the generals' tiles")
        city_armies = armies.reshape(-1)[flat == CITY]
        if city_armies.size and (city_armies.min() < 0 or city_armies.max() >= 1 << 31):
            raise ValueError("city armies must be in [0, 2**31)")
        object.__setattr__(self, "terrain", terrain.astype(np.uint8))
        object.__setattr__(self, "armies", np.where(terrain == CITY, armies, 0).astype(np.int32))
        object.__setattr__(self, "generals", generals.astype(np.int16))

    def __eq__(self, other: object) -> bool:
        return isinstance(other, GameMap) and all(
            np.array_equal(getattr(self, name), getattr(other, name))
            for name in ("terrain", "armies", "generals")
        )

    @property
    def height(self) -> int:
        return self.terrain.shape[0]

    @property
    def width(self) -> int:
        return self.terrain.shape[1]

    @property
    def players(self) -> int:
        return self.generals.size

    @property
    def cities(self) -> np.ndarray:
        """The cities' tile indices, ascending."""
        return np.flatnonzero(self.terrain.reshape(-1) == CITY)

    @classmethod
    def from_grid(cls, grid: str) -> GameMap:
        """A generals-bots grid string (`generals.core.grid.Grid`'s layout) as a map."""
        rows = [row.strip() for row in grid.strip().splitlines()]
        if not rows or len({len(row) for row in rows}) != 1:
            raise ValueError("a grid is one line per row, every row as long as the first")
        cells = np.array([list(row) for row in rows])
        terrain = np.full(cells.shape, PLAIN, np.uint8)
        armies = np.zeros(cells.shape, np.int32)
        digits = np.char.isdigit(cells)
        terrain[cells == "#"] = MOUNTAIN
        terrain[digits | (cells == "x")] = CITY
        armies[digits] = CITY_ARMY_MIN + cells[digits].astype(np.int32)
        armies[cells == "x"] = CITY_ARMY_MAX
        letters = [np.flatnonzero(cells.reshape(-1) == letter) for letter in _GENERAL_LETTERS]
        players = next((p for p, found in enumerate(letters) if found.size == 0), len(letters))
        unknown = set(np.unique(cells).tolist()) - set(".#x0123456789" + _GENERAL_LETTERS[:players])
        if (
            unknown
            or any(found.size != 1 for found in letters[:players])
            or any(found.size for found in letters[players:])
        ):
            raise ValueError(
                "a grid holds '.', '#', city digits or 'x', and one general of each letter from A on; "
                f"got {sorted(unknown) or 'a general letter missing or repeated'}"
            )
        generals = np.array([found[0] for found in letters[:players]], np.int16)
        terrain.reshape(-1)[generals] = GENERAL
        return cls(terrain, armies, generals)

    def to_grid(self) -> str:
        """The grid string of this map; ValueError when a city's army is outside 40..50."""
        cells = np.full(self.terrain.shape, ".", dtype="<U1")
        cells[self.terrain == MOUNTAIN] = "#"
        city = self.terrain == CITY
        army = self.armies[city]
        if army.size and (army.min() < CITY_ARMY_MIN or army.max() > CITY_ARMY_MAX):
            raise ValueError(f"a grid string holds city armies {CITY_ARMY_MIN}..{CITY_ARMY_MAX} only")
        cells[city] = np.where(army == CITY_ARMY_MAX, "x", (army - CITY_ARMY_MIN).astype(str))
        cells.reshape(-1)[self.generals] = list(_GENERAL_LETTERS[: self.players])
        return "\n".join("".join(row) for row in cells)

    @classmethod
    def of_game(cls, batch: GameBatch, slot: int) -> GameMap:
        """The map a game of `batch` started on (its terrain and city armies at tick 0)."""
        config = batch.config
        terrain = batch.terrain[slot].reshape(config.height, config.width)
        return cls(terrain, batch.armies[slot].reshape(terrain.shape), batch.generals[slot])


def check_maps(config: GameConfig, maps: Sequence[GameMap], games: int) -> None:
    """ValueError unless `maps` holds one GameMap per game, each fitting `config`."""
    if isinstance(maps, GameMap | str) or len(maps) != games:
        raise ValueError(f"one map per game: {games} games, maps {type(maps).__name__} of {len(maps)}")
    for i, game_map in enumerate(maps):
        if not isinstance(game_map, GameMap):
            raise ValueError(f"maps[{i}] is a {type(game_map).__name__}, not a GameMap")
        shape = (game_map.height, game_map.width, game_map.players)
        if shape != (config.height, config.width, config.players):
            raise ValueError(
                f"maps[{i}] is {shape[0]}x{shape[1]} with {shape[2]} generals; the games are "
                f"{config.height}x{config.width} with {config.players} players"
            )
        if game_map.cities.size > config.cities:
            raise ValueError(
                f"maps[{i}] has {game_map.cities.size} cities, more than the config's {config.cities} "
                "(its city_density sets the most cities a game holds)"
            )


def load_maps(batch: GameBatch, slots: np.ndarray, maps: Sequence[GameMap], seeds: object = None) -> None:
    """Start the games of `slots` (checked) on `maps` (one per slot), at tick 0; `seeds` (else 0)
    is what the slots' `seed` holds, from which an autoreset derives the next map.
    Every map and seed is checked first: a bad one changes no slot."""
    config = batch.config
    check_maps(config, maps, slots.size)
    if seeds is not None:
        seeds = integer_array("seeds", seeds, 1)
        if seeds.shape != slots.shape or (seeds.size and seeds.min() < 0):
            raise ValueError(f"seeds must be {slots.size} non-negative integers, got shape {seeds.shape}")
    fresh = GameBatch.allocate(config, slots.size)
    fresh.structures[:] = NO_STRUCTURE
    for i, game_map in enumerate(maps):
        cities = game_map.cities
        fresh.terrain[i] = game_map.terrain.reshape(-1)
        fresh.armies[i] = game_map.armies.reshape(-1)
        fresh.armies[i, game_map.generals] = 1
        fresh.owner[i, game_map.generals] = np.arange(1, config.players + 1)
        fresh.generals[i] = game_map.generals
        fresh.structures[i, : cities.size] = cities
        fresh.structures[i, config.cities :] = game_map.generals
    fresh.alive[:] = True
    fresh.status[:] = RUNNING
    if seeds is not None:
        fresh.seed[:] = seeds.astype(np.uint64)
    for name, array in batch.arrays().items():
        array[slots] = getattr(fresh, name)
