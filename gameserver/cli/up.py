"""`gamefleet up`: the embedded default main job — a local fleet playing itself.

Starts shard processes on 127.0.0.1 (no Kubernetes, no Redis), runs a self-play workload
with scripted agents on every shard through the client, shows progress, and prints games/s
and steps/s. Ctrl-C stops early and still reports.

With `--redis URL` the shards form a fleet over that Redis: durable games (`--durability`),
a registry the router reads, failover and drain. The fleet's keys get a fresh name per run
(`--fleet` to choose one) and are deleted at the end unless the name was given.
"""

from __future__ import annotations

import argparse
import json
import secrets
from pathlib import Path

from ..threads import wait_passively
from . import flags

START_TIMEOUT_S = 600.0  # per process: a first run compiles the kernels, slowly on a busy 2-core machine


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "up", help="start a local fleet and run self-play on it", description=__doc__
    )
    parser.add_argument("--shards", type=int, default=2, help="shard processes to start")
    parser.add_argument("--games", type=int, default=1024, help="games per shard")
    parser.add_argument("--seconds", type=float, default=20.0, help="how long to play")
    parser.add_argument("--size", type=int, default=20, help="board height and width")
    parser.add_argument("--players", type=int, default=2, help="players per game")
    parser.add_argument("--max-ticks", type=int, default=500, help="truncate episodes after this many ticks")
    parser.add_argument("--agents", default="expander,random", help="scripted agent per seat, cycled")
    parser.add_argument("--seed", type=int, default=0, help="seeds the maps and the agents")
    parser.add_argument("--json", type=Path, help="also write the report here")
    fleet = parser.add_argument_group("a fleet over Redis")
    fleet.add_argument("--redis", help="Redis URL: durable games, a registry, failover and drain")
    fleet.add_argument(
        "--durability", choices=("off", "snapshot", "log"),
        help="with --redis, default snapshot (README: what each mode keeps after a kill -9)",
    )  # fmt: skip
    fleet.add_argument("--fleet", help="the fleet's name in Redis (default: a fresh one, deleted at exit)")
    path = parser.add_mutually_exclusive_group()
    path.add_argument("--via-router", dest="via_router", action="store_true", default=True,
                      help="start a router and play through it (default)")  # fmt: skip
    path.add_argument("--direct", dest="via_router", action="store_false",
                      help="play on each shard directly")  # fmt: skip
    flags.add_security_arguments(parser, health_port=False)
    parser.set_defaults(run=run)
    return parser


def run(args: argparse.Namespace) -> int:
    wait_passively()  # the agents' kernels and the shards share the machine (threads.py)
    from rich.console import Console

    from ..engine import GameConfig
    from ..local_fleet import FleetStartError, LocalFleet

    console = Console()
    config = GameConfig(args.size, args.size, args.players, max_ticks=args.max_ticks)
    agents = [a.strip() for a in args.agents.split(",") if a.strip()]
    if args.redis is None and (args.fleet or args.durability):
        raise SystemExit("gamefleet up: --fleet and --durability need --redis URL")
    args.durability = args.durability or "snapshot"
    name = args.fleet or f"up-{secrets.token_hex(4)}"
    options = {"redis_url": args.redis, "fleet": name, "durability": args.durability} if args.redis else {}
    args.credentials = flags.credentials(args, "up")  # the shards and the router get the same flags
    security = flags.security_argv(args)
    starting = (
        f"starting {args.shards} shard(s) on 127.0.0.1 (a first run compiles the engine: a minute or two) ..."
    )
    try:
        with (
            console.status(starting),
            LocalFleet(
                args.shards,
                router=args.via_router,
                timeout=START_TIMEOUT_S,
                extra_args=security,
                router_args=security,
                **options,
            ) as fleet,  # fmt: skip
        ):
            return _play(args, console, fleet, config, agents)
    except FleetStartError as error:
        console.print(f"gamefleet up: the fleet did not start: {error}")
        return 1
    finally:
        if args.redis and not args.fleet:
            _purge(args.redis, name, console)


def _purge(url: str, fleet: str, console: object) -> None:
    from ..fleet.store import FleetStore, StoreUnavailableError

    try:
        FleetStore(url, fleet, ttl_s=1).purge()
    except StoreUnavailableError as error:
        console.print(f"fleet {fleet}'s keys were not deleted (they expire): {error}")


def _play(args: argparse.Namespace, console: object, fleet: object, config: object, agents: list[str]) -> int:
    """Self-play on the started fleet until --seconds; prints the report."""
    from ..rl.selfplay import run_selfplay
    from .progress import progress, wins_by_seat

    console.print(f"fleet up: {', '.join(fleet.addresses)}")
    if args.redis:
        console.print(f"Redis {args.redis}: fleet {fleet.fleet}, durability {args.durability}")
    # Through the router: one player per shard, each on its own placement key (the ring places them).
    addresses = [fleet.router_address] * args.shards if args.via_router else list(fleet.addresses)
    if args.via_router:
        console.print(f"router: {fleet.router_address}")
    with progress(console, "self-play", args.seconds) as say:

        def show(elapsed: float, steps: int, episodes: int) -> None:
            rate = f"{steps / elapsed:,.0f} steps/s  {episodes / elapsed:,.1f} games/s" if elapsed else ""
            say(elapsed, rate)

        try:
            report = run_selfplay(
                addresses, args.games, config, args.seconds, agents=agents, seed=args.seed,
                on_progress=show, credentials=args.credentials,
            )  # fmt: skip
        except KeyboardInterrupt:
            console.print("interrupted")
            return 130
    actions_per_s = report.steps_per_s * config.players
    console.print(f"games created and agents ready in {report.setup_seconds:.1f} s; then played:")
    console.print(
        f"{report.shards} shard(s), {report.games:,} games, {report.seconds:.1f} s: "
        f"[bold]{report.steps_per_s:,.0f} steps/s[/bold] ({actions_per_s:,.0f} actions/s), "
        f"[bold]{report.games_per_s:,.1f} games/s[/bold] ({report.episodes:,} finished; "
        f"{wins_by_seat(report.wins, agents)}; {report.truncations:,} truncated)",
        soft_wrap=True,  # one line in a log, however wide
    )
    if args.json:
        args.json.write_text(json.dumps(report.to_dict(), indent=2))
    return 0
