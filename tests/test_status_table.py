"""``enos-import status JOB``: the rows of its table that explain a job that has not ended."""

from __future__ import annotations

import io

from rich.console import Console

from worker.cli.common import JobView
from worker.cli.jobs import _job_table


def shown(view: JobView) -> dict[str, str]:
    out = io.StringIO()
    Console(file=out, width=200, color_system=None).print(_job_table(view))
    rows = {}
    for line in out.getvalue().splitlines():
        cells = [cell.strip() for cell in line.strip("│ ").split("│")]
        if len(cells) == 2 and cells[0]:
            rows[cells[0]] = cells[1]
    return rows


def view(**fields: object) -> JobView:
    base: dict[str, object] = {
        "job_id": "29409691-0000-4000-8000-000000000001", "status": "running",
        "org_id": "o-demo", "source": "meters.csv", "total": 8,
        "counts": {"pending": 4, "created": 4}, "last_error": None,
        "started_at": None, "finished_at": None, "created_at": None,
    }  # fmt: skip
    return JobView(**{**base, **fields})  # type: ignore[arg-type]


def test_a_job_held_back_by_failing_calls_shows_why() -> None:
    rows = shown(
        view(open_chunks="1 waiting to be sent", retry=(3, "EnOS answered HTTP 503: busy"))
    )
    assert rows["waiting for"] == "1 waiting to be sent"
    assert rows["retrying"] == "sending again after 3 attempts: EnOS answered HTTP 503: busy"
    assert "note" not in rows  # rows are still pending


def test_a_job_whose_rows_are_all_final_says_what_it_waits_for() -> None:
    rows = shown(view(counts={"created": 8}, open_chunks="1 in flight (leases end within 30 s)"))
    assert rows["note"] == "every row is final; the job ends once these chunks close"
    assert "retrying" not in rows


def test_a_job_that_moves_shows_neither() -> None:
    rows = shown(view())
    assert "retrying" not in rows and "waiting for" not in rows and "note" not in rows
