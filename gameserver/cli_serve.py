"""`gamefleet serve`: run one game shard (BatchGameService over GamePools) until SIGINT/SIGTERM."""

from __future__ import annotations

import argparse
import asyncio
import sys

from .service import limits


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
    parser.set_defaults(run=run)
    return parser


def run(args: argparse.Namespace) -> int:
    from .service.server import ShardServer  # numba and grpc load here, not for `gamefleet --help`

    server = ShardServer(
        args.host,
        args.port,
        seed=args.seed,
        max_games_per_call=args.max_games_per_call,
        max_games=args.max_games,
        max_message_bytes=args.max_message_mb << 20,
        workers=args.workers,
    )
    asyncio.run(server.serve_until_signal(args.grace))
    return 0


def main(argv: list[str] | None = None) -> int:
    """`python -m gameserver.cli_serve ARGS` is `gamefleet serve ARGS`."""
    parser = argparse.ArgumentParser(prog="gamefleet")
    add_parser(parser.add_subparsers(dest="command", required=True))
    return run(parser.parse_args(["serve", *(sys.argv[1:] if argv is None else argv)]))


if __name__ == "__main__":
    sys.exit(main())
