"""Shared fixtures: real game shards (in-process on a background loop, or `gamefleet serve` processes)."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from redis_fixture import RedisServer

from gameserver.client import FleetClient
from gameserver.shard.server import ShardServer, warm_up

ROOT = Path(__file__).resolve().parents[1]


def pytest_configure(config: pytest.Config) -> None:
    """Compile the engine's kernels into numba's on-disk cache once, in the main process, before
    xdist starts its workers: the workers and every shard process a test starts then load them
    (~3 s) instead of each compiling its own copy (~30 s of CPU apiece on a fresh clone)."""
    if not hasattr(config, "workerinput"):
        warm_up()


class BackgroundShard:
    """A ShardServer on 127.0.0.1 (free port) on its own event loop in a daemon thread."""

    def __init__(self, **options: object) -> None:
        self.server = ShardServer("127.0.0.1", 0, **options)
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self._thread.start()
        self.call(self.server.start())

    @property
    def address(self) -> str:
        return self.server.address

    def call(self, coroutine: object, timeout: float = 60.0) -> object:
        """Run a coroutine on the server's loop and wait for its result."""
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(timeout)

    def state(self) -> dict[str, np.ndarray]:
        """A copy of every game array of every pool, and the live ids: equal before and after
        a refused call when it changed nothing."""
        games = self.server.games
        arrays = {"ids": games.live_ids.copy()}
        for i, pool in enumerate(games.pools):
            arrays |= {f"{i}.{name}": a.copy() for name, a in pool.batch.arrays().items()}
        return arrays

    def stop(self, grace: float = 1.0) -> None:
        if self.loop.is_closed():
            return
        self.call(self.server.stop(grace))
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)
        self.loop.close()


@pytest.fixture(scope="session")
def shard() -> Iterator[BackgroundShard]:
    """One in-process shard shared by the service tests (each test uses its own games)."""
    server = BackgroundShard(seed=7, max_games_per_call=4096, max_message_bytes=64 << 20)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def fleet(shard: BackgroundShard) -> Iterator[FleetClient]:
    with FleetClient(shard.address, timeout=30) as client:
        yield client


class ServeProcess:
    """`gamefleet serve --port 0` as a child process; `address` is read from its first line."""

    def __init__(self, *args: str) -> None:
        command = [sys.executable, "-m", "gameserver.cli", "serve", "--port", "0", *args]
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        self.process = subprocess.Popen(command, stdout=subprocess.PIPE, text=True, env=env, cwd=ROOT)
        line = self.process.stdout.readline()
        match = re.search(r"serving on (\S+)", line)
        if match is None:
            self.process.kill()
            raise RuntimeError(f"gamefleet serve did not start: {line!r}")
        self.address = match.group(1)

    def terminate(self, timeout: float = 20.0) -> int:
        """SIGTERM (graceful shutdown), then the exit code; killed if it does not exit in time."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
            raise


@pytest.fixture
def serve_process() -> Iterator[ServeProcess]:
    process = ServeProcess()
    try:
        yield process
    finally:
        if process.process.poll() is None:
            process.process.kill()
            process.process.wait()


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    """A real redis-server of the test's own (free port, no persistence), killed after it."""
    with RedisServer(tmp_path) as server:
        yield server
