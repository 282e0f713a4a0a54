"""Celery tasks: thin wrappers that open the process context, call a plain function, and
publish its follow-up messages after its transaction committed.

Task names are a contract: other systems publish ``enos_import.submit`` by name.
"""

from __future__ import annotations

from typing import Any

from celery import Task
from kombu.entity import Exchange, Queue

from worker import metrics
from worker.celery_app import QUEUE, app, task
from worker.importer import events
from worker.importer.queued import take_submit
from worker.importer.send import SendReport, claim_chunk, send_claimed
from worker.importer.sweeper import sweep
from worker.logs import get_logger
from worker.publish import publish_chunks
from worker.rollback.delete import delete_claimed
from worker.runtime import send_context

log = get_logger(__name__)


def publish_event(name: str, queue: str, kwargs: dict[str, Any]) -> None:
    """Publishes a completion event (or an internal follow-up) through the nameless exchange,
    straight to the list of ``queue``, as every message of this service."""
    app.send_task(name, kwargs=kwargs, queue=Queue(queue, Exchange(""), routing_key=queue))


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


@task("enos_import.submit", bind=True)
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
    # The intake publishes each batch's chunks as it commits them.
    taken = take_submit(ctx, source, org_id, options, job_id, unknown, publish_chunks)
    metrics.record_invalid(taken.invalid)
    if taken.come_back:
        raise self.retry(countdown=ctx.settings.lease_s, max_retries=5)
    return taken.job_id


@task("enos_import.send_chunk", max_retries=None)
def send_chunk_task(chunk_id: int) -> None:
    metrics.start_task()
    ctx = send_context()
    # One task for every chunk (the sweeper publishes them alike); a rollback job's deletes.
    start = claim_chunk(ctx, chunk_id)
    if start is not None and start.rollback:
        publish_chunks(delete_claimed(ctx, start).publish)
        return
    report = SendReport(claimed=False) if start is None else send_claimed(ctx, start)
    metrics.record_send(report)
    publish_chunks(report.publish)


@task("enos_import.sweep", max_retries=3)
def sweep_task() -> None:
    ctx = send_context()
    sweep(ctx.db, ctx.settings, publish_chunks, restart_intake)
