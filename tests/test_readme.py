"""The README's Python snippets run as written: each one as its own program, in a fresh directory,
against what the README starts before it (its `gamefleet serve`/`route` commands, the TLS fleet of
its security section with certificates made here). Only the commands' `.venv/bin/gamefleet` is
replaced by this interpreter's `python -m gameserver.cli`, and only the files the security
section names (fleet.crt, trainer.crt, ca.crt, token) are made for it."""

from __future__ import annotations

import contextlib
import os
import re
import shlex
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from test_security import _certificate, _key, _pem_key

from gameserver.client import Credentials, FleetClient
from gameserver.wire.security import PLAINTEXT

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()
BLOCK = re.compile(r"```(\w+)\n(.*?)```", re.S)
SNIPPETS = [text for lang, text in BLOCK.findall(README) if lang == "python"]
COMMANDS = [text for lang, text in BLOCK.findall(README) if lang == "bash"]
FLEET = "127.0.0.1:50050"  # where the README's serving section puts its router
SECURE = "localhost:50050"
ENV = {**os.environ, "PYTHONPATH": str(ROOT)}


def needing(address: str) -> list[str]:
    return [s for s in SNIPPETS if f'"{address}"' in s]


def run_snippet(code: str, cwd: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=cwd, env=ENV, capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, f"snippet failed:\n{code}\n{done.stdout}\n{done.stderr}"


def commands(block: str) -> list[list[str]]:
    """The block's command lines, continuations joined, comments and a trailing `&` dropped, with
    `gamefleet` as this interpreter runs it."""
    lines = block.replace("\\\n", " ").splitlines()
    argvs = []
    for line in lines:
        argv = shlex.split(line, comments=True)
        argv = argv[:-1] if argv and argv[-1] == "&" else argv
        if argv and Path(argv[0]).name == "gamefleet":
            argvs.append([sys.executable, "-m", "gameserver.cli", *argv[1:]])
    return argvs


def block_with(text: str) -> str:
    (block,) = [b for b in COMMANDS if text in b]
    return block


@contextlib.contextmanager
def running(argvs: list[list[str]], cwd: Path) -> Iterator[None]:
    processes = [
        subprocess.Popen(argv, cwd=cwd, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        for argv in argvs
    ]
    try:
        yield
    finally:
        for process in processes:
            process.terminate()
        for process in processes:
            try:
                process.wait(20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def wait_serving(address: str, credentials: Credentials = PLAINTEXT) -> None:
    deadline = time.monotonic() + 180  # a first start compiles the engine
    with FleetClient(address, timeout=5, credentials=credentials) as client:
        while not client.healthy():
            assert time.monotonic() < deadline, f"{address} never reported SERVING"
            time.sleep(0.2)


def test_every_snippet_is_run_here():
    assert len(SNIPPETS) >= 7 and len(needing(FLEET)) == 1 and len(needing(SECURE)) == 1


@pytest.mark.parametrize(
    "snippet",
    [s for s in SNIPPETS if s not in needing(FLEET) + needing(SECURE)],
    ids=lambda s: s.split("\n")[0],
)
def test_an_in_process_snippet_runs_as_written(snippet: str, tmp_path: Path) -> None:
    run_snippet(snippet, tmp_path)


@pytest.mark.slow
def test_the_fleet_snippets_run_against_the_fleets_the_readme_starts(tmp_path: Path) -> None:
    """One test, so the README's fixed ports are used by one fleet at a time."""
    with running(commands(block_with("gamefleet route --shards 127.0.0.1:50051")), tmp_path):
        wait_serving(FLEET)  # the router says SERVING once both shards answer
        (client_snippet,) = needing(FLEET)
        run_snippet(client_snippet, tmp_path)

    ca_key, fleet_key, trainer_key = _key(), _key(), _key()
    files = {
        "ca.crt": _certificate("readme CA", ca_key, "readme CA", ca_key, ca=True),
        "fleet.crt": _certificate("fleet", fleet_key, "readme CA", ca_key, hosts=True),
        "fleet.key": _pem_key(fleet_key),
        "trainer.crt": _certificate("trainer", trainer_key, "readme CA", ca_key),
        "trainer.key": _pem_key(trainer_key),
        "token": b"readme-token",
    }
    for name, data in files.items():
        (tmp_path / name).write_bytes(data)
    *servers, health = commands(block_with("gamefleet health localhost:50050"))
    credentials = Credentials.from_files(
        tmp_path / "trainer.crt", tmp_path / "trainer.key", tmp_path / "ca.crt", tmp_path / "token"
    )
    with running(servers, tmp_path):
        wait_serving(SECURE, credentials)
        done = subprocess.run(health, cwd=tmp_path, env=ENV, capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stdout + done.stderr
        (secure_snippet,) = needing(SECURE)
        run_snippet(secure_snippet, tmp_path)
