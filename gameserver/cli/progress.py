"""Progress of a long command: a live bar on a terminal, and elsewhere (CI logs, `| tee`, a pod's
log), where rich's live display shows nothing, a plain line every few seconds
(`$GAMEFLEET_PROGRESS_SECONDS`, default 5)."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator
from typing import Any

PLAIN_EVERY_S = 5.0  # seconds between two plain progress lines, unless $GAMEFLEET_PROGRESS_SECONDS

Show = Callable[[float, str], None]  # (seconds elapsed, what to say)


@contextlib.contextmanager
def progress(console: Any, label: str, total_s: float, every_s: float | None = None) -> Iterator[Show]:
    """Yield `show(elapsed, line)`: on a terminal a transient bar of `total_s` seconds; otherwise
    `label [elapsed s] line` printed (flushed, never wrapped) to the console's file at most every
    `every_s` seconds (default: $GAMEFLEET_PROGRESS_SECONDS, else PLAIN_EVERY_S)."""
    if every_s is None:
        every_s = float(os.environ.get("GAMEFLEET_PROGRESS_SECONDS") or PLAIN_EVERY_S)
    if console.is_terminal:
        from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

        columns = (TextColumn(label), BarColumn(), TextColumn("{task.fields[line]}"), TimeElapsedColumn())
        with Progress(*columns, console=console, transient=True) as bar:
            task = bar.add_task(label, total=total_s, line="")
            yield lambda elapsed, line: bar.update(task, completed=min(elapsed, total_s), line=line)
        return
    printed = [0.0]

    def plain(elapsed: float, line: str) -> None:
        if elapsed - printed[0] >= every_s:
            printed[0] = elapsed
            print(f"{label} [{elapsed:5.1f} s] {line}", file=console.file, flush=True)

    yield plain


def wins_by_seat(wins: list[int], agents: list[str]) -> str:
    """`wins` (finished games each seat won) with each seat's agent (`agents`, cycled over the
    seats): "wins by seat: 0 (expander) 706, 1 (random) 1"."""
    named = [f"{s} ({agents[s % len(agents)]})" if agents else str(s) for s in range(len(wins))]
    return "wins by seat: " + ", ".join(f"{name} {count:,}" for name, count in zip(named, wins, strict=True))
