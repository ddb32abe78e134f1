"""`gamefleet replay serve`: one experience buffer (ReplayService) that many actors feed.

The buffer stores self-play transitions of one board size (`rl.transitions`): actors push
with `TransitionPusher` (`gamefleet selfplay --replay-address`), a learner samples with
`ReplayClient`. Runs until SIGINT/SIGTERM.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from ..telemetry.exposition import add_metrics_argument
from ..wire import limits
from .flags import add_security_arguments, credentials


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    replay = subparsers.add_parser("replay", help="experience replay service", description=__doc__)
    actions = replay.add_subparsers(dest="action", required=True, metavar="ACTION")
    serve = actions.add_parser("serve", help="serve a replay buffer on host:port", description=__doc__)
    serve.add_argument("--host", default="127.0.0.1", help="interface to listen on (0.0.0.0: all)")
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
    serve.add_argument(
        "--max-message-mb", type=int, default=limits.MAX_MESSAGE_BYTES >> 20, help="largest message, in MB"
    )
    serve.add_argument("--seed", type=int, default=0, help="seeds the sampling")
    serve.add_argument("--grace", type=float, default=5.0, help="seconds in-flight calls get at shutdown")
    add_metrics_argument(serve)
    add_security_arguments(serve, health_port=False)
    serve.set_defaults(run=run)
    render = actions.add_parser(
        "render",
        help="a generals.io replay file as an animated GIF and an HTML viewer",
        description=RENDER_DOC,
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    render.add_argument(
        "file", type=Path, help="a replay (generals.io JSON, as `gamefleet selfplay --replays` saves)"
    )
    render.add_argument(
        "--gif", type=Path, help="write the GIF here (default: FILE with .gif, unless --html alone)"
    )
    render.add_argument(
        "--html", type=Path, help="write the viewer here (default: FILE with .html, unless --gif alone)"
    )
    render.add_argument(
        "--view", default="all", help="the GIF's view: all (no fog) or a seat number (its fog)"
    )
    render.add_argument("--every", type=int, default=2, help="ticks per GIF frame (2: one frame per turn)")
    # No defaults from envs.render here: building the parser must not load the engine (numba), or
    # `gamefleet operator`, in a pod with a read-only root, would fail compiling it.
    render.add_argument("--tile", type=int, help="pixels per tile (default: the renderer's, 20)")
    render.add_argument("--fps", type=float, help="frames per second, GIF and viewer (default: 8)")
    render.set_defaults(run=run_render)
    return replay


RENDER_DOC = """`gamefleet replay render FILE`: watch a saved game. The GIF plays it one frame per --every
ticks in one view; the HTML viewer is one self-contained file (no network) that plays every tick
with play/pause, step, a tick slider and a view switch (everything, or one seat's fog of war);
`viewer.html#t=40&view=1` opens tick 40 in seat 1's view."""


def run_render(args: argparse.Namespace) -> int:
    from ..envs.render import RENDER_FPS, TILE, draw, fog_view, state_view, viewer_html, write_gif
    from ..rl.replay_files import import_replay, replay_states

    args.tile = TILE if args.tile is None else args.tile
    args.fps = RENDER_FPS if args.fps is None else args.fps

    try:
        replay = import_replay(args.file)
    except ValueError as error:
        raise SystemExit(f"gamefleet replay render: {args.file}: {error}") from None
    config = replay.config
    seats = [str(p) for p in range(config.players)]
    if args.view not in ("all", *seats) or args.every < 1 or args.tile < 8 or args.fps <= 0:
        raise SystemExit(
            f"gamefleet replay render: --view all or 0..{config.players - 1}, --every >= 1, "
            "--tile >= 8 and --fps > 0"
        )
    gif = args.gif or (None if args.html else args.file.with_suffix(".gif"))
    html = args.html or (None if args.gif else args.file.with_suffix(".html"))
    terrain, owner, armies = replay_states(replay)
    h, w = config.height, config.width
    names = replay.usernames or [f"seat {p}" for p in seats]
    if gif:
        frames = []
        for t in [
            *range(0, len(terrain), args.every),
            *([len(terrain) - 1] if (len(terrain) - 1) % args.every else []),
        ]:
            if args.view == "all":
                codes, army = state_view(terrain[t], owner[t], armies[t])
            else:
                codes, army = fog_view(terrain[t], owner[t], armies[t], int(args.view), h, w)
            frames.append(draw(codes, army, h, w, args.tile))
        write_gif(frames, gif, args.fps)
        print(f"{gif}: {len(frames)} frames, {gif.stat().st_size} bytes")
    if html:
        title = f"{' vs '.join(names)}: {args.file.name}"
        html.write_text(
            viewer_html(terrain, owner, armies, h, w, names=names, title=title, tile=args.tile, fps=args.fps)
        )
        print(f"{html}: {len(terrain) - 1} ticks, {html.stat().st_size} bytes")
    return 0


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
