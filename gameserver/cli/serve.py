"""`gamefleet serve`: run one game shard (BatchGameService over GamePools) until SIGINT/SIGTERM.

In a fleet with Redis (`--redis URL --fleet NAME`) the shard heartbeats in the fleet's
registry, keeps its games durable as `--durability` says, takes over the games of dead
shards, drains when the operator asks (or on SIGTERM) and leaves the registry on exit.
Every fleet flag defaults to the environment the operator sets (GAMEFLEET_REDIS_URL with
GAMEFLEET_REDIS_PASSWORD, GAMEFLEET_FLEET_ID, GAMEFLEET_DURABILITY, GAMEFLEET_SNAPSHOT_EVERY_TICKS,
GAMEFLEET_KEY_TTL_SECONDS, GAMEFLEET_SHARD, GAMEFLEET_ADDRESS, GAMEFLEET_DRAIN_TIMEOUT_SECONDS,
GAMEFLEET_ON_REDIS_ERROR), and so do the game defaults (GAMEFLEET_GAME_WIDTH, GAMEFLEET_GAME_HEIGHT,
GAMEFLEET_GAME_PLAYERS: the fleet's spec.game); a flag wins over its variable.

Shutdown on SIGTERM, in order: drain for at most --drain-timeout seconds (0: leave at once, the
games stay in Redis for the other shards; without Redis or with durability off: take no new games
and wait for the open ones to close), then in-flight calls get --grace seconds, then the
final flush to Redis. The operator sizes the pod's termination grace period from the same terms.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import TYPE_CHECKING

from ..telemetry.exposition import add_metrics_argument
from ..threads import wait_passively
from ..wire import limits
from .flags import (
    add_idle_close_argument,
    add_redis_timing_arguments,
    add_reflection_argument,
    add_security_arguments,
    credentials,
)
from .memory import add_max_memory_argument, add_request_arguments, request_limits

if TYPE_CHECKING:  # numba and grpc load in run(), not for `gamefleet --help`
    from ..engine import GameConfig
    from ..shard.server import ShardServer


def _env_int(name: str, default: int | None) -> int | None:
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
    add_redis_timing_arguments(fleet)
    fleet.add_argument(
        "--drain-timeout", type=float, default=float(_env_int("GAMEFLEET_DRAIN_TIMEOUT_SECONDS", 60)),
        help="SIGTERM: seconds to hand the games over before exiting (0: leave at once; the games "
        "stay in Redis for the other shards); where games cannot move (no Redis, durability off), "
        "seconds to wait for the clients to close them, taking no new ones",
    )  # fmt: skip


def _add_game(parser: argparse.ArgumentParser) -> None:
    """The defaults of the fields a CreateBatchGames request leaves unset (the fleet's spec.game)."""
    game = parser.add_argument_group("game defaults (fields a create request leaves unset)")
    for field in ("width", "height", "players"):
        variable = f"GAMEFLEET_GAME_{field.upper()}"
        game.add_argument(
            f"--game-{field}", type=int, default=_env_int(variable, None),
            help=f"default {field} (default: ${variable}, else the engine's)",
        )  # fmt: skip


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    parser = subparsers.add_parser("serve", help="run one game shard on host:port", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1", help="interface to listen on (0.0.0.0: all)")
    parser.add_argument("--port", type=int, default=50051, help="0 picks a free port (printed at start)")
    parser.add_argument("--seed", type=int, default=0, help="seeds the maps and placement keys clients omit")
    add_reflection_argument(parser)
    add_security_arguments(parser)
    parser.add_argument(
        "--max-games-per-call", type=int, default=limits.MAX_GAMES_PER_CALL, help="games one call may name"
    )
    parser.add_argument("--max-games", type=int, default=limits.MAX_GAMES, help="games one shard holds")
    parser.add_argument(
        "--max-message-mb", type=int, default=limits.MAX_MESSAGE_BYTES >> 20, help="largest reply, in MB"
    )
    add_max_memory_argument(parser)
    add_request_arguments(parser)
    parser.add_argument("--workers", type=int, default=limits.WORKERS, help="threads stepping pools")
    parser.add_argument("--grace", type=float, default=5.0, help="seconds in-flight calls get at shutdown")
    add_idle_close_argument(parser)
    _add_fleet(parser)
    _add_game(parser)
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
    for name in ("dead_after", "heartbeat"):
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
        shard_name=args.shard_name,
        dead_after_s=args.dead_after,
        heartbeat_s=args.heartbeat,
        redis_timeout_s=args.redis_timeout,
        redis_breaker_s=args.redis_breaker,
    )


def drain_timeout(args: argparse.Namespace) -> float:
    """--drain-timeout, checked: 0 (the CRD allows it) leaves at once."""
    if not args.drain_timeout >= 0:
        raise SystemExit("gamefleet serve: --drain-timeout must be >= 0")
    return args.drain_timeout


def game_defaults(args: argparse.Namespace) -> GameConfig:
    """The GameConfig whose fields a create request leaves unset take: the engine's defaults
    with --game-width/--game-height/--game-players over them; refuses an impossible board."""
    from ..engine import GameConfig

    fields = {name: getattr(args, f"game_{name}") for name in ("width", "height", "players")}
    try:
        return GameConfig(**{name: value for name, value in fields.items() if value is not None})
    except ValueError as error:
        raise SystemExit(f"gamefleet serve: --game-*: {error}") from None


def shard_server(args: argparse.Namespace) -> ShardServer:
    """The ShardServer the flags describe (not started)."""
    from ..shard.server import ShardServer  # numba and grpc load here, not for `gamefleet --help`

    return ShardServer(
        args.host,
        args.port,
        seed=args.seed,
        max_games_per_call=args.max_games_per_call,
        max_games=args.max_games,
        max_message_bytes=args.max_message_mb << 20,
        requests=request_limits(args),
        max_memory_bytes=args.max_memory,
        workers=args.workers,
        fleet=fleet_options(args),
        replay_address=args.replay_address,
        game_defaults=game_defaults(args),
        drain_timeout_s=drain_timeout(args),
        reflection=args.reflection,
        advertise=args.advertise,
        credentials=credentials(args, "serve"),
        health_port=args.health_port,
        idle_close_s=args.idle_close_seconds,
    )


def run(args: argparse.Namespace) -> int:
    wait_passively()  # before any kernel runs (threads.py)
    from ..telemetry import process

    server = shard_server(args)
    return process.run_server("shard", args.host, args.metrics_port, server.serve_until_signal(args.grace))


def main(argv: list[str] | None = None) -> int:
    """`python -m gameserver.cli.serve ARGS` is `gamefleet serve ARGS`."""
    parser = argparse.ArgumentParser(prog="gamefleet")
    add_parser(parser.add_subparsers(dest="command", required=True))
    return run(parser.parse_args(["serve", *(sys.argv[1:] if argv is None else argv)]))


if __name__ == "__main__":
    sys.exit(main())
