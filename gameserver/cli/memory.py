"""Flags that bound what a server holds in memory (serve, route): the request size limit, the cap
on large calls in flight (wire/admission.py) and, for shards, `--max-memory` for the games.

`--max-memory` defaults to the process's cgroup memory limit (a pod's `resources.limits.memory`:
cgroup v2 `memory.max`, v1 `memory/memory.limit_in_bytes`) less a margin for the process itself
and its messages; without a limit (or with "none") only `--max-games` bounds the games.
"""

from __future__ import annotations

import argparse
import os
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from ..wire import limits

if TYPE_CHECKING:  # grpc loads in run(), not for `gamefleet --help`
    from ..wire.admission import RequestLimits

CGROUP_ROOT = Path("/sys/fs/cgroup")
SELF_CGROUP = Path("/proc/self/cgroup")
UNLIMITED = 1 << 62  # cgroup v1 says "no limit" with 2**63 rounded down to a page
MARGIN_BYTES = 384 << 20  # the process (Python, numba, gRPC: ~250 MB) and its messages in flight
_UNITS = {"": 1, "k": 10**3, "m": 10**6, "g": 10**9, "t": 10**12, "ki": 1 << 10, "mi": 1 << 20}
_UNITS |= {"gi": 1 << 30, "ti": 1 << 40}
_QUANTITY = re.compile(r"\s*(\d+(?:\.\d+)?)\s*([kmgt]i?)?b?\s*", re.IGNORECASE)


def parse_bytes(text: str) -> int:
    """A byte count: digits with an optional unit, Kubernetes style (K/M/G/T = 1000^n,
    Ki/Mi/Gi/Ti = 1024^n): "2147483648", "2Gi", "1.5G"."""
    match = _QUANTITY.fullmatch(text)
    if match is None:
        raise ValueError(f"expected bytes (e.g. 2147483648, 2Gi, 1.5G), got {text!r}")
    return int(float(match.group(1)) * _UNITS[(match.group(2) or "").lower()])


def cgroup_memory_limit(root: Path = CGROUP_ROOT, self_cgroup: Path = SELF_CGROUP) -> int | None:
    """This process's cgroup memory limit in bytes (the smallest of its cgroup's and the visible
    ancestors', v2 or v1), None where none is set ("max", v1's near-2**63) or none is readable."""
    limits = []
    for file in _limit_files(root, self_cgroup):
        try:
            text = file.read_text().strip()
        except OSError:
            continue
        if text.isdigit() and int(text) < UNLIMITED:
            limits.append(int(text))
    return min(limits, default=None)


def _limit_files(root: Path, self_cgroup: Path) -> Iterator[Path]:
    """memory.max (v2) and memory/memory.limit_in_bytes (v1) of the process's cgroup and its
    ancestors up to the mount's root (which is all a container sees of the hierarchy)."""
    v2, v1 = "/", "/"
    try:
        lines = self_cgroup.read_text().splitlines()
    except OSError:
        lines = []
    for line in lines:
        fields = line.split(":", 2)
        if len(fields) != 3:
            continue
        _, controllers, path = fields
        if controllers == "":
            v2 = path or "/"
        elif "memory" in controllers.split(","):
            v1 = path or "/"
    for base, path, name in ((root, v2, "memory.max"), (root / "memory", v1, "memory.limit_in_bytes")):
        directory = base / path.lstrip("/")
        while True:
            yield directory / name
            if directory == base or base not in directory.parents:
                break
            directory = directory.parent


def default_max_memory(limit: int | None) -> int | None:
    """What the games may take under a memory limit: the limit less MARGIN_BYTES or a quarter of
    it, whichever is larger, but at least half the limit; None (no cap) without a limit."""
    if limit is None:
        return None
    return limit - min(max(MARGIN_BYTES, limit // 4), limit // 2)


def _max_memory(text: str) -> int | None:
    if text.strip().lower() in ("none", "off"):
        return None
    if text.strip().lower() == "auto":
        return default_max_memory(cgroup_memory_limit())
    try:
        value = parse_bytes(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(f"{error} ($GAMEFLEET_MAX_MEMORY or the flag)") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be > 0 bytes, got {text!r} (none: no cap)")
    return value


def _positive(kind: Callable[[str], float], what: str, *, zero: bool = False) -> Callable[[str], float]:
    def parse(text: str) -> float:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}") from None
        if value < 0 or (value == 0 and not zero):
            raise argparse.ArgumentTypeError(f"must be {'>= 0' if zero else '> 0'}, got {text!r}")
        return value

    return parse


def add_request_arguments(parser: argparse.ArgumentParser) -> None:
    """--max-request-mb, --large-calls, --large-call-mb, --large-call-wait (serve and route)."""
    env = os.environ.get
    group = parser.add_argument_group("memory: what requests may cost")
    group.add_argument(
        "--max-request-mb", type=_positive(float, "megabytes"), default=env("GAMEFLEET_MAX_REQUEST_MB"),
        help="requests over this are refused RESOURCE_EXHAUSTED by gRPC before they are read "
        "(default: $GAMEFLEET_MAX_REQUEST_MB, else the largest request --max-games-per-call allows: "
        f"{limits.REQUEST_BYTES_PER_GAME} bytes a game, ~22 MB at 65,536)",
    )  # fmt: skip
    group.add_argument(
        "--large-calls", type=_positive(int, "a count", zero=True),
        default=env("GAMEFLEET_LARGE_CALLS") or limits.LARGE_CALLS,
        help="calls with requests over --large-call-mb parsed and served at once; as many more wait, "
        "the rest are refused RESOURCE_EXHAUSTED (0: no cap; default: $GAMEFLEET_LARGE_CALLS, "
        f"else {limits.LARGE_CALLS})",
    )  # fmt: skip
    group.add_argument(
        "--large-call-mb", type=_positive(float, "megabytes"), default=limits.LARGE_CALL_BYTES / (1 << 20),
        help="what a large request is (MB, default %(default)g)",
    )  # fmt: skip
    group.add_argument(
        "--large-call-wait", type=_positive(float, "seconds", zero=True), default=limits.LARGE_CALL_WAIT_S,
        help="seconds a large call waits for its turn before RESOURCE_EXHAUSTED (default %(default)g)",
    )  # fmt: skip


def add_max_memory_argument(parser: argparse.ArgumentParser) -> None:
    """--max-memory (serve): the bytes the shard's games may take."""
    parser.add_argument(
        "--max-memory", type=_max_memory, default=os.environ.get("GAMEFLEET_MAX_MEMORY") or "auto",
        help="bytes the games may take (2Gi, 1.5G, ...): creates past it are refused RESOURCE_EXHAUSTED "
        "(default: $GAMEFLEET_MAX_MEMORY, else auto: the cgroup memory limit less "
        f"max({MARGIN_BYTES >> 20} MiB, a quarter); none: only --max-games)",
    )  # fmt: skip


def request_limits(args: argparse.Namespace) -> RequestLimits:
    """The RequestLimits the flags describe."""
    from ..wire.admission import RequestLimits

    mb = 1 << 20
    return RequestLimits(
        max_request_bytes=None if args.max_request_mb is None else int(args.max_request_mb * mb),
        large_call_bytes=int(args.large_call_mb * mb),
        large_calls=int(args.large_calls),
        large_call_wait_s=float(args.large_call_wait),
    )
