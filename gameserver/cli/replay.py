"""`gamefleet replay serve`: one experience buffer (ReplayService) that many actors feed.

The buffer stores self-play transitions of one board size (`rl.transitions`): actors push
with `TransitionPusher` (`gamefleet selfplay --replay-address`), a learner samples with
`ReplayClient`. Runs until SIGINT/SIGTERM.
"""

from __future__ import annotations

import argparse

from ..telemetry.exposition import add_metrics_argument
from ..wire import limits
from .flags import add_security_arguments, credentials


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    replay = subparsers.add_parser("replay", help="experience replay service", description=__doc__)
    actions = replay.add_subparsers(dest="action", required=True, metavar="ACTION")
    serve = actions.add_parser("serve", help="serve a replay buffer on host:port", description=__doc__)
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=50061, help="0 picks a free port (printed at start)")
    serve.add_argument("--capacity", type=int, default=1_000_000, help="items kept (oldest go first)")
    serve.add_argument("--height", type=int, default=20, help="board height of the stored transitions")
    serve.add_argument("--width", type=int, default=20, help="board width of the stored transitions")
    serve.add_argument("--prioritized", action="store_true", help="proportional prioritized sampling")
    serve.add_argument("--alpha", type=float, default=0.6, help="priority exponent")
    serve.add_argument("--beta", type=float, default=0.4, help="default importance-weight exponent")
    serve.add_argument("--samples-per-insert", type=float, help="rate limit: sampled/inserted items")
    serve.add_argument("--min-size", type=int, default=1, help="items stored before sampling starts")
    serve.add_argument("--error-buffer", type=float, help="rate limit slack, in sampled items")
    serve.add_argument("--max-wait", type=float, default=30.0, help="longest a rate-limited call waits (s)")
    serve.add_argument("--workers", type=int, default=16, help="concurrent calls")
    serve.add_argument("--max-message-mb", type=int, default=limits.MAX_MESSAGE_BYTES >> 20)
    serve.add_argument("--seed", type=int, default=0, help="seeds the sampling")
    serve.add_argument("--grace", type=float, default=5.0, help="seconds in-flight calls get at shutdown")
    add_metrics_argument(serve)
    add_security_arguments(serve, health_port=False)
    serve.set_defaults(run=run)
    return replay


def run(args: argparse.Namespace) -> int:
    from ..engine import GameConfig
    from ..replay.buffer import ReplayBuffer
    from ..replay.rate_limiter import RateLimiter
    from ..replay.service import ReplayServer
    from ..replay.transitions import transition_spec
    from ..telemetry import process

    security = credentials(args, "replay serve")
    try:
        spec = transition_spec(GameConfig(args.height, args.width))
        limiter = RateLimiter(args.samples_per_insert, args.min_size, args.error_buffer)
        buffer = ReplayBuffer(
            spec,
            args.capacity,
            prioritized=args.prioritized,
            alpha=args.alpha,
            beta=args.beta,
            rate_limiter=limiter,
            seed=args.seed,
        )
    except ValueError as error:
        raise SystemExit(f"gamefleet replay serve: {error}") from None
    server = ReplayServer(
        buffer,
        args.host,
        args.port,
        workers=args.workers,
        max_wait_s=args.max_wait,
        max_message_bytes=args.max_message_mb << 20,
        credentials=security,
    )
    process.start("replay", args.host, args.metrics_port)
    try:
        server.serve_until_signal(args.grace)
    finally:
        process.stop()
    return 0
