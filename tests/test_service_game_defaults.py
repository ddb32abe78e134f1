"""A fleet's spec.game reaches its shards: GAMEFLEET_GAME_* (the operator's ConfigMap) become
`gamefleet serve`'s defaults for the fields a CreateBatchGames request leaves unset."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator

import grpc
import pytest

from gameserver.cli import build_parser
from gameserver.cli.serve import shard_server
from gameserver.client import FleetClient
from gameserver.engine import GameConfig
from gameserver.shard.server import ShardServer
from gameserver.wire.generated import batch_pb2 as pb
from gameserver.wire.messages import config_from_proto, config_to_proto
from gameserver.wire.replies import Created, read_created
from gameserver.wire.services import SERVICE

SPEC_GAME = {"GAMEFLEET_GAME_WIDTH": "12", "GAMEFLEET_GAME_HEIGHT": "9", "GAMEFLEET_GAME_PLAYERS": "3"}
FLEET_DEFAULT = GameConfig(width=12, height=9, players=3)


@pytest.mark.parametrize(
    ("request_fields", "expected"),
    [
        ({}, FLEET_DEFAULT),
        ({"players": 2}, GameConfig(width=12, height=9, players=2)),
        (
            {"max_ticks": 50, "mountain_density": 0.1},
            GameConfig(width=12, height=9, players=3, max_ticks=50, mountain_density=0.1),
        ),
        (config_to_proto(GameConfig()), GameConfig()),  # a full config (what FleetClient sends) wins
    ],
    ids=["no config", "players set", "other fields set", "full config"],
)
def test_unset_fields_take_the_defaults(request_fields: object, expected: GameConfig) -> None:
    message = request_fields if isinstance(request_fields, pb.GameConfig) else pb.GameConfig(**request_fields)
    assert config_from_proto(message, FLEET_DEFAULT) == expected
    assert config_from_proto(pb.GameConfig()) == GameConfig()  # without defaults: the engine's


@pytest.fixture
def shard_from_environment(monkeypatch: pytest.MonkeyPatch) -> Iterator[ShardServer]:
    """`gamefleet serve --port 0` as the shard pod runs it: flags from the parser, defaults from
    the environment (no Redis), on a loop in a background thread."""
    for name in ("GAMEFLEET_REDIS_URL", "GAMEFLEET_DURABILITY"):
        monkeypatch.delenv(name, raising=False)
    for name, value in SPEC_GAME.items():
        monkeypatch.setenv(name, value)
    server = shard_server(build_parser().parse_args(["serve", "--port", "0"]))
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    asyncio.run_coroutine_threadsafe(server.start(), loop).result(120)
    try:
        yield server
    finally:
        asyncio.run_coroutine_threadsafe(server.stop(1.0), loop).result(30)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()


def create(address: str, request: pb.CreateBatchGamesRequest) -> Created:
    with grpc.insecure_channel(address) as channel:
        call = channel.unary_unary(
            f"/{SERVICE.full_name}/CreateBatchGames",
            request_serializer=pb.CreateBatchGamesRequest.SerializeToString,
        )
        return read_created(call(request, timeout=30))


def test_a_request_without_a_config_gets_the_fleets_game(shard_from_environment: ShardServer) -> None:
    address = shard_from_environment.address
    created = create(address, pb.CreateBatchGamesRequest(num_games=2, autoreset=True))
    assert created.config == FLEET_DEFAULT  # the effective config in the reply
    assert created.observations.codes.shape == (2, 3, 9 * 12)  # [games, players, tiles]
    partial = create(
        address, pb.CreateBatchGamesRequest(num_games=1, config=pb.GameConfig(width=6, height=6))
    )
    assert partial.config == GameConfig(width=6, height=6, players=3)
    full = create(address, pb.CreateBatchGamesRequest(num_games=1, config=config_to_proto(GameConfig())))
    assert full.config == GameConfig()


def test_fleet_client_create_without_a_config_gets_the_fleets_game(
    shard_from_environment: ShardServer,
) -> None:
    with FleetClient(shard_from_environment.address) as fleet:
        created = fleet.create(2)  # no config: the fleet's spec.game, not the engine's defaults
        assert created.config == FLEET_DEFAULT
        assert fleet.create(1, GameConfig()).config == GameConfig()
