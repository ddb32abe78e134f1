"""The hand-framed replies are plain protobuf: byte-identical to the generated serializer, read back
as views, and the generated modules are current with the .proto."""

from __future__ import annotations

import contextlib

import numpy as np
import pytest

from gameserver.engine import GameConfig, Observation
from gameserver.wire import codec, codegen
from gameserver.wire import replies as wire
from gameserver.wire.generated import batch_pb2 as pb
from gameserver.wire.messages import config_to_proto, write_tensor

CONFIG = GameConfig(height=6, width=7, players=3)


@pytest.fixture(params=["walked in place", "parsed by protobuf"])
def reader(request, monkeypatch):
    """Both ways of reading a reply: large ones are walked in place, small ones parsed by protobuf."""
    monkeypatch.setattr(wire, "PARSE_BELOW", 0 if request.param == "walked in place" else 1 << 30)


def random_observation(rng: np.random.Generator, games: int) -> Observation:
    obs = Observation.allocate(CONFIG, games)
    for name in ("codes", "armies", "land", "army", "tick"):
        array = getattr(obs, name)
        array[...] = rng.integers(0, np.iinfo(array.dtype).max, array.shape, dtype=array.dtype)
    return obs


def proto_observations(obs: Observation, masks=None, delta=None) -> pb.Observations:
    message = pb.Observations()
    names = ("land", "army", "tick") if delta is not None else ("codes", "armies", "land", "army", "tick")
    for name in names:
        write_tensor(getattr(message, name), getattr(obs, name))
    if masks is not None:
        write_tensor(message.masks, masks)
    if delta is not None:
        for name, array in zip(("delta_index", "delta_codes", "delta_armies"), delta, strict=True):
            write_tensor(getattr(message, name), array)
    return message


@pytest.mark.parametrize("games", [0, 1, 5])
def test_observations_are_byte_identical_to_protobuf(games, reader):
    rng = np.random.default_rng(games)
    obs = random_observation(rng, games)
    masks = rng.integers(0, 255, (games, 3, 21), dtype=np.uint8)
    delta = codec.encode_delta(obs.codes, obs.armies, random_observation(rng, games).codes, obs.armies)
    for args in ((obs,), (obs, masks), (obs, None, delta)):
        framed = wire.observations(*args).to_bytes()
        assert framed == proto_observations(*args).SerializeToString()
        read = wire.read_observations(framed)
        for name in ("land", "army", "tick"):
            np.testing.assert_array_equal(getattr(read, name), getattr(obs, name))
        if len(args) == 3:
            assert read.codes is None and all(
                np.array_equal(a, b) for a, b in zip(read.delta, delta, strict=True)
            )
        else:
            np.testing.assert_array_equal(read.full().codes, obs.codes)


def test_step_and_create_replies_are_byte_identical_to_protobuf(reader):
    rng = np.random.default_rng(1)
    obs, final = random_observation(rng, 4), random_observation(rng, 2)
    flags = [rng.random((4, 3), dtype=np.float32), rng.random(4) < 0.5, rng.random(4) < 0.5]
    flags += [np.array([0, 2, 0, 0], np.uint8), np.array([1, 0, 0, 1], bool)]
    framed = wire.step_response(*flags, wire.observations(obs), wire.observations(final)).to_bytes()
    message = pb.StepResponse(
        observations=proto_observations(obs), final_observations=proto_observations(final)
    )
    for name, array in zip(("rewards", "terminated", "truncated", "status", "reset"), flags, strict=True):
        write_tensor(getattr(message, name), array)
    assert framed == message.SerializeToString()
    step = wire.read_step(framed)
    np.testing.assert_array_equal(step.rewards, flags[0])
    np.testing.assert_array_equal(step.final_observations.full().armies, final.armies)

    ids = np.array([1, 2, 3, 4], np.uint64)
    framed = wire.created_response(
        ids, config_to_proto(CONFIG), wire.observations(obs), "shard-0:1"
    ).to_bytes()
    message = pb.CreateBatchGamesResponse(
        config=config_to_proto(CONFIG), observations=proto_observations(obs), shard="shard-0:1"
    )
    write_tensor(message.game_ids, ids)
    assert framed == message.SerializeToString()
    created = wire.read_created(framed)
    assert created.config == CONFIG and created.shard == "shard-0:1" and created.ids.tolist() == [1, 2, 3, 4]


def field(number: int, payload: bytes) -> bytes:
    return bytes([number << 3 | 2, len(payload)]) + payload


def tensor_bytes(array: np.ndarray) -> bytes:
    message = pb.Tensor()
    write_tensor(message, array)
    return message.SerializeToString()


def test_reader_takes_any_valid_encoding(reader):
    """Unpacked shapes, fields out of order or repeated (the last wins), unknown fields."""
    tick = np.array([7, 8], np.int32)
    unpacked_shape = bytes([3 << 3 | 0, 2])  # shape [2] as one unpacked varint
    unknown = bytes([0x98, 0x06, 0x80, 0x01])  # field 99 (a two-byte key), varint 128
    body = (
        unknown
        + field(5, field(2, b"<i4") + unpacked_shape + field(1, tick.tobytes()))
        + field(4, tensor_bytes(np.zeros((2, 1), np.int32)))
        + field(3, tensor_bytes(np.ones((2, 1), np.int32)))
        + field(1, b"")  # codes: an empty Tensor, replaced by the next one
        + field(1, tensor_bytes(np.full((2, 1, 3), 5, np.uint8)))
        + field(2, tensor_bytes(np.zeros((2, 1, 3), np.uint16)))
    )
    read = wire.read_observations(body)
    assert read.tick.tolist() == [7, 8] and read.land.tolist() == [[1], [1]] and read.codes.sum() == 30
    with pytest.raises(ValueError, match="dtype"):  # an empty Tensor is no array
        wire.read_observations(field(5, b""))


def test_reader_refuses_malformed_replies_with_value_errors(reader):
    obs = random_observation(np.random.default_rng(2), 2)
    framed = wire.observations(obs).to_bytes()
    for cut in range(len(framed)):  # every prefix is read or refused with ValueError, nothing else
        with contextlib.suppress(ValueError):
            wire.read_observations(framed[:cut])
    with pytest.raises(ValueError, match=r"wire type|not a valid"):
        wire.read_observations(bytes([1 << 3 | 3]))
    with pytest.raises(ValueError, match=r"varint|not a valid"):
        wire.read_observations(b"\xff" * 11)
    with pytest.raises(ValueError, match="bytes but"):
        wire.read_observations(framed.replace(b"|u1", b"<u2", 1))


def test_generated_modules_are_current(tmp_path):
    for path in codegen.generate(tmp_path):
        assert path.read_bytes() == (codegen.GENERATED / path.name).read_bytes(), (
            f"{path.name} is stale: run python -m gameserver.service.codegen"
        )
