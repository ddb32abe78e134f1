"""`gamefleet selfplay`: scripted agents play a batch of games against each other.

In process (the default) or on a running fleet (`--address`, a router or one shard).
Optionally every seat's transitions go to a ReplayService (`--replay-address`, see
`gamefleet replay serve`) and finished episodes are saved as generals.io replays
(`--replays DIR`). On a fleet, the shard can play seats itself (`--shard-agents ,expander`:
seat 1 is the shard's expander; this process plays the others) and push the transitions to
its own ReplayService (`--shard-pushes`, see `gamefleet serve --replay-address`). Stops after
`--seconds` or `--max-steps`, whichever comes first.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def _seats(text: str) -> list[int]:
    try:
        return [int(part) for part in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated seat numbers, got {text!r}") from None


def _names(text: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in text.split(","))


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    parser = subparsers.add_parser("selfplay", help="self-play with scripted agents", description=__doc__)
    parser.add_argument("--address", help="fleet or shard host:port (default: play in this process)")
    parser.add_argument("--games", type=int, default=256, help="games played at once")
    parser.add_argument("--seconds", type=float, default=10.0, help="how long to play")
    parser.add_argument("--max-steps", type=int, help="stop after this many batch steps")
    parser.add_argument("--size", type=int, default=20, help="board height and width")
    parser.add_argument("--players", type=int, default=2, help="players per game")
    parser.add_argument("--max-ticks", type=int, default=500, help="truncate episodes after this many ticks")
    parser.add_argument("--agents", default="expander,random", help="scripted agent per seat, cycled")
    parser.add_argument("--seed", type=int, default=0, help="seeds the maps and the agents")
    parser.add_argument("--replay-address", help="push transitions to this ReplayService")
    parser.add_argument("--seats", type=_seats, help="seats whose transitions are pushed (default: all)")
    parser.add_argument(
        "--shard-agents",
        type=_names,
        default=(),
        help="per seat, the agent the shard plays it with ('': ours)",
    )
    parser.add_argument("--shard-pushes", action="store_true", help="the shard pushes the transitions")
    parser.add_argument("--replays", type=Path, help="save finished episodes here as replay JSON")
    parser.add_argument("--max-replays", type=int, default=100, help="replays saved at most")
    parser.add_argument("--json", type=Path, help="also write the report here")
    parser.set_defaults(run=run)
    return parser


def run(args: argparse.Namespace) -> int:
    from rich.console import Console

    from ..client import GameFleetError
    from ..engine import GameConfig
    from ..replay.client import TransitionPusher
    from ..rl.episode_recorder import EpisodeRecorder
    from ..rl.rollouts import FleetGames, PoolGames, map_seeds, run_rollouts
    from .progress import progress, wins_by_seat

    console = Console()
    try:
        config = GameConfig(args.size, args.size, args.players, max_ticks=args.max_ticks)
    except ValueError as error:
        raise SystemExit(f"gamefleet selfplay: {error}") from None
    agents = [a.strip() for a in args.agents.split(",") if a.strip()]
    seeds = map_seeds(args.seed, args.games)
    if (args.shard_agents or args.shard_pushes) and not args.address:
        raise SystemExit("gamefleet selfplay: --shard-agents and --shard-pushes need a fleet (--address)")
    if args.shard_agents and args.replays:  # the recorder sees the moves sent, not the shard's
        raise SystemExit(
            "gamefleet selfplay: --replays records the moves this process sends: not with --shard-agents"
        )
    try:
        games = (
            FleetGames(args.address, config, args.games, seeds, shard_agents=args.shard_agents,
                       shard_pushes=args.shard_pushes)
            if args.address
            else PoolGames(config, args.games, seeds)
        )  # fmt: skip
    except GameFleetError as error:  # refused by the fleet: unknown agents, no replay service, ...
        raise SystemExit(f"gamefleet selfplay: {error}") from None
    pusher = TransitionPusher(args.replay_address, config, seats=args.seats) if args.replay_address else None
    recorder = None
    if args.replays:
        args.replays.mkdir(parents=True, exist_ok=True)
        recorder = EpisodeRecorder(config, games.ids, seeds, limit=args.max_replays)
    failure: GameFleetError | None = None
    try:
        with progress(console, "self-play", args.seconds) as say:

            def show(elapsed: float, steps: int, episodes: int) -> None:
                say(elapsed, f"{steps / elapsed:,.0f} steps/s  {episodes / elapsed:,.1f} games/s")

            report = run_rollouts(
                games, agents, args.seconds, seed=args.seed, max_steps=args.max_steps, pusher=pusher,
                recorder=recorder, replay_dir=args.replays, on_progress=show,
            )  # fmt: skip
    except KeyboardInterrupt:
        console.print("interrupted")
        return 130
    except GameFleetError as error:  # the replay service's refusal, raised by the next push
        failure = error
    finally:
        games.close()
        if pusher:
            try:
                pusher.close()
            except GameFleetError as error:
                failure = failure or error
    if failure is not None:
        raise SystemExit(refused(failure, args.replay_address))
    shard_pushed = report["steps"] * config.players if args.shard_pushes else 0  # what the shard was handed
    report |= {
        "where": args.address or "in process",
        "transitions": pusher.pushed if pusher else 0,
        "shard_transitions": shard_pushed,
    }
    console.print(
        f"{report['games']:,} games {report['where']}, {report['seconds']:.1f} s: "
        f"[bold]{report['steps_per_s']:,.0f} steps/s[/bold], [bold]{report['games_per_s']:,.1f} games/s"
        f"[/bold] ({report['episodes']:,} finished; {wins_by_seat(report['wins'], agents)}; "
        f"{report['truncations']:,} truncated); {report['transitions']:,} transitions pushed "
        f"(and {report['shard_transitions']:,} by the shard), "
        f"{report['replays']:,} replays saved",
        soft_wrap=True,  # one line in a log, however wide
    )
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=2) + "\n")
    return 0


def refused(error: Exception, replay_address: str | None) -> str:
    """What to tell the user when the fleet or the replay service refused a call mid-play."""
    if "not permitted" not in str(error):
        return f"gamefleet selfplay: {error}"
    return (
        f"gamefleet selfplay: the replay service at {replay_address} stopped taking transitions. Its "
        "rate limiter (replay serve --samples-per-insert) keeps inserts within --error-buffer of what "
        "learners sample, and nothing sampled: run a learner that samples from it "
        f"(ReplayClient({replay_address!r}).sample(256)), or serve without --samples-per-insert to "
        f"fill it without one. The service said: {error}"
    )
