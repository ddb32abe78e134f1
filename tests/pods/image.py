"""The image as the pods run it: the project's wheel installed in its own venv, and the runtime stage's
ENV/USER/WORKDIR/ENTRYPOINT read from the Dockerfile itself (through tests/test_dockerfile.py's parser),
so the harness and the image cannot drift.

The venv holds the wheel only; its dependencies come from the test venv's site-packages through a
plain .pth path (not a site dir, so the test venv's editable install of the checkout is not loaded).
Pods see them bind-mounted (read-only) at `dependencies/<n>` in the image, wherever the test venv
lives: a checkout under /tmp is hidden in a pod by its /tmp emptyDir.
The installed image is cached under /var/tmp by the wheel's content (not /tmp: pods mount their
emptyDir there) and built under a file lock, so xdist workers share one.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import sysconfig
import tempfile
import time
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

from test_dockerfile import ROOT, context, stages

CACHE = Path("/var/tmp/gamefleet-pods")
# What the base image (python:3.11-slim) sets before the Dockerfile's own ENV (its PATH, duplicate
# included); the venv's bin goes first, where the image has /usr/local/bin and its `gamefleet` script.
BASE_ENV = {
    "PATH": "/usr/local/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    "LANG": "C.UTF-8",
}


@dataclass(frozen=True)
class ImageConfig:
    """The runtime stage's config, as `docker inspect` would show it."""

    env: dict[str, str]
    uid: int
    gid: int
    workdir: str
    home: str
    entrypoint: list[str]
    cmd: list[str]


def image_config() -> ImageConfig:
    runtime = stages()[-1]
    env: dict[str, str] = {}
    for name, args in runtime:
        if name == "ENV":
            words = shlex.split(args)
            if words and "=" not in words[0]:  # legacy `ENV KEY value`
                env[words[0]] = " ".join(words[1:])
            else:
                env |= dict(word.split("=", 1) for word in words)
    last = {name: args for name, args in runtime}
    uid, _, gid = last["USER"].partition(":")
    # docker sets HOME from the image's passwd entry for USER: the useradd in the runtime stage
    runs = " ".join(args for name, args in runtime if name == "RUN")
    home = re.search(rf"--uid {uid}\b.*?--home-dir (\S+)", runs)
    return ImageConfig(
        env=env,
        uid=int(uid),
        gid=int(gid or uid),
        workdir=last["WORKDIR"],
        home=home.group(1) if home else "/",
        entrypoint=json.loads(last["ENTRYPOINT"]),
        cmd=json.loads(last["CMD"]) if "CMD" in last else [],
    )


def readable_by_others(path: Path) -> Path | None:
    """The highest directory on the way to `path` that other users cannot traverse, or None."""
    for parent in reversed(path.parents):
        if parent != Path("/") and not os.stat(parent).st_mode & 0o001:
            return parent
    return None


@dataclass(frozen=True)
class Image:
    """An installed image under `root`: `venv/` with the wheel and `numba/` (the project's), or `bin/`
    with stand-ins for another image's programs (redis_image)."""

    config: ImageConfig
    root: Path
    python_home: Path = field(default=Path(sys.base_prefix))

    @property
    def venv(self) -> Path:
        return self.root / "venv"

    @property
    def numba_seed(self) -> Path:
        return self.root / "numba"

    @property
    def dependencies(self) -> list[tuple[Path, Path]]:
        """(the test venv's site-packages, where the image's .pth expects it) for each one."""
        if not self.venv.is_dir():
            return []
        sources = dependency_dirs()
        return [(Path(source), self.root / "dependencies" / str(n)) for n, source in enumerate(sources)]

    @property
    def hidden_python_parent(self) -> Path | None:
        """Where the interpreter hides from non-root users on this host (see prelude.expose)."""
        return readable_by_others(self.python_home / "bin") if self.venv.is_dir() else None

    def environment(self) -> dict[str, str]:
        """The process environment before the pod's own: base image, Dockerfile ENV, HOME."""
        bin_dir = self.venv / "bin" if self.venv.is_dir() else self.root / "bin"
        env = BASE_ENV | {"PATH": f"{bin_dir}:{BASE_ENV['PATH']}"}
        return env | self.config.env | {"HOME": self.config.home}


REDIS_SERVER = """#!/bin/sh
# The official redis image builds redis-server with protected mode off (its Dockerfile patches the
# default in config.c): a pod's own flags, after this one, still win.
case "$1" in -*|"") exec {binary} --protected-mode no "$@" ;; esac
exec {binary} "$@"
"""


def redis_image() -> Image:
    """The official redis image as the managed Redis pod runs it (the pod's command names
    redis-server; WORKDIR /data; no USER, the pod sets one): the host's Debian redis-server stands in
    for the image's build, with the image's protected-mode default."""
    binary = shutil.which("redis-server") or "/usr/bin/redis-server"
    root = CACHE / "redis"
    script = root / "bin" / "redis-server"
    if not script.exists() or binary not in script.read_text():
        script.parent.mkdir(parents=True, exist_ok=True)
        staging = script.with_suffix(f".{os.getpid()}")
        staging.write_text(REDIS_SERVER.format(binary=binary))
        os.chmod(staging, 0o755)
        staging.rename(script)
        os.chmod(root, 0o755)
        os.chmod(root / "bin", 0o755)
    config = ImageConfig(
        env={}, uid=0, gid=0, workdir="/data", home="/root", entrypoint=["redis-server"], cmd=[]
    )
    return Image(config, root)


def dependency_dirs() -> list[str]:
    """The test venv's site-packages: what the image's venv imports its dependencies from."""
    return sorted({sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]})


def _digest(wheel: Path) -> str:
    """The wheel's content (names and bytes, not zip timestamps), the interpreter, the dependencies."""
    h = hashlib.sha256()
    with zipfile.ZipFile(wheel) as z:
        for name in sorted(z.namelist()):
            h.update(name.encode() + b"\0" + z.read(name))
    for path in (sys.base_prefix, *dependency_dirs()):
        h.update(path.encode() + b"\0")
    return h.hexdigest()[:16]


def build_wheel(directory: Path) -> Path:
    """`pip wheel` of exactly the Docker build context (the files the image's build stage copies)."""
    source = directory / "src"
    for name in context():
        (source / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / name, source / name)
    command = [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation"]
    subprocess.run([*command, "--wheel-dir", str(directory), str(source)], check=True, timeout=300)
    (wheel,) = directory.glob("gamefleet-*.whl")
    return wheel


def _install(wheel: Path, root: Path, config: ImageConfig) -> None:
    venv = root / "venv"
    subprocess.run([sys._base_executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    purelib = Path(sysconfig.get_paths(vars={"base": str(venv), "platbase": str(venv)})["purelib"])
    # in a pod the mount points (the sources may be hidden there); here, empty, the sources
    mounted = [root / "dependencies" / str(n) for n in range(len(dependency_dirs()))]
    for path in mounted:
        path.mkdir(parents=True)
    lines = [*map(str, mounted), *dependency_dirs()]
    (purelib / "_gamefleet_test_dependencies.pth").write_text("\n".join(lines) + "\n")
    pip = [sys.executable, "-m", "pip", "--python", str(venv / "bin" / "python"), "install", "-q"]
    subprocess.run([*pip, "--no-deps", "--no-index", str(wheel)], check=True, timeout=300)
    # numba compiles the engine's kernels at a shard's start (~30 s of CPU): compile them once, into
    # a cache that pods get in their NUMBA_CACHE_DIR volume (a documented deviation: see kubelet.py)
    env = BASE_ENV | config.env | {"HOME": "/", "NUMBA_CACHE_DIR": str(root / "numba")}
    warm = "from gameserver.shard.server import warm_up; warm_up()"
    subprocess.run([str(venv / "bin" / "python"), "-c", warm], env=env, cwd="/", check=True, timeout=600)


def installed_image(scratch: Path) -> Image:
    """The image for the current tree: built and installed once per content, shared by sessions."""
    wheel = build_wheel(scratch)
    root = CACHE / _digest(wheel)
    CACHE.mkdir(parents=True, exist_ok=True)
    os.chmod(CACHE, 0o755)
    config = image_config()
    with open(CACHE / f"{root.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (root / "complete").exists():
            shutil.rmtree(root, ignore_errors=True)
            staging = Path(tempfile.mkdtemp(prefix=f"{root.name}.", dir=CACHE))
            try:
                # installed at its final path: venv scripts and numba's cache index name it
                staging.rename(root)
                _install(wheel, root, config)
                subprocess.run(["chmod", "-R", "a+rX", str(root)], check=True)
                (root / "complete").touch()
            except BaseException:
                shutil.rmtree(root, ignore_errors=True)
                raise
        (root / "complete").touch()  # in use: see prune
    prune(keep=root)
    return Image(config, root)


def prune(keep: Path, older_than_s: float = 86400) -> None:
    """Images of other trees and clusters of dead sessions, unused for a day."""
    for path in CACHE.iterdir():
        marker = path / "complete" if (path / "complete").exists() else path
        if (
            path not in (keep, CACHE / "redis")
            and path.is_dir()
            and time.time() - marker.stat().st_mtime > older_than_s
        ):
            shutil.rmtree(path, ignore_errors=True)
