"""Measurements written into the docs: one section replaced, the others kept."""

from __future__ import annotations

from pathlib import Path


def write_section(path: Path, heading: str, body: str, title: str = "# Benchmarks") -> None:
    """Replaces the section ``heading`` (up to the next ``## ``), or appends it; others stay.
    A file that does not exist yet starts with ``title``."""
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(f"{title}\n\n{body}")
        return
    lines = path.read_text().splitlines(keepends=True)
    start = next((i for i, line in enumerate(lines) if line.rstrip() == heading), None)
    if start is None:
        path.write_text("".join(lines).rstrip("\n") + "\n\n" + body)
        return
    end = next((i for i in range(start + 1, len(lines)) if lines[i].startswith("## ")), len(lines))
    tail = "".join(lines[end:])
    path.write_text("".join(lines[:start]) + body + ("\n" + tail if tail else ""))
