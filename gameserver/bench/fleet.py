"""The sharded fleet: the router's cost, durability's cost, and recovery time, in one run.

Targets (issue 4), each a ratio of figures measured in the same run:
- router path: steps/s through `gamefleet route` at least 80% of steps/s talking to the shard
  directly, batch 4096 (20x20, 2 players); full and delta observations both reported, and
  steps that make no observation: the hop's own cost per call, with nothing to carry.
- durability `log`: steps/s of a shard with `--durability log` at least 75% of a shard with
  durability off, batch 1024 (one shard each, same Redis for log and snapshot).
- recovery: 10,000 games rebuilt from Redis (their records plus the log entries after them)
  in under 2 s.

Each ratio is measured in pairs of short windows, A B B A, repeated (`blocks`): the ratio of a
block is B's steps over A's in the same second or so, so the load other processes put on a
shared machine falls on both sides alike; the figure reported is the median block, with the
spread (quartiles) and the CPU share other processes took (this process, the fleets'
processes and redis-server excluded). Only the step call is timed (with deltas, plus
applying them into the client's buffer), moves come from the random legal-move agent
outside the clock, games autoreset. Recovery is timed in this process: a pool behind its
log-mode recorder plays the games, is "killed" (its writer stops without flushing), and `recover` rebuilds
them into a fresh pool; the rebuilt games are checked bit for bit against the originals.
"""

from __future__ import annotations

import contextlib
import shutil
import socket
import subprocess
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console
from rich.progress import Progress
from rich.table import Table

from ..agents import random_actions
from ..client import FleetClient
from ..fleet.durability import Durability
from ..fleet.recovery import recover
from ..fleet.store import FleetStore
from ..local_fleet import LocalFleet
from ..pool import GamePool
from .engine import DISTURBED, run_header
from .matrix import _process_ticks
from .results_md import publish, save_figure
from .service import BOARD, Disturbance, Mode, served

ROUTER_TARGET = 0.80
LOG_TARGET = 0.75  # log costs at most 25%
RECOVERY_TARGET_S = 2.0
ROUTER_MODES = ("direct_full", "router_full", "direct_delta", "router_delta", "direct_none", "router_none")
DURABILITY_MODES = ("off_delta", "log_delta", "snapshot_delta", "off_full", "log_full")
TITLES = {
    "direct_full": "direct to the shard, full observations",
    "router_full": "through the router, full observations",
    "direct_delta": "direct to the shard, delta observations",
    "router_delta": "through the router, delta observations",
    "direct_none": "direct to the shard, no observations (floor)",
    "router_none": "through the router, no observations (floor)",
    "off_delta": "durability off, delta observations",
    "log_delta": "durability log, delta observations",
    "snapshot_delta": "durability snapshot, delta observations",
    "off_full": "durability off, full observations",
    "log_full": "durability log, full observations",
}


@dataclass
class Settings:
    router_batch: int = 4096
    durability_batch: int = 1024
    seconds: float = 3.0  # timed step-call seconds per side of each ratio, over its blocks
    blocks: int = 10  # A B B A blocks per ratio
    recovery_games: int = 10_000
    recovery_ticks: int = 150  # played before the kill; records come every 100, so ~50 are replayed
    recovery_attempts: int = 3  # recoveries of the same games, the fastest reported
    quick: bool = False

    @classmethod
    def from_args(cls, args: Any) -> Settings:
        """Settings of `gamefleet bench fleet` (gameserver/cli.py); --quick: a smoke run."""
        base = cls()
        if args.quick:
            base = cls(router_batch=64, durability_batch=32, seconds=0.2, blocks=1, recovery_games=200,
                       recovery_ticks=30, quick=True)  # fmt: skip
        for name in ("seconds", "blocks", "recovery_games"):
            if getattr(args, name, None):
                setattr(base, name, getattr(args, name))
        return base


class RedisProcess:
    """A redis-server on a free loopback port (no persistence), stopped with the benchmark."""

    def __init__(self) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            raise SystemExit("gamefleet bench fleet needs redis-server (Debian package redis-server)")
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]
        self.directory = tempfile.mkdtemp(prefix="gamefleet-bench-redis-")
        self.process = subprocess.Popen(
            [binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
             "--dir", self.directory],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        store = FleetStore(self.url, "probe", ttl_s=1, timeout_s=0.2)
        deadline = time.monotonic() + 10
        while True:
            try:
                store.redis.ping()
                return
            except Exception:
                if self.process.poll() is not None or time.monotonic() > deadline:
                    raise SystemExit("redis-server did not start") from None
                time.sleep(0.02)

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def stop(self) -> None:
        self.process.kill()
        self.process.wait()
        shutil.rmtree(self.directory, ignore_errors=True)


class FleetDisturbance(Disturbance):
    """Others' CPU share, this process and every process of the benchmark's fleets excluded."""

    def __init__(self, pids: list[int]) -> None:
        super().__init__(None)
        self.pids = pids

    def _shard_ticks(self) -> int:
        total = 0
        for pid in self.pids:
            with contextlib.suppress(OSError):  # a process that ended
                total += _process_ticks(pid)
        return total


PAIRS = {  # ratio name: (A, the baseline; B)
    "router_full": ("direct_full", "router_full"),
    "router_delta": ("direct_delta", "router_delta"),
    "router_none": ("direct_none", "router_none"),
    "log_delta": ("off_delta", "log_delta"),
    "log_full": ("off_full", "log_full"),
    "snapshot_delta": ("off_delta", "snapshot_delta"),
}


def _pairs(modes: dict[str, Mode], settings: Settings, disturbance: Disturbance, tick: Any) -> dict:
    """Every ratio of PAIRS in A B B A blocks: per block both rates, the ratio and others' CPU."""
    window = settings.seconds / settings.blocks / 2
    measured = {}
    for ratio, (a, b) in PAIRS.items():
        blocks = []
        for _ in range(settings.blocks):
            disturbance.start()
            a1, b1, b2, a2 = (modes[m].measure(window) for m in (a, b, b, a))
            rate_a, rate_b = (a1 + a2) / 2, (b1 + b2) / 2
            blocks.append({"a": rate_a, "b": rate_b, "ratio": rate_b / rate_a,
                           "others_cpu_share": disturbance.share()})  # fmt: skip
        measured[ratio] = _summary(blocks)
        tick()
    return measured


def _summary(blocks: list[dict]) -> dict:
    ratios = np.array([b["ratio"] for b in blocks])
    shares = [b["others_cpu_share"] for b in blocks if b["others_cpu_share"] is not None]
    return {
        "blocks": blocks,
        "ratio": float(np.median(ratios)),
        "ratio_quartiles": [float(q) for q in np.percentile(ratios, [25, 75])],
        "a_steps_per_s": float(np.median([b["a"] for b in blocks])),
        "b_steps_per_s": float(np.median([b["b"] for b in blocks])),
        "others_cpu_share": float(np.median(shares)) if shares else None,
    }


def recovery(url: str, settings: Settings, disturbance: Disturbance) -> dict[str, Any]:
    """Play `recovery_games` games in a log-mode pool, kill it, then time `recovery_attempts`
    recoveries of them (each into a fresh pool, each checked exact); the fastest is reported."""
    store = FleetStore(url, "bench-recovery", ttl_s=600)
    durability = Durability(store, "bench-shard", "log", snapshot_every=100, snapshot_interval_s=0)
    games = settings.recovery_games
    pool = durability.wrap(GamePool(BOARD, games, games, autoreset=True, seed=3))
    ids = pool.create(games, key_hash=7)
    for tick in range(settings.recovery_ticks):
        obs = pool.observe(ids)
        pool.step(ids, random_actions(obs.codes, obs.armies, obs.tick, BOARD.height, BOARD.width, tick))
    durability.close(flush=False)  # the kill: queued snapshots are dropped
    attempts = []
    for _ in range(settings.recovery_attempts):
        fresh = GamePool(BOARD, games, games, autoreset=True)
        disturbance.start()
        start = time.perf_counter()
        recovered = recover(store, fresh, key_hashes=[7])
        seconds = time.perf_counter() - start
        attempts.append({"seconds": seconds, "others_cpu_share": disturbance.share()})
        a, b = pool.slots_of(ids), fresh.slots_of(ids)
        if recovered.size != games or not all(
            np.array_equal(array[a], getattr(fresh.batch, name)[b])
            for name, array in pool.batch.arrays().items()
        ):
            raise RuntimeError(
                "recovered games differ from the originals: the benchmark measured a wrong thing"
            )
    entries = store.log_length("bench-shard")
    store.purge()
    best = min(attempts, key=lambda x: x["seconds"])
    return {"games": games, "seconds": best["seconds"], "others_cpu_share": best["others_cpu_share"],
            "attempts": attempts, "log_entries": entries, "ticks_played": settings.recovery_ticks,
            "bit_exact": True}  # fmt: skip


def run(settings: Settings, command: str, console: Console) -> dict[str, Any]:
    result: dict[str, Any] = {
        **run_header("fleet", command),
        "settings": asdict(settings),
        "board": BOARD.to_dict(),
        "disturbed_from": DISTURBED,
    }
    redis = RedisProcess()
    fleets = {  # the durability-off shard is also the router's one shard
        "off": LocalFleet(1, seed=1, router=True),
        "log": LocalFleet(1, seed=2, redis_url=redis.url, fleet="bench-log", durability="log"),
        "snapshot": LocalFleet(1, seed=3, redis_url=redis.url, fleet="bench-snap", durability="snapshot"),
    }
    try:
        with (
            Progress(console=console, transient=True) as progress,
            contextlib.ExitStack() as stack,
            ThreadPoolExecutor(len(fleets)) as starting,
        ):
            task = progress.add_task("fleet benchmark", total=len(PAIRS) + 1)
            for fleet in fleets.values():
                stack.callback(fleet.stop)
            list(
                starting.map(LocalFleet.start, fleets.values())
            )  # in parallel: start-up is most of a smoke run
            pids = [p.pid for f in fleets.values() for p in f._processes] + [redis.process.pid]
            addresses = {name: f.addresses[0] for name, f in fleets.items()}
            addresses |= {"direct": addresses["off"], "router": fleets["off"].router_address}
            clients = {name: FleetClient(address, timeout=120) for name, address in addresses.items()}
            for client in clients.values():
                stack.callback(client.close_channel)
            keep: list[Any] = []
            modes = {}
            for name in ROUTER_MODES + DURABILITY_MODES:
                where, how = name.split("_")
                batch = settings.router_batch if name in ROUTER_MODES else settings.durability_batch
                modes[name] = served(clients[where], batch, how, keep)
            pairs = _pairs(modes, settings, FleetDisturbance(pids), lambda: progress.advance(task))
            result["recovery"] = recovery(redis.url, settings, FleetDisturbance(pids))
            progress.advance(task)
    finally:
        redis.stop()
    result["pairs"] = pairs
    result["ratios"] = {name: pair["ratio"] for name, pair in pairs.items()}
    result["steps_per_s"] = {}
    for name, (a, b) in PAIRS.items():
        result["steps_per_s"].setdefault(a, pairs[name]["a_steps_per_s"])
        result["steps_per_s"][b] = pairs[name]["b_steps_per_s"]
    shares = [pair["others_cpu_share"] for pair in pairs.values() if pair["others_cpu_share"] is not None]
    result["others_cpu_share"] = max(shares) if shares else None
    result["targets"] = _targets(result)
    return result


def _targets(result: dict[str, Any]) -> list[dict[str, Any]]:
    """The issue's targets; throughput ones are judged at their batch sizes only (None otherwise)."""
    r, s = result["ratios"], result["settings"]
    full_size = s["router_batch"] == 4096 and s["durability_batch"] == 1024
    rec = result["recovery"]
    targets = [
        {"target": "router/direct steps/s, batch 4096, delta observations", "goal": f">= {ROUTER_TARGET:.0%}",
         "measured": f"{r['router_delta']:.0%}", "met": r["router_delta"] >= ROUTER_TARGET},
        {"target": "router/direct steps/s, batch 4096, full observations", "goal": f">= {ROUTER_TARGET:.0%}",
         "measured": f"{r['router_full']:.0%}", "met": r["router_full"] >= ROUTER_TARGET},
        {"target": "log/off steps/s, batch 1024, delta observations", "goal": f">= {LOG_TARGET:.0%}",
         "measured": f"{r['log_delta']:.0%}", "met": r["log_delta"] >= LOG_TARGET},
        {"target": "log/off steps/s, batch 1024, full observations", "goal": f">= {LOG_TARGET:.0%}",
         "measured": f"{r['log_full']:.0%}", "met": r["log_full"] >= LOG_TARGET},
        {"target": f"recovery of {rec['games']:,} games from Redis", "goal": f"< {RECOVERY_TARGET_S:g} s",
         "measured": f"{rec['seconds']:.2f} s", "met": rec["seconds"] < RECOVERY_TARGET_S},
    ]  # fmt: skip
    if not full_size:
        for target in targets[:4]:
            target["met"] = None
    if rec["games"] != 10_000:
        targets[4]["met"] = None
    return targets


def _verdict(target: dict[str, Any]) -> str:
    return {True: "met", False: "NOT met", None: "not judged (not the target's size)"}[target["met"]]


def _share(value: float | None) -> str:
    return "-" if value is None else f"{value:.0%}"


def _rows(result: dict[str, Any]) -> list[tuple[str, str]]:
    s, rates, ratios = result["settings"], result["steps_per_s"], result["ratios"]
    rows = []
    for name in ROUTER_MODES + DURABILITY_MODES:
        batch = s["router_batch"] if name in ROUTER_MODES else s["durability_batch"]
        ratio = f" ({ratios[name]:.0%})" if name in ratios else ""
        rows.append((f"{TITLES[name]}, batch {batch}", f"{rates[name]:,.0f} steps/s{ratio}"))
    rec = result["recovery"]
    rows.append(
        (f"recovery of {rec['games']:,} games ({rec['log_entries']} log entries after "
         f"{rec['ticks_played']} ticks)",
         f"{rec['seconds']:.2f} s, bit-exact (attempts: "
         + ", ".join(f"{a['seconds']:.2f}" for a in rec["attempts"]) + " s; others' CPU "
         + _share(rec["others_cpu_share"]) + ")")
    )  # fmt: skip
    return rows


def table(result: dict[str, Any]) -> Table:
    out = Table(title="GameFleet fleet: router, durability, recovery (same run)")
    out.add_column("measure")
    out.add_column("result", justify="right")
    for name, value in _rows(result):
        out.add_row(name, value)
    for target in result["targets"]:
        out.add_row(
            f"target: {target['target']} {target['goal']}", f"{target['measured']} {_verdict(target)}"
        )
    out.add_row("others' CPU share (median over blocks, worst ratio)", _share(result["others_cpu_share"]))
    return out


def _pair_row(name: str, pair: dict[str, Any]) -> str:
    low, high = pair["ratio_quartiles"]
    a, b = PAIRS[name]
    return (f"| {TITLES[b]} / {TITLES[a].split(',')[0]} | {pair['ratio']:.0%} | {low:.0%} - {high:.0%} | "
            f"{len(pair['blocks'])} | {_share(pair['others_cpu_share'])} |")  # fmt: skip


def markdown(result: dict[str, Any], plot_name: str | None = None) -> str:
    s, m = result["settings"], result["machine"]
    lines = [
        "## Fleet: router path, durability cost, recovery",
        "",
        f"- Command: `{result['command']}`",
        f"- Date: {result['date']}; machine: {m['cpu']}, {m['cpus']} CPUs; "
        f"gamefleet {result['versions']['gamefleet']}",
        "- Method: `gamefleet serve` / `gamefleet route` processes on loopback and a redis-server (no "
        "persistence), 20x20, 2 players, random legal moves chosen outside the clock, games autoreset; only "
        "the step call is timed (with deltas, plus applying them into the client's buffer). Router figures: "
        f"batch {s['router_batch']}, the durability-off shard, direct and through a router (static "
        "topology). "
        f"Durability figures: batch {s['durability_batch']}, three shards (off; log; snapshot every 100 "
        f"ticks), on-redis-error fail. Each ratio: {s['blocks']} blocks of A B B A windows of "
        f"{s['seconds'] / s['blocks'] / 2:g} s; the median block is reported, with its quartiles and the "
        "CPU share other processes took (this process, the fleets and redis-server excluded). "
        "Recovery: a log-mode pool plays the games, its writer is stopped without flushing (a kill), and "
        "`recover` rebuilds them from their records plus the log, each time into a fresh pool, checked "
        f"bit-exact against the originals; the fastest of {s['recovery_attempts']} is reported.",
        f"- Others' CPU share (median over blocks, the worst ratio's): {_share(result['others_cpu_share'])} "
        f"(from {DISTURBED:.0%} on, parallel kernels are slowed and the figures understated).",
        "",
        "| measure | result |",
        "|---|---:|",
        *(f"| {name} | {value} |" for name, value in _rows(result)),
        "",
        f"The router's hop has a cost per call that carries nothing: with no observations the router "
        f"path ran at {result['ratios']['router_none']:.0%} of direct, and a full observation reply "
        "crosses loopback twice on the router path against once direct.",
        "",
        "| target | goal | measured | |",
        "|---|---:|---:|---|",
        *(f"| {t['target']} | {t['goal']} | {t['measured']} | {_verdict(t)} |" for t in result["targets"]),
        "",
        "Every ratio (B / A, median block and quartiles over the blocks):",
        "",
        "| ratio | median | quartiles | blocks | others' CPU |",
        "|---|---:|---:|---:|---:|",
        *(_pair_row(name, pair) for name, pair in result["pairs"].items()),
        "",
    ]  # fmt: skip
    if plot_name:
        lines += [f"![fleet benchmark]({plot_name})", ""]
    return "\n".join(lines)


def plot(result: dict[str, Any], path: Path) -> None:
    from matplotlib.figure import Figure  # the dev extra; imported only when a plot is asked for

    rates = result["steps_per_s"]
    figure = Figure(figsize=(11, 4), layout="constrained")
    left, right = figure.subplots(1, 2)
    s = result["settings"]
    for axis, names, batch in ((left, ROUTER_MODES, s["router_batch"]),
                               (right, DURABILITY_MODES, s["durability_batch"])):  # fmt: skip
        labels = [n.replace("_", "\n") for n in names]  # e.g. "router\nfull": the table has the long names
        values = [rates[n] for n in names]
        axis.bar(
            range(len(names)),
            values,
            color=["#4c72b0", "#dd8452", "#55a868", "#c44e52", "#8172b2", "#937860"][: len(names)],
        )
        axis.set_xticks(range(len(names)), labels, fontsize=7)
        axis.set_ylabel("game-steps per second")
        axis.set_title(f"batch {batch}")
        for x, value in enumerate(values):
            axis.text(x, value, f"{value / 1e3:,.0f}k", ha="center", va="bottom", fontsize=8)
    rec = result["recovery"]
    figure.suptitle(
        f"router and durability ({result['machine']['cpus']} CPUs); recovery of {rec['games']:,} games: "
        f"{rec['seconds']:.2f} s"
    )
    save_figure(figure, path)


def main(args: Any) -> int:
    """`gamefleet bench fleet` (parsed arguments: see gameserver/cli.py)."""
    console = Console()
    result = run(Settings.from_args(args), args.command_line, console)
    return publish(result, args, console, table=table, plot=plot, markdown=markdown)
