"""Self-play rollouts for `gamefleet selfplay`: scripted agents on every seat of one batch of games.

The games run in process (an autoresetting GamePool) or on a fleet (FleetClient, one
SubmitBatchActions per tick with delta views, as `selfplay.run_selfplay` plays). Each step
can feed a TransitionPusher (transitions to a ReplayService) and an EpisodeRecorder
(finished episodes as replays). Bounded in time and in steps.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..agents import check_agents, play_seats
from ..client import FleetClient, ObservationBuffer
from ..engine import GameConfig, Observation
from ..engine.config import PASS
from ..pool import GamePool, derive_seeds
from ..replay.client import TransitionPusher
from ..replay.transitions import Planes, StepFlags
from .episode_recorder import EpisodeRecorder
from .replay_files import dumps
from .selfplay import SelfPlayReport


class PoolGames:
    """`games` autoresetting games in this process."""

    shard_agents: tuple[str, ...] = ()

    def __init__(self, config: GameConfig, games: int, seeds: np.ndarray) -> None:
        self.config = config
        self.pool = GamePool(config, games, autoreset=True)
        self.ids = self.pool.create(games, seeds)
        self.view: Observation = self.pool.observe(self.ids)

    def step(self, actions: np.ndarray) -> tuple[StepFlags, Planes | None]:
        outcome = self.pool.step(self.ids, actions)
        self.view = outcome.observation
        return outcome, outcome.final_observation

    def close(self) -> None:
        self.pool.release(self.ids)


class FleetGames:
    """`games` autoresetting games on a fleet (or one shard) at `address`, kept as delta views.

    `shard_agents` names the seats the shard plays itself (see FleetClient.create's seat_agents);
    with `shard_pushes` the shard sends the games' transitions to its own ReplayService."""

    def __init__(
        self,
        address: str,
        config: GameConfig,
        games: int,
        seeds: np.ndarray,
        *,
        shard_agents: Sequence[str] = (),
        shard_pushes: bool = False,
    ) -> None:
        self.client = FleetClient(address, timeout=60)
        created = self.client.create(
            games, config, seeds=seeds, autoreset=True, placement_key="selfplay",
            seat_agents=shard_agents, push_transitions=shard_pushes,
        )  # fmt: skip
        self.shard_agents = tuple(shard_agents)
        self.config, self.ids = created.config, created.ids
        self._buffer = ObservationBuffer(created.config, games)
        self.view: Observation = self._buffer.apply(created.observations)

    def step(self, actions: np.ndarray) -> tuple[StepFlags, Planes | None]:
        result = self.client.step(self.ids, actions, delta=True)
        self.view = self._buffer.apply(result.observations)
        return result, result.final_observations

    def close(self) -> None:
        self.client.close(self.ids)
        self.client.close_channel()


def map_seeds(seed: int, games: int) -> np.ndarray:
    return derive_seeds(seed, np.arange(1, games + 1, dtype=np.uint64))


def run_rollouts(
    games: PoolGames | FleetGames,
    agents: Sequence[str],
    seconds: float,
    *,
    seed: int = 0,
    max_steps: int | None = None,
    pusher: TransitionPusher | None = None,
    recorder: EpisodeRecorder | None = None,
    replay_dir: Path | None = None,
    on_progress: Callable[[float, int, int], None] | None = None,
) -> dict[str, Any]:
    """Play until `seconds` pass or `max_steps` batch steps were taken; the report as a dict."""
    check_agents(agents)
    config, n = games.config, games.ids.size
    h, w = config.height, config.width
    actions = np.empty((n, config.players), np.int32)
    steps = episodes = truncations = saved = 0
    wins = np.zeros(config.players, np.int64)
    # the seats this process plays (the shard's own pass here: the shard replaces their moves)
    seats = [
        "" if seat < len(games.shard_agents) and games.shard_agents[seat] else agents[seat % len(agents)]
        for seat in range(config.players)
    ]
    actions.fill(PASS)
    start = last_note = time.perf_counter()
    while time.perf_counter() - start < seconds and (max_steps is None or steps < max_steps):
        view = games.view
        play_seats(seats, view.codes, view.armies, view.tick, h, w, seed, actions)
        before = pusher.capture(view) if pusher else None
        outcome, final = games.step(actions)
        if pusher:
            pusher.push(games.ids, before, actions, outcome, games.view, final)
        if recorder:
            for replay in recorder.record(actions, outcome.reset, outcome.rewards):
                (replay_dir / f"replay-{saved:06d}.json").write_text(dumps(replay))
                saved += 1
        steps += 1
        episodes += int(np.count_nonzero(outcome.terminated | outcome.truncated))
        truncations += int(np.count_nonzero(outcome.truncated & ~outcome.terminated))
        wins += (np.asarray(outcome.rewards) > 0).sum(axis=0)
        if on_progress and time.perf_counter() - last_note > 0.2:
            last_note = time.perf_counter()
            on_progress(last_note - start, steps * n, episodes)
    elapsed = time.perf_counter() - start
    report = SelfPlayReport(1, n, elapsed, steps * n, episodes, wins.tolist(), truncations).to_dict()
    return {**report, "replays": saved}
