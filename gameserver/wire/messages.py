"""Small request messages <-> numpy and engine values, validated with the field named.

Requests are parsed by the generated protobuf classes: they are small (ids and actions,
a few bytes per game), so the one copy protobuf makes of their tensors costs nothing that
matters. The bulk replies are framed by hand instead (see replies.py).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
from google.protobuf.message import DecodeError, Message

from ..engine import GameConfig
from . import codec
from .errors import InvalidArgument, ResourceExhausted
from .generated import batch_pb2 as pb
from .limits import MAX_PLACEMENT_KEY_BYTES

if TYPE_CHECKING:  # engine.maps loads with the first maps (the client imports this module)
    from ..engine.maps import GameMap, MapBatch

_CONFIG_FIELDS = tuple(f.name for f in dataclasses.fields(GameConfig))


def parse_request(message: type[Message], raw: bytes) -> Message:
    """A request's bytes as its message; undecodable bytes are InvalidArgument (gRPC's own
    deserializer would answer INTERNAL)."""
    try:
        return message.FromString(raw)
    except (DecodeError, RuntimeError) as error:  # upb raises DecodeError; nesting too deep: RuntimeError
        raise InvalidArgument(f"request is not a valid {message.DESCRIPTOR.full_name}: {error}") from None


def read_tensor(tensor: pb.Tensor, field: str) -> np.ndarray:
    """A request tensor as a numpy view; a malformed one is InvalidArgument naming the field."""
    try:
        return codec.decode_array(tensor.data, tensor.dtype, tensor.shape)
    except ValueError as error:
        raise InvalidArgument(f"{field}: {error}") from None


def read_ids(message: object, field: str, limit: int) -> np.ndarray:
    """The uint64 game ids of a request: present, 1-D, non-empty and at most `limit` of them."""
    if not message.HasField(field):
        raise InvalidArgument(f"{field} is missing: a uint64 tensor of game ids is required")
    tensor = getattr(message, field)
    count = math.prod(tensor.shape)
    if count > limit:  # checked before the bytes, so a huge batch is named as such
        raise ResourceExhausted(f"{field}: {count} games in one call, the limit is {limit}")
    ids = read_tensor(tensor, field)
    if ids.dtype != np.uint64 or ids.ndim != 1:
        raise InvalidArgument(f"{field} must be a 1-D uint64 tensor, got {ids.dtype} {list(ids.shape)}")
    if ids.size == 0:
        raise InvalidArgument(f"{field} is empty: name at least one game")
    return ids


def read_placement_key(message: object) -> str:
    """A create request's placement key, at most MAX_PLACEMENT_KEY_BYTES (UTF-8)."""
    key = message.placement_key
    size = len(key.encode())
    if size > MAX_PLACEMENT_KEY_BYTES:
        raise InvalidArgument(
            f"placement_key: {size} bytes, the limit is {MAX_PLACEMENT_KEY_BYTES} (it names a batch of games)"
        )
    return key


def read_seeds(message: object, field: str, games: int) -> np.ndarray | None:
    """Optional map seeds: None when unset, else one non-negative integer per game."""
    if not message.HasField(field):
        return None
    seeds = read_tensor(getattr(message, field), field)
    if seeds.shape != (games,) or not np.issubdtype(seeds.dtype, np.integer):
        raise InvalidArgument(
            f"{field} must be integers of shape [{games}], got {seeds.dtype} {list(seeds.shape)}"
        )
    if seeds.dtype.kind == "i" and seeds.size and seeds.min() < 0:
        raise InvalidArgument(f"{field} must be non-negative")
    return seeds.astype(np.uint64, copy=False)


def read_maps(message: object, config: GameConfig, games: int) -> MapBatch | None:
    """A request's given maps (GameMaps): None when unset, else one map per game, each checked
    and fitting `config`, as a MapBatch; a bad one is InvalidArgument naming it (maps[i])."""
    if not message.HasField("maps"):
        return None
    from ..engine.maps import MapBatch, check_maps

    maps = message.maps
    arrays = {}
    for name in ("terrain", "armies", "generals"):
        if not maps.HasField(name):
            raise InvalidArgument(f"maps.{name} is missing: GameMaps takes terrain, armies and generals")
        arrays[name] = read_tensor(getattr(maps, name), f"maps.{name}")
    terrain, armies, generals = arrays["terrain"], arrays["armies"], arrays["generals"]
    board = (games, config.height, config.width)
    for name in ("terrain", "armies"):
        shape = arrays[name].shape
        if shape not in (board, (games, config.tiles)):
            raise InvalidArgument(
                f"maps.{name} must be [{games}, {config.tiles}] (games, tiles) or [{games}, "
                f"{config.height}, {config.width}] for {games} games of {config.height}x{config.width}, "
                f"got {list(shape)}"
            )
    if generals.shape != (games, config.players):
        raise InvalidArgument(
            f"maps.generals must be [{games}, {config.players}] (games, players), got {list(generals.shape)}"
        )
    try:
        batch = MapBatch(terrain.reshape(board), armies.reshape(board), generals)
        check_maps(config, batch, games)
    except ValueError as error:
        raise InvalidArgument(f"maps: {error}") from None
    return batch


def write_maps(message: pb.GameMaps, maps: Sequence[GameMap] | MapBatch) -> None:
    """Fill a request's GameMaps from GameMaps or a MapBatch (terrain and armies [games, tiles])."""
    from ..engine.maps import MapBatch

    batch = MapBatch.of(maps)
    games = len(batch)
    write_tensor(message.terrain, batch.terrain.reshape(games, -1))
    write_tensor(message.armies, batch.armies.reshape(games, -1))
    write_tensor(message.generals, batch.generals.astype(np.int32))


def write_tensor(tensor: pb.Tensor, array: object) -> None:
    """Fill a request tensor from an array (the protobuf field takes one copy of the bytes)."""
    data, dtype, shape = codec.encode_array(array)
    tensor.data = bytes(data)
    tensor.dtype = dtype
    tensor.shape[:] = shape


def config_from_proto(message: pb.GameConfig, defaults: GameConfig | None = None) -> GameConfig:
    """The engine config a request asks for; unset fields take `defaults`' values (a shard's
    --game-* flags: a fleet's spec.game), or the engine defaults without.

    Densities travel as float32: they are read back as the shortest decimal that float32
    holds (0.2, not 0.20000000298), so the same config from any client names the same pool.
    A min_general_distance equal to the one the engine derives reads as unset (None), for the
    same reason: a reply's config, sent back, names the pool it came from.
    """
    values = {} if defaults is None else dataclasses.asdict(defaults)
    for name in _CONFIG_FIELDS:
        if message.HasField(name):
            value = getattr(message, name)
            values[name] = float(str(np.float32(value))) if isinstance(value, float) else int(value)
    try:
        config = GameConfig(**values)
        derived = dataclasses.replace(config, min_general_distance=None)
        return derived if config.min_general_distance == derived.general_distance else config
    except ValueError as error:
        raise InvalidArgument(f"config: {error}") from None


def config_to_proto(config: GameConfig) -> pb.GameConfig:
    """Every field set, min_general_distance too: the one the engine derives when it is None."""
    values = dataclasses.asdict(config) | {"min_general_distance": config.general_distance}
    return pb.GameConfig(**values)
