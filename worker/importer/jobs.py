"""A job's life: created, its intake claimed and completed, then finished, failed, cancelled or
sent again. Each function works inside the caller's transaction and never commits."""

from __future__ import annotations

from collections import Counter
from typing import Any

from sqlalchemy import and_, func, insert, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from worker.db.clock import db_epoch
from worker.db.models import (
    CHUNKS,
    FINAL_JOB_STATES,
    ITEMS,
    JOBS,
    SUCCESS_STATES,
    ChunkStatus,
    ItemStatus,
    JobStatus,
    KeySource,
)
from worker.importer import chunks, events
from worker.importer.answers import NO_KEY_MESSAGE
from worker.importer.intake import IntakeSummary, plan_chunks


def create_job(
    session: Session, job_id: str, org_id: str, source: str, options: dict[str, Any]
) -> bool:
    """Records a queued job; ``False`` when a job with this id already exists."""
    values = {
        "id": job_id,
        "status": JobStatus.QUEUED,
        "org_id": org_id,
        "source": source,
        "options": options,
        "total": 0,
        "intake_token": 0,
        "intake_attempts": 0,
    }
    dialect = session.connection().dialect.name
    if dialect == "postgresql":
        statement: Any = postgresql.insert(JOBS).values(values).on_conflict_do_nothing()
    elif dialect == "sqlite":
        statement = sqlite.insert(JOBS).values(values).on_conflict_do_nothing()
    else:  # pragma: no cover - only the two supported databases
        statement = insert(JOBS).values(values)
    # RETURNING, not rowcount: psycopg does not report the rowcount of ON CONFLICT DO NOTHING.
    return session.connection().execute(statement.returning(JOBS.c.id)).first() is not None


def claim_intake_deadline(session: Session, job_id: str, lease_s: float) -> None:
    session.connection().execute(
        update(JOBS).where(JOBS.c.id == job_id).values(intake_lease_until=db_epoch() + lease_s)
    )


def claim_intake(session: Session, job_id: str, lease_s: float) -> int | None:
    """The intake token if this caller may read the job's file now; ``None`` if another caller
    holds it, or the intake is already done."""
    now = db_epoch()
    row = (
        session.connection()
        .execute(
            update(JOBS)
            .where(
                JOBS.c.id == job_id,
                (JOBS.c.status == JobStatus.QUEUED)
                | and_(JOBS.c.status == JobStatus.VALIDATING, JOBS.c.intake_lease_until < now),
            )
            .values(
                status=JobStatus.VALIDATING,
                intake_token=JOBS.c.intake_token + 1,
                intake_lease_until=now + lease_s,
                intake_attempts=JOBS.c.intake_attempts + 1,
            )
            .returning(JOBS.c.intake_token)
        )
        .first()
    )
    return None if row is None else int(row[0])


def holds_intake(session: Session, job_id: str, token: int) -> bool:
    """Whether the intake holding ``token`` is still the job's (not taken over, not ended)."""
    row = session.connection().execute(
        select(JOBS.c.id).where(
            JOBS.c.id == job_id,
            JOBS.c.intake_token == token,
            JOBS.c.status == JobStatus.VALIDATING,
        )
    )
    return row.first() is not None


def complete_intake(
    session: Session,
    job_id: str,
    token: int,
    summary: IntakeSummary,
    columns: list[str],
    content_sha256: str,
) -> bool:
    """Moves the job to ``running`` (fenced by the intake token); ``False``: someone else's."""
    values: dict[str, Any] = {
        "status": JobStatus.RUNNING,
        "total": summary.rows,
        "columns": columns,
        "source_sha256": content_sha256,
        "started_at": func.now(),
        "intake_lease_until": None,
    }
    if summary.error:
        values["last_error"] = summary.error
    if summary.rows == 0:
        values.update(
            status=JobStatus.FAILED,
            finished_at=func.now(),
            last_error=summary.error or "the file has no devices",
        )
    result = session.connection().execute(
        update(JOBS)
        .where(
            JOBS.c.id == job_id,
            JOBS.c.intake_token == token,
            JOBS.c.status == JobStatus.VALIDATING,
        )
        .values(**values)
    )
    if not result.rowcount:
        return False
    if summary.rows == 0:
        events.job_finished(session, job_id, JobStatus.FAILED)
    elif summary.chunks == 0:
        finish_if_done(session, job_id)
    return True


def item_counts(session: Session, job_id: str) -> Counter[str]:
    rows = session.connection().execute(
        select(ITEMS.c.status, func.count())
        .where(ITEMS.c.job_id == job_id)
        .group_by(ITEMS.c.status)
    )
    return Counter({status: int(count) for status, count in rows})


def finish_if_done(session: Session, job_id: str) -> str | None:
    """Gives the job its final state once no chunk is open; returns it (or ``None``)."""
    job = (
        session.connection()
        .execute(select(JOBS.c.status, JOBS.c.last_error).where(JOBS.c.id == job_id))
        .first()
    )
    if job is None or job.status not in (JobStatus.RUNNING, JobStatus.CANCELLING):
        return None
    if chunks.open_chunks(session, job_id):
        return None
    counts = item_counts(session, job_id)
    if counts[ItemStatus.PENDING]:
        # Pending rows with no open chunk: plan them again rather than leave the job hanging.
        replan(session, job_id, [ItemStatus.PENDING], batch_size=None)
        return None
    if job.status == JobStatus.CANCELLING:
        final = JobStatus.CANCELLED
    elif set(counts) <= SUCCESS_STATES and counts and not job.last_error:
        final = JobStatus.COMPLETED
    else:
        final = JobStatus.COMPLETED_WITH_ERRORS
    result = session.connection().execute(
        update(JOBS)
        .where(JOBS.c.id == job_id, JOBS.c.status == job.status)
        .values(status=final, finished_at=func.now())
    )
    if not result.rowcount:
        return None
    events.job_finished(session, job_id, final)
    return final


def fail_job(session: Session, job_id: str, message: str) -> bool:
    """The job fails as a whole: every row not yet final ends ``failed`` with the job's error.

    Chunks in flight keep their leases: what they learn from EnOS is still written, so a device
    that was created is recorded as created.
    """
    result = session.connection().execute(
        update(JOBS)
        .where(JOBS.c.id == job_id, JOBS.c.status.not_in(tuple(FINAL_JOB_STATES)))
        .values(status=JobStatus.FAILED, last_error=message, finished_at=func.now())
    )
    if not result.rowcount:
        return False
    unknown = select(CHUNKS.c.seq).where(CHUNKS.c.job_id == job_id, CHUNKS.c.needs_reconcile)
    session.connection().execute(
        update(ITEMS)
        .where(
            ITEMS.c.job_id == job_id,
            ITEMS.c.status == ItemStatus.PENDING,
            ITEMS.c.key_source == KeySource.PLATFORM,
            ITEMS.c.chunk_seq.in_(unknown),
        )
        .values(status=ItemStatus.REVIEW, error_message=NO_KEY_MESSAGE, updated_at=func.now())
    )
    session.connection().execute(
        update(ITEMS)
        .where(ITEMS.c.job_id == job_id, ITEMS.c.status == ItemStatus.PENDING)
        .values(
            status=ItemStatus.FAILED, error_message=message, retryable=True, updated_at=func.now()
        )
    )
    session.connection().execute(
        update(CHUNKS)
        .where(CHUNKS.c.job_id == job_id, CHUNKS.c.status == ChunkStatus.PENDING)
        .values(status=ChunkStatus.DONE, last_error=message)
    )
    events.job_finished(session, job_id, JobStatus.FAILED)
    return True


def cancel_job(session: Session, job_id: str) -> str | None:
    """Stops sending: chunks not yet taken end ``cancelled`` with their rows; returns the new
    job state, or ``None`` when the job was already final."""
    result = session.connection().execute(
        update(JOBS)
        .where(
            JOBS.c.id == job_id,
            JOBS.c.status.in_(
                (JobStatus.QUEUED, JobStatus.VALIDATING, JobStatus.RUNNING, JobStatus.CANCELLING)
            ),
        )
        .values(status=JobStatus.CANCELLING)
    )
    if not result.rowcount:
        return None
    cancelled = [
        row[0]
        for row in session.connection().execute(
            update(CHUNKS)
            .where(CHUNKS.c.job_id == job_id, CHUNKS.c.status == ChunkStatus.PENDING)
            .values(status=ChunkStatus.CANCELLED)
            .returning(CHUNKS.c.seq)
        )
    ]
    for start in range(0, len(cancelled), 500):
        session.connection().execute(
            update(ITEMS)
            .where(
                ITEMS.c.job_id == job_id,
                ITEMS.c.chunk_seq.in_(cancelled[start : start + 500]),
                ITEMS.c.status == ItemStatus.PENDING,
            )
            .values(
                status=ItemStatus.CANCELLED,
                error_message="cancelled before it was sent",
                retryable=True,
                updated_at=func.now(),
            )
        )
    # A job cancelled before its intake ended has nothing in flight.
    ended = session.connection().execute(
        update(JOBS)
        .where(JOBS.c.id == job_id, JOBS.c.total == 0, JOBS.c.status == JobStatus.CANCELLING)
        .values(status=JobStatus.CANCELLED, finished_at=func.now())
    )
    if ended.rowcount:
        events.job_finished(session, job_id, JobStatus.CANCELLED)
    return finish_if_done(session, job_id) or JobStatus.CANCELLING


def retry_job(session: Session, job_id: str, batch_size: int) -> int:
    """Sends again the rows that failed for a retryable reason or were never sent; returns how
    many rows go out again (0 leaves the job as it is)."""
    job = session.connection().execute(select(JOBS.c.status).where(JOBS.c.id == job_id)).first()
    if job is None or job.status not in FINAL_JOB_STATES:
        return 0
    again = ((ITEMS.c.status == ItemStatus.FAILED) & ITEMS.c.retryable) | (
        ITEMS.c.status == ItemStatus.CANCELLED
    )
    count = replan(session, job_id, again, batch_size=batch_size)
    if count:
        session.connection().execute(
            update(JOBS)
            .where(JOBS.c.id == job_id)
            .values(status=JobStatus.RUNNING, finished_at=None, last_error=None)
        )
    return count


def replan(session: Session, job_id: str, which: Any, batch_size: int | None) -> int:
    """Puts the rows matched by ``which`` (a condition, or a list of states) into new chunks."""
    if isinstance(which, list):
        which = ITEMS.c.status.in_(which)
    if batch_size is None:
        batch_size = int(
            session.connection()
            .execute(
                select(func.coalesce(func.max(CHUNKS.c.size), 1000)).where(
                    CHUNKS.c.job_id == job_id
                )
            )
            .scalar_one()
        )
    ids = [
        row[0]
        for row in session.connection().execute(
            select(ITEMS.c.id).where(ITEMS.c.job_id == job_id, which).order_by(ITEMS.c.line_no)
        )
    ]
    if not ids:
        return 0
    base = chunks.next_seq(session, job_id)
    for offset in range(0, len(ids), batch_size):
        session.connection().execute(
            update(ITEMS)
            .where(ITEMS.c.id.in_(ids[offset : offset + batch_size]))
            .values(
                status=ItemStatus.PENDING,
                chunk_seq=base + offset // batch_size,
                error_code=None,
                error_message=None,
                retryable=False,
                updated_at=func.now(),
            )
        )
    plan_chunks(session, job_id, only_from_seq=base)
    return len(ids)
