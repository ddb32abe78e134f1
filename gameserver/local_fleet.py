"""A fleet of shard processes on 127.0.0.1: the embedded default, no Kubernetes, no Redis.

Each shard is a real `gamefleet serve` process on a port it picks itself (port 0; the
address is read from the line it prints when serving), so nothing races for ports and
the processes are exactly what a pod runs. Their output goes to log files (a pipe nobody
reads would block a chatty shard). The fleet always stops its processes, also when the
caller fails.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType

_READY_PREFIX = "gamefleet shard serving on "
_ROUTER_READY = "gamefleet router serving on "  # router_server.READY_PREFIX (not imported: no grpc here)


class FleetStartError(RuntimeError):
    """A shard process exited or stayed silent before serving."""


class LocalFleet:
    """Start `shards` shard processes; `addresses` lists them once started. With `router`, also a
    `gamefleet route` process over them, at `router_address`."""

    def __init__(
        self,
        shards: int = 1,
        *,
        seed: int = 0,
        extra_args: Sequence[str] = (),
        timeout: float = 120.0,
        router: bool = False,
    ):
        if shards < 1:
            raise ValueError(f"a fleet needs at least one shard, got {shards}")
        self.shards = shards
        self.seed = seed
        self.extra_args = tuple(extra_args)
        self.timeout = timeout
        self.router = router
        self.addresses: list[str] = []
        self.router_address: str | None = None  # with router=True: `gamefleet route` over the shards
        self.logs: list[Path] = []
        self._processes: list[subprocess.Popen[bytes]] = []

    def start(self) -> LocalFleet:
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        log_dir = Path(tempfile.mkdtemp(prefix="gamefleet-"))
        for ordinal in range(self.shards):
            command = [sys.executable, "-m", "gameserver.cli_serve", "--port", "0", "--seed",
                       str(self.seed + ordinal), *self.extra_args]  # fmt: skip
            log = log_dir / f"shard-{ordinal}.log"
            with log.open("wb") as out:
                self._processes.append(
                    subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=env)
                )
            self.logs.append(log)
        try:
            pairs = zip(self._processes, self.logs, strict=True)
            self.addresses = [self._wait_serving(process, log) for process, log in pairs]
            if self.router:
                command = [sys.executable, "-m", "gameserver.cli_route", "--port", "0",
                           "--shards", ",".join(self.addresses)]  # fmt: skip
                self.logs.append(log_dir / "router.log")
                with self.logs[-1].open("wb") as out:
                    self._processes.append(
                        subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=env)
                    )
                self.router_address = self._wait_serving(self._processes[-1], self.logs[-1], _ROUTER_READY)
        except BaseException:
            self.stop()
            raise
        return self

    def _wait_serving(self, process: subprocess.Popen[bytes], log: Path, ready: str = _READY_PREFIX) -> str:
        deadline = time.monotonic() + self.timeout
        while time.monotonic() < deadline:
            text = log.read_text(errors="replace")
            for line in text.splitlines():
                if line.startswith(ready):
                    return line[len(ready) :].split()[0]
            if process.poll() is not None:
                raise FleetStartError(f"{log.stem} exited with {process.returncode} ({log}): {text[-2000:]}")
            time.sleep(0.05)
        raise FleetStartError(f"{log.stem} not serving within {self.timeout}s ({log})")

    def stop(self, grace: float = 10.0) -> None:
        """SIGTERM every shard (they finish in-flight calls), SIGKILL what outlives `grace`."""
        for process in self._processes:
            if process.poll() is None:
                process.terminate()
        for process in self._processes:
            try:
                process.wait(grace)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        self._processes.clear()

    def __enter__(self) -> LocalFleet:
        return self.start()

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, tb: TracebackType | None
    ):
        self.stop()
