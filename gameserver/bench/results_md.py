"""A benchmark's outputs: its JSON, its table on the terminal, its plot, and its own section of
benchmarks/RESULTS.md (the other sections left as they are)."""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

from rich.console import Console

Result = dict[str, Any]


def write_section(path: Path, text: str) -> None:
    """Replace the section whose `## ` title line matches text's first line, or append it."""
    title = text.splitlines()[0]
    if not title.startswith("## "):
        raise ValueError(f"a section starts with a '## ' title line, got {title!r}")
    lines = path.read_text().splitlines() if path.exists() else []
    if title in lines:
        start = lines.index(title)
        end = next((i for i in range(start + 1, len(lines)) if lines[i].startswith("## ")), len(lines))
        lines[start:end] = text.rstrip("\n").splitlines() + ([""] if end < len(lines) else [])
    else:
        lines += ([""] if lines and lines[-1] else []) + text.rstrip("\n").splitlines()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")


def markdown_table(header: Sequence[str], rows: Iterable[Sequence[str]], *, left: int = 1) -> list[str]:
    """A markdown table's lines: the first `left` columns aligned left, the others right."""
    alignments = ["---"] * left + ["---:"] * (len(header) - left)
    return [
        "| " + " | ".join(header) + " |",
        "|" + "|".join(alignments) + "|",
        *("| " + " | ".join(row) + " |" for row in rows),
    ]


def save_figure(figure: Any, path: Path) -> None:
    """A benchmark's plot as a PNG at `path` (a matplotlib Figure: no pyplot, no global state)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=120)


def publish(
    result: Result,
    args: Any,
    console: Console,
    *,
    table: Callable[[Result], Any],
    plot: Callable[[Result, Path], None],
    markdown: Callable[[Result, str | None], str],
) -> int:
    """Write `args.out` (JSON), print the table, then the plot (`args.plot`) and the RESULTS.md
    section (`args.markdown`, linking the plot by its path from there) when asked for. A --quick
    run judges no target (see `unjudged`)."""
    if getattr(args, "quick", False):
        unjudged(result, console)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    console.print(table(result))
    console.print(f"results: {args.out}")
    if args.plot is not None:
        plot(result, args.plot)
    if args.markdown is not None:
        plot_name = os.path.relpath(args.plot, args.markdown.parent) if args.plot else None
        write_section(args.markdown, markdown(result, plot_name))
    return 0


def unjudged(result: Result, console: Console) -> None:
    """A --quick run is a smoke run (small batches, short windows): its figures judge no target,
    so every target's `met` becomes None (and `judged` False), and the console says so."""
    targets = result.get("targets", [])
    for target in [*targets, *([result["target"]] if "target" in result else [])]:
        target["met"] = None
    result["judged"] = False
    console.print("--quick: a smoke run; no target is judged")
