"""`gamefleet serve` and `gamefleet up` in a fleet with Redis: flags, the operator's environment, refusals."""

from __future__ import annotations

import pytest

from gameserver.cli import build_parser
from gameserver.cli.serve import fleet_options

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
    assert options.advertise == "small-shard-3.small-shards.ns.svc:50051"
    assert options.drain_timeout_s == 90


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
        (["--redis", "redis://x:1/0", "--fleet", "f", "--drain-timeout", "0"], "--drain-timeout must be > 0"),
    ],
)
def test_bad_fleet_flags_are_refused_with_a_reason(monkeypatch, argv, message):
    for name in ("GAMEFLEET_REDIS_URL", "GAMEFLEET_FLEET_ID", "GAMEFLEET_FLEET", "GAMEFLEET_DURABILITY"):
        monkeypatch.delenv(name, raising=False)
    with pytest.raises(SystemExit, match=message):
        fleet_options(serve_args(argv))


def test_a_bad_environment_value_is_refused_naming_the_variable(monkeypatch):
    monkeypatch.setenv("GAMEFLEET_SNAPSHOT_EVERY_TICKS", "often")
    with pytest.raises(SystemExit, match="GAMEFLEET_SNAPSHOT_EVERY_TICKS must be an integer"):
        build_parser()


@pytest.mark.parametrize("argv", [["--durability", "log"], ["--fleet", "x"]])
def test_up_refuses_fleet_options_without_redis(argv):
    args = build_parser().parse_args(["up", *argv])
    with pytest.raises(SystemExit, match="need --redis"):
        args.run(args)
