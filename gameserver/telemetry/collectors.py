"""Metrics read from live objects when Prometheus scrapes, so the hot path never updates them.

Servers hand their objects to `watch_*` (held weakly: a stopped server's objects drop out).
One process normally holds one shard or one router; tests may hold several, and the
families then sum over them.
"""

from __future__ import annotations

import weakref
from collections.abc import Iterator
from typing import Any

import numpy as np
from prometheus_client.metrics_core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.registry import REGISTRY, Collector
from prometheus_client.utils import floatToGoString

from . import grpc_server
from .metrics import STATE_BYTES_BUCKETS

_games: weakref.WeakSet[Any] = weakref.WeakSet()  # ShardGames
_channels: weakref.WeakSet[Any] = weakref.WeakSet()  # the router's ShardChannels
_durability: weakref.WeakSet[Any] = weakref.WeakSet()  # Durability
_replay: weakref.WeakSet[Any] = weakref.WeakSet()  # ReplayBuffer
_large_calls: weakref.WeakSet[Any] = weakref.WeakSet()  # a server's LargeCalls (wire/admission.py)


def watch_games(games: Any) -> None:
    """A shard's ShardGames: active games, memory per game, state bytes per game."""
    _games.add(games)


def watch_channels(channels: Any) -> None:
    """A router's ShardChannels: its pool of shard connections."""
    _channels.add(channels)


def watch_durability(durability: Any) -> None:
    """A shard's Durability: Redis snapshot and log lag, the writer's backlog, failures."""
    _durability.add(durability)


def watch_replay(buffer: Any) -> None:
    """A ReplayBuffer: inserts, samples, size."""
    _replay.add(buffer)


def watch_large_calls(gate: Any) -> None:
    """A shard's or router's LargeCalls: large requests served now, waiting, refused."""
    _large_calls.add(gate)


def _gauge(name: str, documentation: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, documentation, value=value)


def _counter(name: str, documentation: str, value: float) -> CounterMetricFamily:
    return CounterMetricFamily(name, documentation, value=value)


class LiveCollector(Collector):
    """Every family read from the watched objects (a family only once something of its kind is watched)."""

    def collect(self) -> Iterator[Any]:
        yield from self._games()
        yield from self._connections()
        yield from self._durability()
        yield from self._replay()
        yield from self._large_calls()

    def _games(self) -> Iterator[Any]:
        pools = [pool for games in list(_games) for pool in games.pools]
        if not _games:
            return
        active = sum(pool.active_games for pool in pools)
        memory = sum(pool.memory_bytes() for pool in pools)
        yield _gauge("generals_games_active", "Games held by the shard.", active)
        yield _gauge("generals_pools", "Game pools (one per config and autoreset mode).", len(pools))
        yield _gauge("generals_pool_memory_bytes", "Resident bytes of the game pools.", memory)
        yield _gauge(
            "generals_game_memory_bytes",
            "Resident pool bytes per active game (free slots included).",
            memory / active if active else 0.0,
        )
        yield _state_bytes(pools)
        yield _counter(
            "gamefleet_games_restored",
            "Games restored from Redis at a tick their clients may have passed (DATA_LOSS until read).",
            sum(games.restored_total for games in list(_games)),
        )

    def _large_calls(self) -> Iterator[Any]:
        gates = list(_large_calls)
        families = (
            (_gauge, "active", "Calls with a large request (--large-call-mb) served now (<= --large-calls)."),
            (_gauge, "waiting", "Large calls waiting for a turn."),
            (_counter, "refused", "Large calls refused RESOURCE_EXHAUSTED: too many at once."),
        )
        for family, field, documentation in families if gates else ():
            yield family(
                f"gamefleet_large_calls_{field}", documentation, sum(getattr(g, field) for g in gates)
            )

    def _connections(self) -> Iterator[Any]:
        interceptors = grpc_server.live_interceptors()
        if interceptors:
            yield _gauge(
                "gamefleet_agent_connections",
                f"Client connections that called within the last {grpc_server.PEER_WINDOW_S:g} s.",
                sum(i.connections() for i in interceptors),
            )
        if _channels:
            yield _gauge(
                "gamefleet_shard_links",
                "The router's open shard connections.",
                sum(c.links for c in _channels),
            )

    def _durability(self) -> Iterator[Any]:
        lags = [d.lag() for d in list(_durability)]
        if not lags:
            return
        yield _gauge(
            "gamefleet_redis_snapshot_lag_seconds",
            "Age of the oldest game change not yet recorded in Redis.",
            max(lag.snapshot_s for lag in lags),
        )
        yield _gauge(
            "gamefleet_redis_log_lag_seconds",
            "Span of the action log that records do not cover yet (what a recovery replays).",
            max(lag.log_s for lag in lags),
        )
        yield _gauge(
            "gamefleet_redis_queued_writes",
            "Captures waiting for the writer.",
            sum(x.queued_writes for x in lags),
        )
        yield _gauge(
            "gamefleet_redis_degraded",
            "1 while an acknowledged change is not durable.",
            any(x.degraded for x in lags),
        )
        yield _counter(
            "gamefleet_redis_unlogged_steps",
            "Calls applied without a log entry (degraded mode).",
            sum(x.unlogged_steps for x in lags),
        )
        yield _counter(
            "gamefleet_redis_failed_writes", "Record writes that failed.", sum(x.failed_writes for x in lags)
        )

    def _replay(self) -> Iterator[Any]:
        infos = [buffer.info() for buffer in list(_replay)]
        if not infos:
            return
        yield _counter("gamefleet_replay_inserts", "Experiences inserted.", sum(i["inserted"] for i in infos))
        yield _counter("gamefleet_replay_samples", "Experiences sampled.", sum(i["sampled"] for i in infos))
        yield _gauge("gamefleet_replay_size", "Experiences held.", sum(i["size"] for i in infos))
        yield _gauge(
            "gamefleet_replay_capacity",
            "Experiences the buffers hold at most.",
            sum(i["capacity"] for i in infos),
        )


def _state_bytes(pools: list[Any]) -> HistogramMetricFamily:
    """Each active game's state size (its pool's per-slot bytes), as a histogram over games."""
    bounds = np.asarray(STATE_BYTES_BUCKETS)
    counts = np.zeros(bounds.size + 1, np.int64)
    total = 0.0
    for pool in pools:
        per_game = sum(a.nbytes for a in pool.batch.arrays().values()) / max(pool.capacity, 1)
        counts[np.searchsorted(bounds, per_game)] += pool.active_games
        total += per_game * pool.active_games
    family = HistogramMetricFamily("generals_game_state_bytes", "State bytes of each active game.")
    les = [*(floatToGoString(b) for b in bounds), "+Inf"]
    family.add_metric([], list(zip(les, np.cumsum(counts).tolist(), strict=True)), total)
    return family


REGISTRY.register(LiveCollector())
