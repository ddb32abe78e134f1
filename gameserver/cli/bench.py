"""`gamefleet bench TARGET`: the benchmarks of gameserver.bench (JSON, markdown tables, PNG plots).

Results go to benchmarks/out/ (`--out`, `--plot`, `--markdown` elsewhere on request); the committed
figures (benchmarks/RESULTS.md and its plots) change only with `--update-results`, which a
`--quick` smoke run refuses (and a --quick run judges no target). The bench modules load inside
`run` (numba, grpc, the peer, matplotlib), so `--help` stays instant.
"""

from __future__ import annotations

import argparse
import importlib
import textwrap
from pathlib import Path

RESULTS = Path("benchmarks/RESULTS.md")  # the committed figures (from a source checkout)
FULL_BATCHES = (1, 64, 1024, 16384)
QUICK_BATCHES = (1, 64, 1024)
FULL_SECONDS = 4.0
QUICK_SECONDS = 0.2


def _batch_sizes(text: str) -> list[int]:
    try:
        sizes = [int(part) for part in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None
    if not sizes or min(sizes) < 1:
        raise argparse.ArgumentTypeError(f"batch sizes must be >= 1, got {text!r}")
    return sizes


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {text!r}")
    return value


# bench.service.SERVED_HOW, not imported from there: --help stays instant
SERVICE_MODES = ("full", "delta", "shared", "none")


def _service_modes(text: str) -> tuple[str, ...]:
    modes = tuple(part.strip() for part in text.split(","))
    unknown = [mode for mode in modes if mode not in SERVICE_MODES]
    if unknown or not modes:
        raise argparse.ArgumentTypeError(f"modes are some of {','.join(SERVICE_MODES)}, got {text!r}")
    return modes


def _positive_seconds(text: str) -> float:
    try:
        seconds = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of seconds, got {text!r}") from None
    if not seconds > 0:
        raise argparse.ArgumentTypeError(f"seconds must be > 0, got {text!r}")
    return seconds


def _results(args: argparse.Namespace, name: str) -> None:
    """--update-results: the plot and the section of the committed results, unless given apart."""
    if not args.update_results:
        return
    if args.quick:
        raise SystemExit(f"gamefleet bench {name}: a --quick run does not update the committed results")
    args.plot = args.plot or RESULTS.parent / f"{name}.png"
    args.markdown = args.markdown or RESULTS


def _add_outputs(parser: argparse.ArgumentParser, name: str) -> None:
    parser.add_argument(
        "--out", type=Path, default=Path(f"benchmarks/out/{name}.json"), help="write the JSON results here"
    )
    parser.add_argument("--plot", type=Path, help="write a PNG plot here (needs matplotlib: the dev extra)")
    parser.add_argument("--markdown", type=Path, help="write this benchmark's section of this markdown file")
    parser.add_argument(
        "--update-results",
        action="store_true",
        help=f"update the committed figures: {RESULTS} and {RESULTS.parent}/{name}.png (not with --quick)",
    )


def _run_bench_engine(args: argparse.Namespace) -> int:
    from ..bench import engine as bench

    _results(args, "engine")

    settings = bench.Settings(
        batches=tuple(args.batches or (QUICK_BATCHES if args.quick else FULL_BATCHES)),
        seconds=args.seconds or (QUICK_SECONDS if args.quick else FULL_SECONDS),
        peer=not args.no_peer,
        quick=args.quick,
    )
    return bench.main(settings, args.command_line, args.out, args.plot, args.markdown)


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    bench = subparsers.add_parser(
        "bench", help="benchmarks (results as JSON, tables and plots)", description=__doc__
    )
    targets = bench.add_subparsers(dest="target", required=True, metavar="TARGET")

    def target(name: str, help: str, description: str = "") -> argparse.ArgumentParser:
        text = f"{help[0].upper()}{help[1:]}.{' ' + description if description else ''}"
        return targets.add_parser(name, help=help, description=textwrap.fill(text, 100))

    engine = target(
        "engine",
        "engine steps/s and maps/s vs generals-bots 2.5.0 (20x20, 2 players, random moves)",
        "In process: steps/s with fused observations and state-only, and maps/s, at each batch size, "
        "against the peer's Game.step and GridFactory.generate, bytes per game, and the targets. Each "
        "figure is the median window of its least-disturbed round (README: Benchmarks).",
    )
    engine.add_argument(
        "--batches",
        type=_batch_sizes,
        help=f"comma-separated batch sizes (default {','.join(map(str, FULL_BATCHES))}; "
        f"--quick: {','.join(map(str, QUICK_BATCHES))})",
    )
    engine.add_argument(
        "--seconds",
        type=_positive_seconds,
        help=f"timed seconds per measurement (default {FULL_SECONDS:g}; --quick: {QUICK_SECONDS:g})",
    )
    engine.add_argument(
        "--quick", action="store_true", help="a ~10 s smoke run: short windows, small batches"
    )
    engine.add_argument("--no-peer", action="store_true", help="skip generals-bots (no ratios)")
    _add_outputs(engine, "engine")
    engine.set_defaults(run=_run_bench_engine)
    replay = target("replay", "replay buffer items/s at 1M items: sum tree vs numpy")
    replay.add_argument("--capacity", type=int, help="items (default 1,000,000; --quick: 50,000)")
    replay.add_argument("--size", type=int, default=20, help="board side of the stored transitions")
    matrix = target("matrix", "games/s, actions/s, latency, memory: games x agents matrix")
    matrix.add_argument("--cells", help="GAMESxAGENTS,... (default 1x2,10x2,100x4,1000x2,10000x2)")
    service = target(
        "service",
        "served steps/s vs in-process (full, delta, shared view) and one-game round trips",
        "One `gamefleet serve` process on loopback against the in-process engine, same run: "
        "game-steps/s in process, served with full observations, deltas, a shared view and none (the "
        "floor of one call), in rounds that measure every mode in turn; then one-game round trips, "
        "unary and over StreamSteps, p50 to p99.9 (README: Benchmarks).",
    )
    service.add_argument(
        "--batch", type=_positive_int, help="games per step call (default 4096; --quick: 256)"
    )
    service.add_argument("--rounds", type=_positive_int, help="rounds over every mode (default 3)")
    service.add_argument(
        "--latency-calls", type=_positive_int, help="one-game calls timed, unary and streamed (default 10000)"
    )
    service.add_argument(
        "--modes",
        type=_service_modes,
        help="comma-separated served modes to measure against in process, nothing else: a quick "
        f"before/after (of {','.join(SERVICE_MODES)}; default all, with round trips and targets)",
    )
    fleet = target(
        "fleet",
        "router vs direct steps/s, log/snapshot durability vs off, recovery time (needs redis-server)",
    )
    fleet.add_argument("--blocks", type=_positive_int, help="A B B A blocks per ratio (default 10)")
    fleet.add_argument(
        "--recovery-games", type=_positive_int, help="games recovered from Redis (default 10000)"
    )
    telemetry = target("telemetry", "steps/s and latency with metrics and tracing off/on")
    telemetry.add_argument(
        "--batch", type=_positive_int, help="games per step call (default 1024; --quick: 64)"
    )
    memory = target(
        "memory", "a served shard's memory under 255 MB requests, one and 8 at once: old limits vs new"
    )
    for name, parser, module in (
        ("memory", memory, "memory"),
        ("replay", replay, "replay"),
        ("matrix", matrix, "matrix"),
        ("service", service, "service"),
        ("fleet", fleet, "fleet"),
        ("telemetry", telemetry, "telemetry"),
    ):
        parser.add_argument("--seconds", type=_positive_seconds, help="timed seconds per figure")
        parser.add_argument("--quick", action="store_true", help="a smoke run: small sizes, short windows")
        if parser not in (service, fleet, telemetry, memory):
            parser.add_argument("--no-service", action="store_true", help="skip the figures through gRPC")
        _add_outputs(parser, name)
        parser.set_defaults(run=lambda args, name=name, module=module: _run_module(args, name, module))


def _run_module(args: argparse.Namespace, name: str, module: str) -> int:
    _results(args, name)
    return importlib.import_module(f"gameserver.bench.{module}").main(args)
