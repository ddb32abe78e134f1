"""A real redis-server for tests: a free port (localhost unless told), a temp dir, no persistence,
a password if given.

`kill()` is a kill -9 (the outage tests), `start()` brings it back, empty, on the same port;
`freeze()`/`thaw()` hang it (SIGSTOP) and let it go on.
Use it as a context manager so the process is stopped however the test ends.
"""

from __future__ import annotations

import shutil
import signal
import socket
import subprocess
import time
import urllib.parse
from pathlib import Path

import redis

REDIS_SERVER = shutil.which("redis-server") or "/usr/bin/redis-server"


def _free_port(host: str) -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


class RedisServer:
    def __init__(
        self, directory: Path, host: str = "127.0.0.1", password: str | None = None, port: int = 0
    ) -> None:
        self.directory, self.host, self.password = directory, host, password
        self.port = port or _free_port(host)
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        auth = f":{urllib.parse.quote(self.password, safe='')}@" if self.password else ""
        return f"redis://{auth}{self.host}:{self.port}/0"

    def client(self, **options: object) -> redis.Redis:
        return redis.Redis(self.host, self.port, password=self.password, **options)

    def start(self) -> None:
        options = {
            "port": self.port,
            "bind": self.host,
            "dir": self.directory,
            "save": "",
            "appendonly": "no",
            "logfile": self.directory / "redis.log",
        }
        if self.password:
            options["requirepass"] = self.password
        self.process = subprocess.Popen(
            [REDIS_SERVER, *(arg for name, value in options.items() for arg in (f"--{name}", str(value)))],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        client = self.client(socket_connect_timeout=0.2)
        deadline = time.monotonic() + 10
        while True:
            try:
                client.ping()
                break
            except redis.ConnectionError:
                if self.process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(
                        f"redis-server did not start: {self.directory / 'redis.log'}"
                    ) from None
                time.sleep(0.01)
            finally:
                client.close()

    def freeze(self) -> None:
        """SIGSTOP: the port still accepts connections, nothing answers (a hung Redis)."""
        assert self.process is not None
        self.process.send_signal(signal.SIGSTOP)

    def thaw(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGCONT)

    def kill(self) -> None:
        if self.process is not None:
            self.process.kill()
            self.process.wait()
            self.process = None

    def __enter__(self) -> RedisServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.kill()
