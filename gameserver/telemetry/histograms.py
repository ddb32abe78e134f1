"""A Prometheus histogram fed whole numpy arrays: one searchsorted + bincount per batch.

prometheus_client's Histogram takes one value per call; the training metrics see a batch
of finished episodes at once and must not call per game.
"""

from __future__ import annotations

import bisect
import threading
from collections.abc import Iterator, Sequence

import numpy as np
from prometheus_client.metrics_core import HistogramMetricFamily
from prometheus_client.registry import REGISTRY, Collector, CollectorRegistry
from prometheus_client.utils import floatToGoString


def exponential_buckets(start: float, factor: float, count: int) -> tuple[float, ...]:
    """`count` upper bounds start, start*factor, ... (+Inf is implied)."""
    if start <= 0 or factor <= 1 or count < 1:
        raise ValueError(f"need start > 0, factor > 1, count >= 1; got {start}, {factor}, {count}")
    return tuple(start * factor**i for i in range(count))


class ArrayHistogram(Collector):
    """An unlabelled histogram: `observe_many(values)` adds a whole array, `observe(v)` one value."""

    def __init__(
        self,
        name: str,
        documentation: str,
        buckets: Sequence[float],
        registry: CollectorRegistry | None = REGISTRY,
    ) -> None:
        self.name = name
        self.documentation = documentation
        self.bounds = np.asarray(buckets, np.float64)
        if self.bounds.size == 0 or np.any(np.diff(self.bounds) <= 0):
            raise ValueError(f"{name}: buckets must be ascending and not empty")
        self._bound_list = self.bounds.tolist()
        self._counts = [0] * (self.bounds.size + 1)  # the last one is +Inf
        self._sum = 0.0
        self._lock = threading.Lock()
        if registry is not None:
            registry.register(self)

    def observe(self, value: float) -> None:
        index = bisect.bisect_left(self._bound_list, value)
        with self._lock:
            self._counts[index] += 1
            self._sum += value

    def observe_many(self, values: np.ndarray) -> None:
        if values.size == 0:
            return
        per_bucket = np.bincount(np.searchsorted(self.bounds, values), minlength=len(self._counts))
        total = float(values.sum())
        with self._lock:
            for index in np.flatnonzero(per_bucket).tolist():
                self._counts[index] += int(per_bucket[index])
            self._sum += total

    def collect(self) -> Iterator[HistogramMetricFamily]:
        with self._lock:
            counts, total = list(self._counts), self._sum
        cumulative = np.cumsum(counts).tolist()
        bounds = [*(floatToGoString(b) for b in self._bound_list), "+Inf"]
        family = HistogramMetricFamily(self.name, self.documentation)
        family.add_metric([], list(zip(bounds, cumulative, strict=True)), total)
        yield family

    def describe(self) -> list[HistogramMetricFamily]:
        return [HistogramMetricFamily(self.name, self.documentation)]
