"""What the fault scenario found, and its section of docs/reliability.md."""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.harness.docs import write_section


@dataclass
class Event:
    """One fault. ``progress_s``: until rows settled again anywhere; ``resent_s``: until every
    chunk that was in flight (or published) when the fault struck was claimed again or finished
    (its next attempt began); ``recovery_s``: until every such chunk was finished (which also
    waits for the retries of faults the simulator injects meanwhile)."""

    name: str
    at: float
    settled_at: float | None = None
    detail: str = ""
    affected: set[int] = field(default_factory=set)
    tokens: dict[int, int] = field(default_factory=dict)  # affected chunk -> its fencing token
    resent_at: float | None = None
    done_at: float | None = None

    @property
    def progress_s(self) -> float | None:
        return None if self.settled_at is None else self.settled_at - self.at

    @property
    def resent_s(self) -> float | None:
        return None if self.resent_at is None else self.resent_at - self.at

    @property
    def recovery_s(self) -> float | None:
        return None if self.done_at is None else self.done_at - self.at


@dataclass
class Report:
    devices: int
    job_id: str = ""
    status: str = ""
    elapsed_s: float = 0.0
    counts: dict[str, int] = field(default_factory=dict)
    events: list[Event] = field(default_factory=list)
    enos_devices: int = 0
    problems: list[str] = field(default_factory=list)
    simulator: dict[str, Any] = field(default_factory=dict)


def write_results(report: Report, path: Path, command: str, section: str) -> None:
    """Replaces the section titled ``section`` of docs/reliability.md."""
    lines = [
        f"## {section}",
        "",
        f"`{command}` on {time.strftime('%Y-%m-%d')} ({os.cpu_count()} cores): "
        f"{report.devices:,} devices, job `{report.status}` in {report.elapsed_s:,.0f} s; "
        f"rows {json.dumps(report.counts, sort_keys=True)}; EnOS holds "
        f"{report.enos_devices:,} devices; problems found: {len(report.problems)}.",
        "",
        "Recovery: seconds from the fault until rows settled again anywhere (progress); until "
        "every chunk that was in flight or published when it struck was claimed again or "
        "finished (sent again: a killed worker's chunks wait for their lease, the default 40 s, "
        "and the sweeper); and until every such chunk was finished (work recovered: this also "
        "waits for the retries of the faults the simulator keeps injecting meanwhile).",
        "",
        "| # | fault | what was done | progress (s) | sent again (s) | work recovered (s) |",
        "|---|---|---|---|---|---|",
    ]
    for n, event in enumerate(report.events, 1):
        progress, resent, recovery = (
            "-" if value is None else f"{value:.1f}"
            for value in (event.progress_s, event.resent_s, event.recovery_s)
        )
        lines.append(
            f"| {n} | {event.name} | {event.detail} | {progress} | {resent} | {recovery} |"
        )
    faults = report.simulator.get("faults", {})
    item_errors = json.dumps(report.simulator.get("item_errors", {}))
    lines += [
        "",
        f"Simulator faults injected: {json.dumps(faults, sort_keys=True)}; "
        f"item errors: {item_errors}.",
        "",
    ]
    write_section(path, f"## {section}", "\n".join(lines), title="# Reliability")
