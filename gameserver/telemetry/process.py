"""What every fleet process (shard, router) does for telemetry when it starts and stops."""

from __future__ import annotations

import asyncio
import logging
import os
import sys
from collections.abc import Coroutine
from typing import Any

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


def run_server(role: str, host: str, metrics_port: int, serving: Coroutine[Any, Any, None]) -> int:
    """A server process's life: logging and telemetry on, `serving` run to its end (a signal),
    the spans still buffered exported; exit code 0."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    start(role, host, metrics_port)
    try:
        asyncio.run(serving)
    finally:
        stop()
    return 0
