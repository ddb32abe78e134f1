"""What metrics and tracing cost the hot path: steps/s and one-game latency, same run.

Four shard processes (LocalFleet) serve the same calls, each in one telemetry mode:
  off         no --metrics-port, no OTEL_* endpoint: the hot path records nothing
  metrics     --metrics-port auto: every batch recorded, /metrics served
  tracing 1%  metrics + OTLP export to a local receiver with the default sampler
              (parent-based, 1% of roots; this client samples the same way)
  tracing 100% metrics + OTLP export, every call traced (client and shard always_on)
The receiver is gameserver/bench/otlp_sink.py on 127.0.0.1, standing in for a collector. Rounds
interleave the modes (a disturbed moment hurts all of them alike); steps/s is the median over
rounds, each mode also a ratio to `off`. Timed: the step call alone, with passes for actions
(same work every call). Beside wall time, the CPU time each stretch cost the shard process (all
its threads, the span exporter's too) and this process's calling thread: on a shared machine
the CPU figures are the steadier measure of what telemetry adds. The target: tracing every
step must never halve throughput (always-on >= 50% of off).
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.trace.sampling import ALWAYS_ON
from rich.console import Console
from rich.progress import Progress
from rich.table import Table

from ..client import FleetClient
from ..engine import GameConfig
from ..local_fleet import LocalFleet
from ..telemetry import tracing
from .engine import run_header
from .otlp_sink import OtlpSink
from .results_md import markdown_table, publish, save_figure

BOARD = GameConfig(max_ticks=500)
MODES = ("off", "metrics", "tracing 1%", "tracing 100%")
ALWAYS_ON_TARGET = 0.5  # the throughput floor for tracing every step


@dataclass(frozen=True)
class Settings:
    batch: int = 1024
    seconds: float = 1.0  # timed step-call seconds per mode and round
    rounds: int = 5
    latency_calls: int = 400  # one-game round trips per mode and round


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


@dataclass
class _Spent:
    """What one timed stretch cost: wall seconds, the shard's CPU seconds (all its threads,
    exporter included), this process's calling-thread CPU seconds, and game-steps done."""

    wall: float = 0.0
    shard_cpu: float = 0.0
    client_cpu: float = 0.0
    steps: int = 0


def _process_cpu(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as stat:
        user, system = map(int, stat.read().rsplit(")", 1)[1].split()[11:13])
    return (user + system) / os.sysconf("SC_CLK_TCK")


@contextlib.contextmanager
def _costs(shard: int) -> Iterator[_Spent]:
    """A _Spent whose CPU fields are filled in when the block ends (wall and steps by the block)."""
    spent = _Spent()
    cpu, thread = _process_cpu(shard), time.thread_time()
    yield spent
    spent.shard_cpu = _process_cpu(shard) - cpu
    spent.client_cpu = time.thread_time() - thread


def _batch_steps(client: FleetClient, ids: np.ndarray, seconds: float, shard: int) -> _Spent:
    actions = np.full((ids.size, BOARD.players), -1, np.int32)
    with _costs(shard) as spent:
        while spent.wall < seconds:
            start = time.perf_counter()
            client.step(ids, actions)
            spent.wall += time.perf_counter() - start
            spent.steps += ids.size
    return spent


def _one_game_calls(
    client: FleetClient, game: np.ndarray, calls: int, shard: int
) -> tuple[_Spent, np.ndarray]:
    actions = np.full((1, BOARD.players), -1, np.int32)
    times = np.empty(calls)
    with _costs(shard) as spent:
        for i in range(calls):
            start = time.perf_counter()
            client.step(game, actions)
            times[i] = time.perf_counter() - start
    spent.wall, spent.steps = float(times.sum()), calls
    return spent, times


def _add(total: _Spent, part: _Spent) -> None:
    total.wall += part.wall
    total.shard_cpu += part.shard_cpu
    total.client_cpu += part.client_cpu
    total.steps += part.steps


def run(settings: Settings, command: str, console: Console) -> dict[str, Any]:
    load_before = os.getloadavg()[0]
    rates: dict[str, list[float]] = {mode: [] for mode in MODES}
    batch_cost = {mode: _Spent() for mode in MODES}
    one_game_cost = {mode: _Spent() for mode in MODES}
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
            _batch_steps(client, batch, 0.05, fleet.pids[0])  # warm-up
            clients[mode] = (client, batch, game, fleet.pids[0])
            progress.advance(task)
        progress.update(task, description="measuring, modes interleaved")
        for _ in range(settings.rounds):
            for mode, (client, batch, game, shard) in clients.items():
                _client_tracing(mode, sink.endpoint)
                spent = _batch_steps(client, batch, settings.seconds, shard)
                rates[mode].append(spent.steps / spent.wall)
                _add(batch_cost[mode], spent)
                spent, times = _one_game_calls(client, game, settings.latency_calls, shard)
                _add(one_game_cost[mode], spent)
                latencies[mode].append(times)
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
                "shard_cpu_us_per_game_step": batch_cost[mode].shard_cpu / batch_cost[mode].steps * 1e6,
                "client_cpu_us_per_game_step": batch_cost[mode].client_cpu / batch_cost[mode].steps * 1e6,
                "shard_cpu_us_per_one_game_call": one_game_cost[mode].shard_cpu
                / one_game_cost[mode].steps
                * 1e6,
                "client_cpu_us_per_one_game_call": one_game_cost[mode].client_cpu
                / one_game_cost[mode].steps
                * 1e6,
            }
        )
    base = rows[0]
    for row in rows:
        row["throughput_vs_off"] = row["steps_per_s"] / base["steps_per_s"]
        row["p50_vs_off"] = row["one_game_p50_ms"] / base["one_game_p50_ms"]
        for name in ("shard_cpu_us_per_game_step", "shard_cpu_us_per_one_game_call"):
            row[name.replace("_us_", "_vs_off_")] = row[name] / base[name]
    always = rows[-1]["throughput_vs_off"]
    return {
        **run_header("telemetry", command),
        "settings": asdict(settings),
        "board": BOARD.to_dict(),
        "rows": rows,
        "spans_received": spans,
        "load_average": [round(load_before, 2), round(os.getloadavg()[0], 2)],  # 1-min, before and after
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
        f"{row['steps_per_s']:,.0f} ({row['throughput_vs_off']:.0%})",
        f"{row['shard_cpu_us_per_game_step']:.2f} ({row['shard_cpu_vs_off_per_game_step']:.2f}x)",
        f"{row['client_cpu_us_per_game_step']:.2f}",
        f"{row['one_game_p50_ms']:.3f} / {row['one_game_p99_ms']:.3f}",
        f"{row['shard_cpu_us_per_one_game_call']:.0f} ({row['shard_cpu_vs_off_per_one_game_call']:.2f}x)",
        f"{row['client_cpu_us_per_one_game_call']:.0f}",
    ]


HEADERS = (
    "mode",
    "batch: steps/s (vs off)",
    "batch: shard CPU µs/step (vs off)",
    "batch: client CPU µs/step",
    "one game: p50 / p99 ms",
    "one game: shard CPU µs/call (vs off)",
    "one game: client CPU µs/call",
)


def table(result: dict[str, Any]) -> Table:
    out = Table(title=f"Telemetry cost, batch {result['settings']['batch']} (same run)")
    for header in HEADERS:
        out.add_column(header, justify="left" if header == "mode" else "right")
    for row in result["rows"]:
        out.add_row(*_cells(row))
    return out


def markdown(result: dict[str, Any], plot_name: str | None = None) -> str:
    target, settings, machine = result["target"], result["settings"], result["machine"]
    off = result["rows"][0]["steps_per_s_rounds"]
    return "\n".join(
        [
            "## Telemetry: the cost of metrics and tracing on the hot path",
            "",
            f"- Command: `{result['command']}`",
            f"- Date: {result['date']}; machine: {machine['cpu']}, {machine['cpus']} CPUs",
            f"- Method: one shard process per mode, the same calls; batch {settings['batch']} steps/s "
            f"(median of {settings['rounds']} interleaved rounds of {settings['seconds']:g} s) and "
            f"{settings['latency_calls'] * settings['rounds']} one-game round trips per mode, with the CPU "
            "time they cost the shard process (all threads, span export included) and the client's "
            "calling thread; spans exported "
            f"over OTLP/gRPC to a local receiver ({result['spans_received']:,} spans received). Load "
            f"average (1 min) {result['load_average'][0]:g} before, {result['load_average'][1]:g} after, on "
            f"{machine['cpus']} CPUs: other work shared the machine, alike for every mode (interleaved); "
            f"`off` ranged {min(off):,.0f} to {max(off):,.0f} steps/s over the rounds, so read small wall "
            "differences as noise and the CPU columns as the cost.",
            "",
            *markdown_table(HEADERS, (_cells(row) for row in result["rows"])),
            "",
            f"Target: {target['target']} {target['goal']}: {target['measured']}, "
            f"{ {True: 'met', False: 'NOT met'}.get(target['met'], 'not judged') }.",
            "",
            f"![telemetry cost]({plot_name})" if plot_name else "",
            "",
        ]
    )


def plot(result: dict[str, Any], path: Path) -> None:
    from matplotlib.figure import Figure

    rows = result["rows"]
    figure = Figure(figsize=(10, 4), layout="constrained")
    x, width = np.arange(len(rows)), 0.4
    panels = (
        (f"batch {result['settings']['batch']}", "throughput_vs_off", "steps/s",
         "shard_cpu_vs_off_per_game_step", "shard CPU per step"),
        ("one game per call", "p50_vs_off", "p50 latency",
         "shard_cpu_vs_off_per_one_game_call", "shard CPU per call"),
    )  # fmt: skip
    for axes, (title, wall, wall_label, cpu, cpu_label) in zip(figure.subplots(1, 2), panels, strict=True):
        axes.bar(x - width / 2, [row[wall] for row in rows], width, label=wall_label)
        axes.bar(x + width / 2, [row[cpu] for row in rows], width, label=cpu_label)
        axes.axhline(1.0, color="grey", linewidth=0.8)
        axes.set_xticks(x, [row["mode"] for row in rows])
        axes.set(ylabel="vs off", title=title)
        axes.legend(fontsize="small")
    m = result["machine"]
    figure.suptitle(f"Telemetry cost vs off, same run: {m['cpu']}, {m['cpus']} CPUs")
    save_figure(figure, path)


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
    return publish(result, args, console, table=table, plot=plot, markdown=markdown)
