"""Load testing a fleet: concurrent agents stepping their games, paced, with latency percentiles.

Each agent is one client connection (AsyncFleetClient, all on one event loop) holding
`games_per_agent` autoresetting games and stepping them with random legal moves, one
SubmitBatchActions per request (delta views, as trainers do). Pacing is open loop: with a
target rate each agent sends on a fixed schedule (a late agent sends at once, it never bursts
to catch up), then waits `think_time`. Every loop is bounded by `max_requests` per agent and
by `duration`; only loopback targets are allowed unless `allow_remote` (a Kubernetes Job
passes it to reach the fleet Service).

Latency is the step call's round trip; throughput counts the actions of successful requests
(games x players each). Refused calls are counted by status code and never stop the test.
Each agent's first step is an untimed warm-up (a fresh shard may compile a kernel on it).
"""

from __future__ import annotations

import asyncio
import ipaddress
import os
import platform
import socket
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any

import numpy as np

from . import __version__
from .agents import random_actions
from .client import AsyncFleetClient, GameFleetError, ObservationBuffer
from .engine import GameConfig, Observation

ERROR_PAUSE_S = 0.05  # after a refused call, so a failing fleet is not hammered in a tight loop
WARM_UP_TIMEOUT_S = 120.0


@dataclass(frozen=True)
class LoadSettings:
    agents: int = 4
    games_per_agent: int = 16
    target_actions_per_s: float = 0.0  # 0: as fast as the fleet answers
    duration_s: float = 10.0
    think_time_ms: float = 0.0
    max_requests: int = 100_000  # per agent
    size: int = 20
    players: int = 2
    max_ticks: int = 500
    seed: int = 0
    timeout_s: float = 10.0  # deadline of one call
    delta: bool = True

    def __post_init__(self) -> None:
        for name in ("agents", "games_per_agent", "max_requests"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        for name in ("target_actions_per_s", "think_time_ms"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        if not self.duration_s > 0 or not self.timeout_s > 0:
            raise ValueError("duration_s and timeout_s must be > 0")
        GameConfig(self.size, self.size, self.players, max_ticks=self.max_ticks)  # validates

    @property
    def config(self) -> GameConfig:
        return GameConfig(self.size, self.size, self.players, max_ticks=self.max_ticks)

    @property
    def actions_per_request(self) -> int:
        return self.games_per_agent * self.players

    @property
    def interval_s(self) -> float:
        """Each agent's time between sends for the target rate (0: no pacing)."""
        if not self.target_actions_per_s:
            return 0.0
        return self.agents * self.actions_per_request / self.target_actions_per_s


def check_loopback(address: str) -> None:
    """Refuse a target that is not this machine (ValueError), unless the caller allows remote ones."""
    host = address.rsplit(":", 1)[0].strip("[]")
    try:
        resolved = {info[4][0] for info in socket.getaddrinfo(host, None)}
    except socket.gaierror as error:
        raise ValueError(f"cannot resolve {host!r}: {error}") from None
    remote = sorted(a for a in resolved if not ipaddress.ip_address(a.split("%")[0]).is_loopback)
    if remote:
        raise ValueError(f"{address} is not loopback ({', '.join(remote)}): pass allow_remote to load it")


class _Agent:
    """One connection's games and its measurements (latencies preallocated: max_requests)."""

    def __init__(self, number: int, settings: LoadSettings) -> None:
        self.number = number
        self.settings = settings
        self.latencies = np.empty(settings.max_requests, np.float64)
        self.done = 0  # successful requests
        self.sent = 0
        self.errors: Counter[str] = Counter()

    async def run(self, address: str, deadline: float) -> None:
        s = self.settings
        async with AsyncFleetClient(address, timeout=s.timeout_s) as client:
            first_seed = s.seed + self.number * s.games_per_agent
            seeds = np.arange(first_seed, first_seed + s.games_per_agent, dtype=np.uint64)
            key = f"loadtest-{s.seed}-{self.number}"
            created = await client.create(
                s.games_per_agent, s.config, seeds=seeds, autoreset=True, placement_key=key
            )
            view = ObservationBuffer(created.config, s.games_per_agent)
            obs = view.apply(created.observations)
            obs = await self._warm_up(client, created.ids, obs, view)
            start = time.perf_counter()
            while self.sent < s.max_requests and time.perf_counter() < deadline:
                pause = start + self.sent * s.interval_s - time.perf_counter()
                if pause > 0:
                    await asyncio.sleep(min(pause, deadline - time.perf_counter()))
                    if time.perf_counter() >= deadline:
                        break
                actions = random_actions(obs.codes, obs.armies, obs.tick, s.size, s.size, s.seed + self.sent)
                self.sent += 1
                began = time.perf_counter()
                try:
                    result = await client.step(created.ids, actions, delta=s.delta)
                except GameFleetError as error:
                    self.errors[error.code.name] += 1
                    await asyncio.sleep(ERROR_PAUSE_S)
                    continue
                self.latencies[self.done] = time.perf_counter() - began
                self.done += 1
                obs = view.apply(result.observations)
                if s.think_time_ms:
                    await asyncio.sleep(s.think_time_ms / 1e3)
            try:
                await client.close(created.ids)
            except GameFleetError as error:
                self.errors[error.code.name] += 1

    async def _warm_up(
        self, client: AsyncFleetClient, ids: np.ndarray, obs: Observation, view: ObservationBuffer
    ) -> Observation:
        """One untimed step with a long deadline: a shard that compiles a kernel on its first call
        of a kind would otherwise fail the first requests of a run."""
        s, timeout = self.settings, client.timeout
        client.timeout = max(timeout, WARM_UP_TIMEOUT_S)
        try:
            actions = random_actions(obs.codes, obs.armies, obs.tick, s.size, s.size, s.seed)
            return view.apply((await client.step(ids, actions, delta=s.delta)).observations)
        except GameFleetError as error:
            self.errors[error.code.name] += 1
            return obs
        finally:
            client.timeout = timeout


def _percentiles(seconds: np.ndarray) -> dict[str, float | None]:
    if not seconds.size:
        return dict.fromkeys(("p50", "p95", "p99", "max", "mean"))
    ms = seconds * 1e3
    p50, p95, p99 = np.percentile(ms, [50, 95, 99]).tolist()
    return {"p50": p50, "p95": p95, "p99": p99, "max": float(ms.max()), "mean": float(ms.mean())}


async def run_load(
    address: str,
    settings: LoadSettings,
    *,
    allow_remote: bool = False,
    on_progress: Callable[[dict[str, Any]], None] | None = None,
) -> dict[str, Any]:
    """Run the load against `address`; the report (see `report`)."""
    if not allow_remote:
        check_loopback(address)
    agents = [_Agent(i, settings) for i in range(settings.agents)]
    started = time.perf_counter()
    deadline = started + settings.duration_s
    tasks = [asyncio.create_task(agent.run(address, deadline)) for agent in agents]
    try:
        while not all(task.done() for task in tasks):
            await asyncio.wait(tasks, timeout=0.25)
            if on_progress is not None:
                on_progress(_tally(agents, settings, time.perf_counter() - started))
        await asyncio.gather(*tasks)  # raises what an agent raised outside its calls (create, close)
    finally:
        for task in tasks:
            task.cancel()
    return report(agents, settings, time.perf_counter() - started, address)


def _tally(agents: list[_Agent], settings: LoadSettings, elapsed: float) -> dict[str, Any]:
    requests = sum(a.done for a in agents)
    latencies = np.concatenate([a.latencies[: a.done] for a in agents])
    errors = sum((a.errors for a in agents), Counter())
    actions = requests * settings.actions_per_request
    return {
        "elapsed_s": elapsed,
        "requests": requests,
        "actions": actions,
        "game_steps": requests * settings.games_per_agent,
        "actions_per_s": actions / elapsed if elapsed else 0.0,
        "requests_per_s": requests / elapsed if elapsed else 0.0,
        "latency_ms": _percentiles(latencies),
        "errors": {"total": sum(errors.values()), "by_code": dict(errors)},
    }


def report(agents: list[_Agent], settings: LoadSettings, elapsed: float, address: str) -> dict[str, Any]:
    tally = _tally(agents, settings, elapsed)
    target = settings.target_actions_per_s
    return {
        "loadtest": "gamefleet",
        "version": __version__,
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "client": {"host": platform.node(), "cpus": os.cpu_count(), "python": platform.python_version()},
        "address": address,
        "settings": asdict(settings),
        "duration_s": elapsed,
        **{k: v for k, v in tally.items() if k != "elapsed_s"},
        "steps_per_s": tally["game_steps"] / elapsed if elapsed else 0.0,
        "target_reached": None if not target else tally["actions_per_s"] >= 0.95 * target,
        "load_average": list(os.getloadavg()),  # at the end; a busy machine understates every figure
    }


def markdown(report: dict[str, Any], command: str, target: str) -> str:
    """The run as a RESULTS.md section; its title names the load shape, so runs of other shapes
    keep their own sections. `target` says what was loaded (a local fleet, an address)."""
    s = report["settings"]
    shape = f"{s['agents']} agents x {s['games_per_agent']} games"
    shape += (
        f", paced to {s['target_actions_per_s']:,.0f} actions/s"
        if s["target_actions_per_s"]
        else ", flat out"
    )
    shape += f", think time {s['think_time_ms']:g} ms" if s["think_time_ms"] else ""
    latency, errors = report["latency_ms"], report["errors"]
    reached = {None: "-", True: "yes", False: "no"}[report["target_reached"]]
    errors_cell = f"{errors['total']}" + (f" {errors['by_code']}" if errors["by_code"] else "")
    cells = [
        f"{report['requests']:,}",
        f"{report['actions_per_s']:,.0f}",
        f"{report['steps_per_s']:,.0f}",
        *(ms(latency[p]) for p in ("p50", "p95", "p99", "max")),
        errors_cell,
        reached,
    ]
    return "\n".join(
        [
            f"## Load test: {shape}",
            "",
            f"- Command: `{command}`",
            f"- Date: {report['date']}; client: {report['client']['cpus']} CPUs, Python "
            f"{report['client']['python']}, gamefleet {report['version']}; 1-minute load average at the end "
            f"{report['load_average'][0]:.2f} (this run's processes included)",
            f"- Target: {target}; {s['size']}x{s['size']} boards, {s['players']} players, episodes "
            f"truncated at {s['max_ticks']} ticks, random legal moves, "
            f"{'delta views' if s['delta'] else 'full observations'}; {report['duration_s']:.1f} s of load",
            "- Method: each agent is one client connection holding its games; a request is one "
            "SubmitBatchActions for all of them, its latency the round trip (after one untimed warm-up "
            "step). actions/s counts the actions of answered requests (games x players each).",
            "",
            "| requests | actions/s | game steps/s | p50 ms | p95 ms | p99 ms | max ms | errors "
            "| target met |",
            "|---:|---:|---:|---:|---:|---:|---:|---|---|",
            "| " + " | ".join(cells) + " |",
            "",
        ]
    )


def ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"
