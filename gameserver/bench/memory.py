"""What large requests cost a served shard in memory: the drill of issue 14, old limits vs new.

Each run starts a fresh `gamefleet serve` process (so its high-water mark belongs to that run),
reads its VmRSS and VmHWM from /proc/<pid>/status, sends the requests, and reads them again
right after the answers and once more `settle_s` later (what the shard keeps). Limits:
  old  --max-request-mb 256 --large-calls 0: the receive limit was the 256 MB message limit and
       nothing capped concurrent calls (the defaults before issue 14)
  new  the defaults: the receive limit sized from the largest legitimate request (~22 MB at
       65,536 games a call), at most 2 large calls served at once, 2 waiting
Requests (SubmitBatchActions, raw bytes: an actions tensor of the given size for an unknown id):
  one 255 MB         the drill's refused request
  8 x 255 MB         eight of them at once
  8 x limit          eight at once just under the new receive limit (served as far as parsing:
                     NOT_FOUND), the case the cap on large calls is for
"""

from __future__ import annotations

import concurrent.futures
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import grpc
import numpy as np
from rich.console import Console
from rich.progress import Progress
from rich.table import Table

from ..local_fleet import LocalFleet
from ..wire.generated import batch_pb2 as pb
from ..wire.limits import request_bytes
from ..wire.services import SERVICE
from .engine import run_header
from .results_md import markdown_table, publish, save_figure

MB = 1 << 20
LIMITS = {"old": ("--max-request-mb", "256", "--large-calls", "0"), "new": ()}
BIG = 255 * MB


@dataclass(frozen=True)
class Settings:
    big_bytes: int = BIG
    concurrent: int = 8
    settle_s: float = 2.0


QUICK = Settings(big_bytes=64 * MB, concurrent=4, settle_s=0.5)


def _scenarios(settings: Settings) -> list[tuple[str, int, int]]:
    under = request_bytes() - 64 * 1024  # just under the new default receive limit
    big = f"{settings.big_bytes / MB:.0f} MB"
    n = settings.concurrent
    return [(f"one {big}", 1, settings.big_bytes), (f"{n} x {big}", n, settings.big_bytes),
            (f"{n} x {under / MB:.1f} MB", n, under)]  # fmt: skip


def _status(pid: int) -> dict[str, int]:
    """VmRSS and VmHWM of a process, in bytes."""
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        name, _, value = line.partition(":")
        if name in ("VmRSS", "VmHWM"):
            fields[name] = int(value.split()[0]) * 1024
    return fields


def _request(size: int) -> bytes:
    request = pb.SubmitBatchActionsRequest()
    request.game_ids.data, request.game_ids.dtype = np.array([1], np.uint64).tobytes(), "<u8"
    request.game_ids.shape[:] = [1]
    request.actions.data, request.actions.dtype = bytes(size), "|u1"
    request.actions.shape[:] = [size]
    return request.SerializeToString()


def _send(address: str, payload: bytes, calls: int) -> list[str]:
    """`calls` copies of the request at once; the status code of each."""
    options = [("grpc.max_send_message_length", -1), ("grpc.max_receive_message_length", -1)]
    channels = [grpc.insecure_channel(address, options=options) for _ in range(calls)]
    path = f"/{SERVICE.full_name}/SubmitBatchActions"

    def call(channel: grpc.Channel) -> str:
        try:
            channel.unary_unary(path)(payload, timeout=120)
            return "OK"
        except grpc.RpcError as error:
            return error.code().name

    try:
        with concurrent.futures.ThreadPoolExecutor(calls) as pool:
            return list(pool.map(call, channels))
    finally:
        for channel in channels:
            channel.close()


def _measure(limits: str, calls: int, size: int, settings: Settings) -> dict[str, Any]:
    with LocalFleet(1, extra_args=LIMITS[limits]) as fleet:
        pid = fleet.pids[0]
        before = _status(pid)
        payload = _request(size)
        codes = _send(fleet.addresses[0], payload, calls)
        del payload
        answered = _status(pid)
        time.sleep(settings.settle_s)  # what the shard keeps a while after: the drill's complaint
        settled = _status(pid)
    return {
        "codes": {code: codes.count(code) for code in sorted(set(codes))},
        "rss_before": before["VmRSS"],
        "peak": answered["VmHWM"],
        "rss_answered": answered["VmRSS"],
        "rss_settled": settled["VmRSS"],
        "peak_added": answered["VmHWM"] - before["VmRSS"],
        "kept_added": settled["VmRSS"] - before["VmRSS"],
    }


def run(settings: Settings, command: str, console: Console) -> dict[str, Any]:
    rows = []
    scenarios = _scenarios(settings)
    with Progress(console=console, transient=True) as progress:
        task = progress.add_task("one fresh shard per run", total=len(scenarios) * len(LIMITS))
        for name, calls, size in scenarios:
            for limits in LIMITS:
                progress.update(task, description=f"{name}, {limits} limits")
                row = {"requests": name, "calls": calls, "bytes": size, "limits": limits}
                rows.append(row | _measure(limits, calls, size, settings))
                progress.advance(task)
    return {
        **run_header("memory", command),
        "settings": asdict(settings),
        "new_receive_limit": request_bytes(),
        "rows": rows,
    }


def _mb(value: int) -> str:
    return f"{value / MB:,.0f}"


def _cells(row: dict[str, Any]) -> list[str]:
    codes = ", ".join(f"{count} {code}" for code, count in row["codes"].items())
    return [row["requests"], row["limits"], codes, _mb(row["rss_before"]), _mb(row["peak"]),
            _mb(row["peak_added"]), _mb(row["rss_settled"]), _mb(row["kept_added"])]  # fmt: skip


HEADERS = ("requests", "limits", "answers", "RSS before (MB)", "peak VmHWM (MB)", "peak added (MB)",
           "RSS after (MB)", "kept (MB)")  # fmt: skip


def table(result: dict[str, Any]) -> Table:
    out = Table(title="A served shard's memory under large requests (one fresh process per run)")
    for header in HEADERS:
        out.add_column(header, justify="left" if header in ("requests", "limits", "answers") else "right")
    for row in result["rows"]:
        out.add_row(*_cells(row))
    return out


def markdown(result: dict[str, Any], plot_name: str | None = None) -> str:
    machine, settings = result["machine"], result["settings"]
    return "\n".join(
        [
            "## Memory: what large requests cost a served shard (issue 14)",
            "",
            f"- Command: `{result['command']}`",
            f"- Date: {result['date']}; machine: {machine['cpu']}, {machine['cpus']} CPUs, "
            f"{machine['memory_gib']} GiB",
            "- Method: a fresh `gamefleet serve` process per run; VmRSS before the requests, VmHWM "
            f"(the peak) right after their answers, VmRSS {settings['settle_s']:g} s later (kept). "
            "Requests: SubmitBatchActions with an actions tensor of the size shown for an unknown game, "
            "sent at once on separate connections. `old`: `--max-request-mb 256 --large-calls 0`, the "
            "limits before issue 14 (the receive limit was the 256 MB message limit, no cap on "
            f"concurrent calls); `new`: the defaults (receive limit {_mb(result['new_receive_limit'])} MB, "
            "the largest legitimate request at 65,536 games a call; 2 large calls served, 2 waiting).",
            "",
            *markdown_table(HEADERS, (_cells(row) for row in result["rows"]), left=3),
            "",
            "Reading: a request over the receive limit is refused by the gRPC core from its length "
            "prefix, before its bytes are buffered: it costs the shard nothing measurable, alone or "
            "eight at once, where the old limits let each 255 MB request cost about three times its size "
            "(the core's buffer, Python's bytes, the parsed copy) and most of it stayed resident. Under "
            "the limit, the gRPC core buffers a request and hands Python its bytes before any handler "
            "runs, so the cap on large calls (2 served, 2 waiting, the rest refused at once) bounds only "
            "what comes after (parsing, serving): eight requests at the limit cost about the same peak "
            "with or without it, and whether any is refused depends on how the calls overlap (a run "
            "before this one refused 4 of 8). That case is bounded by the receive limit times the calls "
            "in flight: ~22 MB each by default, instead of 256 MB.",
            "",
            *([f"![memory under large requests]({plot_name})", ""] if plot_name else []),
        ]
    )


def plot(result: dict[str, Any], path: Path) -> None:
    from matplotlib.figure import Figure

    figure = Figure(figsize=(9, 4), layout="constrained")
    rows = result["rows"]
    scenarios = list(dict.fromkeys(row["requests"] for row in rows))
    axes = figure.subplots()
    x, width = np.arange(len(scenarios)), 0.2
    for i, (limits, measure, label) in enumerate(
        (("old", "peak_added", "old: peak"), ("old", "kept_added", "old: kept"),
         ("new", "peak_added", "new: peak"), ("new", "kept_added", "new: kept"))
    ):  # fmt: skip
        of = {row["requests"]: row[measure] / MB for row in rows if row["limits"] == limits}
        values = [of[scenario] for scenario in scenarios]
        axes.bar(x + (i - 1.5) * width, values, width, label=label)
    axes.set_xticks(x, scenarios)
    axes.set(ylabel="MB over the shard's RSS before", title="Memory a served shard takes for large requests")
    axes.legend(fontsize="small")
    save_figure(figure, path)


def main(args: Any) -> int:
    """`gamefleet bench memory` (parsed arguments: see gameserver/cli/bench.py)."""
    settings = QUICK if args.quick else Settings()
    console = Console()
    result = run(settings, args.command_line, console)
    return publish(result, args, console, table=table, plot=plot, markdown=markdown)
