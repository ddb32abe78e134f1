"""/metrics over HTTP for a fleet process, and the `--metrics-port` option that places it.

The operator's ConfigMap sets GAMEFLEET_METRICS_PORT on every pod when metrics are on and
leaves it out when they are off, so the option defaults to that variable, and 0 means off.
`auto` binds a free port (local fleets and tests); the process prints where it listens.
"""

from __future__ import annotations

import argparse
import os
import sys

from prometheus_client import start_http_server

METRICS_PORT_ENV = "GAMEFLEET_METRICS_PORT"
READY_PREFIX = "gamefleet metrics on "
AUTO = -1


def metrics_port(value: str) -> int:
    """argparse type: a port, 0 (off) or `auto` (a free port)."""
    if value == "auto":
        return AUTO
    try:
        port = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"a port number, 0 (off) or auto; got {value!r}") from None
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"a port is in [0, 65535]; got {port}")
    return port


def add_metrics_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--metrics-port",
        type=metrics_port,
        default=os.environ.get(METRICS_PORT_ENV, "0"),
        help=f"Prometheus /metrics port; 0 = off, auto = a free one (default ${METRICS_PORT_ENV} or 0)",
    )


def serve_metrics(host: str, port: int) -> int | None:
    """Start /metrics on host:port in a daemon thread; the bound port, or None when `port` is 0."""
    if port == 0:
        return None
    server, _ = start_http_server(0 if port == AUTO else port, addr=host)
    bound = server.server_address[1]
    print(f"{READY_PREFIX}http://{host}:{bound}/metrics", file=sys.stderr, flush=True)
    return bound
