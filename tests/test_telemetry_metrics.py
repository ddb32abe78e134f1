"""Prometheus metrics: what a shard, the router's pieces, Redis durability and the operator export."""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from types import SimpleNamespace

import grpc
import numpy as np
import pytest
from conftest import BackgroundShard
from grpc_health.v1 import health_pb2, health_pb2_grpc
from prometheus_client import REGISTRY, CollectorRegistry, generate_latest
from redis_fixture import RedisServer

from gameserver.client import FleetClient, InvalidArgument
from gameserver.engine import GameConfig
from gameserver.fleet.durability import Durability
from gameserver.fleet.store import FleetStore
from gameserver.pool import GamePool
from gameserver.telemetry import collectors, grpc_server, metrics
from gameserver.telemetry.exposition import AUTO, READY_PREFIX, add_metrics_argument, serve_metrics
from gameserver.telemetry.histograms import ArrayHistogram, exponential_buckets
from gameserver.wire.generated import batch_pb2 as pb

SHORT = GameConfig(max_ticks=4)


SERVICE = "gamefleet.v1.BatchGameService"


def value(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def changes(samples: dict[str, tuple[str, dict[str, str]]], action: Callable[[], object]) -> dict[str, float]:
    """How much each named sample (key: (metric, labels)) grew while `action` ran."""
    before = {key: value(name, **labels) for key, (name, labels) in samples.items()}
    action()
    return {key: value(name, **labels) - before[key] for key, (name, labels) in samples.items()}


def rpc(method: str, code: str) -> tuple[str, dict[str, str]]:
    labels = {"grpc_service": SERVICE, "grpc_method": method, "grpc_code": code}
    return "gamefleet_grpc_server_handling_seconds_count", labels


def test_buckets_are_the_designed_ones() -> None:
    assert metrics.ACTION_SECONDS_BUCKETS[0] == pytest.approx(10e-6)
    assert len(metrics.ACTION_SECONDS_BUCKETS) == 15
    assert metrics.ACTION_SECONDS_BUCKETS[-1] == pytest.approx(10e-6 * 2**14)
    assert tuple(100.0 * 2**i for i in range(10)) == metrics.STATE_BYTES_BUCKETS
    with pytest.raises(ValueError, match="factor > 1"):
        exponential_buckets(1, 1, 3)


def test_array_histogram_takes_a_batch_like_one_value_at_a_time() -> None:
    registry = CollectorRegistry()
    batch = ArrayHistogram("lengths", "test", (10, 20, 40), registry)
    values = np.array([1, 10, 11, 20, 39, 40, 41, 1000])
    batch.observe_many(values)
    batch.observe_many(np.zeros(0))
    batch.observe(5)
    buckets = {
        le: registry.get_sample_value("lengths_bucket", {"le": le}) for le in ("10.0", "20.0", "40.0", "+Inf")
    }
    assert buckets == {"10.0": 3, "20.0": 5, "40.0": 7, "+Inf": 9}  # le is inclusive, as in Prometheus
    assert registry.get_sample_value("lengths_count") == 9
    assert registry.get_sample_value("lengths_sum") == values.sum() + 5
    with pytest.raises(ValueError, match="ascending"):
        ArrayHistogram("bad", "test", (2, 1), None)


def _stepped(rewards: list[list[float]], terminated: list[bool], truncated: list[bool], status: list[int]):
    games = len(status)
    return SimpleNamespace(
        rewards=np.array(rewards, np.float32),
        terminated=np.array(terminated),
        truncated=np.array(truncated),
        status=np.array(status, np.uint8),
        reset=np.zeros(games, bool),
        views=SimpleNamespace(observation=SimpleNamespace(tick=np.full(games, 7, np.int32))),
        final=None,
    )


def test_outcomes_per_seat_from_one_batch() -> None:
    """Game 0: seat 1 wins; game 1: truncated; game 2: nobody wins (a draw); game 3 still running;
    game 4 had already finished (its flags repeat but it did not step, so it is not counted again)."""
    s, f = pb.STEPPED, pb.FINISHED
    stepped = _stepped(
        [[-1, 1], [0, 0], [-1, -1], [0, 0], [1, -1]],
        [True, False, True, False, True],
        [False, True, False, False, False],
        [s, s, s, s, f],
    )
    samples = {
        f"{seat} {outcome}": ("generals_episode_outcomes_total", {"seat": seat, "outcome": outcome})
        for seat in "01"
        for outcome in ("win", "loss", "draw", "truncated")
    }
    samples |= {
        end: ("generals_episodes_finished_total", {"end": end}) for end in ("terminated", "truncated")
    }
    samples |= {f"reward {seat}": ("generals_reward_sum", {"seat": seat}) for seat in "01"}
    samples |= {
        "turns": ("generals_turns_processed_total", {}),
        "actions": ("generals_actions_total", {}),
        "lengths": ("generals_episode_length_ticks_count", {}),
        "ticks": ("generals_episode_length_ticks_sum", {}),
    }
    grown = changes(samples, lambda: metrics.record_step(stepped, players=2, seconds=0.001))
    assert grown == {
        "0 win": 0, "0 loss": 1, "0 draw": 1, "0 truncated": 1,
        "1 win": 1, "1 loss": 0, "1 draw": 1, "1 truncated": 1,
        "terminated": 2, "truncated": 1,
        "reward 0": -1, "reward 1": -1,  # every row's rewards count, also the finished game's
        "turns": 4, "actions": 8, "lengths": 3, "ticks": 3 * 7,
    }  # fmt: skip


def test_a_served_batch_counts_turns_time_and_truncated_episodes(fleet: FleetClient) -> None:
    samples = {
        "turns": ("generals_turns_processed_total", {}),
        "actions": ("generals_actions_total", {}),
        "timed": ("generals_action_processing_seconds_count", {}),
        "batches": ("generals_batch_games_count", {}),
        "truncated": ("generals_episodes_finished_total", {"end": "truncated"}),
        "seat 1": ("generals_episode_outcomes_total", {"seat": "1", "outcome": "truncated"}),
        "ticks": ("generals_episode_length_ticks_sum", {}),
        "served": rpc("SubmitBatchActions", "OK"),
    }

    def play() -> None:
        created = fleet.create(8, SHORT, autoreset=True)
        for _ in range(SHORT.max_ticks):
            fleet.step(created.ids, np.full((8, 2), -1, np.int32))
        assert value("generals_games_active") >= 8
        assert value("generals_game_memory_bytes") > 0
        assert value("generals_game_state_bytes_count") == value("generals_games_active")
        fleet.close(created.ids)

    assert changes(samples, play) == {
        "turns": 32, "actions": 64, "timed": 4, "batches": 4, "served": 4,
        "truncated": 8, "seat 1": 8, "ticks": 8 * SHORT.max_ticks,
    }  # fmt: skip


def test_a_malformed_step_counts_as_invalid_actions(fleet: FleetClient) -> None:
    created = fleet.create(2, SHORT)

    def refused() -> None:
        counted = value("generals_invalid_actions_total")
        with pytest.raises(InvalidArgument):
            fleet.step(created.ids, np.zeros((3, 2), np.int32))  # three rows for two games
        # the server sends a refusal's status before its handler unwinds (and records it)
        deadline = time.monotonic() + 10
        while value("generals_invalid_actions_total") == counted and time.monotonic() < deadline:
            time.sleep(0.01)

    samples = {
        "invalid": ("generals_invalid_actions_total", {}),
        "status": rpc("SubmitBatchActions", "INVALID_ARGUMENT"),
    }
    assert changes(samples, refused) == {"invalid": 1, "status": 1}
    fleet.close(created.ids)


def test_agent_connections_count_the_clients_that_called() -> None:
    """Three agents (three connections: channels of one process share one unless told not to)."""
    before = set(grpc_server.live_interceptors())
    server = BackgroundShard(seed=1)
    try:
        (interceptor,) = set(grpc_server.live_interceptors()) - before
        assert interceptor.connections() == 0
        channels = [
            grpc.insecure_channel(server.address, [("grpc.use_local_subchannel_pool", 1)]) for _ in range(3)
        ]
        for channel in channels:
            health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=30)
        assert interceptor.connections() == 3
        assert interceptor.connections(window_s=0) == 0  # none called in the last instant
        for channel in channels:
            channel.close()
    finally:
        server.stop()


def test_metrics_endpoint_serves_the_registry(fleet: FleetClient) -> None:
    fleet.topology()
    port = serve_metrics("127.0.0.1", AUTO)
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
    assert 'generals_action_processing_seconds_bucket{le="1e-05"}' in text
    assert "gamefleet_grpc_server_handling_seconds_bucket" in text
    assert serve_metrics("127.0.0.1", 0) is None  # 0 = off


@pytest.mark.parametrize(
    ("given", "environment", "expected"),
    [
        ([], None, 0),
        ([], "9100", 9100),
        (["--metrics-port", "auto"], "9100", AUTO),
        (["--metrics-port", "0"], "9100", 0),
    ],
)
def test_metrics_port_option(monkeypatch, given, environment, expected) -> None:
    if environment is None:
        monkeypatch.delenv("GAMEFLEET_METRICS_PORT", raising=False)
    else:
        monkeypatch.setenv("GAMEFLEET_METRICS_PORT", environment)
    parser = argparse.ArgumentParser()
    add_metrics_argument(parser)
    assert parser.parse_args(given).metrics_port == expected


@pytest.mark.parametrize("bad", ["-1", "70000", "nine"])
def test_bad_metrics_port_is_refused(bad: str, capsys) -> None:
    parser = argparse.ArgumentParser()
    add_metrics_argument(parser)
    with pytest.raises(SystemExit):
        parser.parse_args(["--metrics-port", bad])
    assert "--metrics-port" in capsys.readouterr().err


def test_redis_lag_is_read_from_durability_at_scrape(tmp_path) -> None:
    with RedisServer(tmp_path) as redis_server:
        store = FleetStore(redis_server.url, "lag", ttl_s=600, timeout_s=2)
        durability = Durability(store, "lag-shard", "log", snapshot_every=10_000, snapshot_interval_s=60)
        pool = durability.wrap(GamePool(SHORT, 8))
        collectors.watch_durability(durability)
        ids = pool.create(4)
        pool.flush()  # every game recorded: nothing trails
        assert durability.lag().snapshot_s == 0 and durability.lag().log_s == 0
        for _ in range(3):
            time.sleep(0.03)
            pool.step(ids, np.full((4, 2), -1, np.int32))
        lag = durability.lag()
        assert lag.log_s >= 0.05  # three logged steps past the last record, 30 ms apart
        assert lag.snapshot_s >= 0.09
        text = generate_latest(REGISTRY).decode()
        assert "gamefleet_redis_log_lag_seconds" in text and "gamefleet_redis_failed_writes_total" in text
        assert value("gamefleet_redis_log_lag_seconds") >= 0.05
        pool.flush()
        assert durability.lag().log_s == 0
        durability.close()


def test_operator_counts_autoscaler_decisions() -> None:
    from gamefleet_operator import metrics as operator_metrics

    def count(direction: str) -> float:
        labels = {"namespace": "ns", "fleet": "scaled", "direction": direction}
        return value("gamefleet_operator_autoscale_decisions_total", **labels)

    before = [count(d) for d in ("up", "down", "hold")]
    for current, decided in ((2, 4), (4, 4), (4, 3)):
        operator_metrics.record_decision("ns", "scaled", current, decided)
    assert np.subtract([count(d) for d in ("up", "down", "hold")], before).tolist() == [1, 1, 1]
    assert value("gamefleet_operator_autoscale_recommended_shards", namespace="ns", fleet="scaled") == 3


def test_replay_serve_exports_its_buffer_on_metrics_port() -> None:
    command = [sys.executable, "-m", "gameserver.cli", "replay", "serve", "--port", "0", "--height", "6",
               "--width", "6", "--capacity", "100", "--metrics-port", "auto"]  # fmt: skip
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        line = process.stderr.readline()
        assert line.startswith(READY_PREFIX), line
        text = urllib.request.urlopen(line[len(READY_PREFIX) :].strip(), timeout=10).read().decode()
        assert "gamefleet_replay_capacity 100.0" in text
        assert 'gamefleet_info{role="replay"' in text
    finally:
        process.terminate()
        process.wait(20)
