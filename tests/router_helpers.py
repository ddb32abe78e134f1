"""Routers for tests: `gamefleet route` as a child process, or a RouterServer on a background loop."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import threading

from conftest import ROOT

from gameserver.router.server import READY_PREFIX, RouterServer
from gameserver.router.topology import TopologySource


class RouterProcess:
    """`gamefleet route --port 0 ARGS`; `address` and the rest of the ready line are read from it."""

    def __init__(self, *args: str) -> None:
        command = [sys.executable, "-m", "gameserver.cli", "route", "--port", "0", *args]
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        self.process = subprocess.Popen(command, stdout=subprocess.PIPE, text=True, env=env, cwd=ROOT)
        self.ready_line = self.process.stdout.readline()
        if not self.ready_line.startswith(READY_PREFIX):
            self.kill()
            raise RuntimeError(f"gamefleet route did not start: {self.ready_line!r}")
        self.address = self.ready_line[len(READY_PREFIX) :].split()[0]

    def kill(self) -> None:
        """kill -9 (nothing flushed, nothing said), and reap it."""
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait()


class BackgroundRouter:
    """A RouterServer on 127.0.0.1 (free port) on its own event loop in a daemon thread."""

    def __init__(self, source: TopologySource, **options: object) -> None:
        self.server = RouterServer(source, **options)
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self._thread.start()
        self.call(self.server.start())

    @property
    def address(self) -> str:
        return self.server.address

    def call(self, coroutine: object, timeout: float = 30.0) -> object:
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(timeout)

    def stop(self) -> None:
        self.call(self.server.stop(1.0))
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)
        self.loop.close()
