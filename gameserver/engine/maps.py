"""Given maps: a board's terrain, city armies and generals, loaded into games instead of a generated map.

`GameMap` is one map; `GameMap.from_grid` reads generals-bots' grid strings (one line per row:
`.` plain, `#` mountain, a digit d a city of 40 + d army, `x` a city of 50, `A`, `B`, ... the
generals of players 0, 1, ...) and `to_grid` writes them. `load_maps` writes maps into slots of a
batch; the games start at tick 0 as a generated map's would.

A batch's `GameConfig` fixes the board size and the player count; its city count is the most
cities a map of the batch may hold. A map with fewer cities fills the rest of its `structures`
row with `NO_STRUCTURE` (the rules skip it), so maps of one board size with different city
counts share a batch. Mountain counts are free: mountains take no storage.

`MapBatch` holds many maps of one board size as three arrays, checked and loaded with numpy (no
Python per map): the form maps travel in over the wire (proto `GameMaps`) and in a shard's log.
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


@dataclass(frozen=True, eq=False)
class MapBatch:
    """Maps of one board size and player count as arrays: terrain uint8[n, H, W], armies
    int32[n, H, W] (a city's army; 0 elsewhere), generals int16[n, P] (tile indices row * W + col).
    Row i is the map `game_map(i)`; `MapBatch.of(maps)` stacks GameMaps. Any integer dtypes are
    taken, range-checked before narrowing (a server reads them off the wire). Checked when made,
    as GameMap is, with numpy over the whole batch: ValueError naming the first bad map (maps[i])."""

    terrain: np.ndarray
    armies: np.ndarray
    generals: np.ndarray

    def __post_init__(self) -> None:
        terrain = integer_array("terrain", self.terrain, 3)
        armies = integer_array("armies", self.armies, 3)
        generals = integer_array("generals", self.generals, 2)
        n = terrain.shape[0]
        if armies.shape != terrain.shape or generals.shape[0] != n:
            raise ValueError(
                f"terrain [maps, H, W], armies of its shape and generals [maps, players]: got shapes "
                f"{list(terrain.shape)}, {list(armies.shape)}, {list(generals.shape)}"
            )
        if not 2 <= generals.shape[1] <= MAX_PLAYERS:
            raise ValueError(f"a map needs 2 to {MAX_PLAYERS} generals, got {generals.shape[1]}")
        tiles = terrain.shape[1] * terrain.shape[2]
        flat, army = terrain.reshape(n, tiles), armies.reshape(n, tiles)
        _first_bad(
            ((flat < PLAIN) | (flat > GENERAL)).any(1),
            "terrain codes must be PLAIN, MOUNTAIN, CITY or GENERAL",
        )
        _first_bad(
            ((generals < 0) | (generals >= tiles)).any(1), f"generals must be tile indices in [0, {tiles})"
        )
        generals = generals.astype(np.int64)
        ordered = np.sort(generals, axis=1)
        _first_bad((ordered[:, 1:] == ordered[:, :-1]).any(1), "generals must be distinct tiles")
        on_general = np.take_along_axis(flat, generals, axis=1) == GENERAL
        count = (flat == GENERAL).sum(axis=1)
        _first_bad(
            ~on_general.all(1) | (count != generals.shape[1]),
            "the GENERAL tiles must be exactly the generals' tiles",
        )
        city = flat == CITY
        _first_bad((city & ((army < 0) | (army >= 1 << 31))).any(1), "city armies must be in [0, 2**31)")
        object.__setattr__(self, "terrain", terrain.astype(np.uint8))
        object.__setattr__(self, "armies", np.where(city, army, 0).astype(np.int32).reshape(terrain.shape))
        object.__setattr__(self, "generals", generals.astype(np.int16))

    @classmethod
    def of(cls, maps: Sequence[GameMap]) -> MapBatch:
        """GameMaps of one board size and player count, stacked (ValueError if they differ)."""
        if isinstance(maps, MapBatch):
            return maps
        if not maps or any(not isinstance(m, GameMap) for m in maps):
            raise ValueError("a MapBatch stacks one or more GameMaps")
        shapes = {(m.height, m.width, m.players) for m in maps}
        if len(shapes) > 1:
            raise ValueError(f"maps of one batch share a board and a player count, got {sorted(shapes)}")
        return cls(
            np.stack([m.terrain for m in maps]),
            np.stack([m.armies for m in maps]),
            np.stack([m.generals for m in maps]),
        )

    def __len__(self) -> int:
        return self.terrain.shape[0]

    @property
    def height(self) -> int:
        return self.terrain.shape[1]

    @property
    def width(self) -> int:
        return self.terrain.shape[2]

    @property
    def players(self) -> int:
        return self.generals.shape[1]

    @property
    def city_counts(self) -> np.ndarray:
        """int64[n]: how many cities each map holds."""
        return (self.terrain.reshape(len(self), self.height * self.width) == CITY).sum(axis=1)

    def rows(self, index: object) -> MapBatch:
        """The maps of these rows (an index array or a slice), as a MapBatch."""
        return MapBatch(self.terrain[index], self.armies[index], self.generals[index])

    def game_map(self, i: int) -> GameMap:
        """Map i as a GameMap."""
        return GameMap(self.terrain[i], self.armies[i], self.generals[i])


def _first_bad(bad: np.ndarray, problem: str) -> None:
    """ValueError naming the first map flagged in `bad` (bool[n])."""
    if bad.any():
        raise ValueError(f"maps[{int(np.flatnonzero(bad)[0])}]: {problem}")


def check_maps(config: GameConfig, maps: Sequence[GameMap] | MapBatch, games: int) -> None:
    """ValueError unless `maps` holds one map per game (GameMaps, or a MapBatch), each fitting `config`."""
    if isinstance(maps, MapBatch):
        if len(maps) != games:
            raise ValueError(f"one map per game: {games} games, {len(maps)} maps")
        shape = (maps.height, maps.width, maps.players)
        if shape != (config.height, config.width, config.players):
            raise ValueError(
                f"the maps are {shape[0]}x{shape[1]} with {shape[2]} generals; the games are "
                f"{config.height}x{config.width} with {config.players} players"
            )
        counts = maps.city_counts
        over = np.flatnonzero(counts > config.cities)
        if over.size:
            i = int(over[0])
            raise ValueError(
                f"maps[{i}] has {counts[i]} cities, more than the config's {config.cities} "
                "(its city_density sets the most cities a game holds)"
            )
        return
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


def load_maps(
    batch: GameBatch, slots: np.ndarray, maps: Sequence[GameMap] | MapBatch, seeds: object = None
) -> None:
    """Start the games of `slots` (checked) on `maps` (one per slot), at tick 0; `seeds` (else 0)
    is what the slots' `seed` holds, from which an autoreset derives the next map.
    Every map and seed is checked first: a bad one changes no slot."""
    config = batch.config
    check_maps(config, maps, slots.size)
    if seeds is not None:
        seeds = integer_array("seeds", seeds, 1)
        if seeds.shape != slots.shape or (seeds.size and seeds.min() < 0):
            raise ValueError(f"seeds must be {slots.size} non-negative integers, got shape {seeds.shape}")
    if slots.size == 0:
        return
    maps = MapBatch.of(maps)
    n, players = slots.size, config.players
    fresh = GameBatch.allocate(config, n)
    terrain = maps.terrain.reshape(n, -1)
    fresh.terrain[:] = terrain
    fresh.armies[:] = maps.armies.reshape(n, -1)
    games = np.arange(n)[:, None]
    fresh.armies[games, maps.generals] = 1
    fresh.owner[games, maps.generals] = np.arange(1, players + 1)
    fresh.generals[:] = maps.generals
    # each map's cities, ascending, first in its structures row; NO_STRUCTURE up to the config's
    # city count; then the generals
    fresh.structures[:] = NO_STRUCTURE
    game, tile = np.nonzero(terrain == CITY)  # row-major: a game's cities ascend
    counts = np.bincount(game, minlength=n)
    rank = np.arange(game.size) - np.repeat(np.cumsum(counts) - counts, counts)
    fresh.structures[game, rank] = tile
    fresh.structures[:, config.cities :] = maps.generals
    fresh.alive[:] = True
    fresh.status[:] = RUNNING
    if seeds is not None:
        fresh.seed[:] = seeds.astype(np.uint64)
    for name, array in batch.arrays().items():
        array[slots] = getattr(fresh, name)
