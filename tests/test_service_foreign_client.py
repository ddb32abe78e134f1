"""What a client in another language meets: the API learned only from reflection (v1, as newer
clients speak it, and v1alpha), the codes it needs written in the .proto, the effective config
filled in, creates that return ids without observations, and the action dtypes accepted."""

from __future__ import annotations

import re
from pathlib import Path

import grpc
import numpy as np
import pytest
from conftest import BackgroundShard
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
from grpc_reflection.v1alpha import reflection_pb2

from gameserver.client import FleetClient, InvalidArgument
from gameserver.engine import GameConfig
from gameserver.engine import config as engine_config
from gameserver.wire.reflection import V1, V1ALPHA

PROTO = Path(__file__).resolve().parents[1] / "proto" / "gamefleet" / "v1" / "batch.proto"
SMALL = GameConfig(height=6, width=6, max_ticks=50)


@pytest.fixture(scope="module")
def reflecting_shard():
    shard = BackgroundShard(reflection=True)
    yield shard
    shard.stop()


def _reflect(channel: grpc.Channel, service: str, requests: list) -> list:
    """Ask reflection at `service` (v1 or v1alpha: the same messages on the wire)."""
    call = channel.stream_stream(
        f"/{service}/ServerReflectionInfo",
        request_serializer=reflection_pb2.ServerReflectionRequest.SerializeToString,
        response_deserializer=reflection_pb2.ServerReflectionResponse.FromString,
    )
    return list(call(iter(requests), timeout=10))


def test_reflection_v1_and_v1alpha_list_the_services(reflecting_shard):
    with grpc.insecure_channel(reflecting_shard.address) as channel:
        for service in (V1, V1ALPHA):
            (reply,) = _reflect(channel, service, [reflection_pb2.ServerReflectionRequest(list_services="")])
            names = {s.name for s in reply.list_services_response.service}
            assert {"gamefleet.v1.BatchGameService", "grpc.health.v1.Health", V1, V1ALPHA} <= names


def test_a_client_built_from_reflection_alone_creates_and_plays(reflecting_shard):
    """No generated code: the descriptors come from reflection v1, the messages from them."""
    with grpc.insecure_channel(reflecting_shard.address) as channel:
        request = reflection_pb2.ServerReflectionRequest(
            file_containing_symbol="gamefleet.v1.BatchGameService"
        )
        (reply,) = _reflect(channel, V1, [request])
        pool = descriptor_pool.DescriptorPool()
        for raw in reply.file_descriptor_response.file_descriptor_proto:
            pool.Add(descriptor_pb2.FileDescriptorProto.FromString(raw))
        types = {
            name: message_factory.GetMessageClass(pool.FindMessageTypeByName(f"gamefleet.v1.{name}"))
            for name in ("CreateBatchGamesRequest", "CreateBatchGamesResponse", "SubmitBatchActionsRequest")
        }
        types["StepResponse"] = message_factory.GetMessageClass(
            pool.FindMessageTypeByName("gamefleet.v1.StepResponse")
        )

        def rpc(method: str, message: object, reply_type: str) -> object:
            call = channel.unary_unary(
                f"/gamefleet.v1.BatchGameService/{method}",
                request_serializer=lambda m: m.SerializeToString(),
                response_deserializer=types[reply_type].FromString,
            )
            return call(message, timeout=30)

        create = types["CreateBatchGamesRequest"](num_games=3, skip_observations=True)
        create.config.height, create.config.width = 6, 6
        created = rpc("CreateBatchGames", create, "CreateBatchGamesResponse")
        assert not created.HasField("observations")
        assert created.config.min_general_distance == GameConfig(6, 6).general_distance  # filled in
        assert created.game_ids.dtype == "<u8"
        step = types["SubmitBatchActionsRequest"]()
        step.game_ids.CopyFrom(created.game_ids)
        step.actions.data = np.full((3, 2), -1, "<i4").tobytes()  # every seat passes
        step.actions.dtype, step.actions.shape[:] = "<i4", [3, 2]
        stepped = rpc("SubmitBatchActions", step, "StepResponse")
        tick = np.frombuffer(stepped.observations.tick.data, stepped.observations.tick.dtype)
        codes = np.frombuffer(stepped.observations.codes.data, "u1").reshape(3, 2, 36)
        assert tick.tolist() == [1, 1, 1]
        owner = codes & 15  # the proto's owner codes: seat p is p+1
        assert ((owner == 1).sum(axis=2)[:, 0] == 1).all() and ((owner == 2).sum(axis=2)[:, 1] == 1).all()


def test_the_proto_carries_every_code_a_client_needs():
    text = PROTO.read_text()
    comments = "\n".join(line for line in text.splitlines() if line.lstrip().startswith("//"))
    for name in ("PLAIN", "MOUNTAIN", "CITY", "GENERAL", "FOG", "FOG_OBSTACLE", "KIND_OFFSET"):
        assert f"{name} = {getattr(engine_config, name)}" in comments, name
    visible = {"PLAIN": 2, "MOUNTAIN": 3, "CITY": 4, "GENERAL": 5}
    for name, code in visible.items():
        assert getattr(engine_config, name) + engine_config.KIND_OFFSET == code
        assert f"{name} = {code}" in comments
    names = ("UP", "DOWN", "LEFT", "RIGHT")
    for d, name in enumerate(names):
        rows, cols = engine_config.DIRECTION_ROWS[d], engine_config.DIRECTION_COLS[d]
        step = f"row{rows:+d}" if rows else f"col{cols:+d}"
        assert re.search(rf"{d} {name} \({re.escape(step)}\)", comments), name
    assert f"PASS = {engine_config.PASS}" in comments
    assert "((row*W + col)*4 + dir)*2 + split" in comments and "bit m = t*4 + dir" in comments
    assert 'bitorder="little"' in comments and "p+1 for seat p" in comments


def test_create_reply_config_fills_every_default_and_round_trips(shard):
    with FleetClient(shard.address) as fleet:
        created = fleet.create(2, SMALL, observations=False)
        assert created.observations is None and created.ids.size == 2
        assert created.config == SMALL  # the derived distance reads back as the default
        again = fleet.create(1, created.config)  # the reply's config names the same games
        assert again.config == SMALL and again.observations.tick.tolist() == [0]
        states = fleet.states(created.ids)
        assert states.tick.tolist() == [0, 0]
        fleet.close(np.concatenate([created.ids, again.ids]))


def test_int64_actions_are_accepted_range_checked_before_narrowing(shard):
    with FleetClient(shard.address) as fleet:
        ids = fleet.create(2, SMALL, seeds=[1, 2]).ids
        twin = fleet.create(2, SMALL, seeds=[1, 2]).ids
        moves = np.array([[0, 5], [17, -1]])
        a = fleet.step(ids, moves.astype(np.int32))
        b = fleet.step(twin, moves.astype(np.int64))
        assert np.array_equal(a.observations.codes, b.observations.codes)
        with pytest.raises(InvalidArgument, match="actions must be in"):
            fleet.step(ids, np.array([[2**32 - 1, 0], [0, 0]], np.int64))  # would wrap to -1 as int32
        with pytest.raises(InvalidArgument):
            fleet.step(ids, np.zeros((2, 2), np.float32))
        fleet.close(np.concatenate([ids, twin]))
