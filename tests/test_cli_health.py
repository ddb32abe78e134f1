"""`gamefleet health`: 0 once the server says SERVING, 1 (naming what it saw) when it does not
within --wait, against real gRPC servers on 127.0.0.1."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import grpc
import pytest
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from gameserver.cli import main


@pytest.fixture
def not_serving() -> Iterator[str]:
    """A gRPC server whose health check answers NOT_SERVING (a draining shard's answer)."""
    server = grpc.server(ThreadPoolExecutor(2))
    servicer = health.HealthServicer()
    servicer.set("", health_pb2.HealthCheckResponse.NOT_SERVING)
    health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        yield f"127.0.0.1:{port}"
    finally:
        server.stop(0)


def closed_port() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"127.0.0.1:{s.getsockname()[1]}"


def test_a_serving_shard_passes_at_once(shard, capsys) -> None:
    assert main(["health", shard.address]) == 0
    assert f"{shard.address}: SERVING" in capsys.readouterr().err


def test_not_serving_fails_after_the_wait_naming_the_state(not_serving, capsys) -> None:
    started = time.monotonic()
    assert main(["health", not_serving, "--wait", "0.6", "--interval", "0.2"]) == 1
    assert time.monotonic() - started >= 0.4  # it kept trying
    err = capsys.readouterr().err
    assert "NOT_SERVING" in err and "is not SERVING after" in err


def test_nothing_listening_reports_unavailable(capsys) -> None:
    assert main(["health", closed_port(), "--timeout", "1"]) == 1
    assert "UNAVAILABLE" in capsys.readouterr().err


def test_an_unknown_health_service_is_named(shard, capsys) -> None:
    assert main(["health", shard.address, "--service", "no.such.Service"]) == 1
    assert "NOT_FOUND" in capsys.readouterr().err


@pytest.mark.parametrize("flag", [["--wait", "-1"], ["--interval", "0"], ["--timeout", "0"]])
def test_bad_timing_is_refused(flag: list[str]) -> None:
    with pytest.raises(SystemExit, match="gamefleet health"):
        main(["health", "127.0.0.1:1", *flag])
