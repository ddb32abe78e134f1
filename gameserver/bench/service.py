"""The batch game service against the in-process engine, both measured in the same run.

Targets (issue 3): through one shard process on loopback at batch 4096 (20x20, 2 players),
served steps/s at least 40% of in-process steps/s with full observations and 70% with delta
observations; one game, one SubmitBatchActions round trip: p99 under 1 ms.

Four ways to step the same batch, measured in rounds (each round measures all four, in
turn, for a slice of the time, so a neighbour's burst disturbs one round and not one mode):
- in process: GamePool.step writing the planes into its buffer (what a trainer in the
  shard's process would get);
- served, full: the planes on the wire (10 MB a step at 4096 games), read as views;
- served, delta: only the changed tiles on the wire, applied into the client's buffer;
- served, shared view: the shard writes the planes into the client's shared-memory segment,
  the reply carries rewards, flags and the masks (asked for, as a trainer needs them; same
  host only);
- served, no observations (skip_observations): not a way to train, the floor under the
  others: what one served step of the batch costs before any observation is made or moved.
Only the step call is timed (for deltas, plus applying them: a trainer needs the planes before
it acts). Moves come from the random legal-move agent on the current view, chosen outside
the clock; games autoreset so they never stall; every mode plays the same seeds (the floor
mode keeps playing moves chosen on its first view: illegal ones are no-ops). The served
modes choose moves on the calling thread: the agent's parallel kernel would leave OpenMP
threads spinning in this process, on the CPUs the shard steps on (threads.py).

With an agent between calls (issue 15): a trainer acts on each reply before its next step, so
here the clock runs over the whole loop, the random agent's moves included (a stand-in for
inference), delta observations: synchronous (one step of the whole batch at a time) against
pipelined (the batch in two halves, one in flight while the agent acts on the other:
FleetClient.send/recv), each as steps/s and as a share of in-process steps/s.

The figures reported are those of the least disturbed round (the least CPU taken by other
processes, this one and the shard excluded), every round stays in the JSON. Latency: one
game, `latency_calls` calls each, unary and over one StreamSteps call.

`modes` (--modes) measures some served modes only, against in process, and nothing else (no
round trips, no agent loop, no targets): a quick before/after of one change. Such a partial
run writes its JSON and table but no RESULTS.md section or plot.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console
from rich.progress import Progress
from rich.table import Table

from ..agents import random_actions
from ..client import FleetClient, ObservationBuffer, SharedView
from ..engine import GameConfig
from ..local_fleet import LocalFleet
from ..pool import GamePool
from .engine import DISTURBED, _cpu_ticks, run_header
from .matrix import _child_shard_pid, _process_ticks
from .results_md import publish, save_figure

BOARD = GameConfig(max_ticks=500)
FULL_TARGET = 0.40
DELTA_TARGET = 0.70
PIPELINED_GAIN_TARGET = 1.5  # pipelined / synchronous, with an agent between calls
PIPELINED_SHARE_TARGET = 0.50  # pipelined / in process
P99_TARGET_MS = 1.0
MODES = {
    "in_process": "in process (GamePool.step)",
    "served_full": "served, full observations",
    "served_delta": "served, delta observations",
    "served_shared": "served, shared-memory view (planes and masks)",
    "served_none": "served, no observations (floor)",
}
SERVED = tuple(name for name in MODES if name != "in_process")
SERVED_HOW = tuple(name.removeprefix("served_") for name in SERVED)  # --modes names
SEEDS = 10**6  # first seed of every mode's games


@dataclass
class Settings:
    batch: int = 4096
    seconds: float = 4.0  # timed step-call seconds per mode, split over the rounds
    rounds: int = 3
    latency_calls: int = 10_000
    quick: bool = False
    modes: tuple[str, ...] = SERVED_HOW  # served modes measured; fewer than all: a partial run

    @classmethod
    def from_args(cls, args: Any) -> Settings:
        """Settings of `gamefleet bench service` (see gameserver/cli.py); --quick: a smoke run."""
        base = cls(batch=256, seconds=0.3, rounds=1, latency_calls=300, quick=True) if args.quick else cls()
        for name in ("batch", "seconds", "rounds", "latency_calls", "modes"):
            if getattr(args, name, None):
                setattr(base, name, getattr(args, name))
        return base

    @property
    def partial(self) -> bool:
        """Some served modes only: no round trips, agent loop or targets (see the module doc)."""
        return set(self.modes) != set(SERVED_HOW)


class Mode:
    """One way of stepping the batch: `step(actions)` advances it, `view()` is what the agent sees."""

    def __init__(self, step: Callable[[np.ndarray], Any], view: Callable[[], Any], *, parallel: bool) -> None:
        self.step, self.view = step, view
        self.parallel = parallel  # the agent's kernel: parallel in process, serial beside a shard
        self.tick = 0

    def measure(self, seconds: float) -> float:
        """Game-steps per second of `step`, counting only the time inside it."""
        spent, steps = 0.0, 0
        while spent < seconds:
            obs = self.view()
            actions = random_actions(
                obs.codes, obs.armies, obs.tick, BOARD.height, BOARD.width, self.tick, parallel=self.parallel
            )
            start = time.perf_counter()
            self.step(actions)
            spent += time.perf_counter() - start
            steps += actions.shape[0]
            self.tick += 1
        return steps / spent


def in_process(batch: int) -> Mode:
    pool = GamePool(BOARD, batch, autoreset=True, seed=1)
    ids = pool.create(batch, seeds=np.arange(batch, dtype=np.uint64) + SEEDS)
    out = pool.observe(ids)  # the step's planes go here, as the shard's go into its buffer

    def step(actions: np.ndarray) -> None:
        pool.step(ids, actions, out=out)

    return _warm(Mode(step, lambda: out, parallel=True), batch)


def served(client: FleetClient, batch: int, how: str, keep: list[Any]) -> Mode:
    """A served mode: "full", "delta", "shared" or "none" (`keep` holds what must outlive the run)."""
    created = client.create(batch, BOARD, autoreset=True, seeds=np.arange(batch, dtype=np.uint64) + SEEDS)
    ids = created.ids
    keep.append(ids)
    if how == "shared":  # with masks: a trainer needs them, and they are bulk too
        view = SharedView(created.config, batch)
        keep.append(view)
        client.states(ids, masks=True, view=view)
        mode = Mode(
            lambda actions: client.step(ids, actions, masks=True, view=view),
            lambda: view.observation,
            parallel=False,
        )
    elif how == "delta":
        buffer = ObservationBuffer(created.config, batch)
        buffer.apply(created.observations)
        mode = Mode(lambda actions: buffer.apply(client.step(ids, actions, delta=True).observations),
                    lambda: buffer.observation, parallel=False)  # fmt: skip
    elif how == "none":
        first = created.observations
        mode = Mode(lambda actions: client.step(ids, actions, observe=False), lambda: first, parallel=False)
    else:
        state = {"obs": created.observations}

        def step(actions: np.ndarray) -> None:
            state["obs"] = client.step(ids, actions).observations

        mode = Mode(step, lambda: state["obs"], parallel=False)
    return _warm(mode, batch)


def with_agent(client: FleetClient, batch: int, seconds: float, *, halves: int) -> float:
    """Steps/s over the whole loop (the agent's moves included), delta observations, the batch in
    `halves` parts: 1 steps it whole, 2 keeps one part in flight while the agent acts on the other."""
    created = client.create(batch, BOARD, autoreset=True, seeds=np.arange(batch, dtype=np.uint64) + SEEDS)
    parts = np.array_split(created.ids, halves)
    buffers = [ObservationBuffer(created.config, part.size) for part in parts]
    views = [
        buffer.apply(client.states(part, delta=True)) for buffer, part in zip(buffers, parts, strict=True)
    ]

    def act(view: Any, tick: int) -> np.ndarray:
        return random_actions(
            view.codes, view.armies, view.tick, BOARD.height, BOARD.width, tick, parallel=False
        )

    try:
        for part, view in zip(parts, views, strict=True):
            client.send(part, act(view, 0), delta=True)
        steps, tick, start = 0, 0, time.perf_counter()
        while time.perf_counter() - start < seconds:
            h = tick % halves
            view = buffers[h].apply(client.recv().observations)
            client.send(parts[h], act(view, tick + 1), delta=True)
            steps += parts[h].size
            tick += 1
        rate = steps / (time.perf_counter() - start)
        while client.in_flight:
            client.recv()
    finally:
        client.close(created.ids)
    return rate


def _warm(mode: Mode, batch: int) -> Mode:
    """One untimed step (and for deltas, the first one, which lists every tile)."""
    mode.step(np.full((batch, BOARD.players), -1, np.int32))
    return mode


class Disturbance:
    """The machine's CPU share that other processes took since `start` (not this one, not the shard)."""

    def __init__(self, shard_pid: int | None) -> None:
        self.shard_pid = shard_pid
        self._before: tuple[tuple[int, int, int] | None, int] = (None, 0)

    def start(self) -> None:
        self._before = (_cpu_ticks(), self._shard_ticks())

    def share(self) -> float | None:
        (before, shard_before), after = self._before, _cpu_ticks()
        if before is None or after is None or after[1] <= before[1]:
            return None
        busy, total, own = (a - b for a, b in zip(after, before, strict=True))
        return max(0.0, (busy - own - (self._shard_ticks() - shard_before)) / total)

    def _shard_ticks(self) -> int:
        return _process_ticks(self.shard_pid) if self.shard_pid else 0


LATENCY_BLOCKS = 5  # the calls are timed in blocks, each with the CPU share others took meanwhile


def _percentiles(seconds: np.ndarray) -> dict[str, float]:
    ms = seconds * 1e3
    p50, p90, p99, p999 = (float(p) for p in np.percentile(ms, [50, 90, 99, 99.9]))
    return {"p50_ms": p50, "p90_ms": p90, "p99_ms": p99, "p99.9_ms": p999, "max_ms": float(ms.max())}


def round_trips(client: FleetClient, calls: int, disturbance: Disturbance, *, stream: bool) -> dict[str, Any]:
    """Latency of one-game steps, unary or over one StreamSteps call: percentiles in ms over every
    call, and those of the block of calls during which other processes took the least CPU."""
    created = client.create(1, BOARD, autoreset=True)
    actions = np.full((1, BOARD.players), -1, np.int32)
    times = np.empty(calls)
    with client.stream() as steps:
        call = (
            (lambda: steps.step(created.ids, actions))
            if stream
            else (lambda: client.step(created.ids, actions))
        )
        for _ in range(200):  # warm-up
            call()
        blocks = np.array_split(np.arange(calls), min(LATENCY_BLOCKS, calls))
        shares = []
        for block in blocks:
            disturbance.start()
            for i in block:
                start = time.perf_counter()
                call()
                times[i] = time.perf_counter() - start
            shares.append(disturbance.share())
    client.close(created.ids)
    known = [s for s in shares if s is not None]
    quietest = min(range(len(blocks)), key=lambda b: shares[b] or 0.0)
    return {
        "calls": calls,
        **_percentiles(times),
        "others_cpu_share": sum(known) / len(known) if known else None,
        "least_disturbed_block": {
            "calls": int(blocks[quietest].size),
            "others_cpu_share": shares[quietest],
            **_percentiles(times[blocks[quietest]]),
        },
    }


def _measure_rounds(
    modes: dict[str, Mode], settings: Settings, disturbance: Disturbance, tick: Callable[[], None]
) -> list[dict[str, Any]]:
    rounds = []
    for _ in range(settings.rounds):
        measured: dict[str, Any] = {"rates": {}, "others_cpu_share": {}}
        for name, mode in modes.items():
            disturbance.start()
            measured["rates"][name] = mode.measure(settings.seconds / settings.rounds)
            measured["others_cpu_share"][name] = disturbance.share()
            tick()
        shares = [s for s in measured["others_cpu_share"].values() if s is not None]
        measured["worst_others_cpu_share"] = max(shares) if shares else None
        base = measured["rates"]["in_process"]
        measured["shares"] = {
            name: rate / base for name, rate in measured["rates"].items() if name != "in_process"
        }
        rounds.append(measured)
    return rounds


def run(settings: Settings, command: str, console: Console) -> dict[str, Any]:
    result: dict[str, Any] = {
        **run_header("service", command),
        "settings": asdict(settings),
        "board": BOARD.to_dict(),
        "disturbed_from": DISTURBED,
    }
    keep: list[Any] = []
    with Progress(console=console, transient=True) as progress:
        task = progress.add_task("service benchmark", total=settings.rounds * len(MODES) + 5)
        with LocalFleet(1) as fleet, FleetClient(fleet.addresses[0], timeout=120) as client:
            client.wait_ready()
            progress.advance(task)
            disturbance = Disturbance(_child_shard_pid())
            try:
                modes = {"in_process": in_process(settings.batch)}
                modes |= {
                    f"served_{how}": served(client, settings.batch, how, keep)
                    for how in SERVED_HOW
                    if how in settings.modes
                }
                rounds = _measure_rounds(modes, settings, disturbance, lambda: progress.advance(task))
                if settings.partial:
                    return _chosen(result, rounds)
                result["unary_one_game"] = round_trips(
                    client, settings.latency_calls, disturbance, stream=False
                )
                progress.advance(task)
                result["stream_one_game"] = round_trips(
                    client, settings.latency_calls, disturbance, stream=True
                )
                progress.advance(task)
                for name, halves in (("agent_sync", 1), ("agent_pipelined", 2)):
                    result[f"{name}_steps_per_s"] = with_agent(
                        client, settings.batch, settings.seconds, halves=halves
                    )
                    progress.advance(task)
            finally:
                for item in keep:
                    if isinstance(item, SharedView):
                        item.close()
                    else:
                        client.close(item)
    _chosen(result, rounds)
    result["pipelined_gain"] = result["agent_pipelined_steps_per_s"] / result["agent_sync_steps_per_s"]
    result["pipelined_share"] = result["agent_pipelined_steps_per_s"] / result["in_process_steps_per_s"]
    result["targets"] = _targets(result)
    return result


def _chosen(result: dict[str, Any], rounds: list[dict[str, Any]]) -> dict[str, Any]:
    """The rounds into `result`, and the figures of the least disturbed one."""
    best = min(rounds, key=lambda r: r["worst_others_cpu_share"] or 0.0)
    result["rounds"] = rounds
    result["chosen_round"] = rounds.index(best)
    result |= {f"{name}_steps_per_s": rate for name, rate in best["rates"].items()}
    result |= {f"{name.removeprefix('served_')}_share": share for name, share in best["shares"].items()}
    result["others_cpu_share"] = best["worst_others_cpu_share"]
    return result


TARGET_BATCH = 4096


def _targets(result: dict[str, Any]) -> list[dict[str, Any]]:
    """The issue's targets; the throughput ones are judged at batch 4096 only (met None otherwise)."""
    p99 = result["unary_one_game"]["p99_ms"]
    targets = [
        {"target": "served/in-process, full observations", "goal": f">= {FULL_TARGET:.0%}",
         "measured": f"{result['full_share']:.0%}", "met": result["full_share"] >= FULL_TARGET},
        {"target": "served/in-process, full observations in a shared view", "goal": f">= {FULL_TARGET:.0%}",
         "measured": f"{result['shared_share']:.0%}", "met": result["shared_share"] >= FULL_TARGET},
        {"target": "served/in-process, delta observations", "goal": f">= {DELTA_TARGET:.0%}",
         "measured": f"{result['delta_share']:.0%}", "met": result["delta_share"] >= DELTA_TARGET},
        {"target": "pipelined/synchronous, deltas, agent between calls",
         "goal": f">= {PIPELINED_GAIN_TARGET}x", "measured": f"{result['pipelined_gain']:.2f}x",
         "met": result["pipelined_gain"] >= PIPELINED_GAIN_TARGET},
        {"target": "pipelined deltas (agent between calls)/in-process",
         "goal": f">= {PIPELINED_SHARE_TARGET:.0%}", "measured": f"{result['pipelined_share']:.0%}",
         "met": result["pipelined_share"] >= PIPELINED_SHARE_TARGET},
        {"target": "one game, unary round trip p99", "goal": f"< {P99_TARGET_MS} ms",
         "measured": f"{p99:.2f} ms", "met": p99 < P99_TARGET_MS},
    ]  # fmt: skip
    if result["settings"]["batch"] != TARGET_BATCH:
        for target in targets[:5]:
            target["met"] = None
    return targets


def _verdict(target: dict[str, Any]) -> str:
    return {True: "met", False: "NOT met", None: f"not judged (batch {TARGET_BATCH} only)"}[target["met"]]


def _share(value: float | None) -> str:
    return "-" if value is None else f"{value:.0%}"


def _rows(result: dict[str, Any]) -> list[tuple[str, str]]:
    rows = [(f"{MODES['in_process']}, batch {result['settings']['batch']}",
             f"{result['in_process_steps_per_s']:,.0f} steps/s")]  # fmt: skip
    for name in SERVED:
        if f"{name}_steps_per_s" not in result:  # a partial run (--modes)
            continue
        share = result[f"{name.removeprefix('served_')}_share"]
        rows.append((MODES[name], f"{result[f'{name}_steps_per_s']:,.0f} steps/s ({share:.0%})"))
    if "targets" not in result:
        return rows
    for name, title in (("agent_sync", "synchronous"), ("agent_pipelined", "pipelined, 2 halves")):
        rate = result[f"{name}_steps_per_s"]
        share = rate / result["in_process_steps_per_s"]
        rows.append(
            (f"served deltas with an agent between calls, {title}", f"{rate:,.0f} steps/s ({share:.0%})")
        )
    for name, title in (("unary_one_game", "unary"), ("stream_one_game", "StreamSteps")):
        lat, quiet = result[name], result[name]["least_disturbed_block"]
        rows.append(
            (f"one game, {title}, {lat['calls']:,} calls: p50 / p99 / p99.9",
             f"{lat['p50_ms']:.2f} / {lat['p99_ms']:.2f} / {lat['p99.9_ms']:.2f} ms")
        )  # fmt: skip
        disturbed = _share(quiet["others_cpu_share"])
        rows.append(
            (f"  its least disturbed {quiet['calls']:,} calls (others' CPU {disturbed})",
             f"{quiet['p50_ms']:.2f} / {quiet['p99_ms']:.2f} / {quiet['p99.9_ms']:.2f} ms")
        )  # fmt: skip
    return rows


def table(result: dict[str, Any]) -> Table:
    out = Table(title="GameFleet service vs in-process engine (same run)")
    out.add_column("measure")
    out.add_column("result", justify="right")
    for name, value in _rows(result):
        out.add_row(name, value)
    if "targets" not in result:  # a partial run (--modes)
        out.add_row("others' CPU share (the reported round)", _share(result["others_cpu_share"]))
        return out
    for target in result["targets"]:
        out.add_row(
            f"target: {target['target']} {target['goal']}",
            f"{target['measured']} {_verdict(target)}",
        )
    disturbed = (result["others_cpu_share"], result["unary_one_game"]["others_cpu_share"])
    out.add_row("others' CPU share (throughput round / unary latency)", " / ".join(map(_share, disturbed)))
    return out


def _target_row(target: dict[str, Any]) -> str:
    return f"| {target['target']} | {target['goal']} | {target['measured']} | {_verdict(target)} |"


def _round_row(number: int, measured: dict[str, Any], chosen: bool) -> str:
    shares = " | ".join(f"{measured['shares'][name]:.0%}" for name in SERVED)
    mark = " (reported)" if chosen else ""
    return (f"| {number + 1}{mark} | {measured['rates']['in_process']:,.0f} | {shares} | "
            f"{_share(measured['worst_others_cpu_share'])} |")  # fmt: skip


def markdown(result: dict[str, Any], plot_name: str | None = None) -> str:
    settings, m = result["settings"], result["machine"]
    unary, stream = result["unary_one_game"], result["stream_one_game"]
    lines = [
        "## Service: one shard process on loopback vs the in-process engine",
        "",
        f"- Command: `{result['command']}`",
        f"- Date: {result['date']}; machine: {m['cpu']}, {m['cpus']} CPUs; "
        f"gamefleet {result['versions']['gamefleet']}",
        f"- Method: batch {settings['batch']}, 20x20, 2 players, random legal moves chosen outside "
        "the clock, games autoreset; only the step call is timed (with deltas, plus applying them "
        f"into the client's buffer). {settings['rounds']} rounds, each measuring every mode in turn "
        f"for {settings['seconds'] / settings['rounds']:.3g} s; the table shows the round in which "
        "other processes took the least CPU (this process and the shard excluded). Shared view: "
        "the shard writes the planes into the client's shared-memory segment (same host only), the "
        "reply carries rewards, flags and the masks (asked for, as a trainer needs them). While "
        "other processes load the machine the served modes gain: client and shard are two "
        "processes that take turns, each waking with the scheduler's credit for having slept, "
        "against one process that is always runnable; read the ratios of a quiet round.",
        f"- Others' CPU share: {_share(result['others_cpu_share'])} during the reported round, "
        f"{_share(unary['others_cpu_share'])} during the unary latency run, "
        f"{_share(stream['others_cpu_share'])} during the stream run (means over "
        f"{LATENCY_BLOCKS} blocks of calls). The p99 target is judged on every call.",
        "",
        "| measure | result |",
        "|---|---:|",
        *(f"| {name} | {value} |" for name, value in _rows(result)),
        "",
        f"The floor: a served step of this batch that makes and moves no observation ran at "
        f"{_share(result['none_share'])} of in-process steps/s. Every observation mode costs more than it, "
        "so no ratio target above the floor can be met on this machine.",
        "",
        "| target | goal | measured | |",
        "|---|---:|---:|---|",
        *(_target_row(t) for t in result["targets"]),
        "",
        "Every round (served figures as a share of the same round's in-process steps/s):",
        "",
        "| round | in process steps/s | full | delta | shared view | no observations | others' CPU |",
        "|---|---:|---:|---:|---:|---:|---:|",
        *(_round_row(i, r, i == result["chosen_round"]) for i, r in enumerate(result["rounds"])),
        "",
    ]  # fmt: skip
    if plot_name:
        lines += [f"![service benchmark]({plot_name})", ""]
    return "\n".join(lines)


def plot(result: dict[str, Any], path: Path) -> None:
    from matplotlib.figure import Figure  # the dev extra; imported only when a plot is asked for

    names = ["in process", "served\nfull", "served\ndelta", "served\nshared view", "served, no\nobservations"]
    rates = [result[f"{name}_steps_per_s"] for name in MODES]
    figure = Figure(figsize=(10, 4), layout="constrained")
    left, right = figure.subplots(1, 2, gridspec_kw={"width_ratios": [3, 2]})
    left.bar(names, rates, color=["#4c72b0", "#dd8452", "#55a868", "#8172b2", "#bbbbbb"])
    left.set_ylabel("game-steps per second")
    left.set_title(
        f"batch {result['settings']['batch']}, 20x20, 2 players ({result['machine']['cpus']} CPUs)"
    )
    for x, rate in enumerate(rates):
        left.text(x, rate, f"{rate / 1e6:.2f}M", ha="center", va="bottom")
    marks = ["p50_ms", "p90_ms", "p99_ms", "p99.9_ms"]
    for name, label in (("unary_one_game", "unary"), ("stream_one_game", "StreamSteps")):
        right.plot(
            [m.removesuffix("_ms") for m in marks], [result[name][m] for m in marks], marker="o", label=label
        )
    right.axhline(P99_TARGET_MS, color="grey", linestyle="--", label="p99 target")
    right.set_ylabel("ms")
    right.set_title("one game, round trip")
    right.legend()
    save_figure(figure, path)


def main(args: Any) -> int:
    """`gamefleet bench service` (parsed arguments: see gameserver/cli.py)."""
    console = Console()
    settings = Settings.from_args(args)
    if settings.partial and (args.markdown is not None or args.plot is not None):
        raise SystemExit(
            "gamefleet bench service: a run with --modes measures some modes only; it writes no "
            "RESULTS.md section or plot (drop --markdown, --plot and --update-results)"
        )
    result = run(settings, args.command_line, console)
    return publish(result, args, console, table=table, plot=plot, markdown=markdown)
