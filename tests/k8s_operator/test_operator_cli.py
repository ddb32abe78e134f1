"""`gamefleet operator`: the CRD printer, and how it starts kopf (kopf.run itself stubbed)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import kopf
import prometheus_client
import pytest
from gamefleet_operator import metrics
from gamefleet_operator.registry import StoreRegistries

from gameserver.cli import main

ROOT = Path(__file__).resolve().parents[2]


def test_print_crd_is_the_manifest(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["operator", "--print-crd"]) == 0
    assert capsys.readouterr().out == (ROOT / "manifests" / "crd.yaml").read_text()


@pytest.fixture
def started(monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    seen: dict[str, Any] = {}
    monkeypatch.setattr(kopf, "run", lambda **kwargs: seen.update(kwargs))
    monkeypatch.setattr(kopf, "configure", lambda **kwargs: seen.update(logging=kwargs))
    monkeypatch.setattr(prometheus_client, "start_http_server", lambda port: seen.update(metrics_port=port))
    return seen


def test_runs_kopf_cluster_wide_with_liveness_and_metrics(started: dict[str, Any]) -> None:
    assert main(["operator", "--liveness-port", "8181", "--metrics-port", "9191"]) == 0
    assert started["liveness_endpoint"] == "http://0.0.0.0:8181/healthz"
    assert started["metrics_port"] == 9191
    assert started["clusterwide"] is True
    assert started["standalone"] is False and started["peering_name"] == "gamefleet"  # leader election
    assert started["priority"] >= 1
    assert isinstance(started["memo"].registries, StoreRegistries)
    handlers = {h.id for h in started["registry"]._changing.get_all_handlers()}
    assert {"apply_fleet", "cleanup"} <= handlers


def test_namespaced_mode(started: dict[str, Any]) -> None:
    assert main(["operator", "-n", "games", "-n", "training", "--verbose"]) == 0
    assert started["clusterwide"] is False and started["namespaces"] == ["games", "training"]
    assert started["logging"] == {"verbose": True}


def test_handler_metrics_count_runs_and_failures() -> None:
    def flaky(**_: Any) -> None:
        raise RuntimeError("boom")

    wrapped = metrics.observed(flaky)
    before = prometheus_client.REGISTRY.get_sample_value(
        "gamefleet_operator_reconcile_errors_total", {"handler": "flaky"}
    )
    with pytest.raises(RuntimeError):
        wrapped(body={})
    sample = prometheus_client.REGISTRY.get_sample_value
    assert sample("gamefleet_operator_reconciles_total", {"handler": "flaky"}) >= 1
    assert sample("gamefleet_operator_reconcile_errors_total", {"handler": "flaky"}) == (before or 0) + 1
    assert sample("gamefleet_operator_reconcile_seconds_count", {"handler": "flaky"}) >= 1


def test_fleet_gauges_are_set_and_forgotten() -> None:
    metrics.record_fleet("ns", "gone", {"shards": 3, "readyShards": 2, "utilisation": 0.5}, 4)
    sample = prometheus_client.REGISTRY.get_sample_value
    labels = {"namespace": "ns", "fleet": "gone"}
    assert sample("gamefleet_operator_fleet_shards", labels | {"kind": "desired"}) == 4
    assert sample("gamefleet_operator_fleet_utilisation", labels) == 0.5
    metrics.forget_fleet("ns", "gone")
    metrics.forget_fleet("ns", "gone")  # twice is fine
    assert sample("gamefleet_operator_fleet_shards", labels | {"kind": "ready"}) is None


def test_replicas_take_distinct_priorities_and_standalone_skips_peering(started: dict[str, Any]) -> None:
    """kopf pauses every operator when two share a priority: each process draws its own."""
    priorities = set()
    for _ in range(5):
        assert main(["operator"]) == 0
        priorities.add(started["priority"])
    assert len(priorities) == 5
    assert main(["operator", "--standalone"]) == 0
    assert started["standalone"] is True and started["peering_name"] is None
