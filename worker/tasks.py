"""Celery tasks: thin wrappers that open the process context, call a plain function, and
publish its follow-up messages after its transaction committed.

Task names are a contract: other systems publish ``enos_import.submit`` by name.
"""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

from celery import Task
from kombu.entity import Exchange, Queue
from sqlalchemy import select
from sqlalchemy.exc import InterfaceError, OperationalError

from worker import metrics
from worker.celery_app import QUEUE, app
from worker.db.models import JOBS, JobStatus
from worker.importer import boundary, events, jobs
from worker.importer.send import send_chunk
from worker.importer.submit import create, job_options, run_intake
from worker.importer.sweeper import sweep
from worker.intake.sources import InlineSource, SourceError, open_source
from worker.logs import get_logger
from worker.rollback.delete import delete_chunk, rollback_chunk
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


def publish_event(task: str, queue: str, kwargs: dict[str, Any]) -> None:
    """Publishes a completion event (or an internal follow-up) through the nameless exchange,
    straight to the list of ``queue``, as every message of this service."""
    app.send_task(task, kwargs=kwargs, queue=Queue(queue, Exchange(""), routing_key=queue))


events.set_publisher(publish_event, QUEUE)


def restart_intake(job_id: str, source: str, org_id: str, options: dict[str, Any]) -> bool:
    if options.get("source_kind") == "inbox":  # the inbox's own intake (worker/inbox/tasks.py)
        try:
            app.send_task("enos_import.ingest_inbox_file", args=[job_id], queue=QUEUE)
        except Exception as exc:
            log.warning("intake.restart_failed", job_id=job_id, error=str(exc))
            return False
        return True
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
    source: Any = None,
    org_id: Any = None,
    options: Any = None,
    job_id: Any = None,
    **unknown: Any,
) -> str | None:
    """Import ``source`` (a path the workers can read, or a list of CreateOption objects) into
    org ``org_id``. A caller that passes its own ``job_id`` can follow the job; a second
    delivery with the same ``job_id`` does nothing. A malformed or refused message fails its
    job (or, without a job id, is logged and dropped): it is never delivered again."""
    ctx = send_context()
    settings = ctx.settings
    try:
        message = boundary.parse_submit(source, org_id, options, job_id, unknown)
        boundary.check_org(settings, message.org_id)
        path = (
            None
            if isinstance(message.source, list)
            else boundary.check_source_path(settings, message.source)
        )
    except boundary.Refused as exc:
        return _refuse(job_id, org_id, source, str(exc))
    new_id: str = message.job_id or str(uuid.uuid4())
    opts = job_options(
        settings,
        require_secret=bool(message.options.get("require_secret", False)),
        intake="task",
        key_mode=message.options.get("key_mode"),
    )
    if isinstance(message.source, list):
        opts["source_kind"] = "inline"
        label = f"inline ({len(message.source)} devices)"
    else:
        opts["source_kind"] = "path"
        label = message.source
    created = create(ctx.db, settings, new_id, message.org_id, label, opts)
    try:
        reader = (
            InlineSource(message.source, settings.intake_limits())
            if isinstance(message.source, list)
            else open_source(
                path or Path(message.source),
                message.options.get("format"),
                settings.intake_limits(),
            )
        )
    except SourceError as exc:
        _fail_intake(new_id, created, str(exc))
        return new_id
    result = run_intake(ctx.db, settings, new_id, message.org_id, reader, opts)
    if result.summary is not None:
        metrics.record_invalid(result.summary.invalid)
    publish_chunks(result.publish)
    if result.summary is None and _intake_open(new_id):
        # Another delivery holds the intake (or held it and died): come back after its lease,
        # so that an intake interrupted by a killed worker is done again, not forgotten.
        raise self.retry(countdown=settings.lease_s, max_retries=5)
    return new_id


def _refuse(job_id: Any, org_id: Any, source: Any, reason: str) -> str | None:
    """A message that must not be done: its job fails once with the reason; without a job id
    it is logged and dropped. Nothing of the source is read."""
    ctx = send_context()
    known = boundary.job_id_of(job_id)
    if known is None:
        log.warning("submit.refused", error=reason)
        return None
    org = org_id if isinstance(org_id, str) else ""
    label = source if isinstance(source, str) else f"(refused {type(source).__name__})"
    with ctx.db.begin() as session:
        # A job that exists already is another delivery's: it is not this message's to fail.
        if jobs.create_job(session, known, org[: boundary.MAX_ORG_ID], label[:1000], {}):
            jobs.fail_job(session, known, reason)
    log.warning("submit.refused", job_id=known, error=reason)
    return known


def _fail_intake(job_id: str, created: bool, reason: str) -> None:
    """The source cannot be opened: the job fails, unless another delivery is reading it now
    (a repeated delivery must not touch the intake the first one holds)."""
    ctx = send_context()
    with ctx.db.begin() as session:
        if jobs.claim_intake(session, job_id, ctx.settings.lease_s) is not None or created:
            jobs.fail_job(session, job_id, reason)
    log.warning("intake.source_failed", job_id=job_id, error=reason)


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
    ctx = send_context()
    # One task for every chunk (the sweeper publishes them alike); a rollback job's deletes.
    if rollback_chunk(ctx.db, chunk_id):
        publish_chunks(delete_chunk(ctx, chunk_id).publish)
        return
    report = send_chunk(ctx, chunk_id)
    metrics.record_send(report)
    publish_chunks(report.publish)


@app.task(name="enos_import.sweep", autoretry_for=_DB_DOWN, max_retries=3)
def sweep_task() -> None:
    ctx = send_context()
    sweep(ctx.db, ctx.settings, publish_chunks, restart_intake)
