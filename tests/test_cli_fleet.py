"""`gamefleet serve` and `gamefleet up` in a fleet with Redis: flags, the operator's environment, refusals."""

from __future__ import annotations

import pytest

from gameserver.cli import build_parser
from gameserver.cli.serve import drain_timeout, fleet_options, game_defaults, shard_server
from gameserver.engine import GameConfig

OPERATOR_ENV = {
    "GAMEFLEET_REDIS_URL": "redis://redis.ns.svc:6379/0",
    "GAMEFLEET_REDIS_PASSWORD": "p@ss word",
    "GAMEFLEET_FLEET": "small",
    "GAMEFLEET_FLEET_ID": "ns.small",
    "GAMEFLEET_DURABILITY": "log",
    "GAMEFLEET_SNAPSHOT_EVERY_TICKS": "50",
    "GAMEFLEET_KEY_TTL_SECONDS": "600",
    "GAMEFLEET_SHARD": "small-shard-3",
    "GAMEFLEET_ADDRESS": "small-shard-3.small-shards.ns.svc:50051",
    "GAMEFLEET_DRAIN_TIMEOUT_SECONDS": "90",
}

IN_FLEET = ["--redis", "redis://x:1/0", "--fleet", "f"]


def serve_args(argv: list[str]) -> object:
    return build_parser().parse_args(["serve", *argv])


def test_serve_takes_the_operators_environment(monkeypatch):
    for name, value in OPERATOR_ENV.items():
        monkeypatch.setenv(name, value)
    options = fleet_options(serve_args(["--host", "0.0.0.0", "--port", "50051"]))
    assert options.redis_url == "redis://:p%40ss%20word@redis.ns.svc:6379/0"
    assert options.fleet == "ns.small"  # the fleet id names the keys, as the operator's registry reads them
    assert (options.durability, options.snapshot_every, options.key_ttl_s) == ("log", 50, 600)
    assert options.shard_name == "small-shard-3"
    assert shard_server(serve_args([])).advertised == "small-shard-3.small-shards.ns.svc:50051"
    assert drain_timeout(serve_args(["--host", "0.0.0.0", "--port", "50051"])) == 90


def test_flags_win_over_the_environment(monkeypatch):
    for name, value in OPERATOR_ENV.items():
        monkeypatch.setenv(name, value)
    argv = [
        "--durability",
        "snapshot",
        "--snapshot-every",
        "7",
        "--fleet",
        "other",
        "--on-redis-error",
        "degrade",
    ]
    options = fleet_options(serve_args(argv))
    assert (options.durability, options.snapshot_every, options.fleet) == ("snapshot", 7, "other")
    assert options.on_redis_error == "degrade"


def test_without_redis_a_shard_is_not_in_a_fleet(monkeypatch):
    monkeypatch.delenv("GAMEFLEET_REDIS_URL", raising=False)
    monkeypatch.delenv("GAMEFLEET_DURABILITY", raising=False)
    assert fleet_options(serve_args([])) is None


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--durability", "log"], "needs --redis"),
        (["--redis", "redis://x:1/0"], "needs --fleet"),
        (["--redis", "redis://x:1/0", "--fleet", "a:b"], "needs --fleet"),
        (
            ["--redis", "redis://x:1/0", "--fleet", "f", "--snapshot-every", "0"],
            "--snapshot-every must be >= 1",
        ),
        (
            ["--redis", "redis://x:1/0", "--fleet", "f", "--dead-after", "1", "--heartbeat", "1"],
            "two heartbeats",
        ),
    ],
)
def test_bad_fleet_flags_are_refused_with_a_reason(monkeypatch, argv, message):
    for name in ("GAMEFLEET_REDIS_URL", "GAMEFLEET_FLEET_ID", "GAMEFLEET_FLEET", "GAMEFLEET_DURABILITY"):
        monkeypatch.delenv(name, raising=False)
    with pytest.raises(SystemExit, match=message):
        fleet_options(serve_args(argv))


@pytest.mark.parametrize(
    "argv", [["--drain-timeout", "-1"], ["--redis", "redis://x:1/0", "--fleet", "f", "--drain-timeout", "-1"]]
)
def test_a_negative_drain_timeout_is_refused_with_or_without_redis(argv):
    with pytest.raises(SystemExit, match="--drain-timeout must be >= 0"):
        drain_timeout(serve_args(argv))


@pytest.mark.parametrize(
    ("environment", "argv"),
    [({"GAMEFLEET_DRAIN_TIMEOUT_SECONDS": "0"}, []), ({}, ["--drain-timeout", "0"])],
    ids=["environment", "flag"],
)
def test_a_drain_timeout_of_0_means_leave_at_once(monkeypatch, environment, argv):
    """drainTimeoutSeconds: 0 is valid in the CRD: the shard starts (no crash loop) and leaves at once."""
    for name, value in (OPERATOR_ENV | environment).items():
        monkeypatch.setenv(name, value)
    assert drain_timeout(serve_args(argv)) == 0


@pytest.mark.parametrize(
    ("environment", "argv", "expected"),
    [
        ({}, [], GameConfig()),
        (
            {"GAMEFLEET_GAME_WIDTH": "30", "GAMEFLEET_GAME_HEIGHT": "10", "GAMEFLEET_GAME_PLAYERS": "4"},
            [],
            GameConfig(width=30, height=10, players=4),
        ),
        (
            {"GAMEFLEET_GAME_WIDTH": "30"},
            ["--game-width", "12", "--game-players", "3"],
            GameConfig(width=12, players=3),
        ),
    ],
    ids=["engine defaults", "the operator's environment", "flags win"],
)
def test_game_defaults_come_from_the_fleets_spec_game(monkeypatch, environment, argv, expected):
    for name in ("GAMEFLEET_GAME_WIDTH", "GAMEFLEET_GAME_HEIGHT", "GAMEFLEET_GAME_PLAYERS"):
        monkeypatch.delenv(name, raising=False)
    for name, value in environment.items():
        monkeypatch.setenv(name, value)
    assert game_defaults(serve_args(argv)) == expected


@pytest.mark.parametrize(
    ("environment", "message"),
    [({"GAMEFLEET_GAME_WIDTH": "wide"}, "GAMEFLEET_GAME_WIDTH must be an integer"),
     ({"GAMEFLEET_GAME_PLAYERS": "9"}, "--game-\\*: GameConfig.players must be in")],
)  # fmt: skip
def test_bad_game_defaults_are_refused_at_start(monkeypatch, environment, message):
    for name, value in environment.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(SystemExit, match=message):
        game_defaults(serve_args([]))


def test_a_bad_environment_value_is_refused_naming_the_variable(monkeypatch):
    monkeypatch.setenv("GAMEFLEET_SNAPSHOT_EVERY_TICKS", "often")
    with pytest.raises(SystemExit, match="GAMEFLEET_SNAPSHOT_EVERY_TICKS must be an integer"):
        build_parser()


@pytest.mark.parametrize("argv", [["--durability", "log"], ["--fleet", "x"]])
def test_up_refuses_fleet_options_without_redis(argv):
    args = build_parser().parse_args(["up", *argv])
    with pytest.raises(SystemExit, match="need --redis"):
        args.run(args)
