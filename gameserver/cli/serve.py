"""`gamefleet serve`: run one game shard (BatchGameService over GamePools) until SIGINT/SIGTERM.

In a fleet with Redis (`--redis URL --fleet NAME`) the shard heartbeats in the fleet's
registry, keeps its games durable as `--durability` says, takes over the games of dead
shards, drains when the operator asks (or on SIGTERM) and leaves the registry on exit.
Every fleet flag defaults to the environment the operator sets (GAMEFLEET_REDIS_URL with
GAMEFLEET_REDIS_PASSWORD, GAMEFLEET_FLEET_ID, GAMEFLEET_DURABILITY, GAMEFLEET_SNAPSHOT_EVERY_TICKS,
GAMEFLEET_KEY_TTL_SECONDS, GAMEFLEET_SHARD, GAMEFLEET_ADDRESS, GAMEFLEET_DRAIN_TIMEOUT_SECONDS,
GAMEFLEET_ON_REDIS_ERROR); a flag wins over its variable.
"""

from __future__ import annotations

import argparse
import os
import sys

from ..telemetry.exposition import add_metrics_argument
from ..threads import wait_passively
from ..wire import limits


def _env_int(name: str, default: int) -> int:
    text = os.environ.get(name)
    if not text:
        return default
    try:
        return int(text)
    except ValueError:
        raise SystemExit(f"gamefleet serve: ${name} must be an integer, got {text!r}") from None


def _add_fleet(parser: argparse.ArgumentParser) -> None:
    env = os.environ.get
    fleet = parser.add_argument_group("fleet (needs --redis)")
    fleet.add_argument("--redis", default=env("GAMEFLEET_REDIS_URL"), help="the fleet's Redis URL")
    fleet.add_argument(
        "--fleet",
        default=env("GAMEFLEET_FLEET_ID") or env("GAMEFLEET_FLEET"),
        help="the fleet's name in Redis",
    )
    fleet.add_argument(
        "--durability", choices=("off", "snapshot", "log"), default=env("GAMEFLEET_DURABILITY") or "off",
        help="off: nothing in Redis; snapshot: states every --snapshot-every ticks; log: snapshot + "
        "every acknowledged call logged (survives kill -9)",
    )  # fmt: skip
    fleet.add_argument(
        "--snapshot-every", type=int, default=_env_int("GAMEFLEET_SNAPSHOT_EVERY_TICKS", 100),
        help="steps between snapshot rounds",
    )  # fmt: skip
    fleet.add_argument(
        "--on-redis-error", choices=("fail", "degrade"), default=env("GAMEFLEET_ON_REDIS_ERROR") or "fail",
        help="fail: refuse calls (UNAVAILABLE) while Redis is down; degrade: keep serving, report degraded",
    )  # fmt: skip
    fleet.add_argument(
        "--key-ttl", type=int, default=_env_int("GAMEFLEET_KEY_TTL_SECONDS", 86400),
        help="Redis key expiry (s)",
    )  # fmt: skip
    fleet.add_argument("--shard-name", default=env("GAMEFLEET_SHARD"), help="pod name in drain requests")
    fleet.add_argument(
        "--advertise", default=env("GAMEFLEET_ADDRESS"), help="address to register (default: host:port)"
    )
    fleet.add_argument(
        "--dead-after",
        type=float,
        default=10.0,
        help="heartbeat silence (s) after which a shard's games move",
    )
    fleet.add_argument("--heartbeat", type=float, default=1.0, help="seconds between heartbeats")
    fleet.add_argument(
        "--drain-timeout", type=float, default=float(_env_int("GAMEFLEET_DRAIN_TIMEOUT_SECONDS", 60)),
        help="SIGTERM: seconds to hand the games over before exiting",
    )  # fmt: skip


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    parser = subparsers.add_parser("serve", help="run one game shard on host:port", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=50051, help="0 picks a free port (printed at start)")
    parser.add_argument("--seed", type=int, default=0, help="seeds the maps and placement keys clients omit")
    parser.add_argument("--max-games-per-call", type=int, default=limits.MAX_GAMES_PER_CALL)
    parser.add_argument("--max-games", type=int, default=limits.MAX_GAMES, help="games one shard holds")
    parser.add_argument("--max-message-mb", type=int, default=limits.MAX_MESSAGE_BYTES >> 20)
    parser.add_argument("--workers", type=int, default=limits.WORKERS, help="threads stepping pools")
    parser.add_argument("--grace", type=float, default=5.0, help="seconds in-flight calls get at shutdown")
    _add_fleet(parser)
    add_metrics_argument(parser)
    parser.add_argument(
        "--replay-address", help="ReplayService host:port that games created with push_transitions feed"
    )
    parser.set_defaults(run=run)
    return parser


def fleet_options(args: argparse.Namespace) -> object:
    """FleetOptions from the flags, None without --redis; refuses a mode that needs a Redis."""
    from ..shard.server import FleetOptions
    from .route import with_password

    if not args.redis:
        if args.durability != "off":
            raise SystemExit(f"gamefleet serve: --durability {args.durability} needs --redis URL")
        return None
    if not args.fleet or ":" in args.fleet:
        raise SystemExit("gamefleet serve: --redis needs --fleet NAME (no ':'), or $GAMEFLEET_FLEET_ID")
    for name in ("snapshot_every", "key_ttl"):
        if getattr(args, name) < 1:
            raise SystemExit(f"gamefleet serve: --{name.replace('_', '-')} must be >= 1")
    for name in ("dead_after", "heartbeat", "drain_timeout"):
        if not getattr(args, name) > 0:
            raise SystemExit(f"gamefleet serve: --{name.replace('_', '-')} must be > 0")
    if args.dead_after <= 2 * args.heartbeat:
        raise SystemExit("gamefleet serve: --dead-after must exceed two heartbeats")
    return FleetOptions(
        with_password(args.redis),
        args.fleet,
        args.durability,
        snapshot_every=args.snapshot_every,
        on_redis_error=args.on_redis_error,
        key_ttl_s=args.key_ttl,
        advertise=args.advertise,
        shard_name=args.shard_name,
        dead_after_s=args.dead_after,
        heartbeat_s=args.heartbeat,
        drain_timeout_s=args.drain_timeout,
    )


def run(args: argparse.Namespace) -> int:
    wait_passively()  # before any kernel runs (threads.py)
    from ..shard.server import ShardServer  # numba and grpc load here, not for `gamefleet --help`
    from ..telemetry import process

    fleet = fleet_options(args)
    server = ShardServer(
        args.host,
        args.port,
        seed=args.seed,
        max_games_per_call=args.max_games_per_call,
        max_games=args.max_games,
        max_message_bytes=args.max_message_mb << 20,
        workers=args.workers,
        fleet=fleet,
        replay_address=args.replay_address,
    )
    return process.run_server("shard", args.host, args.metrics_port, server.serve_until_signal(args.grace))


def main(argv: list[str] | None = None) -> int:
    """`python -m gameserver.cli.serve ARGS` is `gamefleet serve ARGS`."""
    parser = argparse.ArgumentParser(prog="gamefleet")
    add_parser(parser.add_subparsers(dest="command", required=True))
    return run(parser.parse_args(["serve", *(sys.argv[1:] if argv is None else argv)]))


if __name__ == "__main__":
    sys.exit(main())
