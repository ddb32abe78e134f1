"""`gamefleet loadtest`: concurrent agents step games on a fleet; throughput, latency, errors.

Targets a running fleet (`--address`, loopback unless `--allow-remote`) or starts a local
one (`--shards`, behind a router when more than one). Progress is live on a terminal and a
line every 5 s otherwise (a pod's log). The report goes to `--json` (`-`: stdout), and
`--markdown` writes it as this load shape's section of a results file (benchmarks/RESULTS.md,
other sections kept; from a source checkout). The exit code is 1 when more than `--max-errors`
calls were refused.
"""

from __future__ import annotations

import argparse
import contextlib
import json
from pathlib import Path


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    parser = subparsers.add_parser("loadtest", help="load-test a fleet", description=__doc__)
    parser.add_argument("--address", help="fleet (router) or shard host:port; default: start a local fleet")
    parser.add_argument("--allow-remote", action="store_true", help="allow a target that is not loopback")
    parser.add_argument("--shards", type=int, default=1, help="local fleet: shard processes")
    parser.add_argument("--agents", type=int, default=4, help="concurrent client connections")
    parser.add_argument("--games-per-agent", type=int, default=16, help="games each agent steps per call")
    parser.add_argument("--target-actions-per-s", type=float, default=0.0, help="pace to this (0: flat out)")
    parser.add_argument("--duration", type=float, default=10.0, help="seconds of load")
    parser.add_argument("--think-time-ms", type=float, default=0.0, help="each agent's pause after a reply")
    parser.add_argument("--max-requests", type=int, default=100_000, help="per agent, at most")
    parser.add_argument("--size", type=int, default=20, help="board height and width")
    parser.add_argument("--players", type=int, default=2, help="players per game")
    parser.add_argument("--max-ticks", type=int, default=500, help="truncate episodes after this many ticks")
    parser.add_argument("--timeout", type=float, default=10.0, help="deadline of one call (s)")
    parser.add_argument("--full-observations", action="store_true", help="full planes instead of deltas")
    parser.add_argument("--seed", type=int, default=0, help="seeds the maps")
    parser.add_argument("--json", help="write the report here ('-': stdout)")
    parser.add_argument("--markdown", type=Path, help="write the run's section of this file (RESULTS.md)")
    parser.add_argument("--max-errors", type=int, default=0, help="refused calls tolerated before exit 1")
    parser.set_defaults(run=run)
    return parser


def run(args: argparse.Namespace) -> int:
    import asyncio

    from rich.console import Console

    from ..client import GameFleetError
    from ..loadtest import LoadSettings, markdown, ms, run_load
    from ..local_fleet import LocalFleet
    from .progress import progress

    console = Console(stderr=args.json == "-")
    try:
        settings = LoadSettings(
            agents=args.agents, games_per_agent=args.games_per_agent,
            target_actions_per_s=args.target_actions_per_s, duration_s=args.duration,
            think_time_ms=args.think_time_ms, max_requests=args.max_requests, size=args.size,
            players=args.players, max_ticks=args.max_ticks, seed=args.seed, timeout_s=args.timeout,
            delta=not args.full_observations,
        )  # fmt: skip
    except ValueError as error:
        raise SystemExit(f"gamefleet loadtest: {error}") from None
    with contextlib.ExitStack() as stack:
        address = args.address
        target = f"the fleet at {address}"
        if address is None:
            router = ", behind a router" if args.shards > 1 else ""
            target = f"a local fleet of {args.shards} shard process(es) on loopback{router}"
            with console.status(f"starting a local fleet of {args.shards} shard(s) ..."):
                fleet = stack.enter_context(LocalFleet(args.shards, router=args.shards > 1))
            address = fleet.router_address or fleet.addresses[0]
        say = stack.enter_context(progress(console, "load", settings.duration_s))

        def show(tally: dict) -> None:
            say(
                tally["elapsed_s"],
                f"{tally['requests']:,} requests  {tally['actions_per_s']:,.0f} actions/s  "
                f"p99 {ms(tally['latency_ms']['p99'])} ms  errors {tally['errors']['total']}",
            )

        try:
            report = asyncio.run(
                run_load(address, settings, allow_remote=args.allow_remote, on_progress=show)
            )
        except (ValueError, GameFleetError) as error:  # a refused target, or games it would not create
            raise SystemExit(f"gamefleet loadtest: {error}") from None
    latency = report["latency_ms"]
    console.print(
        f"{address}: {report['requests']:,} requests in {report['duration_s']:.1f} s, "
        f"[bold]{report['actions_per_s']:,.0f} actions/s[/bold] ({report['steps_per_s']:,.0f} game steps/s), "
        f"latency p50/p95/p99 {ms(latency['p50'])}/{ms(latency['p95'])}/{ms(latency['p99'])} ms, "
        f"errors {report['errors']['total']} {report['errors']['by_code'] or ''}",
        soft_wrap=True,  # one line in a log, however wide
    )
    if args.json == "-":
        print(json.dumps(report, indent=2))
    elif args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(report, indent=2) + "\n")
    if args.markdown:
        from ..bench.results_md import write_section

        write_section(args.markdown, markdown(report, args.command_line, target))
    return 1 if report["errors"]["total"] > args.max_errors else 0
