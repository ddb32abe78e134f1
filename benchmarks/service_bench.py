"""The batch game service against the in-process engine, both measured in the same run.

Targets (issue 3): through one shard process on loopback at batch 4096, served steps/s at
least 40% of in-process steps/s with full observations and 70% with delta observations; one
game, one SubmitBatchActions round trip: p99 under 1 ms.

Only the step call is timed (for deltas: the call plus applying the delta into the client's
buffer, which a trainer needs before it can act). Moves come from the random legal-move
agent on the current view, chosen outside the clock; games autoreset so they never stall.
In-process and served runs play the same seeds with the same agent, so they do the same work.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console
from rich.progress import Progress
from rich.table import Table

from gameserver.client import FleetClient, ObservationBuffer
from gameserver.engine import GameConfig
from gameserver.local_fleet import LocalFleet
from gameserver.pool import GamePool
from gameserver.rl.agents import random_actions

from .engine_bench import machine, versions

BOARD = GameConfig(max_ticks=500)
FULL_TARGET = 0.40
DELTA_TARGET = 0.70
P99_TARGET_MS = 1.0


@dataclass
class Settings:
    batch: int = 4096
    seconds: float = 4.0  # timed step-call seconds per throughput figure
    latency_calls: int = 2000


def _timed_steps(
    step: Callable[[np.ndarray], Any], view: Callable[[], Any], seconds: float, seed: int
) -> float:
    """Game-steps per second of `step(actions)`, counting only the time inside step."""
    spent, steps, tick = 0.0, 0, 0
    while spent < seconds:
        obs = view()
        actions = random_actions(obs.codes, obs.armies, obs.tick, BOARD.height, BOARD.width, seed + tick)
        start = time.perf_counter()
        step(actions)
        spent += time.perf_counter() - start
        steps += actions.shape[0]
        tick += 1
    return steps / spent


def in_process(settings: Settings) -> float:
    pool = GamePool(BOARD, settings.batch, autoreset=True, seed=1)
    ids = pool.create(settings.batch)
    state = {"obs": pool.observe(ids)}

    def step(actions: np.ndarray) -> None:
        state["obs"] = pool.step(ids, actions).observation

    step(np.full((settings.batch, BOARD.players), -1, np.int32))  # warm-up
    return _timed_steps(step, lambda: state["obs"], settings.seconds, seed=3)


def served(client: FleetClient, settings: Settings, *, delta: bool) -> float:
    created = client.create(settings.batch, BOARD, autoreset=True, seeds=np.arange(settings.batch) + 10**6)
    buffer = ObservationBuffer(created.config, settings.batch)
    state = {"obs": buffer.apply(created.observations)}

    def step(actions: np.ndarray) -> None:
        result = client.step(created.ids, actions, delta=delta)
        state["obs"] = buffer.apply(result.observations) if delta else result.observations

    step(np.full((settings.batch, BOARD.players), -1, np.int32))  # warm-up (and the first, full, delta)
    rate = _timed_steps(step, lambda: state["obs"], settings.seconds, seed=3)
    client.close(created.ids)
    return rate


def round_trips(client: FleetClient, calls: int, *, stream: bool) -> dict[str, float]:
    """Latency of one-game steps, unary or over one StreamSteps call: p50/p99/max in ms."""
    created = client.create(1, BOARD, autoreset=True)
    actions = np.full((1, BOARD.players), -1, np.int32)
    times = np.empty(calls)
    with client.stream() as steps:
        call = (
            (lambda: steps.step(created.ids, actions))
            if stream
            else (lambda: client.step(created.ids, actions))
        )
        for _ in range(50):  # warm-up
            call()
        for i in range(calls):
            start = time.perf_counter()
            call()
            times[i] = time.perf_counter() - start
    client.close(created.ids)
    ms = times * 1e3
    return {
        "p50_ms": float(np.percentile(ms, 50)),
        "p99_ms": float(np.percentile(ms, 99)),
        "max_ms": float(ms.max()),
    }


def run(settings: Settings, command: str, console: Console) -> dict[str, Any]:
    result: dict[str, Any] = {
        "benchmark": "service",
        "command": command,
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": machine(),
        "versions": versions(peer=False),
        "batch": settings.batch,
        "board": BOARD.to_dict(),
    }
    with Progress(console=console, transient=True) as progress:
        task = progress.add_task("service benchmark", total=5)
        result["in_process_steps_per_s"] = in_process(settings)
        progress.advance(task)
        with LocalFleet(1) as fleet, FleetClient(fleet.addresses[0]) as client:
            client.wait_ready()
            result["served_full_steps_per_s"] = served(client, settings, delta=False)
            progress.advance(task)
            result["served_delta_steps_per_s"] = served(client, settings, delta=True)
            progress.advance(task)
            result["unary_one_game"] = round_trips(client, settings.latency_calls, stream=False)
            progress.advance(task)
            result["stream_one_game"] = round_trips(client, settings.latency_calls, stream=True)
            progress.advance(task)
    base = result["in_process_steps_per_s"]
    result["full_share"] = result["served_full_steps_per_s"] / base
    result["delta_share"] = result["served_delta_steps_per_s"] / base
    result["targets"] = [
        {"target": "served/in-process, full observations", "goal": f">= {FULL_TARGET:.0%}",
         "measured": f"{result['full_share']:.0%}", "met": result["full_share"] >= FULL_TARGET},
        {"target": "served/in-process, delta observations", "goal": f">= {DELTA_TARGET:.0%}",
         "measured": f"{result['delta_share']:.0%}", "met": result["delta_share"] >= DELTA_TARGET},
        {"target": "one game, unary round trip p99", "goal": f"< {P99_TARGET_MS} ms",
         "measured": f"{result['unary_one_game']['p99_ms']:.2f} ms",
         "met": result["unary_one_game"]["p99_ms"] < P99_TARGET_MS},
    ]  # fmt: skip
    return result


def _rows(result: dict[str, Any]) -> list[tuple[str, str]]:
    unary, stream = result["unary_one_game"], result["stream_one_game"]
    base, full, delta = (result[f"{k}_steps_per_s"] for k in ("in_process", "served_full", "served_delta"))
    return [
        (f"in-process GamePool.step, batch {result['batch']}", f"{base:,.0f} steps/s"),
        ("served, full observations", f"{full:,.0f} steps/s ({result['full_share']:.0%})"),
        ("served, delta observations", f"{delta:,.0f} steps/s ({result['delta_share']:.0%})"),
        ("one game, unary p50 / p99", f"{unary['p50_ms']:.2f} / {unary['p99_ms']:.2f} ms"),
        ("one game, StreamSteps p50 / p99", f"{stream['p50_ms']:.2f} / {stream['p99_ms']:.2f} ms"),
    ]  # fmt: skip


def table(result: dict[str, Any]) -> Table:
    out = Table(title="GameFleet service vs in-process engine (same run)")
    out.add_column("measure")
    out.add_column("result", justify="right")
    for name, value in _rows(result):
        out.add_row(name, value)
    for target in result["targets"]:
        out.add_row(
            f"target: {target['target']} {target['goal']}",
            f"{target['measured']} {'met' if target['met'] else 'NOT met'}",
        )
    return out


def _target_row(target: dict[str, Any]) -> str:
    verdict = "met" if target["met"] else "NOT met"
    return f"| {target['target']} | {target['goal']} | {target['measured']} | {verdict} |"


def markdown(result: dict[str, Any]) -> str:
    lines = [
        "## Service: one shard process on loopback vs the in-process engine",
        "",
        f"- Command: `{result['command']}`",
        f"- Date: {result['date']}; machine: {result['machine']['cpu']}, {result['machine']['cpus']} CPUs",
        "- Method: only the step call is timed (with deltas: plus applying them into the client's buffer);"
        " random legal moves chosen outside the clock; games autoreset.",
        "",
        "| measure | result |",
        "|---|---:|",
        *(f"| {name} | {value} |" for name, value in _rows(result)),
        "",
        "| target | goal | measured | |",
        "|---|---:|---:|---|",
        *(_target_row(t) for t in result["targets"]),
        "",
    ]  # fmt: skip
    return "\n".join(lines)


def plot(result: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = ["in-process", "served (full)", "served (delta)"]
    rates = [
        result["in_process_steps_per_s"],
        result["served_full_steps_per_s"],
        result["served_delta_steps_per_s"],
    ]
    figure, axis = plt.subplots(figsize=(6, 4))
    axis.bar(names, rates, color=["#4c72b0", "#dd8452", "#55a868"])
    axis.set_ylabel("game-steps per second")
    axis.set_title(f"batch {result['batch']}, 20x20, 2 players ({result['machine']['cpus']} CPUs)")
    for x, rate in enumerate(rates):
        axis.text(x, rate, f"{rate / 1e6:.2f}M", ha="center", va="bottom")
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=120)


def main(
    settings: Settings, command: str, out: Path, plot_path: Path | None, markdown_path: Path | None
) -> int:
    console = Console()
    result = run(settings, command, console)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    console.print(table(result))
    if plot_path is not None:
        plot(result, plot_path)
    if markdown_path is not None:
        markdown_path.write_text(markdown(result))
    return 0
