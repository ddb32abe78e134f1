"""A fleet of shard processes on 127.0.0.1: the embedded default, no Kubernetes, no Redis.

With `redis_url`, the same processes form a fleet over that Redis: the shards register in
its registry with the durability mode asked for (failover, drain, lazy moves: see
service/membership.py), and the router takes its topology from the registry.

Each shard is a real `gamefleet serve` process on a port it picks itself (port 0; the
address is read from the line it prints when serving), so nothing races for ports and
the processes are exactly what a pod runs. Their output goes to log files (a pipe nobody
reads would block a chatty shard). The fleet always stops its processes, also when the
caller fails.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType

from .telemetry.exposition import READY_PREFIX as _METRICS_READY

_READY_PREFIX = "gamefleet shard serving on "
_ROUTER_READY = "gamefleet router serving on "  # router_server.READY_PREFIX (not imported: no grpc here)


class FleetStartError(RuntimeError):
    """A shard process exited or stayed silent before serving."""


class LocalFleet:
    """Start `shards` shard processes; `addresses` lists them once started. With `router`, also a
    `gamefleet route` process over them, at `router_address`. With `metrics`, every process serves
    /metrics on a free port: `metrics_urls` lists them (shards first, then the router)."""

    def __init__(
        self,
        shards: int = 1,
        *,
        seed: int = 0,
        extra_args: Sequence[str] = (),
        timeout: float = 120.0,
        router: bool = False,
        redis_url: str | None = None,
        fleet: str = "local",
        durability: str = "off",
        router_args: Sequence[str] = (),
        metrics: bool = False,
    ):
        if shards < 1:
            raise ValueError(f"a fleet needs at least one shard, got {shards}")
        self.shards = shards
        self.seed = seed
        self.extra_args = tuple(extra_args)
        self.timeout = timeout
        self.router = router
        self.redis_url = redis_url
        self.fleet = fleet
        self.durability = durability
        self.router_args = tuple(router_args)
        self.metrics = metrics
        self.metrics_urls: list[str] = []
        self.addresses: list[str] = []
        self.router_address: str | None = None  # with router=True: `gamefleet route` over the shards
        self.logs: list[Path] = []
        self._processes: list[subprocess.Popen[bytes]] = []  # the shards by ordinal, then the router
        self._log_dir: Path | None = None

    def start(self) -> LocalFleet:
        self._log_dir = Path(tempfile.mkdtemp(prefix="gamefleet-"))
        fleet_args = ()
        if self.redis_url:
            fleet_args = ("--redis", self.redis_url, "--fleet", self.fleet, "--durability", self.durability)
        try:
            # The first shard starts alone: on a first run it compiles the engine's kernels into
            # numba's cache, which the others then load instead of compiling them all at once.
            for first, last in ((0, 1), (1, self.shards)):
                for ordinal in range(first, last):
                    command = [sys.executable, "-m", "gameserver.cli.serve", "--port", "0", "--reflection",
                               "--seed", str(self.seed + ordinal), *fleet_args, *self._telemetry(),
                               *self.extra_args]  # fmt: skip
                    self._processes.append(self._spawn(command, f"shard-{ordinal}"))
                pairs = zip(self._processes[first:last], self.logs[first:last], strict=True)
                self.addresses += [self._wait_serving(process, log) for process, log in pairs]
            if self.router:
                self._start_router(0)
            if self.metrics:
                self.metrics_urls = [_announced(log, _METRICS_READY) for log in self.logs]
        except BaseException:
            self.stop()
            raise
        return self

    def _telemetry(self) -> tuple[str, ...]:
        return ("--metrics-port", "auto") if self.metrics else ()

    def _spawn(self, command: list[str], name: str) -> subprocess.Popen[bytes]:
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        log = self._log_dir / f"{name}.log"
        with log.open("wb") as out:
            process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=env)
        self.logs.append(log)
        return process

    def _start_router(self, port: int) -> None:
        topology = ("--redis", self.redis_url, "--fleet", self.fleet) if self.redis_url else (
            "--shards", ",".join(self.addresses))  # fmt: skip
        command = [sys.executable, "-m", "gameserver.cli.route", "--port", str(port), "--reflection",
                   *topology, *self._telemetry(), *self.router_args]  # fmt: skip
        self._processes.append(self._spawn(command, f"router-{len(self.logs)}"))
        self.router_address = self._wait_serving(self._processes[-1], self.logs[-1], _ROUTER_READY)

    @property
    def pids(self) -> list[int]:
        """Process ids: the shards by ordinal, then the router (benchmarks read their CPU time)."""
        return [process.pid for process in self._processes]

    def kill(self, ordinal: int) -> None:
        """kill -9 one shard (the fault tests)."""
        self._processes[ordinal].kill()
        self._processes[ordinal].wait()

    def restart_router(self) -> None:
        """kill -9 the router and start a new one on the same port (clients reconnect)."""
        port = int(self.router_address.rpartition(":")[2])
        router = self._processes.pop()
        router.kill()
        router.wait()
        self._start_router(port)

    def _wait_serving(self, process: subprocess.Popen[bytes], log: Path, ready: str = _READY_PREFIX) -> str:
        deadline = time.monotonic() + self.timeout
        while time.monotonic() < deadline:
            address = _announced(log, ready)
            if address is not None:
                return address
            if process.poll() is not None:
                text = log.read_text(errors="replace")
                raise FleetStartError(f"{log.stem} exited with {process.returncode} ({log}): {text[-2000:]}")
            time.sleep(0.05)
        raise FleetStartError(f"{log.stem} not serving within {self.timeout}s ({log})")

    def stop(self, grace: float = 10.0) -> None:
        """SIGINT every process, as Ctrl-C would (they finish in-flight calls, and shards whose
        games cannot move do not wait for their clients to close them), SIGKILL what outlives `grace`."""
        for process in self._processes:
            if process.poll() is None:
                process.send_signal(signal.SIGINT)
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


def _announced(log: Path, prefix: str) -> str | None:
    """The first word after `prefix` on a line of the log, None while no line has it."""
    for line in log.read_text(errors="replace").splitlines():
        if line.startswith(prefix):
            return line[len(prefix) :].split()[0]
    return None
