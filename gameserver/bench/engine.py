"""Engine throughput against generals-bots 2.5.0 (the peer), both measured in the same run.

Trainers hand the engine whole batches, so ours is game-steps per second at each batch size;
the peer's `Game.step` plays one game per call and always builds both players' observations,
so its rate is one number (a horizontal line on the plot).

Only engine calls are timed. Moves are recorded beforehand from a mid-game position (random
legal moves, some replaced by random ones, which are mostly no-ops), and every timed window
replays them from a snapshot restored outside the clock: each window does the same work, the
games stay running, and choosing moves costs neither side anything. Both sides play the same
mix of moves on their own maps.
"""

from __future__ import annotations

import copy
import itertools
import json
import os
import platform
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from functools import partial
from importlib import metadata
from pathlib import Path
from typing import Any

import numba
import numpy as np
from rich.console import Console, Group
from rich.progress import Progress
from rich.table import Table

from ..agents import random_actions
from ..engine import GameBatch, GameConfig, Observation, generate, observe, step
from ..engine.config import MAX_TICK_LIMIT, RUNNING
from .results_md import markdown_table, save_figure, unjudged, write_section

# 20x20, 2 players, default densities; no truncation can happen inside a benchmark.
BOARD = GameConfig(max_ticks=MAX_TICK_LIMIT)
RANDOM_SHARE = 0.1  # share of actions replaced by a uniformly random flat index (or pass)
SPLIT_PERCENT = 25  # share of legal moves that move half the army (generals-bots RandomAgent's default)
AGENT_SEED = 7  # our random agent draws from (seed, game, seat, tick)
PEER_AGENTS = ("p0", "p1")

RATES = ("steps_per_s_obs", "steps_per_s_state", "maps_per_s")  # each row's figures
_TITLES = {
    "steps_per_s_obs": "steps/s with obs",
    "steps_per_s_state": "steps/s state only",
    "maps_per_s": "maps/s",
}

TARGET_BATCH = 1024
OBS_RATIO_TARGET = 150
STATE_RATIO_TARGET = 800
MAPS_TARGET = 50_000
BYTES_TARGET = 4096
DISTURBED = 0.05  # others' share of the CPU above which a figure is flagged as understated


@dataclass(frozen=True)
class Settings:
    """What to measure; `quick` shortens the recorded play (a smoke run, not figures to quote)."""

    batches: tuple[int, ...]
    seconds: float
    peer: bool = True
    quick: bool = False

    @property
    def burn_in_ticks(self) -> int:
        """Ticks played before recording, so the timed position is mid-game, not the empty start."""
        return 20 if self.quick else 100

    @property
    def window_ticks(self) -> int:
        return 20 if self.quick else 50

    @property
    def rounds(self) -> int:
        """Rounds each figure's seconds are split into (see _measure_in_rounds)."""
        return 1 if self.quick else 4


def _rate(work: float, seconds: float, reset: Callable[[], None], window: Callable[[], None]) -> float:
    """`work` units per second of `window`: the median over windows timed for `seconds` in all.

    One untimed window first compiles or loads the kernels and fills the caches; `reset` runs
    outside the clock before each window. The median ignores windows that another process
    preempted (a parallel kernel waits for its slowest thread).
    """
    reset()
    window()
    durations: list[float] = []
    while not durations or sum(durations) < seconds:
        reset()
        start = time.perf_counter()
        window()
        durations.append(time.perf_counter() - start)
    return work / float(np.median(durations))


def _mixed_actions(obs: Observation, rng: np.random.Generator) -> np.ndarray:
    """Random legal moves, a RANDOM_SHARE of them replaced by random flat actions in [-1, HW*8)."""
    actions = random_actions(
        obs.codes, obs.armies, obs.tick, BOARD.height, BOARD.width, AGENT_SEED, SPLIT_PERCENT
    )
    noise = rng.random(actions.shape) < RANDOM_SHARE
    actions[noise] = rng.integers(-1, BOARD.num_actions, size=int(noise.sum()))
    return actions


def _play(
    batch: GameBatch, slots: np.ndarray, obs: Observation, ticks: int, rng: np.random.Generator
) -> list[np.ndarray]:
    """Play `ticks` ticks from the position `obs` shows; returns the actions played, one array per tick."""
    played = []
    for _ in range(ticks):
        played.append(_mixed_actions(obs, rng))
        step(batch, slots, played[-1], out=obs)
    return played


class _EngineCase:
    """One batch size: moves recorded from a mid-game position, replayed from its snapshot."""

    def __init__(self, games: int, settings: Settings) -> None:
        # A random game now and then ends early: record spare games, time only games that run throughout.
        recorded = np.arange(games + games // 8 + 1)
        self.batch = GameBatch.allocate(BOARD, recorded.size)
        generate(self.batch, recorded, recorded)
        view = observe(self.batch, recorded)
        rng = np.random.default_rng(games)
        _play(self.batch, recorded, view, settings.burn_in_ticks, rng)
        self.start = {name: array.copy() for name, array in self.batch.arrays().items()}
        actions = _play(self.batch, recorded, view, settings.window_ticks, rng)
        running = np.flatnonzero(self.batch.status == RUNNING)  # an ended game never runs again
        if running.size < games:
            raise RuntimeError(
                f"only {running.size} of {recorded.size} random games ran {settings.window_ticks} ticks"
            )
        self.games, self.slots = games, running[:games]
        self.actions = [tick[self.slots] for tick in actions]
        self.obs = Observation.allocate(BOARD, games)
        self.seeds = np.arange(games, dtype=np.uint64)
        self.running = 1.0

    def figures(self) -> dict[str, Callable[[float], float]]:
        """Each figure's measurement: timed seconds -> rate."""
        return {
            "steps_per_s_obs": partial(self._steps, self.obs),
            "steps_per_s_state": partial(self._steps, None),
            "maps_per_s": self._maps,
        }

    def row(self) -> dict[str, Any]:
        return {"batch": self.games, "running_fraction": self.running}

    def _restore(self) -> None:
        for name, array in self.batch.arrays().items():
            array[...] = self.start[name]

    def _steps(self, out: Observation | None, seconds: float) -> float:
        def window() -> None:
            for actions in self.actions:
                step(self.batch, self.slots, actions, out=out)

        rate = _rate(self.games * len(self.actions), seconds, self._restore, window)
        # At a window's end: replays are deterministic, so this re-checks that every timed game ran.
        self.running = min(self.running, float(np.mean(self.batch.status[self.slots] == RUNNING)))
        return rate

    def _maps(self, seconds: float) -> float:
        def next_seeds() -> None:
            self.seeds += np.uint64(self.games)

        return _rate(self.games, seconds, next_seeds, lambda: generate(self.batch, self.slots, self.seeds))


def _peer_modules() -> tuple[Any, ...]:
    os.environ.setdefault("PYGAME_HIDE_SUPPORT_PROMPT", "1")  # generals-bots imports pygame
    try:
        from generals.core.action import Action, compute_valid_move_mask
        from generals.core.game import Game
        from generals.core.grid import GridFactory
    except ImportError as error:
        raise SystemExit(
            f"the peer generals-bots is not installed ({error}): pip install -e '.[peers]', or pass --no-peer"
        ) from None
    return Action, compute_valid_move_mask, Game, GridFactory


class _PeerCase:
    """generals-bots: Game.step plays one game per call and always builds both observations."""

    def __init__(self, settings: Settings) -> None:
        self._action, self._valid_moves, game_class, grid_factory = _peer_modules()
        side = (BOARD.height, BOARD.width)
        self.factory = grid_factory(min_grid_dims=side, max_grid_dims=side, seed=0)
        self._rng = np.random.default_rng(0)
        self.game = game_class(self.factory.generate(), list(PEER_AGENTS))
        self._play(settings.burn_in_ticks)
        self.start = copy.deepcopy(self.game)
        self.actions = self._play(settings.window_ticks)

    def figures(self) -> dict[str, Callable[[float], float]]:
        return {"steps_per_s_obs": self._steps, "steps_per_s_state": self._steps, "maps_per_s": self._maps}

    def row(self) -> dict[str, Any]:
        return {
            "name": "generals-bots",
            "version": metadata.version("generals-bots"),
            "running": not self.game.is_done(),
            "note": "Game.step always builds both players' observations: its state-only figure is the "
            "same call, timed separately; maps: GridFactory(min_grid_dims=(20, 20), "
            "max_grid_dims=(20, 20)).generate()",
        }

    def _mixed_action(self, observation: Any) -> Any:
        """Our mix: a random legal move (SPLIT_PERCENT split), a RANDOM_SHARE of random moves instead."""
        rng = self._rng
        if rng.random() < RANDOM_SHARE:
            row, col, direction, split = rng.integers((BOARD.height, BOARD.width, 4, 2))
            return self._action(False, row, col, direction, bool(split))
        moves = np.argwhere(self._valid_moves(observation))
        if len(moves) == 0:
            return self._action(to_pass=True)
        row, col, direction = moves[rng.integers(len(moves))]
        return self._action(False, row, col, direction, rng.random() < SPLIT_PERCENT / 100)

    def _play(self, ticks: int) -> list[dict[str, Any]]:
        """Step the game `ticks` ticks from its current position; returns the moves played."""
        observations = {agent: self.game.agent_observation(agent) for agent in PEER_AGENTS}
        played = []
        for _ in range(ticks):
            played.append({agent: self._mixed_action(observations[agent]) for agent in PEER_AGENTS})
            observations, _ = self.game.step(played[-1])
        return played

    def _restore(self) -> None:
        self.game = copy.deepcopy(self.start)

    def _steps(self, seconds: float) -> float:
        def window() -> None:
            for moves in self.actions:
                self.game.step(moves)

        return _rate(len(self.actions), seconds, self._restore, window)

    def _maps(self, seconds: float) -> float:
        return _rate(1, seconds, lambda: None, self.factory.generate)


def _cpu_ticks() -> tuple[int, int, int] | None:
    """(busy, total) clock ticks of the whole machine and this process's ticks, from /proc (Linux)."""
    try:
        with open("/proc/stat") as stat:
            user, nice, system, idle, iowait, irq, softirq, steal = map(int, stat.readline().split()[1:9])
        with open("/proc/self/stat") as own:
            utime, stime = map(int, own.read().rsplit(")", 1)[1].split()[11:13])
    except (OSError, ValueError):
        return None
    busy = user + nice + system + irq + softirq + steal
    return busy, busy + idle + iowait, utime + stime


def _others_share(before: tuple[int, int, int] | None) -> float | None:
    """Share of the machine's CPU time since `before` that other processes (or the hypervisor) took."""
    after = _cpu_ticks()
    if before is None or after is None or after[1] == before[1]:
        return None
    busy, total, own = (a - b for a, b in zip(after, before, strict=True))
    return max(0.0, (busy - own) / total)


def _measure_in_rounds(
    cases: dict[str, _EngineCase | _PeerCase], settings: Settings, note: Callable[[str], None]
) -> dict[str, dict[str, Any]]:
    """Every figure of every case, measured in `settings.rounds` rounds spread over the run.

    Each figure keeps its least-disturbed round (the lowest share of CPU taken by other
    processes): on a shared machine a parallel kernel waits for its slowest thread, so a busy
    neighbour understates a figure. All rounds stay in the row, under "rounds".
    """
    rounds: dict[str, dict[str, list[dict[str, float | None]]]] = {label: {} for label in cases}
    for number in range(1, settings.rounds + 1):
        for label, case in cases.items():
            for rate, measure in case.figures().items():
                note(f"round {number}/{settings.rounds}: {label}, {_TITLES[rate]}")
                before = _cpu_ticks()
                measured = measure(settings.seconds / settings.rounds)
                taken = {"rate": measured, "others_cpu_share": _others_share(before)}
                rounds[label].setdefault(rate, []).append(taken)
    rows = {}
    for label, case in cases.items():
        chosen = {
            rate: min(tries, key=lambda t: t["others_cpu_share"] or 0.0)
            for rate, tries in rounds[label].items()
        }
        rows[label] = {
            **case.row(),
            **{rate: best["rate"] for rate, best in chosen.items()},
            "others_cpu_share": {rate: best["others_cpu_share"] for rate, best in chosen.items()},
            "rounds": rounds[label],
        }
    return rows


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def run_header(benchmark: str, command: str, peer: bool = False) -> dict[str, Any]:
    """What every benchmark's JSON starts with: which benchmark, its command line, when, where, with what."""
    return {
        "benchmark": benchmark,
        "command": command,
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": machine(),
        "versions": versions(peer),
    }


def machine() -> dict[str, Any]:
    """Where the figures come from: they mean little without the CPU and thread count."""
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") if hasattr(os, "sysconf") else None
    return {
        "cpu": _cpu_model(),
        "cpus": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "numba_threads": numba.get_num_threads(),
        "memory_gib": round(memory / 2**30, 1) if memory else None,
        "system": platform.platform(),
        "python": platform.python_version(),
    }


def versions(peer: bool) -> dict[str, str]:
    names = ["gamefleet", "numba", "numpy"] + (["generals-bots"] if peer else [])
    return {name: metadata.version(name) for name in names}


def bytes_per_game() -> dict[str, int]:
    """Resident bytes of one game's state plus its slot in a fused-observation buffer."""
    state = GameBatch.allocate(BOARD, 1).nbytes_per_game()
    observation = Observation.allocate(BOARD, 1).nbytes_per_game()
    return {"state": state, "observation": observation, "total": state + observation}


def vs_peer(rate: str) -> str:
    """The key of a rate's ratio to the peer: steps_per_s_obs -> steps_obs_vs_peer."""
    return rate.replace("_per_s", "") + "_vs_peer"


def _add_ratios(row: dict[str, Any], peer: dict[str, Any]) -> None:
    for rate in RATES:
        row[vs_peer(rate)] = row[rate] / peer[rate]


def _target(name: str, measured: float | None, goal: int, unit: str, higher: bool = True) -> dict[str, Any]:
    met = None if measured is None else measured >= goal if higher else measured <= goal
    return {
        "name": name,
        "target": f"{'>=' if higher else '<='} {goal:,}{unit}",
        "measured": measured,
        "met": met,
    }


def targets(result: dict[str, Any]) -> list[dict[str, Any]]:
    """The issue's targets, judged at batch TARGET_BATCH; `met` is None when not measured."""
    row = next((r for r in result["engine"] if r["batch"] == TARGET_BATCH), {})
    at = f"batch {TARGET_BATCH}"
    # The target is what a pool holds per game ("one pool holds 1M games"): the state. An
    # observation buffer belongs to a step call's batch, not to each stored game.
    memory = result["bytes_per_game"]["state"]
    return [
        _target(
            f"steps/s with observations vs peer, {at}", row.get("steps_obs_vs_peer"), OBS_RATIO_TARGET, "x"
        ),
        _target(f"steps/s state-only vs peer, {at}", row.get("steps_state_vs_peer"), STATE_RATIO_TARGET, "x"),
        _target(f"maps/s, {at}", row.get("maps_per_s"), MAPS_TARGET, "/s"),
        _target("resident state bytes per stored game", memory, BYTES_TARGET, " B", higher=False),
    ]


def run(settings: Settings, command: str, console: Console) -> dict[str, Any]:
    """Measure everything `settings` asks for; returns the JSON-ready result."""
    cases_count = len(settings.batches) + settings.peer
    with Progress(console=console, transient=True) as progress:
        task = progress.add_task("engine benchmark", total=cases_count * (1 + len(RATES) * settings.rounds))
        finished = itertools.count()

        def note(phase: str) -> None:
            """Start the next phase (each phase announces itself before it starts)."""
            progress.update(task, description=phase, completed=next(finished))

        cases: dict[str, _EngineCase | _PeerCase] = {}
        if settings.peer:
            note("generals-bots: recording moves")
            cases["generals-bots"] = _PeerCase(settings)
        for games in settings.batches:
            note(f"batch {games}: recording moves")
            cases[f"batch {games}"] = _EngineCase(games, settings)
        measured = _measure_in_rounds(cases, settings, note)
    peer = measured.pop("generals-bots", None)
    rows = list(measured.values())
    if peer is not None:
        for row in rows:
            _add_ratios(row, peer)
    result = {
        **run_header("engine", command, peer=settings.peer),
        "board": BOARD.to_dict(),
        "settings": {
            **asdict(settings),
            "statistic": "median window of the least-disturbed round",
            "rounds": settings.rounds,
            "burn_in_ticks": settings.burn_in_ticks,
            "window_ticks": settings.window_ticks,
            "random_share": RANDOM_SHARE,
            "split_percent": SPLIT_PERCENT,
        },
        "bytes_per_game": bytes_per_game(),
        "engine": rows,
        "peer": peer,
    }
    result["targets"] = targets(result)
    return result


def _si(value: float) -> str:
    """3 significant digits with a k/M/G suffix: rates span six orders of magnitude."""
    for scale, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if value >= scale:
            return f"{value / scale:.3g}{suffix}"
    return f"{value:.3g}"


def _ratio(value: float) -> str:
    return f"{value:,.0f}x" if value >= 10 else f"{value:.2g}x"


def _worst_share(rows: list[dict[str, Any]]) -> float | None:
    """The most CPU other processes took while one of these rows' figures was measured (None: unknown)."""
    shares = [share for row in rows for share in row["others_cpu_share"].values()]
    return None if None in shares else max(shares)


def _percent(share: float | None) -> str:
    return "-" if share is None else f"{share:.0%}"


def _met(met: bool | None) -> str:
    return {True: "met", False: "NOT met", None: "not judged"}[met]


def _rows(result: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    """The figures as text cells: one row per batch size, then the peer's row and "vs peer" columns."""
    peer = result["peer"]
    header, rows = ["batch"], [[f"{row['batch']:,}"] for row in result["engine"]]
    peer_row = [] if peer is None else [f"{peer['name']} {peer['version']}"]
    for key in RATES:
        header.append(_TITLES[key])
        for cells, row in zip(rows, result["engine"], strict=True):
            cells.append(_si(row[key]))
        if peer is not None:
            header.append("vs peer")
            for cells, row in zip(rows, result["engine"], strict=True):
                cells.append(_ratio(row[vs_peer(key)]))
            peer_row += [_si(peer[key]), "1x"]
    header.append("others' CPU")
    for cells, row in zip(rows, result["engine"], strict=True):
        cells.append(_percent(_worst_share([row])))
    if peer is not None:
        peer_row.append(_percent(_worst_share([peer])))
    return header, rows + ([peer_row] if peer_row else [])


def _measured(target: dict[str, Any]) -> str:
    value = target["measured"]
    if value is None:
        return "-"
    return _ratio(value) if target["target"].endswith("x") else _si(value) if value >= 1e4 else f"{value:,}"


def table(result: dict[str, Any]) -> Group:
    """The results for the terminal: the figures, then the targets."""
    header, rows = _rows(result)
    memory = result["bytes_per_game"]
    figures = Table(
        *header,
        title="GameFleet engine: 20x20, 2 players, random moves",
        caption=f"bytes per game: {memory['state']:,} state + {memory['observation']:,} observation buffer "
        f"= {memory['total']:,}",
    )
    for row in rows:
        figures.add_row(*row)
    goals = Table("target", "goal", "measured", "", title="targets")
    for target in result["targets"]:
        goals.add_row(target["name"], target["target"], _measured(target), _met(target["met"]))
    return Group(figures, goals)


def markdown(result: dict[str, Any], plot_name: str | None = None) -> str:
    """The engine section of benchmarks/RESULTS.md (command, date, machine, table, targets, plot)."""
    header, rows = _rows(result)
    m, memory = result["machine"], result["bytes_per_game"]
    settings = result["settings"]
    peer = result["peer"]
    about_peer = (
        [] if peer is None else [f"The peer plays one game per call, at any batch size. {peer['note']}.", ""]
    )
    lines = [
        "## Engine: 20x20, 2 players, random moves",
        "",
        f"- Command: `{result['command']}`",
        f"- Date: {result['date']}",
        f"- Machine: {m['cpu']}, {m['cpus']} CPUs ({m['numba_threads']} numba threads), "
        f"{m['memory_gib']} GiB, {m['system']}, Python {m['python']}",
        "- Versions: " + ", ".join(f"{name} {version}" for name, version in result["versions"].items()),
        f"- Method: a figure's {settings['seconds']:g} s are split into {settings['rounds']} rounds spread "
        "over the run; a round times short windows after a warm-up window and takes their median; the "
        "figure is its least-disturbed round (least CPU taken by other processes). A steps window "
        f"replays {settings['window_ticks']} recorded ticks from a position {settings['burn_in_ticks']} "
        f"ticks into the games (random legal moves, {settings['random_share']:.0%} random ones; games that "
        "ended while the moves were recorded are replaced by spare ones), restored outside the clock; a "
        "maps window is one `generate` call over the batch (the peer: one map).",
        "",
        *markdown_table(header, rows, left=0),
        "",
        *about_peer,
        "Others' CPU: the largest share of the machine's CPU time that other processes took while one "
        f"of the row's figures was measured; from {DISTURBED:.0%} on, the row's parallel figures are "
        "understated (a parallel kernel waits for its slowest thread).",
        "",
        f"Bytes per game: {memory['state']:,} B of state + {memory['observation']:,} B of observation "
        f"buffer = {memory['total']:,} B.",
        "",
        "| target | goal | measured | |",
        "|---|---:|---:|---|",
        *(f"| {t['name']} | {t['target']} | {_measured(t)} | {_met(t['met'])} |" for t in result["targets"]),
        "",
    ]
    if plot_name is not None:
        lines += [f"![steps/s and maps/s against batch size]({plot_name})", ""]
    return "\n".join(lines)


def plot(result: dict[str, Any], path: Path) -> None:
    """Steps/s and maps/s against batch size (log-log), the peer as horizontal lines."""
    from matplotlib.figure import Figure  # the dev extra; imported only when a plot is asked for

    rows, peer = result["engine"], result["peer"]
    batches = [row["batch"] for row in rows]
    figure = Figure(figsize=(11, 4.5), layout="constrained")
    steps, maps = figure.subplots(1, 2)
    steps.plot(batches, [r["steps_per_s_obs"] for r in rows], "o-", label="GameFleet step, with observations")
    steps.plot(batches, [r["steps_per_s_state"] for r in rows], "s-", label="GameFleet step, state only")
    maps.plot(batches, [r["maps_per_s"] for r in rows], "o-", label="GameFleet generate")
    if peer is not None:
        steps.axhline(
            peer["steps_per_s_obs"], color="grey", ls="--", label="generals-bots Game.step (1 game)"
        )
        maps.axhline(peer["maps_per_s"], color="grey", ls="--", label="generals-bots GridFactory.generate")
    for axes, unit in ((steps, "game steps / s"), (maps, "maps / s")):
        axes.set(xscale="log", yscale="log", xlabel="batch size (games per call)", ylabel=unit)
        axes.set_xticks(batches, [f"{b:,}" for b in batches])
        axes.grid(True, which="both", alpha=0.3)
        axes.legend(fontsize="small")
    title = f"20x20, 2 players, random moves: {result['machine']['cpu']}, {result['machine']['cpus']} CPUs"
    worst = _worst_share([*rows, *([peer] if peer else [])])
    if worst is not None and worst >= DISTURBED:
        title += f"\nother processes took up to {worst:.0%} of the CPU while a figure was measured"
    figure.suptitle(title)
    save_figure(figure, path)


def main(
    settings: Settings, command: str, out: Path, plot_path: Path | None, markdown_path: Path | None
) -> int:
    """Run, then write the JSON (and the plot / markdown when asked) and print the table."""
    console = Console()
    result = run(settings, command, console)
    if settings.quick:
        unjudged(result, console)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    console.print(table(result))
    console.print(f"results: {out}")
    if plot_path is not None:
        plot(result, plot_path)
        console.print(f"plot: {plot_path}")
    if markdown_path is not None:
        write_section(markdown_path, markdown(result, plot_path.name if plot_path else None))
        console.print(f"markdown: {markdown_path}")
    return 0
