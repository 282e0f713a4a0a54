"""Celery tasks of the inbox: thin wrappers around :mod:`worker.inbox.scan`, ``ingest`` and
``filing``. ``enos_import.scan_inbox`` is a contract name (Celery beat runs it on
``ENOS_IMPORT_INBOX_SCHEDULE``)."""

from __future__ import annotations

from worker.celery_app import QUEUE, app, task
from worker.inbox.filing import file_job
from worker.inbox.ingest import ingest_file
from worker.inbox.scan import ScanReport, scan
from worker.logs import get_logger
from worker.publish import publish_chunks
from worker.runtime import send_context

log = get_logger(__name__)


def start_intake(job_id: str) -> None:
    """Queues the intake of a file just taken; a lost message is repaired by the sweeper
    (the job's intake deadline passes and the intake is queued again)."""
    try:
        app.send_task("enos_import.ingest_inbox_file", args=[job_id], queue=QUEUE)
    except Exception as exc:
        log.warning("inbox.publish_failed", job_id=job_id, error=str(exc))


def run_scan() -> ScanReport:
    ctx = send_context()
    return scan(ctx.db, ctx.settings, start_intake)


@task("enos_import.scan_inbox", max_retries=3)
def scan_inbox(follow_up: bool = False) -> None:
    """One scan. Files still settling are looked at again after ``INBOX_SETTLE_S`` by one
    follow-up scan, so a nightly schedule does not wait a night for the second look."""
    report = run_scan()
    if report.waiting and not follow_up:
        settle = send_context().settings.inbox_settle_s
        app.send_task(
            "enos_import.scan_inbox", kwargs={"follow_up": True}, queue=QUEUE, countdown=settle + 1
        )


@task("enos_import.ingest_inbox_file")
def ingest_inbox_file(job_id: str) -> None:
    ctx = send_context()
    ingest_file(ctx.db, ctx.settings, job_id, publish_chunks)


@task("enos_import.inbox_job_done")
def inbox_job_done(job_id: str) -> None:
    """The completion event of an inbox job: its file and results are put away."""
    ctx = send_context()
    file_job(ctx.db, ctx.settings, job_id)
