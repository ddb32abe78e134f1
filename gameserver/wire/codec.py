"""Compact wire formats: every tensor travels as bytes + dtype + shape, decoded without copying.

- Arrays: raw little-endian bytes; `decode_array` is an `np.frombuffer` view of the message.
- Observations: the proto's five tensors (views both ways, checked against each other), or
  one packed buffer at aligned offsets that the engine can write into directly (a shared
  view's layout: that buffer, then the masks at the next 8-byte boundary).
- Actions: int32 [games, players] flat moves, or generals-bots [games, players, 5].
- Snapshots: the exact state of some slots, self-describing and checksummed (for Redis).
- Deltas: only the observation tiles that changed since the client's last view.

Everything that decodes input validates it fully first and raises ValueError naming the
problem: malformed bytes must never crash a server or change a game.
"""

from __future__ import annotations

import json
import math
import struct
import zlib
from collections.abc import Mapping
from typing import NamedTuple

import numpy as np

from ..engine import GameBatch, GameConfig, Observation
from ..engine.actions import from_generals_bots
from ..engine.checks import check_slots, mask_bytes
from ..engine.config import GENERAL, PASS, TRUNCATED

_WIRE_NAMES = ("bool", "int8", "uint8", "int16", "uint16", "int32", "uint32", "int64", "uint64")
_WIRE_NAMES += ("float16", "float32", "float64")
WIRE_DTYPES: dict[str, np.dtype] = {name: np.dtype(name).newbyteorder("<") for name in _WIRE_NAMES}
_BY_NUMPY_STR = {dtype.str: name for name, dtype in WIRE_DTYPES.items()}  # "<i4" -> "int32"
_MAX_DIMS = 32  # numpy's own limit; a longer shape on the wire is garbage
_ALIGN = 8


def wire_dtype(name: object) -> np.dtype:
    """The little-endian numpy dtype for a wire dtype string: numpy's "<i4" (what encode_array
    writes) or a name such as "int32"."""
    if isinstance(name, str):
        name = _BY_NUMPY_STR.get(name, name)
        if name in WIRE_DTYPES:
            return WIRE_DTYPES[name]
    raise ValueError(f"unsupported dtype {name!r}; allowed (little-endian): {', '.join(_BY_NUMPY_STR)}")


def _wire_shape(shape: object) -> tuple[int, ...]:
    try:
        dims = tuple(shape)  # type: ignore[arg-type]
    except TypeError:
        raise ValueError(f"shape must be a sequence of ints, got {shape!r}") from None
    if len(dims) > _MAX_DIMS or any(
        isinstance(d, bool) or not isinstance(d, int | np.integer) or d < 0 for d in dims
    ):
        raise ValueError(f"shape must be at most {_MAX_DIMS} non-negative ints, got {dims!r}")
    return tuple(int(d) for d in dims)


def _bytes_view(buf: object) -> memoryview:
    try:
        view = memoryview(buf)  # type: ignore[arg-type]
    except TypeError:
        raise ValueError(f"expected a bytes-like buffer, got {type(buf).__name__}") from None
    if not view.contiguous:
        raise ValueError("buffer must be contiguous")
    return view if view.format == "B" and view.ndim == 1 else memoryview(np.frombuffer(view, np.uint8))


def _align(n: int) -> int:
    return -(-n // _ALIGN) * _ALIGN


def encode_array(a: object) -> tuple[memoryview, str, tuple[int, ...]]:
    """(raw bytes, numpy dtype string such as "<i4", shape) of an array, as a proto Tensor holds
    it; a view, no copy, when the array is already C-contiguous little-endian."""
    array = np.asarray(a)
    name = _BY_NUMPY_STR.get(array.dtype.newbyteorder("<").str)
    if name is None:
        raise ValueError(f"dtype {array.dtype} cannot go on the wire; allowed: {', '.join(_BY_NUMPY_STR)}")
    array = array.astype(WIRE_DTYPES[name], order="C", copy=False)
    return memoryview(array.reshape(-1).view(np.uint8)), array.dtype.str, array.shape


def decode_array(buf: object, dtype: object, shape: object) -> np.ndarray:
    """A view of `buf` as dtype[shape] (read-only when buf is bytes); sizes must match exactly."""
    dt, dims = wire_dtype(dtype), _wire_shape(shape)
    view = _bytes_view(buf)
    count = math.prod(dims)
    if view.nbytes != count * dt.itemsize:
        raise ValueError(
            f"buffer holds {view.nbytes} bytes but {dt.name}{list(dims)} needs {count * dt.itemsize}"
        )
    return np.frombuffer(view, dt, count).reshape(dims)


# Observations -------------------------------------------------------------------------------

_OBSERVATION_FIELDS = ("codes", "armies", "land", "army", "tick")


def encode_observation(obs: Observation) -> dict[str, tuple[memoryview, str, tuple[int, ...]]]:
    """Each Observation array as (bytes, dtype, shape): the proto's Observations tensors (views)."""
    return {name: encode_array(getattr(obs, name)) for name in _OBSERVATION_FIELDS}


def decode_observation(tensors: Mapping[str, tuple[object, object, object]]) -> Observation:
    """Views of the five observation tensors, each (bytes, dtype, shape), checked for consistency."""
    missing = [name for name in _OBSERVATION_FIELDS if name not in tensors]
    if missing:
        raise ValueError(f"observation tensors missing: {missing}")
    arrays = {name: decode_array(*tensors[name]) for name in _OBSERVATION_FIELDS}
    shape = arrays["codes"].shape
    if len(shape) != 3:
        raise ValueError(f"observation codes must be [games, players, tiles], got shape {shape}")
    expected = {
        "codes": (np.uint8, shape),
        "armies": (np.uint16, shape),
        "land": (np.int32, shape[:2]),
        "army": (np.int32, shape[:2]),
        "tick": (np.int32, shape[:1]),
    }
    for name, (dtype, want) in expected.items():
        got = arrays[name]
        if got.dtype != dtype or got.shape != want:
            raise ValueError(
                f"observation {name} must be {np.dtype(dtype)} {want}, got {got.dtype} {got.shape}"
            )
    return Observation(**arrays)


def _observation_blocks(games: int, players: int, tiles: int) -> list[tuple[str, np.dtype, tuple, int]]:
    """(field, dtype, shape, byte offset) of each Observation array in the packed buffer.

    The int32 blocks come first, then uint16, then uint8: every block starts aligned to its
    itemsize with no padding at all (a buffer is 3 bytes per tile plus 4 per counter).
    """
    _wire_shape((games, players, tiles))
    blocks, offset = [], 0
    for name, dtype, shape in (
        ("land", np.int32, (games, players)),
        ("army", np.int32, (games, players)),
        ("tick", np.int32, (games,)),
        ("armies", np.uint16, (games, players, tiles)),
        ("codes", np.uint8, (games, players, tiles)),
    ):
        blocks.append((name, np.dtype(dtype), shape, offset))
        offset += math.prod(shape) * np.dtype(dtype).itemsize
    return blocks


def observation_nbytes(games: int, players: int, tiles: int) -> int:
    _, dtype, shape, offset = _observation_blocks(games, players, tiles)[-1]
    return offset + math.prod(shape) * dtype.itemsize


def unpack_observation(buf: object, games: int, players: int, tiles: int) -> Observation:
    """Views of a packed observation buffer as an Observation (no copy)."""
    view = _bytes_view(buf)
    expected = observation_nbytes(games, players, tiles)
    if view.nbytes != expected:
        raise ValueError(
            f"observation buffer holds {view.nbytes} bytes, but {games} games x {players} players x "
            f"{tiles} tiles need {expected}"
        )
    arrays = {
        name: np.frombuffer(view, dtype, math.prod(shape), offset).reshape(shape)
        for name, dtype, shape, offset in _observation_blocks(games, players, tiles)
    }
    return Observation(**arrays)


def masks_offset(games: int, players: int, tiles: int) -> int:
    """Where the masks of `games` games start after their packed observation buffer (a shared
    view's layout): the next 8-byte boundary."""
    return _align(observation_nbytes(games, players, tiles))


def view_nbytes(games: int, players: int, tiles: int) -> int:
    """Bytes of a packed observation buffer followed by the games' masks, uint8 [games, players,
    mask_bytes(tiles)] at `masks_offset` (the layout a shared view holds for a call of `games`)."""
    return masks_offset(games, players, tiles) + games * players * mask_bytes(tiles)


def unpack_masks(buf: object, games: int, players: int, tiles: int) -> np.ndarray:
    """A view of the masks block of a buffer laid out by `view_nbytes` (no copy); the buffer may
    be longer (a shared view sized for more games)."""
    view = _bytes_view(buf)
    start, shape = masks_offset(games, players, tiles), (games, players, mask_bytes(tiles))
    if view.nbytes < start + math.prod(shape):
        raise ValueError(
            f"buffer holds {view.nbytes} bytes, but the masks of {games} games x {players} players x "
            f"{tiles} tiles end at {start + math.prod(shape)}"
        )
    return np.frombuffer(view, np.uint8, math.prod(shape), start).reshape(shape)


def allocate_observation(config: GameConfig, games: int) -> tuple[np.ndarray, Observation]:
    """A wire buffer and Observation views into it: pass the views to the engine as `out`,
    then send the buffer as it is (the zero-copy path)."""
    buffer = np.zeros(observation_nbytes(games, config.players, config.tiles), np.uint8)
    return buffer, unpack_observation(buffer, games, config.players, config.tiles)


def pack_observation(obs: Observation) -> np.ndarray:
    """Copy an Observation into one packed wire buffer (when it was not written into one)."""
    games, players, tiles = obs.codes.shape
    buffer = np.empty(observation_nbytes(games, players, tiles), np.uint8)
    packed = unpack_observation(buffer, games, players, tiles)
    for name in _OBSERVATION_FIELDS:
        getattr(packed, name)[...] = getattr(obs, name)
    return buffer


# Actions ------------------------------------------------------------------------------------


def encode_actions(actions: object) -> tuple[memoryview, str, tuple[int, ...]]:
    """Flat actions as int32 little-endian [games, players] wire bytes."""
    a = np.asarray(actions)
    if a.ndim != 2 or not np.issubdtype(a.dtype, np.integer):
        raise ValueError(f"actions must be an integer array [games, players], got {a.dtype} {a.shape}")
    if a.size and (a.min() < np.iinfo(np.int32).min or a.max() > np.iinfo(np.int32).max):
        raise ValueError("actions do not fit in int32")
    return encode_array(a.astype(np.int32, copy=False))


def decode_actions(buf: object, dtype: object, shape: object, config: GameConfig) -> np.ndarray:
    """Wire actions -> int32 [games, players] flat moves, range-checked for this config.

    Accepts flat moves [games, players] or generals-bots [games, players, 5] (converted by
    the engine's `from_generals_bots`). The range check happens before any narrowing cast,
    so an int64 that would wrap into a valid int32 move is rejected, not replayed.
    """
    a = decode_array(buf, dtype, shape)
    if not np.issubdtype(a.dtype, np.integer):
        raise ValueError(f"actions must hold integers, got dtype {a.dtype}")
    if a.ndim == 3 and a.shape[1:] == (config.players, 5):
        return from_generals_bots(a, config.height, config.width)
    if a.ndim != 2 or a.shape[1] != config.players:
        raise ValueError(
            f"actions must be [games, {config.players}] flat moves or [games, {config.players}, 5] "
            f"generals-bots moves, got shape {a.shape}"
        )
    if a.size and (a.min() < PASS or a.max() >= config.num_actions):
        raise ValueError(f"actions must be in [-1, {config.num_actions}), got [{a.min()}, {a.max()}]")
    return a.astype(np.int32, copy=False)


# Snapshots ----------------------------------------------------------------------------------

SNAPSHOT_MAGIC = b"GFSN"
SNAPSHOT_VERSION = 1
_PREFIX = struct.Struct("<4sHHII")  # magic, version, reserved, header bytes, crc32 of the rest


class Snapshot(NamedTuple):
    """A decoded snapshot: the config and each GameBatch field for the saved games."""

    config: GameConfig
    arrays: dict[str, np.ndarray]

    @property
    def games(self) -> int:
        return self.arrays["tick"].shape[0]


def _expected_fields(config: GameConfig) -> dict[str, tuple[np.dtype, tuple[int, ...]]]:
    """Each GameBatch field's dtype and per-game shape, from the engine's own allocator."""
    return {name: (a.dtype, a.shape[1:]) for name, a in GameBatch.allocate(config, 0).arrays().items()}


def _check_arrays(config: GameConfig, arrays: dict[str, np.ndarray]) -> int:
    """Validate fields, dtypes, shapes and the values kernels use as indices; return games.

    Kernels index boards with generals/structures/owner without bounds checks, so an out of
    range value restored into a batch could corrupt memory: it is refused here instead.
    """
    expected = _expected_fields(config)
    if set(arrays) != set(expected):
        raise ValueError(f"snapshot fields {sorted(arrays)} differ from GameBatch fields {sorted(expected)}")
    games = np.shape(arrays["tick"])[0] if np.ndim(arrays["tick"]) == 1 else -1
    for name, (dtype, per_game) in expected.items():
        a = arrays[name]
        if not isinstance(a, np.ndarray) or a.dtype != dtype or a.shape != (games, *per_game):
            raise ValueError(
                f"snapshot field {name} must be a {dtype} array of shape {(games, *per_game)}, "
                f"got {getattr(a, 'dtype', type(a).__name__)} {np.shape(a)}"
            )
    p, t = config.players, config.tiles
    for name, low, high in (
        ("generals", 0, t - 1),
        ("structures", -1, t - 1),  # -1: no tile (maps.NO_STRUCTURE)
        ("owner", 0, p),
        ("terrain", 0, GENERAL),
        ("status", 0, TRUNCATED),
        ("winner", -1, p - 1),
        ("tick", 0, config.max_ticks),
    ):
        a = arrays[name]
        if a.size and (a.min() < low or a.max() > high):
            raise ValueError(f"snapshot field {name} has values outside [{low}, {high}]")
    return games


def encode_snapshot(batch: GameBatch, slots: object) -> bytes:
    """The exact state of `slots` (every GameBatch field) plus the config, in one buffer.

    Layout: prefix (magic, version, header length, crc32), JSON header (config, games,
    fields), then each field's little-endian bytes at an 8-byte aligned offset.
    """
    s = check_slots(batch, slots)
    arrays = {name: a[s] for name, a in batch.arrays().items()}
    header = json.dumps(
        {
            "config": batch.config.to_dict(),
            "games": int(s.size),
            "fields": [[name, a.dtype.str, list(a.shape)] for name, a in arrays.items()],
        },
        separators=(",", ":"),
    ).encode()
    body = [header, bytes(_align(_PREFIX.size + len(header)) - _PREFIX.size - len(header))]
    for a in arrays.values():
        body += [memoryview(a.reshape(-1).view(np.uint8)), bytes(_align(a.nbytes) - a.nbytes)]
    crc = 0
    for part in body:
        crc = zlib.crc32(part, crc)
    return b"".join([_PREFIX.pack(SNAPSHOT_MAGIC, SNAPSHOT_VERSION, 0, len(header), crc), *body])


def decode_snapshot(data: object) -> Snapshot:
    """Parse and fully validate a snapshot; the arrays are views of `data` (no copy)."""
    view = _bytes_view(data)
    if view.nbytes < _PREFIX.size:
        raise ValueError(f"snapshot truncated: {view.nbytes} bytes, the prefix alone is {_PREFIX.size}")
    magic, version, reserved, header_len, crc = _PREFIX.unpack_from(view)
    if magic != SNAPSHOT_MAGIC:
        raise ValueError(f"not a GameFleet snapshot: magic {magic!r}, expected {SNAPSHOT_MAGIC!r}")
    if version != SNAPSHOT_VERSION:
        raise ValueError(f"unsupported snapshot version {version} (this build reads {SNAPSHOT_VERSION})")
    if reserved:
        raise ValueError(f"snapshot prefix has unknown flags {reserved:#x}")
    if _PREFIX.size + header_len > view.nbytes:
        raise ValueError(f"snapshot truncated: header of {header_len} bytes, only {view.nbytes} in all")
    if zlib.crc32(view[_PREFIX.size :]) != crc:
        raise ValueError("snapshot corrupted or truncated: checksum mismatch")
    try:
        header = json.loads(bytes(view[_PREFIX.size : _PREFIX.size + header_len]))
        config = GameConfig(**header["config"])
        fields = [(str(name), wire_dtype(dt), _wire_shape(shape)) for name, dt, shape in header["fields"]]
    except (ValueError, TypeError, KeyError, AttributeError, RecursionError) as error:
        raise ValueError(f"snapshot header is invalid: {error}") from None
    offset = _align(_PREFIX.size + header_len)
    arrays = {}
    for name, dtype, shape in fields:
        nbytes = math.prod(shape) * dtype.itemsize
        if offset + nbytes > view.nbytes:
            raise ValueError(f"snapshot truncated in field {name}")
        arrays[name] = np.frombuffer(view, dtype, math.prod(shape), offset).reshape(shape)
        offset += _align(nbytes)
    if offset != view.nbytes:
        raise ValueError(f"snapshot has {view.nbytes - offset} unexpected trailing bytes")
    _check_arrays(config, arrays)
    return Snapshot(config, arrays)


def restore_snapshot(batch: GameBatch, slots: object, snapshot: Snapshot) -> None:
    """Write a snapshot's games into `slots` of a batch with the same config (all checks first)."""
    config, arrays = snapshot
    if config != batch.config:
        raise ValueError(f"snapshot config {config} differs from the batch's {batch.config}")
    games = _check_arrays(config, arrays)
    s = check_slots(batch, slots)
    if s.size != games:
        raise ValueError(f"snapshot holds {games} games but {s.size} slots were given")
    for name, a in arrays.items():
        getattr(batch, name)[s] = a


# Delta observations -------------------------------------------------------------------------


class ObservationDelta(NamedTuple):
    """The tiles whose code or army changed: flat indices into [games, players, tiles] and
    their new values (the proto's delta_index int32, delta_codes uint8, delta_armies uint16).

    7 bytes per changed tile versus 3 per tile for full planes: worth it while under ~40%
    of the tiles change, which is the common case between two ticks.
    """

    index: np.ndarray
    codes: np.ndarray
    armies: np.ndarray


def encode_delta(
    prev_codes: np.ndarray, prev_armies: np.ndarray, codes: np.ndarray, armies: np.ndarray
) -> ObservationDelta:
    """What changed from the client's previous view (prev_*) to the new one, vectorised."""
    planes = {"prev_codes": prev_codes, "prev_armies": prev_armies, "codes": codes, "armies": armies}
    for name, a in planes.items():
        dtype = np.uint8 if name.endswith("codes") else np.uint16
        if not isinstance(a, np.ndarray) or a.dtype != dtype or a.shape != np.shape(codes):
            raise ValueError(f"{name} must be a {np.dtype(dtype)} array of shape {np.shape(codes)}")
    if codes.size > np.iinfo(np.int32).max:
        raise ValueError("observation too large for int32 delta indices")
    new_codes, new_armies = codes.reshape(-1), armies.reshape(-1)
    changed = np.flatnonzero((prev_codes.reshape(-1) != new_codes) | (prev_armies.reshape(-1) != new_armies))
    return ObservationDelta(changed.astype(np.int32), new_codes[changed], new_armies[changed])


def apply_delta(codes: np.ndarray, armies: np.ndarray, delta: ObservationDelta) -> int:
    """Apply a delta in place to a client's planes; returns the number of tiles changed.

    Everything is checked before the first write, so a bad delta leaves the planes untouched.
    """
    for name, a, dtype in (("codes", codes, np.uint8), ("armies", armies, np.uint16)):
        if (
            not isinstance(a, np.ndarray)
            or a.dtype != dtype
            or not a.flags.c_contiguous
            or not a.flags.writeable
        ):
            raise ValueError(f"{name} must be a writable C-contiguous {np.dtype(dtype)} array")
    if codes.shape != armies.shape:
        raise ValueError(f"codes {codes.shape} and armies {armies.shape} must have the same shape")
    index, new_codes, new_armies = (np.asarray(a) for a in delta)
    if index.ndim != 1 or new_codes.shape != index.shape or new_armies.shape != index.shape:
        raise ValueError(
            f"delta index, codes and armies must be 1-D of one length, got {index.shape}, "
            f"{new_codes.shape}, {new_armies.shape}"
        )
    if index.size and not np.issubdtype(index.dtype, np.integer):
        raise ValueError(f"delta index must hold integers, got {index.dtype}")
    if new_codes.dtype != np.uint8 or new_armies.dtype != np.uint16:
        raise ValueError(f"delta codes/armies must be uint8/uint16, got {new_codes.dtype}/{new_armies.dtype}")
    if index.size and (index.min() < 0 or index.max() >= codes.size):
        raise ValueError(f"delta tile index outside [0, {codes.size}): [{index.min()}, {index.max()}]")
    codes.reshape(-1)[index] = new_codes
    armies.reshape(-1)[index] = new_armies
    return index.size
