"""What metrics and tracing cost the hot path: steps/s and one-game latency, same run.

Four shard processes (LocalFleet) serve the same calls, each in one telemetry mode:
  off         no --metrics-port, no OTEL_* endpoint: the hot path records nothing
  metrics     --metrics-port auto: every batch recorded, /metrics served
  tracing 1%  metrics + OTLP export to a local receiver with the default sampler
              (parent-based, 1% of roots; this client samples the same way)
  tracing 100% metrics + OTLP export, every call traced (client and shard always_on)
The receiver is benchmarks/otlp_sink.py on 127.0.0.1, standing in for a collector. Rounds
interleave the modes (a disturbed moment hurts all of them alike); each figure is the median
over rounds, and each mode is reported as a ratio to `off`. Timed: the step call alone, with
passes for actions (same work every call). The target: tracing every step must never halve
throughput (always-on >= 50% of off).
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.trace.sampling import ALWAYS_ON
from rich.console import Console
from rich.progress import Progress
from rich.table import Table

from gameserver.client import FleetClient
from gameserver.engine import GameConfig
from gameserver.local_fleet import LocalFleet
from gameserver.telemetry import tracing

from .engine_bench import machine, versions
from .otlp_sink import OtlpSink
from .results_md import write_section

BOARD = GameConfig(max_ticks=500)
MODES = ("off", "metrics", "tracing 1%", "tracing 100%")
ALWAYS_ON_TARGET = 0.5


@dataclass(frozen=True)
class Settings:
    batch: int = 1024
    seconds: float = 1.0  # timed step-call seconds per mode and round
    rounds: int = 3
    latency_calls: int = 500  # one-game round trips per mode and round


QUICK = Settings(batch=64, seconds=0.2, rounds=1, latency_calls=50)


@contextlib.contextmanager
def _environment(values: dict[str, str]) -> Iterator[None]:
    saved = {name: os.environ.get(name) for name in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name)
            else:
                os.environ[name] = value


def _server_setup(mode: str, endpoint: str) -> tuple[list[str], dict[str, str]]:
    """The shard's arguments and environment in `mode`."""
    metrics = [] if mode == "off" else ["--metrics-port", "auto"]
    otel = {"OTEL_EXPORTER_OTLP_ENDPOINT": endpoint, "OTEL_EXPORTER_OTLP_INSECURE": "true"}
    if mode == "tracing 1%":
        return metrics, otel
    if mode == "tracing 100%":
        return metrics, otel | {"OTEL_TRACES_SAMPLER": "always_on"}
    return metrics, {"OTEL_SDK_DISABLED": "true"}


def _client_tracing(mode: str, endpoint: str) -> None:
    """This process plays the trainer: traced like the shard in that mode."""
    if not mode.startswith("tracing"):
        tracing.shutdown()
        return
    sampler = ALWAYS_ON if mode == "tracing 100%" else tracing.default_sampler()
    exporter = OTLPSpanExporter(endpoint=endpoint, insecure=True)
    tracing.use(exporter, sampler, service_name="gamefleet-bench", batch=True)


def _steps_per_second(client: FleetClient, ids: np.ndarray, seconds: float) -> float:
    actions = np.full((ids.size, BOARD.players), -1, np.int32)
    spent, calls = 0.0, 0
    while spent < seconds:
        start = time.perf_counter()
        client.step(ids, actions)
        spent += time.perf_counter() - start
        calls += 1
    return calls * ids.size / spent


def _latencies(client: FleetClient, game: np.ndarray, calls: int) -> np.ndarray:
    actions = np.full((1, BOARD.players), -1, np.int32)
    times = np.empty(calls)
    for i in range(calls):
        start = time.perf_counter()
        client.step(game, actions)
        times[i] = time.perf_counter() - start
    return times


def run(settings: Settings, command: str, console: Console) -> dict[str, Any]:
    rates: dict[str, list[float]] = {mode: [] for mode in MODES}
    latencies: dict[str, list[np.ndarray]] = {mode: [] for mode in MODES}
    with contextlib.ExitStack() as stack, Progress(console=console, transient=True) as progress:
        sink = stack.enter_context(OtlpSink())
        task = progress.add_task("starting one shard per mode", total=len(MODES) * (settings.rounds + 1))
        clients = {}
        for mode in MODES:
            arguments, environment = _server_setup(mode, sink.endpoint)
            with _environment(environment):
                fleet = stack.enter_context(LocalFleet(1, extra_args=arguments))
            client = stack.enter_context(FleetClient(fleet.addresses[0], timeout=60))
            batch = client.create(settings.batch, BOARD, autoreset=True).ids
            game = client.create(1, BOARD, autoreset=True).ids
            _steps_per_second(client, batch, 0.05)  # warm-up
            clients[mode] = (client, batch, game)
            progress.advance(task)
        progress.update(task, description="measuring, modes interleaved")
        for _ in range(settings.rounds):
            for mode, (client, batch, game) in clients.items():
                _client_tracing(mode, sink.endpoint)
                rates[mode].append(_steps_per_second(client, batch, settings.seconds))
                latencies[mode].append(_latencies(client, game, settings.latency_calls))
                tracing.shutdown()  # flushes this client's spans before the next mode runs
                progress.advance(task)
    spans = len(sink.received())  # the shards flushed theirs as they stopped, before the sink did
    rows = []
    for mode in MODES:
        ms = np.concatenate(latencies[mode]) * 1e3
        rows.append(
            {
                "mode": mode,
                "steps_per_s": float(np.median(rates[mode])),
                "steps_per_s_rounds": rates[mode],
                "one_game_p50_ms": float(np.percentile(ms, 50)),
                "one_game_p99_ms": float(np.percentile(ms, 99)),
            }
        )
    base = rows[0]
    for row in rows:
        row["throughput_vs_off"] = row["steps_per_s"] / base["steps_per_s"]
        row["p50_vs_off"] = row["one_game_p50_ms"] / base["one_game_p50_ms"]
    always = rows[-1]["throughput_vs_off"]
    return {
        "benchmark": "telemetry",
        "command": command,
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": machine(),
        "versions": versions(peer=False),
        "settings": asdict(settings),
        "board": BOARD.to_dict(),
        "rows": rows,
        "spans_received": spans,
        "target": {
            "target": "tracing every step (always-on) vs off, steps/s",
            "goal": f">= {ALWAYS_ON_TARGET:.0%}",
            "measured": f"{always:.0%}",
            "met": always >= ALWAYS_ON_TARGET,
        },
    }


def _cells(row: dict[str, Any]) -> list[str]:
    return [
        row["mode"],
        f"{row['steps_per_s']:,.0f}",
        f"{row['throughput_vs_off']:.0%}",
        f"{row['one_game_p50_ms']:.3f}",
        f"{row['one_game_p99_ms']:.3f}",
        f"{row['p50_vs_off']:.2f}x",
    ]


HEADERS = ("mode", "steps/s", "vs off", "one game p50 ms", "one game p99 ms", "p50 vs off")


def table(result: dict[str, Any]) -> Table:
    out = Table(title=f"Telemetry cost, batch {result['settings']['batch']} (same run)")
    for header in HEADERS:
        out.add_column(header, justify="left" if header == "mode" else "right")
    for row in result["rows"]:
        out.add_row(*_cells(row))
    return out


def markdown(result: dict[str, Any]) -> str:
    target, settings, machine = result["target"], result["settings"], result["machine"]
    return "\n".join(
        [
            "## Telemetry: the cost of metrics and tracing on the hot path",
            "",
            f"- Command: `{result['command']}`",
            f"- Date: {result['date']}; machine: {machine['cpu']}, {machine['cpus']} CPUs",
            f"- Method: one shard process per mode, the same calls; batch {settings['batch']} steps/s "
            f"(median of {settings['rounds']} interleaved rounds of {settings['seconds']:g} s) and "
            f"{settings['latency_calls'] * settings['rounds']} one-game round trips per mode; spans exported "
            f"over OTLP/gRPC to a local receiver ({result['spans_received']:,} spans received).",
            "",
            "| " + " | ".join(HEADERS) + " |",
            "|---|" + "---:|" * (len(HEADERS) - 1),
            *("| " + " | ".join(_cells(row)) + " |" for row in result["rows"]),
            "",
            f"Target: {target['target']} {target['goal']}: {target['measured']}, "
            f"{'met' if target['met'] else 'NOT met'}.",
            "",
            "![telemetry cost](telemetry.png)",
            "",
        ]
    )


def plot(result: dict[str, Any], path: Path) -> None:
    from matplotlib.figure import Figure

    rows = result["rows"]
    figure = Figure(figsize=(9, 4), layout="constrained")
    left, right = figure.subplots(1, 2)
    names = [row["mode"] for row in rows]
    left.bar(names, [row["throughput_vs_off"] for row in rows], color="tab:blue")
    left.axhline(ALWAYS_ON_TARGET, color="tab:red", linestyle="--", label="target floor (always-on)")
    left.set(ylabel="steps/s vs off", title=f"batch {result['settings']['batch']}")
    left.legend(fontsize="small")
    width = 0.4
    x = np.arange(len(rows))
    right.bar(x - width / 2, [row["one_game_p50_ms"] for row in rows], width, label="p50")
    right.bar(x + width / 2, [row["one_game_p99_ms"] for row in rows], width, label="p99")
    right.set_xticks(x, names)
    right.set(ylabel="ms", title="one game, round trip")
    right.legend(fontsize="small")
    m = result["machine"]
    figure.suptitle(f"Telemetry cost: {m['cpu']}, {m['cpus']} CPUs")
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=120)


def main(args: Any) -> int:
    """`gamefleet bench telemetry` (parsed arguments: see gameserver/cli.py)."""
    base = QUICK if args.quick else Settings()
    settings = Settings(
        batch=args.batch or base.batch,
        seconds=args.seconds or base.seconds,
        rounds=base.rounds,
        latency_calls=base.latency_calls,
    )
    console = Console()
    result = run(settings, args.command_line, console)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    console.print(table(result))
    console.print(f"results: {args.out}")
    if args.plot is not None:
        plot(result, args.plot)
    if args.markdown is not None:
        write_section(args.markdown, markdown(result))
    return 0
