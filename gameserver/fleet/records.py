"""Game records: one codec snapshot per game behind a small header, made and read in bulk.

A record is `header | codec snapshot of that one game`. The header names the owner shard,
the log position the state is exact at, whether the owner's log continues it, and whether that
log holds every call the owner acknowledged (mode log with on-redis-error fail: "complete";
otherwise a recovery may restore a game to an earlier tick than its clients saw).

The data of a "maps" log entry (a reset onto given maps) is made and read here too.

`codec.encode_snapshot` costs tens of microseconds of Python per call, too much for a
writer that records thousands of games per round. Every one-game snapshot of a config has
the same layout, so many are made at once: the layout is taken from codec itself (a
template snapshot, decoded to find each field's offset), each game's rows are copied into
a copy of the template and its checksum filled in. Each call checks its first record
against `codec.encode_snapshot` byte for byte, so a change of the codec format cannot
slip by. Reading does the reverse, falling back to `codec.decode_snapshot` (and its
precise errors) for any record that does not fit the template.
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass
from functools import cache

import numpy as np

from ..engine import GameBatch, GameConfig
from ..engine.maps import MapBatch
from ..wire import codec

EntryId = tuple[int, int]  # a stream entry id "<ms>-<seq>" as a comparable tuple

_HEADER = struct.Struct("<4sBQQH")  # magic, flags, position ms, position seq, owner length
_MAGIC = b"GFR1"
_AUTORESET, _LOGGED, _COMPLETE = 1, 2, 4
# codec's snapshot prefix ends with the crc32 of everything after the prefix.
_CRC_END = codec._PREFIX.size
_CRC_START = _CRC_END - 4


@dataclass(frozen=True)
class StoredGames:
    """Records of many games, decoded together; row i of every array is game ids[i]."""

    ids: np.ndarray  # uint64[n]
    owner: list[str]
    position: np.ndarray  # uint64[n, 2]: (ms, seq) of the owner's log the state is exact at
    autoreset: np.ndarray  # bool[n]
    logged: np.ndarray  # bool[n]: the owner's log continues the record
    complete: np.ndarray  # bool[n]: and holds every call the owner acknowledged
    groups: list[tuple[np.ndarray, codec.Snapshot]]  # (rows, their states) per game config


@dataclass(frozen=True)
class _Layout:
    """Where each field of a one-game snapshot of a config lies, from codec's own template."""

    config: GameConfig
    template: np.ndarray  # uint8: a one-game snapshot
    fields: tuple[tuple[str, int, np.dtype, tuple[int, ...]], ...]  # name, offset, dtype, per-game shape
    body: int  # offset of the first field: everything before is prefix and header


@cache
def _layout(config: GameConfig) -> _Layout:
    template = codec.encode_snapshot(GameBatch.allocate(config, 1), [0])
    return _layout_of(template)


def _layout_of(snapshot: bytes) -> _Layout:
    view = np.frombuffer(snapshot, np.uint8)
    base, decoded = view.ctypes.data, codec.decode_snapshot(snapshot)
    fields = tuple((name, a.ctypes.data - base, a.dtype, a.shape[1:]) for name, a in decoded.arrays.items())
    return _Layout(decoded.config, view, fields, min(offset for _, offset, _, _ in fields))


def _header(owner: str, position: EntryId, autoreset: bool, logged: bool, complete: bool) -> bytes:
    flags = (_AUTORESET if autoreset else 0) | (_LOGGED if logged else 0) | (_COMPLETE if complete else 0)
    name = owner.encode()
    return _HEADER.pack(_MAGIC, flags, *position, len(name)) + name


def encode_records(
    batch: GameBatch, owner: str, position: EntryId, autoreset: bool, logged: bool, complete: bool = False
) -> np.ndarray:
    """uint8[games, record bytes]: row i is the record of the batch's slot i."""
    layout = _layout(batch.config)
    head = np.frombuffer(_header(owner, position, autoreset, logged, complete), np.uint8)
    games, start = batch.capacity, head.size
    rows = np.empty((games, start + layout.template.size), np.uint8)
    if games == 0:
        return rows
    rows[:, :start] = head
    rows[:, start:] = layout.template
    for name, offset, _, _ in layout.fields:
        data = getattr(batch, name).reshape(games, -1).view(np.uint8)
        rows[:, start + offset : start + offset + data.shape[1]] = data
    crcs = np.array([zlib.crc32(row[start + _CRC_END :]) for row in rows], "<u4")
    rows[:, start + _CRC_START : start + _CRC_END] = crcs.view(np.uint8).reshape(games, 4)
    if rows[0, start:].tobytes() != codec.encode_snapshot(batch, [0]):
        raise RuntimeError("records.encode_records no longer matches codec.encode_snapshot: update it")
    return rows


def encode_map_entry(seeds: np.ndarray, maps: MapBatch) -> np.ndarray:
    """The data of a "maps" log entry (a reset onto given maps), uint8 bytes: per game, in the
    entry's order, its seed (<u8), terrain (u1 per tile), city armies (<i4 per tile), generals
    (<i2 per seat). Replay needs the maps themselves: no seed regenerates them."""
    games = len(maps)
    parts = (
        np.asarray(seeds, "<u8").reshape(games, 1),
        maps.terrain.reshape(games, -1),
        maps.armies.astype("<i4", copy=False).reshape(games, -1),
        maps.generals.astype("<i2", copy=False),
    )
    return np.concatenate(
        [np.ascontiguousarray(a).view(np.uint8).reshape(games, -1) for a in parts], axis=1
    ).reshape(-1)


def decode_map_entry(data: np.ndarray, config: GameConfig, games: int) -> tuple[np.ndarray, MapBatch]:
    """The seeds and maps of a "maps" entry of `games` games of `config` (ValueError if it does not fit)."""
    tiles, players = config.tiles, config.players
    widths = (8, tiles, 4 * tiles, 2 * players)
    row = sum(widths)
    raw = np.asarray(data, np.uint8)
    if raw.size != games * row:
        raise ValueError(f"a maps entry of {raw.size} bytes does not hold {games} maps of {config}")
    rows = raw.reshape(games, row)
    ends = np.cumsum(widths)
    seeds, terrain, armies, generals = (
        np.ascontiguousarray(rows[:, end - width : end]).view(dtype)
        for end, width, dtype in zip(ends, widths, ("<u8", "u1", "<i4", "<i2"), strict=True)
    )
    board = (games, config.height, config.width)
    return seeds.reshape(games), MapBatch(terrain.reshape(board), armies.reshape(board), generals)


def decode_records(ids: list[int], raws: list[bytes]) -> StoredGames:
    """Parse records (their snapshots fully checked: checksum here, values on adopt)."""
    heads = [_parse_header(game_id, raw) for game_id, raw in zip(ids, raws, strict=True)]
    by_shape: dict[tuple[int, int], list[int]] = {}
    for i, (raw, (*_, start)) in enumerate(zip(raws, heads, strict=True)):
        by_shape.setdefault((start, len(raw)), []).append(i)
    states: dict[GameConfig, list[tuple[np.ndarray, dict[str, np.ndarray]]]] = {}
    for (start, _), rows in by_shape.items():
        part = [(ids[i], raws[i]) for i in rows]
        for config, subset, arrays in _decode_snapshots(np.array(rows), part, start):
            states.setdefault(config, []).append((subset, arrays))
    groups = []
    for config, parts in states.items():
        rows = np.concatenate([r for r, _ in parts])
        arrays = {name: np.concatenate([a[name] for _, a in parts]) for name in parts[0][1]}
        groups.append((rows, codec.Snapshot(config, arrays)))
    return StoredGames(
        np.array(ids, np.uint64),
        [h[0] for h in heads],
        np.array([h[1] for h in heads], np.uint64).reshape(-1, 2),
        np.array([h[2] for h in heads], np.bool_),
        np.array([h[3] for h in heads], np.bool_),
        np.array([h[4] for h in heads], np.bool_),
        groups,
    )


def record_owner(raw: bytes) -> str | None:
    """The owner shard a record names (None for a record too short or not ours)."""
    if len(raw) < _HEADER.size or raw[:4] != _MAGIC:
        return None
    owner_len = _HEADER.unpack_from(raw)[4]
    return raw[_HEADER.size : _HEADER.size + owner_len].decode(errors="replace")


def _parse_header(game_id: int, raw: bytes) -> tuple[str, EntryId, bool, bool, bool, int]:
    if len(raw) < _HEADER.size:
        raise ValueError(f"game {game_id}: record truncated ({len(raw)} bytes)")
    magic, flags, ms, seq, owner_len = _HEADER.unpack_from(raw)
    if magic != _MAGIC:
        raise ValueError(f"game {game_id}: not a game record (magic {magic!r})")
    start = _HEADER.size + owner_len
    owner = raw[_HEADER.size : start].decode()
    return owner, (ms, seq), bool(flags & _AUTORESET), bool(flags & _LOGGED), bool(flags & _COMPLETE), start


def _decode_snapshots(
    rows: np.ndarray, records: list[tuple[int, bytes]], start: int
) -> list[tuple[GameConfig, np.ndarray, dict[str, np.ndarray]]]:
    """Snapshots of one size: those that fit the first one's layout at once, others one by one."""
    block = np.frombuffer(b"".join(raw for _, raw in records), np.uint8).reshape(len(records), -1)[:, start:]
    try:
        layout = _layout_of(block[0].tobytes())
    except ValueError as error:
        raise ValueError(f"game {records[0][0]}: stored snapshot unreadable: {error}") from None
    prefix = np.r_[0:_CRC_START, _CRC_END : layout.body]  # magic, version, header: all but the crc
    crcs = np.array([zlib.crc32(row[_CRC_END:]) for row in block], "<u4")
    fits = np.all(block[:, prefix] == layout.template[prefix], axis=1)
    fits &= crcs == block[:, _CRC_START:_CRC_END].copy().view("<u4")[:, 0]
    arrays = {
        name: block[fits, offset : offset + dtype.itemsize * int(np.prod(shape))]
        .view(dtype)
        .reshape(-1, *shape)
        for name, offset, dtype, shape in layout.fields
    }
    decoded = [(layout.config, rows[fits], arrays)]
    for i in np.flatnonzero(~fits):  # another config, or corrupt (ValueError naming the game)
        try:
            snapshot = codec.decode_snapshot(block[i].tobytes())
        except ValueError as error:
            raise ValueError(f"game {records[i][0]}: stored snapshot unreadable: {error}") from None
        decoded.append((snapshot.config, rows[i : i + 1], {k: v.copy() for k, v in snapshot.arrays.items()}))
    return decoded
