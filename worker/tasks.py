"""Celery tasks: thin wrappers that open the process context, call a plain function, and
publish its follow-up messages after its transaction committed.

Task names are a contract: other systems publish ``enos_import.submit`` by name.
"""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

from celery import Task
from sqlalchemy import select
from sqlalchemy.exc import InterfaceError, OperationalError

from worker import metrics
from worker.celery_app import QUEUE, app
from worker.db.models import JOBS, JobStatus
from worker.importer import jobs
from worker.importer.send import send_chunk
from worker.importer.submit import create, job_options, run_intake
from worker.importer.sweeper import sweep
from worker.intake.sources import InlineSource, SourceError, open_source
from worker.logs import get_logger
from worker.runtime import send_context

log = get_logger(__name__)

# A database that is away (restart, dropped connection) makes a task try again soon; anything
# else is a bug that the sweeper's retry schedule and the chunk's attempt cap contain.
_DB_DOWN = (OperationalError, InterfaceError)


def publish_chunks(ids: list[int]) -> None:
    """Publishes "send chunk N" messages; a publish that fails is repaired by the sweeper."""
    for chunk_id in ids:
        try:
            app.send_task("enos_import.send_chunk", args=[chunk_id], queue=QUEUE)
        except Exception as exc:
            log.warning("chunk.publish_failed", chunk_id=chunk_id, error=str(exc))


def restart_intake(job_id: str, source: str, org_id: str, options: dict[str, Any]) -> bool:
    if options.get("source_kind") != "path":
        return False  # inline devices live in their message, which the broker redelivers
    try:
        app.send_task(
            "enos_import.submit",
            kwargs={"source": source, "org_id": org_id, "options": options, "job_id": job_id},
            queue=QUEUE,
        )
    except Exception as exc:
        log.warning("intake.restart_failed", job_id=job_id, error=str(exc))
        return False
    return True


@app.task(
    name="enos_import.submit",
    bind=True,
    autoretry_for=_DB_DOWN,
    retry_backoff=True,
    retry_backoff_max=30,
    max_retries=20,
)
def submit(
    self: Task,
    source: str | list[Any],
    org_id: str,
    options: dict[str, Any] | None = None,
    job_id: str | None = None,
) -> str:
    """Import ``source`` (a path the workers can read, or a list of CreateOption objects) into
    org ``org_id``. A caller that passes its own ``job_id`` can follow the job; a second
    delivery with the same ``job_id`` does nothing."""
    ctx = send_context()
    settings = ctx.settings
    options = dict(options or {})
    job_id = str(uuid.UUID(job_id)) if job_id else str(uuid.uuid4())
    opts = job_options(
        settings,
        require_secret=bool(options.get("require_secret", False)),
        intake="task",
        key_mode=options.get("key_mode"),
    )
    if isinstance(source, list):
        opts["source_kind"] = "inline"
        label = f"inline ({len(source)} devices)"
    else:
        opts["source_kind"] = "path"
        label = str(source)
    created = create(ctx.db, settings, job_id, org_id, label, opts)
    try:
        reader = (
            InlineSource(source)
            if isinstance(source, list)
            else open_source(Path(source), options.get("format"), settings.intake_limits())
        )
    except SourceError as exc:
        if created:  # a repeated delivery must not touch the job the first one made
            with ctx.db.begin() as session:
                jobs.fail_job(session, job_id, str(exc))
        return job_id
    result = run_intake(ctx.db, settings, job_id, org_id, reader, opts)
    if result.summary is not None:
        metrics.record_invalid(result.summary.invalid)
    publish_chunks(result.publish)
    if result.summary is None and _intake_open(job_id):
        # Another delivery holds the intake (or held it and died): come back after its lease,
        # so that an intake interrupted by a killed worker is done again, not forgotten.
        raise self.retry(countdown=settings.lease_s, max_retries=5)
    return job_id


def _intake_open(job_id: str) -> bool:
    with send_context().db.read() as session:
        state = session.execute(select(JOBS.c.status).where(JOBS.c.id == job_id)).scalar()
    return state in (JobStatus.QUEUED, JobStatus.VALIDATING)


@app.task(
    name="enos_import.send_chunk",
    autoretry_for=_DB_DOWN,
    retry_backoff=True,
    retry_backoff_max=30,
    max_retries=None,
)
def send_chunk_task(chunk_id: int) -> None:
    metrics.start_task()
    report = send_chunk(send_context(), chunk_id)
    metrics.record_send(report)
    publish_chunks(report.publish)


@app.task(name="enos_import.sweep", autoretry_for=_DB_DOWN, max_retries=3)
def sweep_task() -> None:
    ctx = send_context()
    sweep(ctx.db, ctx.settings, publish_chunks, restart_intake)
