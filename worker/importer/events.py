"""Completion events: nobody has to poll for a job's end.

When a job reaches a final state, in that same transaction: PostgreSQL is told ``NOTIFY
enos_import_jobs, '<job_id> <status>'`` (sent at commit), and an event row is written to the
outbox for the task named by ``ENOS_IMPORT_ON_FINISH_TASK`` (and, for an inbox job, for the task
that files its results). The rows are published once the transaction committed, and the sweeper
publishes again any row not marked published, so a crash between commit and publish still
sends it: delivery is at least once, and a consumer deduplicates by ``job_id``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import orjson
from sqlalchemy import Engine, insert, select, update

from worker.db.clock import db_epoch
from worker.db.models import EVENTS, JOBS, ROLLBACK_STATES, ItemStatus
from worker.db.notify import notify
from worker.db.session import Database, Session
from worker.logs import get_logger
from worker.settings import get_settings

log = get_logger(__name__)

CHANNEL = "enos_import_jobs"
# A finished job's counts for a client that follows it (``submit --wait``), which would otherwise
# count them again, a pass over every row of the job: JSON ``{"job_id", "status",
# "finished_at", "counts"}``, sent beside CHANNEL's notification when the finishing transaction
# counted the rows.
COUNTS_CHANNEL = "enos_import_job_counts"
INBOX_DONE_TASK = "enos_import.inbox_job_done"
# A row the after-commit publish should have sent already; older unpublished rows are sent
# again by the sweeper (a second copy of a young one is harmless, only wasteful).
REPUBLISH_AFTER_S = 10.0

Publisher = Callable[[str, str, dict[str, Any]], None]


@dataclass
class _Outlet:
    """How this process publishes a task ``(name, queue, kwargs)``; none in a process without
    a broker (the CLI), where the sweeper of a worker publishes the events later."""

    publish: Publisher | None = None
    internal_queue: str = "enos_import"


_outlet = _Outlet()


def set_publisher(publish: Publisher, internal_queue: str) -> None:
    """Installs the publisher; ``internal_queue`` takes this service's own follow-up tasks."""
    _outlet.publish = publish
    _outlet.internal_queue = internal_queue


def job_finished(
    session: Session,
    job_id: str,
    status: str,
    counts: Mapping[str, int] | None = None,
    finished_at: datetime | None = None,
) -> None:
    """Records the end of ``job_id`` in the caller's transaction: NOTIFY and the outbox.
    ``counts``: the job's rows by state, when the caller has just counted them in this
    transaction (counting is a pass over every row of the job), with the ``finished_at`` it
    gave the job."""
    if counts is not None and finished_at is not None:
        # First: a client woken by CHANNEL's notification has the counts already.
        note = {
            "job_id": job_id,
            "status": status,
            "finished_at": finished_at.isoformat(),
            "counts": {str(state): int(n) for state, n in counts.items() if n},
        }
        notify(session, COUNTS_CHANNEL, orjson.dumps(note).decode())
    notify(session, CHANNEL, f"{job_id} {status}")
    job = (
        session.connection()
        .execute(
            select(JOBS.c.org_id, JOBS.c.source, JOBS.c.total, JOBS.c.options).where(
                JOBS.c.id == job_id
            )
        )
        .first()
    )
    if job is None:
        return
    settings = get_settings()
    rows: list[tuple[str, str, dict[str, Any]]] = []
    if settings.on_finish_task:
        kwargs = {
            "job_id": job_id,
            "status": status,
            "org_id": job.org_id,
            "source": job.source,
            "total": job.total,
            **_counts(session, job_id, counts),
        }
        rows.append((settings.on_finish_task, settings.on_finish_queue, kwargs))
    if (job.options or {}).get("intake") == "inbox":
        rows.append((INBOX_DONE_TASK, _outlet.internal_queue, {"job_id": job_id}))
    _write_outbox(session, job_id, rows)


def _write_outbox(
    session: Session, job_id: str, rows: list[tuple[str, str, dict[str, Any]]]
) -> None:
    """Writes the events ``(task, queue, kwargs)`` and publishes them once the transaction
    committed."""
    if not rows:
        return
    pending: list[tuple[int, str, str, dict[str, Any]]] = []
    engine = session.engine
    session.after_commit(lambda: _publish(engine, pending))
    for task, queue, kwargs in rows:
        event_id = (
            session.connection()
            .execute(
                insert(EVENTS)
                .values(job_id=job_id, task=task, queue=queue, kwargs=kwargs, created_at=db_epoch())
                .returning(EVENTS.c.id)
            )
            .scalar_one()
        )
        pending.append((event_id, task, queue, kwargs))


def _counts(session: Session, job_id: str, counted: Mapping[str, int] | None) -> dict[str, int]:
    from worker.importer.jobs import item_counts  # jobs calls this module

    counts = item_counts(session, job_id) if counted is None else counted
    # The states of import_job_status always; a rollback's (rolled_back, deleted, not_found)
    # only where they occur, so that an import's message keeps its fields.
    return {
        state.value: int(counts.get(state, 0))
        for state in ItemStatus
        if state not in ROLLBACK_STATES or counts.get(state)
    }


def _publish(engine: Engine, pending: list[tuple[int, str, str, dict[str, Any]]]) -> int:
    """Publishes events and marks those that went out; a failure leaves them to the sweeper."""
    publish = _outlet.publish
    if publish is None:
        return 0
    sent = []
    for event_id, task, queue, kwargs in pending:
        try:
            publish(task, queue, kwargs)
        except Exception as exc:
            log.warning("event.publish_failed", event_id=event_id, task=task, error=str(exc))
            continue
        sent.append(event_id)
    if sent:
        try:
            with engine.begin() as connection:
                connection.execute(
                    update(EVENTS).where(EVENTS.c.id.in_(sent)).values(published_at=db_epoch())
                )
        except Exception as exc:  # the sweeper publishes them again: at least once
            log.warning("event.mark_failed", events=len(sent), error=str(exc))
    return len(sent)


def publish_pending(db: Database, limit: int = 500) -> int:
    """The sweeper's part: publishes events that were written but never marked published."""
    if _outlet.publish is None:
        return 0
    with db.read() as session:
        rows = session.execute(
            select(EVENTS.c.id, EVENTS.c.task, EVENTS.c.queue, EVENTS.c.kwargs)
            .where(
                EVENTS.c.published_at.is_(None),
                EVENTS.c.created_at < db_epoch() - REPUBLISH_AFTER_S,
            )
            .order_by(EVENTS.c.id)
            .limit(limit)
        ).all()
    if not rows:
        return 0
    count = _publish(db.engine, [(r.id, r.task, r.queue, dict(r.kwargs)) for r in rows])
    log.info("events.republished", count=count)
    return count
