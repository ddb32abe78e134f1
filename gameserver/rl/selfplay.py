"""A self-play workload against running shards: scripted agents on every seat, through the client.

This is what `gamefleet up` runs on the local fleet, and what a trainer's rollout loop looks
like: one SubmitBatchActions per tick for a whole batch of games, observations kept as delta
updates in a preallocated buffer, actions chosen by numba kernels over the batch.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field

import numpy as np

from ..agents import check_agents, play_seats
from ..client import FleetClient, ObservationBuffer
from ..engine import GameConfig
from ..replay.client import TransitionPusher
from ..wire.security import PLAINTEXT, Credentials


@dataclass
class SelfPlayReport:
    """Totals of one run; the rates are per wall-clock second of play, which starts once every
    worker has created its games and chosen its first moves (`setup_seconds`: that time, with a
    fresh machine's compilation of the agents' kernels)."""

    shards: int
    games: int
    seconds: float = 0.0
    steps: int = 0  # game-steps: one game advanced one tick
    episodes: int = 0
    wins: list[int] = field(default_factory=list)  # per seat
    truncations: int = 0
    setup_seconds: float = 0.0

    @property
    def steps_per_s(self) -> float:
        return self.steps / self.seconds if self.seconds else 0.0

    @property
    def games_per_s(self) -> float:
        """Finished episodes per second."""
        return self.episodes / self.seconds if self.seconds else 0.0

    def to_dict(self) -> dict:
        return {**asdict(self), "steps_per_s": self.steps_per_s, "games_per_s": self.games_per_s}


class _Tally:
    """Counters shared by the shard workers (one lock; updated once per batch, never per game)."""

    def __init__(self, players: int) -> None:
        self.lock = threading.Lock()
        self.steps = 0
        self.episodes = 0
        self.truncations = 0
        self.wins = np.zeros(players, np.int64)

    def add(self, games: int, rewards: np.ndarray, terminated: np.ndarray, truncated: np.ndarray) -> None:
        won = (rewards > 0).sum(axis=0)
        with self.lock:
            self.steps += games
            self.episodes += int(np.count_nonzero(terminated | truncated))
            self.truncations += int(np.count_nonzero(truncated & ~terminated))
            self.wins += won


def _play_shard(
    address: str,
    games: int,
    config: GameConfig,
    agents: Sequence[str],
    seed: int,
    stop: threading.Event,
    tally: _Tally,
    errors: list[BaseException],
    ready: threading.Barrier,
    replay_address: str | None = None,
    credentials: Credentials = PLAINTEXT,
) -> None:
    try:
        with FleetClient(address, credentials=credentials) as client:
            created = client.create(games, config, autoreset=True, placement_key=f"selfplay-{seed}")
            pusher = TransitionPusher(replay_address, created.config) if replay_address else None
            view = ObservationBuffer(created.config, games)
            obs = view.apply(created.observations)
            h, w = created.config.height, created.config.width
            actions = np.empty((games, created.config.players), np.int32)
            seats = [agents[seat % len(agents)] for seat in range(actions.shape[1])]
            play_seats(seats, obs.codes, obs.armies, obs.tick, h, w, seed, actions)  # compiles them
            ready.wait()
            while not stop.is_set():
                before = pusher.capture(obs) if pusher else None
                result = client.step(created.ids, actions, delta=True)
                obs = view.apply(result.observations)
                if pusher:
                    pusher.push(created.ids, before, actions, result, obs, result.final_observations)
                tally.add(games, result.rewards, result.terminated, result.truncated)
                play_seats(seats, obs.codes, obs.armies, obs.tick, h, w, seed, actions)
            client.close(created.ids)
            if pusher:
                pusher.close()
    except BaseException as error:  # reported by the caller; a worker thread must not die silently
        errors.append(error)
        stop.set()
        ready.abort()  # nobody waits for a worker that will not come


def run_selfplay(
    addresses: Sequence[str],
    games_per_shard: int,
    config: GameConfig,
    seconds: float,
    *,
    agents: Sequence[str] = ("expander", "random"),
    seed: int = 0,
    on_progress: Callable[[float, int, int], None] | None = None,
    replay_address: str | None = None,
    min_steps: int = 0,
    credentials: Credentials = PLAINTEXT,
) -> SelfPlayReport:
    """Play on every shard at once for `seconds`, and on until `min_steps` game steps were played
    (a slow machine still plays whole episodes); `on_progress(elapsed, steps, episodes)` ~5x a second.

    With `replay_address`, every seat's transitions are pushed to that ReplayService.
    `credentials`: the fleet's TLS and token (wire/security.py), if it runs with them.
    """
    check_agents(agents)
    tally = _Tally(config.players)
    stop = threading.Event()
    errors: list[BaseException] = []
    ready = threading.Barrier(len(addresses) + 1)
    workers = [
        threading.Thread(
            target=_play_shard,
            args=(
                a,
                games_per_shard,
                config,
                agents,
                seed + 1000 * i,
                stop,
                tally,
                errors,
                ready,
                replay_address,
                credentials,
            ),
            daemon=True,
        )
        for i, a in enumerate(addresses)
    ]
    setup = time.perf_counter()
    for worker in workers:
        worker.start()
    with contextlib.suppress(threading.BrokenBarrierError):  # a worker failed: its error is raised below
        ready.wait()
    start = time.perf_counter()
    while not stop.wait(0.2) and (time.perf_counter() - start < seconds or tally.steps < min_steps):
        if on_progress is not None:
            on_progress(time.perf_counter() - start, tally.steps, tally.episodes)
    stop.set()
    for worker in workers:
        worker.join()
    elapsed = time.perf_counter() - start
    if errors:
        raise errors[0]
    return SelfPlayReport(
        shards=len(addresses),
        games=games_per_shard * len(addresses),
        seconds=elapsed,
        steps=tally.steps,
        episodes=tally.episodes,
        wins=tally.wins.tolist(),
        truncations=tally.truncations,
        setup_seconds=start - setup,
    )
