"""Replay buffer throughput at 1M items: the numba sum tree against a pure-numpy baseline, same run.

Both samplers run on the same full ReplayBuffer (self-play transitions of a 20x20 board, 2,422 B
each, the same priorities); only the sampler differs. The baseline keeps priorities in a flat
array and samples with np.cumsum + np.searchsorted (O(n) per batch: the usual numpy version);
ours walks the sum tree (O(log n) per item) and reads the min tree for the weights' normaliser.
Figures are items per second: insert (batches of 1024 into the full buffer, overwriting the
oldest), sample (batches of 256 with importance weights), update (256 priorities by key) and a
learner step (sample 256, then update their priorities). Uniform sampling, and the ReplayService
through gRPC on loopback (a `gamefleet replay serve` process), are measured on the same terms.
A figure is the median call of a window of `seconds` after one warm-up call.
"""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console
from rich.table import Table

from ..engine import GameConfig
from ..replay.buffer import PrioritizedSampler, ReplayBuffer, UniformSampler
from ..replay.client import ReplayClient
from ..replay.transitions import transition_spec
from .engine import run_header
from .results_md import markdown_table, publish, save_figure

INSERT_BATCH = 1024  # a tick of 512 two-player games
SAMPLE_BATCH = 256
FILL_BATCH = 8192
FIGURES = ("inserts_per_s", "samples_per_s", "updates_per_s", "learner_items_per_s")
TITLES = {
    "inserts_per_s": "insert",
    "samples_per_s": "sample",
    "updates_per_s": "update priorities",
    "learner_items_per_s": "learner step (sample + update)",
}
CAPACITY, QUICK_CAPACITY = 1_000_000, 50_000
SECONDS, QUICK_SECONDS = 2.0, 0.1
BASELINE = "numpy cumsum + searchsorted"
OURS = "sum tree (numba)"


class CumsumSampler:
    """The baseline: proportional prioritization over a flat priority array, O(n) per sample batch."""

    name = "prioritized (numpy)"

    def __init__(self, capacity: int, alpha: float = 0.6, eps: float = 1e-6) -> None:
        self.priorities = np.zeros(capacity)
        self.alpha, self.eps, self.max_priority = alpha, eps, 1.0

    def set(self, slots: np.ndarray, priorities: np.ndarray | None) -> None:
        if priorities is None:
            values = np.full(slots.size, self.max_priority)
        else:
            values = np.asarray(priorities, np.float64)
            self.max_priority = max(self.max_priority, float(values.max(initial=0.0)))
        self.priorities[slots] = (values + self.eps) ** self.alpha

    def sample(self, n: int, size: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        cumulative = np.cumsum(self.priorities[:size])
        total = cumulative[-1]
        targets = (np.arange(n) + rng.random(n)) * total / n  # stratified, as the sum tree draws
        slots = np.minimum(np.searchsorted(cumulative, targets, side="right"), size - 1)
        return slots, self.priorities[slots] / total

    def min_probability(self, size: int) -> float:
        stored = self.priorities[:size]
        return float(stored.min() / stored.sum())


def _items_per_s(items: int, call: Callable[[], object], seconds: float) -> float:
    call()  # warm-up: compiles or loads kernels, faults pages in
    durations: list[float] = []
    while sum(durations) < seconds or len(durations) < 3:
        start = time.perf_counter()
        call()
        durations.append(time.perf_counter() - start)
    return items / float(np.median(durations))


def _template(spec: dict, rows: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """A batch of items with random contents (what they hold does not change the copying)."""
    return {
        name: rng.integers(0, 200, (rows, *s.shape)).astype(s.dtype)
        if s.dtype != np.bool_
        else rng.random((rows, *s.shape)) < 0.01
        for name, s in spec.items()
    }


def _figures(
    insert: Callable[[], object],
    sample: Callable[[], Any],
    update: Callable[[np.ndarray, np.ndarray], object],
    seconds: float,
    rng: np.random.Generator,
) -> dict[str, float]:
    keys = sample().keys

    def learner_step() -> None:
        update(sample().keys, rng.exponential(size=SAMPLE_BATCH))

    return {
        "inserts_per_s": _items_per_s(INSERT_BATCH, insert, seconds),
        "samples_per_s": _items_per_s(SAMPLE_BATCH, sample, seconds),
        "updates_per_s": _items_per_s(
            SAMPLE_BATCH, lambda: update(keys, rng.exponential(size=keys.size)), seconds
        ),
        "learner_items_per_s": _items_per_s(SAMPLE_BATCH, learner_step, seconds),
    }


def in_process(capacity: int, seconds: float, board: GameConfig, note: Callable[[str], None]) -> list[dict]:
    """Our prioritized and uniform samplers and the baseline on one full buffer, one set of priorities."""
    spec = transition_spec(board)
    rng = np.random.default_rng(0)
    ours = PrioritizedSampler(capacity)
    buffer = ReplayBuffer(spec, capacity, sampler=ours, seed=1)
    fill = _template(spec, FILL_BATCH, rng)
    note(f"filling {capacity:,} items")
    for start in range(0, capacity, FILL_BATCH):
        buffer.insert({k: v[: min(FILL_BATCH, capacity - start)] for k, v in fill.items()})
    raw = rng.exponential(size=capacity)
    for start in range(0, capacity, 1 << 16):
        keys = np.arange(start, min(start + (1 << 16), capacity), dtype=np.uint64)
        buffer.update_priorities(keys, raw[start : start + keys.size])
    baseline = CumsumSampler(capacity)
    baseline.set(np.arange(capacity), raw)
    batch = _template(spec, INSERT_BATCH, rng)
    rows = []
    for name, sampler in ((OURS, ours), (BASELINE, baseline), ("uniform", UniformSampler())):
        note(f"in process: {name}")
        buffer.sampler = sampler
        figures = _figures(
            lambda: buffer.insert(batch),
            lambda: buffer.sample_batch(SAMPLE_BATCH),
            buffer.update_priorities,
            seconds,
            rng,
        )
        rows.append({"name": name, "sampler": sampler.name, "where": "in process", **figures})
    return rows


def served(capacity: int, seconds: float, board: GameConfig, note: Callable[[str], None]) -> dict:
    """The ReplayService in its own process (prioritized), one client on loopback."""
    size = ["--capacity", str(capacity), "--height", str(board.height), "--width", str(board.width)]
    command = [
        sys.executable,
        "-m",
        "gameserver.cli",
        "replay",
        "serve",
        "--port",
        "0",
        "--prioritized",
        *size,
    ]
    server = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
    try:
        address = server.stdout.readline().split()[-1]
        spec = transition_spec(board)
        rng = np.random.default_rng(2)
        with ReplayClient(address, timeout=120) as client:
            note(f"service: filling {capacity:,} items")
            fill = _template(spec, FILL_BATCH, rng)
            for start in range(0, capacity, FILL_BATCH):
                client.insert({k: v[: min(FILL_BATCH, capacity - start)] for k, v in fill.items()})
            note("service: measuring")
            batch = _template(spec, INSERT_BATCH, rng)
            figures = _figures(
                lambda: client.insert(batch),
                lambda: client.sample(SAMPLE_BATCH),
                client.update_priorities,
                seconds,
                rng,
            )
        return {
            "name": f"ReplayService over gRPC ({OURS})",
            "sampler": "prioritized",
            "where": "loopback",
            **figures,
        }
    finally:
        server.terminate()
        server.wait(30)


def run(settings: dict[str, Any], command: str, console: Console) -> dict[str, Any]:
    board = GameConfig(settings["size"], settings["size"])
    with console.status("replay benchmark") as status:

        def note(text: str) -> None:
            status.update(f"replay benchmark: {text}")

        rows = in_process(settings["capacity"], settings["seconds"], board, note)
        if settings["service"]:
            rows.append(served(settings["capacity"], settings["seconds"], board, note))
    by_name = {row["name"]: row for row in rows}
    return {
        **run_header("replay", command),
        "settings": {
            **settings,
            "insert_batch": INSERT_BATCH,
            "sample_batch": SAMPLE_BATCH,
            "statistic": "median call after one warm-up call",
        },
        "item_bytes": ReplayBuffer(transition_spec(board), 1).item_bytes(),
        "rows": rows,
        "sum_tree_vs_numpy": {f: by_name[OURS][f] / by_name[BASELINE][f] for f in FIGURES},
    }


def _si(value: float) -> str:
    for scale, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if value >= scale:
            return f"{value / scale:.3g}{suffix}"
    return f"{value:.3g}"


def _cells(result: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    header = ["implementation", *(f"{TITLES[f]} items/s" for f in FIGURES)]
    rows = [[row["name"], *(_si(row[f]) for f in FIGURES)] for row in result["rows"]]
    ratio = result["sum_tree_vs_numpy"]
    rows.append(["sum tree / numpy", *(f"{ratio[f]:,.1f}x" for f in FIGURES)])
    return header, rows


def table(result: dict[str, Any]) -> Table:
    s = result["settings"]
    out = Table(title=f"Replay buffer, {s['capacity']:,} items of {result['item_bytes']:,} B")
    header, rows = _cells(result)
    for name in header:
        out.add_column(name, justify="left" if name == "implementation" else "right")
    for row in rows:
        out.add_row(*row)
    return out


def markdown(result: dict[str, Any], plot_name: str | None = None) -> str:
    s, m = result["settings"], result["machine"]
    header, rows = _cells(result)
    return "\n".join(
        [
            f"## Replay buffer: {s['capacity']:,} items, prioritized sum tree vs numpy",
            "",
            f"- Command: `{result['command']}`",
            f"- Date: {result['date']}; machine: {m['cpu']}, {m['cpus']} CPUs "
            f"({m['numba_threads']} numba threads), {m['memory_gib']} GiB",
            f"- Items: self-play transitions of a {s['size']}x{s['size']} board, "
            f"{result['item_bytes']:,} B each; the buffer is full, so inserts overwrite the oldest. "
            f"Inserts in batches of {s['insert_batch']}, "
            f"samples and priority updates in batches of {s['sample_batch']}; a figure is the median call of "
            f"{s['seconds']:g} s of calls after a warm-up call.",
            "- Baseline: the same buffer with priorities in a flat array, sampled by `np.cumsum` + "
            "`np.searchsorted` (stratified like the tree), weights normalised by the array's minimum.",
            "",
            *markdown_table(header, rows),
            "",
            f"![replay buffer items per second]({plot_name})" if plot_name else "",
            "",
        ]
    )


def plot(result: dict[str, Any], path: Path) -> None:
    from matplotlib.figure import Figure

    rows = result["rows"]
    figure = Figure(figsize=(10, 4.5), layout="constrained")
    axes = figure.subplots()
    width = 0.8 / len(rows)
    x = np.arange(len(FIGURES))
    for i, row in enumerate(rows):
        axes.bar(x + i * width, [row[f] for f in FIGURES], width, label=row["name"])
    axes.set_xticks(x + width * (len(rows) - 1) / 2, [TITLES[f] for f in FIGURES])
    axes.set(yscale="log", ylabel="items / s")
    axes.grid(True, axis="y", which="both", alpha=0.3)
    axes.legend(fontsize="small")
    m = result["machine"]
    figure.suptitle(f"Replay buffer, {result['settings']['capacity']:,} items: {m['cpu']}, {m['cpus']} CPUs")
    save_figure(figure, path)


def main(args: Any) -> int:
    """`gamefleet bench replay` (parsed arguments: see gameserver/cli.py)."""
    settings = {
        "capacity": args.capacity or (QUICK_CAPACITY if args.quick else CAPACITY),
        "seconds": args.seconds or (QUICK_SECONDS if args.quick else SECONDS),
        "size": args.size,
        "service": not args.no_service,
        "quick": args.quick,
        "plot": str(args.plot) if args.plot else None,
    }
    console = Console()
    result = run(settings, args.command_line, console)
    return publish(result, args, console, table=table, plot=plot, markdown=markdown)
