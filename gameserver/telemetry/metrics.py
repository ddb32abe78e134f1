"""Every metric the fleet's processes export, and the once-per-batch recorder that feeds them.

Names follow DESIGN.md: game and training metrics are `generals_*`, infrastructure
`gamefleet_*` (the operator's, in gamefleet_operator/metrics.py, `gamefleet_operator_*`).
What a scrape can read from live objects (active games, memory, Redis lag, the replay
buffer) is collected then, in collectors.py, and costs the hot path nothing.

The hot path calls `record_step` once per engine call: a few numpy reductions over the
batch's result arrays and plain additions under one lock, whatever the number of games.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import numpy as np
from prometheus_client import Counter, Gauge, Histogram
from prometheus_client.metrics_core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import REGISTRY, Collector

from ..wire.generated import batch_pb2 as pb
from .histograms import ArrayHistogram, exponential_buckets

MAX_SEATS = 8
ACTION_SECONDS_BUCKETS = exponential_buckets(10e-6, 2, 15)  # 10 µs .. 164 ms
STATE_BYTES_BUCKETS = exponential_buckets(100, 2, 10)  # 100 B .. 51 kB
BATCH_GAMES_BUCKETS = exponential_buckets(1, 4, 9)  # 1 .. 65536 games
EPISODE_TICKS_BUCKETS = exponential_buckets(25, 2, 10)  # 25 .. 12800 half-turns
RPC_SECONDS_BUCKETS = exponential_buckets(25e-6, 2, 18)  # 25 µs .. 3.3 s
OUTCOME_NAMES = ("win", "loss", "draw", "truncated")

RECORDING = True  # False: the hot path records nothing (a process started without --metrics-port)

# The games and training (fed by record_step) -----------------------------------------------

ACTION_SECONDS = ArrayHistogram(
    "generals_action_processing_seconds",
    "Engine time of one batch of actions: the step and the encoded reply.",
    ACTION_SECONDS_BUCKETS,
)
BATCH_GAMES = ArrayHistogram("generals_batch_games", "Games per engine step call.", BATCH_GAMES_BUCKETS)
EPISODE_TICKS = ArrayHistogram(
    "generals_episode_length_ticks",
    "Length of ended episodes in ticks (seen when the step returned observations).",
    EPISODE_TICKS_BUCKETS,
)
INVALID_ACTIONS = Counter(
    "generals_invalid_actions_total",
    "Step requests refused whole for malformed actions or ids (INVALID_ARGUMENT); "
    "well-formed illegal moves are no-ops, as in generals.io, and not counted.",
)

# gRPC --------------------------------------------------------------------------------------

_RPC_LABELS = ["grpc_service", "grpc_method", "grpc_code"]
RPC_SERVER_SECONDS = Histogram(
    "gamefleet_grpc_server_handling_seconds",
    "Served RPCs: time from the call's arrival to its status (a stream: its whole life).",
    _RPC_LABELS,
    buckets=RPC_SECONDS_BUCKETS,
)
RPC_CLIENT_SECONDS = Histogram(
    "gamefleet_grpc_client_handling_seconds",
    "RPCs this process made (the router's calls to shards), by target.",
    [*_RPC_LABELS, "target"],
    buckets=RPC_SECONDS_BUCKETS,
)
SHARD_CALLS_INFLIGHT = Gauge(
    "gamefleet_shard_calls_inflight", "Router calls in flight to each shard.", ["target"]
)

# The process -------------------------------------------------------------------------------

INFO = Gauge("gamefleet_info", "1 for each running fleet process, by role.", ["role", "version"])
SERVING = Gauge("gamefleet_serving", "1 while the process reports SERVING to health checks.", ["role"])


class _Tallies(Collector):
    """The counters record_step adds to: plain floats under one lock (a Prometheus Counter takes
    a lock per add, and a batch makes up to 40 adds), exported as their families at scrape."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.turns = self.actions = self.terminated = self.truncated = 0.0
        self.outcomes = [[0.0] * len(OUTCOME_NAMES) for _ in range(MAX_SEATS)]
        self.rewards = [0.0] * MAX_SEATS
        self.seats = 0  # the most players a stepped game had: the seats exported

    def collect(self) -> Iterator[Any]:
        with self.lock:
            turns, actions, terminated, truncated = self.turns, self.actions, self.terminated, self.truncated
            outcomes = [list(row) for row in self.outcomes[: self.seats]]
            rewards = self.rewards[: self.seats]
        yield CounterMetricFamily(
            "generals_turns_processed", "Game ticks stepped (one per game per step).", value=turns
        )
        yield CounterMetricFamily(
            "generals_actions",
            "Seat actions processed (games x players per step, passes too).",
            value=actions,
        )
        episodes = CounterMetricFamily("generals_episodes_finished", "Episodes that ended.", labels=["end"])
        episodes.add_metric(["terminated"], terminated)
        episodes.add_metric(["truncated"], truncated)
        yield episodes
        by_seat = CounterMetricFamily(
            "generals_episode_outcomes", "Ended episodes by seat and outcome.", labels=["seat", "outcome"]
        )
        for seat, row in enumerate(outcomes):
            for name, count in zip(OUTCOME_NAMES, row, strict=True):
                by_seat.add_metric([str(seat), name], count)
        yield by_seat
        paid = GaugeMetricFamily(
            "generals_reward_sum", "Running sum of the rewards paid to each seat.", labels=["seat"]
        )
        for seat, total in enumerate(rewards):
            paid.add_metric([str(seat)], total)
        yield paid


_tallies = _Tallies()
REGISTRY.register(_tallies)


def record_step(stepped: Any, players: int, seconds: float) -> None:
    """One engine step of a batch: counts, time, and the episodes it ended.

    `stepped` is the shard's step result in request order (rewards [B, P], terminated,
    truncated, status, reset [B], and the views the call returned, if any). The per-seat
    work runs only when a reward was paid or an episode ended.
    """
    if not RECORDING:
        return
    ran = stepped.status == pb.STEPPED
    turns = int(np.count_nonzero(ran))
    ACTION_SECONDS.observe(seconds)
    BATCH_GAMES.observe(ran.size)
    rewards = stepped.rewards.reshape(-1)
    paid = np.flatnonzero(rewards) if rewards.any() else None
    t = _tallies
    with t.lock:
        t.turns += turns
        t.actions += turns * players
        t.seats = max(t.seats, players)
        if paid is not None:
            for seat, total in enumerate(np.bincount(paid % players, rewards[paid], players).tolist()):
                t.rewards[seat] += total
    if stepped.terminated.any() or stepped.truncated.any():
        ended = (stepped.terminated | stepped.truncated) & ran
        if ended.any():
            _record_ended(stepped, ended)


def _record_ended(stepped: Any, ended: np.ndarray) -> None:
    terminated = stepped.terminated & ended
    finished = int(np.count_nonzero(terminated))
    truncated = int(np.count_nonzero(ended)) - finished
    winners = stepped.rewards[terminated] > 0  # [ended by a win or a draw, players]
    wins = np.count_nonzero(winners, axis=0).tolist()
    decided = int(np.count_nonzero(winners.any(axis=1)))
    draws = finished - decided  # no seat won (all eliminated together)
    t = _tallies
    with t.lock:
        t.terminated += finished
        t.truncated += truncated
        for seat, won in enumerate(wins):
            row = t.outcomes[seat]
            row[0] += won
            row[1] += decided - won
            row[2] += draws
            row[3] += truncated
    EPISODE_TICKS.observe_many(_episode_ticks(stepped, ended))


def _episode_ticks(stepped: Any, ended: np.ndarray) -> np.ndarray:
    """The last tick of the ended episodes the reply shows: the final views of autoreset games,
    the returned views of the others (nothing when the call skipped observations)."""
    if stepped.views is None:
        return np.zeros(0, np.int32)
    parts = [stepped.views.observation.tick[ended & ~stepped.reset]]
    if stepped.final is not None:
        parts.append(stepped.final.tick)
    return np.concatenate(parts)


def process_started(role: str) -> None:
    from importlib.metadata import version

    INFO.labels(role, version("gamefleet")).set(1)
    SERVING.labels(role).set(0)


def serving(role: str, on: bool) -> None:
    SERVING.labels(role).set(1 if on else 0)
