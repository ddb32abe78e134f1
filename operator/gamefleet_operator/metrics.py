"""The operator's own Prometheus metrics: reconciles, errors, durations, and each fleet's size."""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable
from typing import Any

from prometheus_client import Counter, Gauge, Histogram

RECONCILES = Counter("gamefleet_operator_reconciles_total", "Handler runs.", ["handler"])
ERRORS = Counter("gamefleet_operator_reconcile_errors_total", "Handler runs that raised.", ["handler"])
DURATION = Histogram(
    "gamefleet_operator_reconcile_seconds",
    "Handler run time.",
    ["handler"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
SHARDS = Gauge("gamefleet_operator_fleet_shards", "Shards of a fleet.", ["namespace", "fleet", "kind"])
SHARD_KINDS = ("desired", "current", "ready")
DECISIONS = Counter(
    "gamefleet_operator_autoscale_decisions_total",
    "Autoscaler rounds by what they decided.",
    ["namespace", "fleet", "direction"],
)
RECOMMENDED = Gauge(
    "gamefleet_operator_autoscale_recommended_shards",
    "The autoscaler's last decision.",
    ["namespace", "fleet"],
)
UTILISATION = Gauge(
    "gamefleet_operator_fleet_utilisation", "Active games / capacity.", ["namespace", "fleet"]
)


def observed(handler: Callable[..., Any]) -> Callable[..., Any]:
    """Count, time and count the failures of a kopf handler (kopf passes keyword arguments only)."""
    name = handler.__name__
    ERRORS.labels(name)  # the series exists (at 0) before the first failure

    @functools.wraps(handler)
    def run(**kwargs: Any) -> Any:
        RECONCILES.labels(name).inc()
        with DURATION.labels(name).time():
            try:
                return handler(**kwargs)
            except Exception:
                ERRORS.labels(name).inc()
                raise

    return run


def record_fleet(namespace: str, fleet: str, status: dict[str, Any], desired: int) -> None:
    """Export a fleet's status numbers (the same the printer columns show)."""
    values = (desired, status["shards"], status["readyShards"])
    for kind, value in zip(SHARD_KINDS, values, strict=True):
        SHARDS.labels(namespace, fleet, kind).set(value)
    UTILISATION.labels(namespace, fleet).set(status["utilisation"])


def record_decision(namespace: str, fleet: str, current: int, decided: int) -> None:
    """One autoscaler round: up, down or hold, and the shards it settled on."""
    direction = "up" if decided > current else "down" if decided < current else "hold"
    DECISIONS.labels(namespace, fleet, direction).inc()
    RECOMMENDED.labels(namespace, fleet).set(decided)


def forget_fleet(namespace: str, fleet: str) -> None:
    """Drop a deleted fleet's series (they are set together, so the first miss means none are left)."""
    with contextlib.suppress(KeyError):
        for kind in SHARD_KINDS:
            SHARDS.remove(namespace, fleet, kind)
        UTILISATION.remove(namespace, fleet)
        RECOMMENDED.remove(namespace, fleet)
