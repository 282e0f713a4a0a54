"""What ``enos-import submit`` says without counting the job's rows (a pass over all of them):
after its intake, what was read; at the end of ``--wait``, the counts the job's end counted."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from unittest import mock

import pytest
from click.testing import CliRunner

from tests.importer.support import device, fast_settings, start_job
from worker.cli import cli
from worker.cli import common as cli_common
from worker.cli import jobs as jobs_cli
from worker.cli.common import follow, job_view
from worker.context import WorkerContext
from worker.db.session import Database
from worker.enos.client import EnosClient
from worker.importer import jobs
from worker.importer.budget import LocalBudget
from worker.importer.send import send_chunk
from worker.settings import Settings

ROWS = (
    "productKey,deviceKey,deviceName,timezone\n"
    "pk-meter,meter-0001,Meter 1,UTC\n"
    "pk-meter,meter-0002,Meter 2,Mars/Olympus\n"  # not a time zone
    "pk-meter,meter-0001,Meter 1 again,UTC\n"  # repeats line 2
    "pk-meter,meter-0003,Meter 3,+08:00\n"
)


def submit(url: str, path: Path) -> tuple[int, str]:
    """``submit FILE`` in this process, its databases closed after it."""
    opened: list[Database] = []
    real = cli_common.open_database

    def tracking(settings: Settings) -> Database:
        opened.append(real(settings))
        return opened[-1]

    env = {
        "ENOS_IMPORT_DATABASE_URL": url,
        "ENOS_IMPORT_BROKER_URL": "memory://",
        "ENOS_IMPORT_ORG_ID": "o-line",
    }
    with mock.patch.object(jobs_cli, "open_database", tracking):
        result = CliRunner().invoke(cli, ["submit", str(path)], env=env)
    for database in opened:
        database.dispose()
    return result.exit_code, result.stderr


@pytest.mark.parametrize("backend", ["pg_url", "sqlite_url"])
def test_submit_says_what_it_read_without_counting_the_rows(
    backend: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    url = request.getfixturevalue(backend)
    path = tmp_path / "devices.csv"
    path.write_text(ROWS, encoding="utf-8")

    def refuse(*_: object) -> None:
        raise AssertionError("the job's rows were counted")

    # Counting is a pass over every row of the job: the running job's line is the intake's.
    with mock.patch.object(jobs, "item_counts", refuse):
        code, err = submit(url, path)
    assert code == 0, err
    said = " ".join(err.split())  # the console wraps long lines
    assert "running: 4 rows read, 2 to send in 1 chunks, 2 invalid (1 repeated deviceKeys)" in said


def test_the_follower_takes_the_counts_of_the_jobs_end_from_its_notification(
    pg_db: Database, client: EnosClient
) -> None:
    settings = fast_settings(batch_size=2, window=4)
    ctx = WorkerContext(pg_db, client, settings, LocalBudget(2), owner="test-host:1")
    started = start_job(pg_db, settings, [device(f"meter-{n:04d}") for n in range(1, 6)])
    counted_by: list[str] = []
    real = jobs.item_counts

    def counting(session: object, job_id: str) -> object:
        counted_by.append(threading.current_thread().name)
        return real(session, job_id)  # type: ignore[arg-type]

    def send_all() -> None:
        time.sleep(0.3)  # the follower listens by then
        for chunk_id in started.publish:
            send_chunk(ctx, chunk_id)

    with mock.patch.object(jobs, "item_counts", counting):
        worker = threading.Thread(target=send_all, name="worker")
        worker.start()
        view = follow(pg_db, started.job_id, poll_s=20.0)
        worker.join()
    assert view.status == "completed"
    assert view.counts == {"created": 5}
    assert counted_by == ["worker"]  # the job's end counted; the follower did not


def test_a_note_of_another_end_of_the_job_is_not_taken(pg_db: Database, client: EnosClient) -> None:
    settings = fast_settings(batch_size=2, window=4)
    ctx = WorkerContext(pg_db, client, settings, LocalBudget(2), owner="test-host:1")
    started = start_job(pg_db, settings, [device(f"meter-{n:04d}") for n in range(1, 4)])
    for chunk_id in started.publish:
        send_chunk(ctx, chunk_id)
    earlier = {
        "job_id": started.job_id,
        "status": "completed",
        "finished_at": "2026-01-01T00:00:00+00:00",  # an end before a retry, say
        "counts": {"created": 99},
    }
    view = job_view(pg_db, started.job_id, earlier)
    assert view is not None and view.counts == {"created": 3}
