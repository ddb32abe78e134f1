"""`gamefleet route`: run the fleet service, a router over the shards, until SIGINT/SIGTERM.

Topology, one of: `--shards a:1,b:2` (static), `--dns NAME:PORT` (the A/AAAA records of a
headless Service, polled), `--redis URL --fleet NAME` (the SERVING shards of the fleet's
Redis registry). Without flags the fleet's environment decides (what the operator's
ConfigMap sets): GAMEFLEET_REDIS_URL and GAMEFLEET_FLEET_ID if set, else the DNS of
GAMEFLEET_SHARD_SERVICE on port 50051.

CreateBatchGames without a placement key gets a random key from the router: keyless
batches spread over the shards. Name a key to keep batches together.
"""

from __future__ import annotations

import argparse
import functools
import os
import sys
import urllib.parse

from ..telemetry.exposition import add_metrics_argument
from ..wire import limits
from .flags import add_redis_timing_arguments, add_reflection_argument, add_security_arguments, credentials
from .memory import add_request_arguments, request_limits

SHARD_PORT = 50051


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "route", help="run the fleet service: a router over the shards", description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )  # fmt: skip
    parser.add_argument("--host", default="127.0.0.1", help="interface to listen on (0.0.0.0: all)")
    parser.add_argument("--port", type=int, default=50050, help="0 picks a free port (printed at start)")
    add_reflection_argument(parser)
    add_security_arguments(parser)
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--shards", help="comma-separated shard addresses host:port")
    source.add_argument("--dns", help="NAME:PORT whose A/AAAA records are the shards (a headless Service)")
    source.add_argument(
        "--redis", default=os.environ.get("GAMEFLEET_REDIS_URL"), help="the fleet's Redis URL"
    )
    parser.add_argument(
        "--fleet",
        default=os.environ.get("GAMEFLEET_FLEET_ID") or os.environ.get("GAMEFLEET_FLEET"),
        help="the fleet's name in Redis (with --redis)",
    )
    add_redis_timing_arguments(parser)
    parser.add_argument("--refresh", type=float, default=5.0, help="seconds between topology polls")
    parser.add_argument(
        "--alive-within",
        type=float,
        default=10.0,
        help="registry: heartbeat age of a live shard (the shards' --dead-after)",
    )
    parser.add_argument(
        "--shard-timeout", type=float, default=30.0, help="deadline of each call to a shard (s)"
    )
    parser.add_argument(
        "--max-games-per-call", type=int, default=limits.MAX_GAMES_PER_CALL, help="games one call may name"
    )
    parser.add_argument(
        "--max-message-mb", type=int, default=limits.MAX_MESSAGE_BYTES >> 20, help="largest reply, in MB"
    )
    add_request_arguments(parser)
    parser.add_argument("--grace", type=float, default=5.0, help="seconds in-flight calls get at shutdown")
    add_metrics_argument(parser)
    parser.set_defaults(run=run)
    return parser


def _source(args: argparse.Namespace) -> object:
    from ..router.topology import DnsSource, RegistrySource, StaticSource

    if args.shards:
        return StaticSource([s.strip() for s in args.shards.split(",") if s.strip()])
    if args.dns:
        return DnsSource(args.dns)
    if args.redis:
        if not args.fleet:
            raise SystemExit("gamefleet route: --redis needs --fleet (or GAMEFLEET_FLEET_ID)")
        from ..fleet.store import FleetStore

        timing = {"timeout_s": args.redis_timeout, "breaker_s": args.redis_breaker}
        store = FleetStore(with_password(args.redis), args.fleet, ttl_s=1, **timing)
        return RegistrySource(store, args.alive_within)
    service = os.environ.get("GAMEFLEET_SHARD_SERVICE")
    if service:
        return DnsSource(f"{service}:{SHARD_PORT}")
    raise SystemExit("gamefleet route: name the shards: --shards, --dns or --redis/--fleet")


def with_password(url: str) -> str:
    """The URL with $GAMEFLEET_REDIS_PASSWORD (the operator's Secret) and $GAMEFLEET_REDIS_USERNAME
    (a Redis ACL user) when the URL has none. `redis://` or `rediss://` (TLS) alike."""
    password = os.environ.get("GAMEFLEET_REDIS_PASSWORD")
    username = os.environ.get("GAMEFLEET_REDIS_USERNAME") or ""
    parts = urllib.parse.urlsplit(url)
    if not password or parts.password:
        return url
    quote = functools.partial(urllib.parse.quote, safe="")
    netloc = f"{quote(parts.username or username)}:{quote(password)}@{parts.netloc.rpartition('@')[2]}"
    return urllib.parse.urlunsplit(parts._replace(netloc=netloc))


def run(args: argparse.Namespace) -> int:
    from ..router.server import RouterServer  # grpc loads here, not for `gamefleet --help`
    from ..telemetry import process

    security = credentials(args, "route")
    server = RouterServer(
        _source(args),
        args.host,
        args.port,
        shard_timeout_s=args.shard_timeout,
        refresh_s=args.refresh,
        max_games_per_call=args.max_games_per_call,
        max_message_bytes=args.max_message_mb << 20,
        requests=request_limits(args),
        reflection=args.reflection,
        credentials=security,
        health_port=args.health_port,
    )
    return process.run_server("router", args.host, args.metrics_port, server.serve_until_signal(args.grace))


def main(argv: list[str] | None = None) -> int:
    """`python -m gameserver.cli.route ARGS` is `gamefleet route ARGS`."""
    parser = argparse.ArgumentParser(prog="gamefleet")
    add_parser(parser.add_subparsers(dest="command", required=True))
    return run(parser.parse_args(["route", *(sys.argv[1:] if argv is None else argv)]))


if __name__ == "__main__":
    sys.exit(main())
