"""What every fleet process (shard, router) does for telemetry when it starts and stops."""

from __future__ import annotations

import os
import sys

from . import metrics, tracing
from .exposition import serve_metrics


def start(role: str, host: str, metrics_port: int) -> None:
    """Its info metric, /metrics when a port is given, and tracing when OTEL_* names an endpoint."""
    metrics.process_started(role)
    metrics.RECORDING = metrics_port != 0  # nobody could read them: skip them on the hot path
    serve_metrics(host, metrics_port)
    if tracing.configure_from_env(f"gamefleet-{role}"):
        endpoint = (
            os.environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") or os.environ["OTEL_EXPORTER_OTLP_ENDPOINT"]
        )
        print(f"gamefleet tracing to {endpoint}", file=sys.stderr, flush=True)


def stop() -> None:
    """Export the spans still buffered."""
    tracing.shutdown()
