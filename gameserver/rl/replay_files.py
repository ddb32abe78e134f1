"""Finished games as generals.io replays (JSON), and back into the engine.

The layout is generals.io's deserialized replay: `mapWidth`, `mapHeight`, `usernames`,
`generals`, `cities` with `cityArmies`, `mountains` (tile indices row * W + col) and `moves`
as `[player, start tile, end tile, is50, turn]`, where `turn` is the tick (half-turn, from 0)
on which the move is played. A `gamefleet` entry carries what the layout has no room for:
the exact GameConfig, the map seed and the number of ticks played, so a round trip replays
to the identical final state. Replays without it (other tools') get a config derived from
the map.

Passes are not listed. Moves off the board are dropped on export: the engine treats them as
passes, so dropping them changes nothing. Other illegal moves are kept, and stay no-ops.
"""

from __future__ import annotations

import collections
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..engine import GameBatch, GameConfig, step
from ..engine.config import CITY, DIRECTION_COLS, DIRECTION_ROWS, GENERAL, MOUNTAIN, PASS, PLAIN
from ..engine.maps import NO_STRUCTURE, GameMap, load_maps

REPLAY_VERSION = 7  # generals.io's replay version this layout follows


@dataclass
class Replay:
    """One game: its config, its first state (GameBatch fields of one game) and every tick's moves."""

    config: GameConfig
    initial: GameBatch  # capacity 1
    actions: np.ndarray  # int32 [ticks, players], flat moves, -1 = pass
    usernames: list[str]

    @property
    def map(self) -> GameMap:
        """The map the game starts on (for `GamePool.create(..., maps=[replay.map])`)."""
        return GameMap.of_game(self.initial, 0)


def export_replay(
    batch: GameBatch,
    slot: int,
    actions: np.ndarray,
    *,
    game_id: str = "",
    usernames: list[str] | None = None,
    winner: int | None = None,
) -> dict:
    """The replay of the game that starts in `batch[slot]` (a fresh map) and plays `actions`
    (int [ticks, players] flat moves, row t played at tick t); `winner` (-1: none) is noted."""
    config = batch.config
    if batch.tick[slot] != 0:
        raise ValueError(f"slot {slot} is at tick {batch.tick[slot]}: export from the game's first state")
    actions = np.asarray(actions)
    if actions.ndim != 2 or actions.shape[1] != config.players:
        raise ValueError(f"actions must be [ticks, {config.players}], got {actions.shape}")
    terrain, structures = batch.terrain[slot], batch.structures[slot]
    cities = structures[: config.cities]  # in the engine's order, so an import restores it exactly
    cities = cities[cities != NO_STRUCTURE]  # a given map may hold fewer cities than the config
    return {
        "version": REPLAY_VERSION,
        "id": game_id,
        "mapWidth": config.width,
        "mapHeight": config.height,
        "usernames": usernames or [f"seat {p}" for p in range(config.players)],
        "stars": [0] * config.players,
        "cities": cities.tolist(),
        "cityArmies": batch.armies[slot, cities].tolist(),
        "generals": batch.generals[slot].tolist(),
        "mountains": np.flatnonzero(terrain == MOUNTAIN).tolist(),
        "moves": _moves(actions, config),
        "afks": [],
        "teams": None,
        "neutrals": [],
        "neutralArmies": [],
        "swamps": [],
        "gamefleet": {
            "config": config.to_dict(),
            "seed": int(batch.seed[slot]),
            "ticks": len(actions),
            **({} if winner is None else {"winner": winner}),
        },
    }


def _moves(actions: np.ndarray, config: GameConfig) -> list[list[int]]:
    """[player, start, end, is50, turn] for every move on the board, by turn then player."""
    turn, player = np.nonzero(actions != PASS)
    flat = actions[turn, player].astype(np.int64)
    start, direction, split = flat >> 3, (flat >> 1) & 3, flat & 1
    row = start // config.width + np.asarray(DIRECTION_ROWS)[direction]
    col = start % config.width + np.asarray(DIRECTION_COLS)[direction]
    on_board = (row >= 0) & (row < config.height) & (col >= 0) & (col < config.width)
    moves = np.stack([player, start, row * config.width + col, split, turn], axis=1)[on_board]
    return moves.tolist()


def dumps(replay: dict) -> str:
    return json.dumps(replay, separators=(",", ":"))


def import_replay(data: dict | str | os.PathLike) -> Replay:
    """Parse and check a replay: a dict, its JSON text, or the path of a file holding it
    (a str that does not start with "{" is a path); ValueError names what is wrong."""
    replay = _read(data)
    try:
        height, width = _int(replay["mapHeight"]), _int(replay["mapWidth"])
        generals = _tiles(replay["generals"], height * width, "generals")
        cities = _tiles(replay["cities"], height * width, "cities")
        armies = _ints(replay["cityArmies"], "cityArmies")
        mountains = _tiles(replay["mountains"], height * width, "mountains")
        moves = _move_array(replay["moves"])
        extra = replay.get("gamefleet") or {}
        usernames = [str(name) for name in replay.get("usernames") or []]
        ticks = _int(extra["ticks"]) if "ticks" in extra else int(moves[:, 4].max() + 1 if moves.size else 0)
        seed = np.uint64(_int(extra.get("seed", 0)))
        given = extra.get("config")
    except (KeyError, TypeError, ValueError, OverflowError, AttributeError, json.JSONDecodeError) as error:
        raise ValueError(f"not a generals.io replay: {type(error).__name__}: {error}") from None
    players = generals.size
    config = _config(given, height, width, players, mountains.size, cities.size, ticks)
    if armies.size != cities.size or (armies.size and (armies.min() < 0 or armies.max() >= 1 << 31)):
        raise ValueError(
            f"{cities.size} cities need as many cityArmies in [0, 2**31), got {armies.tolist()[:8]}"
        )
    if (
        np.unique(np.concatenate([generals, cities, mountains])).size
        != players + cities.size + mountains.size
    ):
        raise ValueError("generals, cities and mountains must be distinct tiles")
    initial = GameBatch.allocate(config, 1)
    terrain = np.full(config.tiles, PLAIN, np.uint8)
    terrain[mountains], terrain[cities], terrain[generals] = MOUNTAIN, CITY, GENERAL
    tile_armies = np.zeros(config.tiles, np.int64)
    tile_armies[cities] = armies
    shape = (config.height, config.width)
    game_map = GameMap(terrain.reshape(shape), tile_armies.reshape(shape), generals)
    load_maps(initial, np.zeros(1, np.int64), [game_map], np.array([seed]))
    initial.structures[0, : cities.size] = cities  # in the engine's (export's) order: bit-identical
    return Replay(config, initial, _actions(moves, config, ticks), usernames)


def _read(data: object) -> object:
    """A replay's dict from a dict, JSON text or a file's path."""
    if isinstance(data, str) and data.lstrip().startswith("{"):
        text = data
    elif isinstance(data, str | os.PathLike):
        try:
            text = Path(data).read_text()
        except (OSError, UnicodeDecodeError) as error:
            raise ValueError(f"not a generals.io replay: cannot read {str(data)!r:.200}: {error}") from None
    else:
        return data
    try:
        return json.loads(text)
    except json.JSONDecodeError as error:
        raise ValueError(f"not a generals.io replay: JSONDecodeError: {error}") from None


def replay_game(replay: Replay) -> GameBatch:
    """Play a replay through the engine from its first state; returns the final state (capacity 1)."""
    return collections.deque(_play(replay), maxlen=1)[0]  # the last state (one batch, stepped on)


def replay_states(replay: Replay) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Every state of a replay: terrain, owner and armies [ticks + 1, tiles], row t after tick t."""
    rows = [(b.terrain[0].copy(), b.owner[0].copy(), b.armies[0].copy()) for b in _play(replay)]
    terrain, owner, armies = (np.stack(column) for column in zip(*rows, strict=True))
    return terrain, owner, armies


def _play(replay: Replay) -> Iterator[GameBatch]:
    """The replay's game (capacity 1) at its first state, then after each tick."""
    batch = GameBatch.allocate(replay.config, 1)
    for name, array in replay.initial.arrays().items():
        getattr(batch, name)[...] = array
    slots = np.zeros(1, np.int64)
    yield batch
    for row in replay.actions:
        step(batch, slots, row[None, :])
        yield batch


def _config(
    given: dict | None, height: int, width: int, players: int, mountains: int, cities: int, ticks: int
) -> GameConfig:
    tiles = height * width
    if given is None:
        densities = (mountains / tiles, cities / tiles)
        config = GameConfig(height, width, players, *densities, max_ticks=max(ticks, GameConfig.max_ticks))
    else:
        try:
            config = GameConfig(**given)
        except TypeError as error:
            raise ValueError(f"gamefleet.config is not a GameConfig: {error}") from None
    found = (config.height, config.width, config.players)
    if found != (height, width, players) or cities > config.cities:
        raise ValueError(
            f"the map ({height}x{width}, {players} generals, {mountains} mountains, {cities} cities) "
            f"does not fit the config {config}"
        )
    if ticks > config.max_ticks:
        raise ValueError(f"{ticks} ticks played, more than the config's max_ticks {config.max_ticks}")
    return config


def _actions(moves: np.ndarray, config: GameConfig, ticks: int) -> np.ndarray:
    """Moves -> int32 [ticks, players] flat actions; a move must go to a neighbouring tile."""
    player, start, end, split, turn = moves.T
    w, tiles = config.width, config.tiles
    bad = (player < 0) | (player >= config.players) | (start < 0) | (start >= tiles) | (end < 0)
    bad |= (end >= tiles) | (turn < 0) | (turn >= ticks) | ((split != 0) & (split != 1))
    if bad.any():
        raise ValueError(f"moves out of range (players, tiles, 0/1 is50, turns < {ticks}): {moves[bad][:4]}")
    delta_row, delta_col = end // w - start // w, end % w - start % w
    direction = np.full(moves.shape[0], -1)
    for d, (dr, dc) in enumerate(zip(DIRECTION_ROWS, DIRECTION_COLS, strict=True)):
        direction[(delta_row == dr) & (delta_col == dc)] = d
    if (direction < 0).any():
        raise ValueError(f"moves must go to a neighbouring tile: {moves[direction < 0][:4].tolist()}")
    actions = np.full((ticks, config.players), PASS, np.int32)
    if np.unique(turn * config.players + player).size != moves.shape[0]:
        raise ValueError("a player moves at most once per turn")
    actions[turn, player] = (start * 4 + direction) * 2 + split
    return actions


def _move_array(moves: object) -> np.ndarray:
    array = np.asarray(moves)
    if array.size == 0:
        return np.zeros((0, 5), np.int64)
    if array.ndim != 2 or array.shape[1] != 5 or not np.issubdtype(array.dtype, np.integer):
        raise ValueError(
            f"moves must be a list of [player, start, end, is50, turn] integers, got {moves!r:.80}"
        )
    return array.astype(np.int64)


def _int(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"expected an integer, got {value!r}")
    return value


def _ints(values: object, name: str) -> np.ndarray:
    if not isinstance(values, list) or not all(
        isinstance(v, int) and not isinstance(v, bool) for v in values
    ):
        raise ValueError(f"{name} must be a list of integers")
    return np.asarray(values, np.int64)


def _tiles(values: object, tiles: int, name: str) -> np.ndarray:
    array = _ints(values, name)
    if array.size and (array.min() < 0 or array.max() >= tiles):
        raise ValueError(f"{name} must be tile indices in [0, {tiles})")
    return array
