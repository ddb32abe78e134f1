"""Protobuf framing of the bulk replies, written around numpy arrays and read as views.

The generated protobuf classes copy a bytes field on every assignment and on every read,
which for a 4096-game observation batch (10 MB) costs as much as stepping it. So the bulk
replies (Observations, StepResponse, CreateBatchGamesResponse) are framed here by hand:
the shard joins tag/length headers and the engine's output arrays into the reply in one
copy, and the client reads the reply into `np.frombuffer` views of the very bytes gRPC
handed it, with no copy at all (views are read-only and may be unaligned; numpy and numba
take both). Replies under PARSE_BELOW bytes (one-game steps) are parsed by protobuf's C
parser instead, whose per-field cost is lower; their arrays view its copies of the fields.

The writer's output is byte-identical to the generated serializer's (fields in number
order, proto3 defaults left out; a test holds it to that), so any protobuf client reads
it. The reader takes anything a protobuf writer may send: any field order, unknown
fields, packed or unpacked shapes.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
from google.protobuf.message import DecodeError, Message

from ..engine import GameConfig, Observation
from . import codec
from .generated import batch_pb2 as pb
from .messages import config_from_proto

_VARINT, _FIXED64, _LENGTH, _FIXED32 = 0, 1, 2, 5
# Replies shorter than this are parsed by protobuf's C parser and their arrays view its copies
# of the fields (fewer Python steps per field: what a one-game round trip is made of); longer
# ones are walked here and viewed in place, with no copy.
PARSE_BELOW = 1 << 16
_SIGN = 1 << 63


def _numbers(message: type) -> dict[str, int]:
    return {field.name: field.number for field in message.DESCRIPTOR.fields}


_TENSOR = _numbers(pb.Tensor)
_OBSERVATIONS = _numbers(pb.Observations)
_STEP = _numbers(pb.StepResponse)
_CREATED = _numbers(pb.CreateBatchGamesResponse)
_PLANES = ("codes", "armies")
_COUNTERS = ("land", "army", "tick")


# Writing ------------------------------------------------------------------------------------


def _encode_varint(value: int) -> bytes:
    out = bytearray()
    while value > 0x7F:
        out.append(value & 0x7F | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


_SMALL_VARINTS = tuple(_encode_varint(v) for v in range(1 << 14))  # headers are encoded per call


def _varint(value: int) -> bytes:
    return _SMALL_VARINTS[value] if value < 1 << 14 else _encode_varint(value)


def _key(number: int) -> bytes:
    return _varint(number << 3 | _LENGTH)


_DATA_KEY, _SHAPE_KEY = _key(_TENSOR["data"]), _key(_TENSOR["shape"])
_DTYPE_FIELDS = {  # the dtype field of a Tensor, ready to append
    dtype.str: _key(_TENSOR["dtype"]) + _varint(len(dtype.str)) + dtype.str.encode()
    for dtype in codec.WIRE_DTYPES.values()
}


_COPY_BELOW = 4096  # bytes: a small array is copied (one C call), a large one viewed
_FRAMES: dict[tuple[int, str, tuple[int, ...]], tuple[bytes, bytes, int]] = {}
_FRAMES_KEPT = 4096


def _frame(number: int, dtype: str, shape: tuple[int, ...], nbytes: int) -> tuple[bytes, bytes, int]:
    """A Tensor field's bytes before and after its data, and its total size; kept per
    (field, dtype, shape), as a service sends the same shapes call after call."""
    dims = b"".join([_varint(d) for d in shape])
    tail = _DTYPE_FIELDS[dtype] + (_SHAPE_KEY + _varint(len(dims)) + dims if dims else b"")
    head = _DATA_KEY + _varint(nbytes) if nbytes else b""
    header = _key(number) + _varint(len(head) + nbytes + len(tail)) + head
    frame = (header, tail, len(header) + nbytes + len(tail))
    if len(_FRAMES) >= _FRAMES_KEPT:
        _FRAMES.clear()
    _FRAMES[number, dtype, shape] = frame
    return frame


class Body:
    """One message body: header bytes and payload views in order, and their total size."""

    __slots__ = ("parts", "size")

    def __init__(self) -> None:
        self.parts: list[bytes | memoryview] = []
        self.size = 0

    def bytes_field(self, number: int, data: bytes | memoryview) -> None:
        if len(data):
            header = _key(number) + _varint(len(data))
            self.parts += (header, data)
            self.size += len(header) + len(data)

    def message(self, number: int, body: Body) -> None:
        header = _key(number) + _varint(body.size)
        self.parts.append(header)
        self.parts += body.parts
        self.size += len(header) + body.size

    def tensor(self, number: int, array: np.ndarray) -> None:
        dtype = array.dtype.str
        if dtype in _DTYPE_FIELDS and array.flags.c_contiguous:  # the engine's arrays: a view
            data = array.tobytes() if array.nbytes <= _COPY_BELOW else memoryview(array).cast("B")
            shape = array.shape
        else:
            data, dtype, shape = codec.encode_array(array)
        frame = _FRAMES.get((number, dtype, shape))
        if frame is None:
            frame = _frame(number, dtype, shape, len(data))
        header, tail, size = frame
        self.parts += (header, data, tail)
        self.size += size

    def to_bytes(self) -> bytes:
        """The serialized message: the one copy of every payload on the way out."""
        return b"".join(self.parts)


def observations(
    obs: Observation,
    masks: np.ndarray | None = None,
    delta: codec.ObservationDelta | None = None,
    *,
    shared: bool = False,
) -> Body:
    """An Observations body: full planes, or with `delta` the changed tiles instead of the planes,
    or with `shared` (the planes were written into the caller's shared view) the masks only, when
    given (None also where the shared view holds them: the body is then empty)."""
    body = Body()
    names = () if shared else _COUNTERS if delta is not None else (*_PLANES, *_COUNTERS)
    for name in names:
        body.tensor(_OBSERVATIONS[name], getattr(obs, name))
    if masks is not None:
        body.tensor(_OBSERVATIONS["masks"], masks)
    if delta is not None:
        for name, array in zip(("delta_index", "delta_codes", "delta_armies"), delta, strict=True):
            body.tensor(_OBSERVATIONS[name], array)
    return body


def step_response(
    rewards: np.ndarray,
    terminated: np.ndarray,
    truncated: np.ndarray,
    status: np.ndarray,
    reset: np.ndarray,
    observed: Body | None = None,
    final: Body | None = None,
) -> Body:
    body = Body()
    if observed is not None:
        body.message(_STEP["observations"], observed)
    for name, array in (
        ("rewards", rewards),
        ("terminated", terminated),
        ("truncated", truncated),
        ("status", status),
        ("reset", reset),
    ):
        body.tensor(_STEP[name], array)
    if final is not None:
        body.message(_STEP["final_observations"], final)
    return body


def created_response(ids: np.ndarray, config: pb.GameConfig, observed: Body | None, shard: str) -> Body:
    """None for `observed`: a create with skip_observations (ids and config only)."""
    body = Body()
    body.tensor(_CREATED["game_ids"], ids)
    body.bytes_field(_CREATED["config"], config.SerializeToString())
    if observed is not None:
        body.message(_CREATED["observations"], observed)
    body.bytes_field(_CREATED["shard"], shard.encode())
    return body


# Reading ------------------------------------------------------------------------------------


@dataclass
class Observations:
    """An Observations reply as read-only views of the reply's bytes.

    Full form: `codes`/`armies` set and `delta` None; delta form the other way round (apply
    it with `codec.apply_delta`, or let `client.ObservationBuffer` keep the planes). A seat
    call's reply has one seat in codes/armies/masks ([games, 1, ...]), every player in land/army.
    """

    land: np.ndarray
    army: np.ndarray
    tick: np.ndarray
    codes: np.ndarray | None = None
    armies: np.ndarray | None = None
    masks: np.ndarray | None = None
    delta: codec.ObservationDelta | None = None

    @property
    def games(self) -> int:
        return self.tick.shape[0]

    def full(self) -> Observation:
        """The engine's Observation (views); only for the full form."""
        if self.codes is None:
            raise ValueError("this reply carries a delta, not full planes: apply it to a buffer first")
        return Observation(self.codes, self.armies, self.land, self.army, self.tick)


@dataclass
class StepReply:
    """A StepResponse as views: per game [B] or per seat [B, players], in the order of the ids sent.

    `status` is GameStepStatus (STEPPED 0, FINISHED 2: the game had ended, actions ignored).
    A seat call's rewards are its seat's only, [B, 1].
    `final_observations` has one row per game with `reset` set (autoreset), in request order.
    """

    rewards: np.ndarray
    terminated: np.ndarray
    truncated: np.ndarray
    status: np.ndarray
    reset: np.ndarray
    observations: Observations | None = None
    final_observations: Observations | None = None


@dataclass
class Created:
    """A CreateBatchGamesResponse: the new games' ids, effective config and first views."""

    ids: np.ndarray
    config: GameConfig
    observations: Observations | None  # None: created with skip_observations
    shard: str


def _read_varint(buf: bytes, pos: int, end: int) -> tuple[int, int]:
    if pos < end and buf[pos] < 0x80:  # one byte: nearly every varint in these messages
        return buf[pos], pos + 1
    value = shift = 0
    while shift < 64:
        if pos >= end:
            raise ValueError("protobuf message truncated inside a varint")
        byte = buf[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value & ((1 << 64) - 1), pos
        shift += 7
    raise ValueError("protobuf varint longer than 10 bytes")


def _fields(buf: bytes, start: int, end: int) -> Iterator[tuple[int, int, int, int]]:
    """(field number, wire type, a, b) of each field: a varint's value in a; a payload's span [a, b)."""
    pos = start
    while pos < end:
        key, pos = _read_varint(buf, pos, end)
        number, kind = key >> 3, key & 7
        if number == 0:
            raise ValueError("protobuf field number 0")
        if kind == _VARINT:
            value, pos = _read_varint(buf, pos, end)
            yield number, kind, value, pos
            continue
        if kind == _LENGTH:
            length, pos = _read_varint(buf, pos, end)
            stop = pos + length
        elif kind in (_FIXED64, _FIXED32):
            stop = pos + (8 if kind == _FIXED64 else 4)
        else:
            raise ValueError(f"protobuf wire type {kind} is not used by this API")
        if stop > end:
            raise ValueError("protobuf message truncated inside a field")
        yield number, kind, pos, stop
        pos = stop


def _spans(buf: bytes, start: int, end: int) -> dict[int, tuple[int, int]]:
    """The last span of each length-delimited field (protobuf: the last one wins)."""
    return {number: (a, b) for number, kind, a, b in _fields(buf, start, end) if kind == _LENGTH}


_READ_DTYPES = {
    **{name.encode(): dtype for name, dtype in codec.WIRE_DTYPES.items()},
    **{dtype.str.encode(): dtype for dtype in codec.WIRE_DTYPES.values()},
}
_MAX_DIMS = 32


_DATA, _DTYPE, _SHAPE = _TENSOR["data"], _TENSOR["dtype"], _TENSOR["shape"]


def _tensor(buf: bytes, span: tuple[int, int]) -> np.ndarray:
    """A Tensor as a view of `buf` (np.frombuffer at the data's offset: no copy)."""
    data, dtype, shape = (0, 0), b"", []
    for number, kind, a, b in _fields(buf, *span):
        if kind == _LENGTH:
            if number == _DATA:
                data = (a, b)
            elif number == _DTYPE:
                dtype = buf[a:b]
            elif number == _SHAPE:
                while a < b:
                    dim, a = _read_varint(buf, a, b)
                    shape.append(dim)
        elif number == _SHAPE and kind == _VARINT:
            shape.append(a)
    dt, count = _checked(dtype, shape, data[1] - data[0])
    return np.frombuffer(buf, dt, count, data[0]).reshape(shape)


def _checked(dtype: bytes, shape: list[int], nbytes: int) -> tuple[np.dtype, int]:
    """A tensor's numpy dtype and element count, once its dtype, shape and size agree."""
    if dtype not in _READ_DTYPES:
        raise ValueError(f"unsupported tensor dtype {dtype!r}")
    if len(shape) > _MAX_DIMS or any(d < 0 or d >= _SIGN for d in shape):  # int64 on the wire: negative
        raise ValueError(f"tensor shape must be at most {_MAX_DIMS} non-negative ints, got {shape}")
    dt, count = _READ_DTYPES[dtype], math.prod(shape)
    if nbytes != count * dt.itemsize:
        raise ValueError(f"tensor holds {nbytes} bytes but {dt.name}{shape} needs {count * dt.itemsize}")
    return dt, count


def _tensor_message(tensor: pb.Tensor) -> np.ndarray:
    """A parsed Tensor as a view of its data field (protobuf's copy of those bytes)."""
    data, shape = tensor.data, list(tensor.shape)
    dt, count = _checked(tensor.dtype.encode(), shape, len(data))
    return np.frombuffer(data, dt, count).reshape(shape)


def _observations(
    buf: bytes,
    span: tuple[int, int],
    shared: Observation | None = None,
    shared_masks: np.ndarray | None = None,
) -> Observations:
    """With `shared` (the caller's shared view), planes absent from the message are taken from it,
    and with `shared_masks` (its masks, when the call asked them) masks absent from the message."""
    spans = _spans(buf, *span)
    return _observations_of(
        {name: _tensor(buf, spans[number]) for name, number in _OBSERVATIONS.items() if number in spans},
        shared,
        shared_masks,
    )


def _observations_message(
    message: pb.Observations, shared: Observation | None = None, shared_masks: np.ndarray | None = None
) -> Observations:
    return _observations_of(
        {name: _tensor_message(getattr(message, name)) for name in _OBSERVATIONS if message.HasField(name)},
        shared,
        shared_masks,
    )


def _observations_of(
    arrays: dict[str, np.ndarray], shared: Observation | None, shared_masks: np.ndarray | None = None
) -> Observations:
    """Observations from a message's tensors, checked: every shape and dtype agrees with the others.
    Masks in the message win over `shared_masks` (a shard from before masks moved into the view
    sends them; so does any shard for a planes-only view)."""
    if shared is not None and not arrays.keys() & {*_PLANES, *_COUNTERS, "delta_index"}:
        arrays |= {name: getattr(shared, name) for name in (*_PLANES, *_COUNTERS)}
        if shared_masks is not None and "masks" not in arrays:
            arrays["masks"] = shared_masks
    land = arrays.get("land")
    games, players = land.shape if land is not None and land.ndim == 2 else (-1, -1)
    codes = arrays.get("codes")
    tiles = codes.shape[-1] if codes is not None and codes.ndim == 3 else -1
    viewers = 1 if tiles >= 0 and codes.shape[1] == 1 else players  # 1: a seat call's own seat
    changes = arrays["delta_index"].shape if "delta_index" in arrays else (-1,)
    expected = {
        "land": (np.int32, (games, players)),
        "army": (np.int32, (games, players)),
        "tick": (np.int32, (games,)),
        "codes": (np.uint8, (games, viewers, tiles)),
        "armies": (np.uint16, (games, viewers, tiles)),
        "masks": (np.uint8, (games, viewers, arrays["masks"].shape[-1] if "masks" in arrays else -1)),
        "delta_index": (np.int32, changes),
        "delta_codes": (np.uint8, changes),
        "delta_armies": (np.uint16, changes),
    }
    optional = {"masks"} | (
        {"codes", "armies"} if "delta_index" in arrays else set(expected) - {*_PLANES, *_COUNTERS}
    )
    for name, (dtype, shape) in expected.items():
        array = arrays.get(name)
        if array is None and name in optional:
            continue
        if array is None or array.dtype != dtype or array.shape != shape:
            got = "nothing" if array is None else f"{array.dtype} {list(array.shape)}"
            raise ValueError(f"observations {name} must be {np.dtype(dtype)} {list(shape)}, got {got}")
    delta = None
    if "delta_index" in arrays:
        delta = codec.ObservationDelta(arrays["delta_index"], arrays["delta_codes"], arrays["delta_armies"])
    return Observations(
        arrays["land"],
        arrays["army"],
        arrays["tick"],
        codes,
        arrays.get("armies"),
        arrays.get("masks"),
        delta,
    )


def _parsed(message: type[Message], data: bytes) -> Message:
    try:
        return message.FromString(data)
    except DecodeError as error:
        raise ValueError(f"not a valid {message.DESCRIPTOR.full_name}: {error}") from None


def read_observations(
    data: bytes, shared: Observation | None = None, shared_masks: np.ndarray | None = None
) -> Observations:
    """An Observations reply; `shared`: the planes of the shared view the call named,
    `shared_masks`: its masks, when the call asked for masks and the view holds them."""
    if len(data) < PARSE_BELOW:
        return _observations_message(_parsed(pb.Observations, data), shared, shared_masks)
    return _observations(data, (0, len(data)), shared, shared_masks)


def read_step(
    data: bytes, shared: Observation | None = None, shared_masks: np.ndarray | None = None
) -> StepReply:
    """A StepResponse; `shared` and `shared_masks` as in `read_observations`."""
    if len(data) < PARSE_BELOW:
        return _step_message(_parsed(pb.StepResponse, data), shared, shared_masks)
    spans = _spans(data, 0, len(data))
    names = ("rewards", "terminated", "truncated", "status", "reset")
    if any(_STEP[name] not in spans for name in names):
        raise ValueError(f"step response without {[n for n in names if _STEP[n] not in spans]}")
    arrays = {name: _tensor(data, spans[_STEP[name]]) for name in names}
    observed = (
        _observations(data, spans[_STEP["observations"]], shared, shared_masks)
        if _STEP["observations"] in spans
        else None
    )
    final = (
        _observations(data, spans[_STEP["final_observations"]])
        if _STEP["final_observations"] in spans
        else None
    )
    return StepReply(**arrays, observations=observed, final_observations=final)


def _step_message(
    message: pb.StepResponse, shared: Observation | None, shared_masks: np.ndarray | None = None
) -> StepReply:
    names = ("rewards", "terminated", "truncated", "status", "reset")
    if not all(message.HasField(name) for name in names):
        raise ValueError(f"step response without {[n for n in names if not message.HasField(n)]}")
    arrays = {name: _tensor_message(getattr(message, name)) for name in names}
    observed = (
        _observations_message(message.observations, shared, shared_masks)
        if message.HasField("observations")
        else None
    )
    final = (
        _observations_message(message.final_observations) if message.HasField("final_observations") else None
    )
    return StepReply(**arrays, observations=observed, final_observations=final)


def read_created(data: bytes) -> Created:
    spans = _spans(data, 0, len(data))
    config = data[slice(*spans.get(_CREATED["config"], (0, 0)))]
    observed = spans.get(_CREATED["observations"])  # absent: created with skip_observations
    return Created(
        ids=_tensor(data, spans.get(_CREATED["game_ids"], (0, 0))),
        config=config_from_proto(pb.GameConfig.FromString(config)),
        observations=None if observed is None else _observations(data, observed),
        shard=str(data[slice(*spans.get(_CREATED["shard"], (0, 0)))], "utf-8"),
    )
