"""Write one benchmark's section of benchmarks/RESULTS.md, leaving the other sections as they are."""

from __future__ import annotations

from pathlib import Path


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
