"""A job's life: created, then finished, failed, cancelled or sent again (its intake's hold on
it is :mod:`worker.importer.intake_lease`). Each function works inside the caller's transaction
and never commits."""

from __future__ import annotations

from collections import Counter
from typing import Any

from sqlalchemy import String, bindparam, delete, func, select, update

from worker.db.clock import db_epoch
from worker.db.models import (
    CHUNKS,
    FINAL_JOB_STATES,
    FULL_PRODUCTS,
    ITEMS,
    JOBS,
    SUCCESS_STATES,
    ChunkStatus,
    ItemStatus,
    JobStatus,
)
from worker.db.session import Session
from worker.db.upsert import insert_ignore
from worker.importer import chunks, events
from worker.importer.intake import plan_chunks
from worker.importer.settle import CANCELLED_MESSAGE, Stop, settle_unsent


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
    return insert_ignore(session, JOBS, values)


def item_counts(session: Session, job_id: str) -> Counter[str]:
    rows = session.connection().execute(
        select(ITEMS.c.status, func.count())
        .where(ITEMS.c.job_id == job_id)
        .group_by(ITEMS.c.status)
    )
    return Counter({status: int(count) for status, count in rows})


_JOB_ID = bindparam("p_job_id", type_=String())
# Read after every chunk's outcome (built once, see ``chunks``).
_JOB_TO_FINISH = select(
    JOBS.c.status, JOBS.c.last_error, JOBS.c.failure, JOBS.c.intake_lease_until,
    chunks.open_chunks(_JOB_ID).label("open_chunks"),
).where(JOBS.c.id == _JOB_ID)  # fmt: skip


def finish_if_done(session: Session, job_id: str) -> str | None:
    """Gives the job its final state once no chunk is open; returns it (or ``None``)."""
    job = session.connection().execute(_JOB_TO_FINISH, {"p_job_id": job_id}).first()
    if job is None or job.status not in (JobStatus.RUNNING, JobStatus.CANCELLING):
        return None
    if job.intake_lease_until is not None:
        return None  # the file is still being read (or its intake is to be taken over)
    if job.open_chunks:
        return None
    counts = item_counts(session, job_id)
    if counts[ItemStatus.PENDING]:
        # Pending rows with no open chunk: plan them again rather than leave the job hanging.
        replan(session, job_id, [ItemStatus.PENDING], batch_size=None)
        return None
    if job.failure:
        final = JobStatus.FAILED
    elif job.status == JobStatus.CANCELLING:
        final = JobStatus.CANCELLED
    elif set(counts) <= SUCCESS_STATES and counts and not job.last_error:
        final = JobStatus.COMPLETED
    else:
        final = JobStatus.COMPLETED_WITH_ERRORS
    finished = (
        session.connection()
        .execute(
            update(JOBS)
            .where(JOBS.c.id == job_id, JOBS.c.status == job.status)
            .values(status=final, finished_at=func.now())
            .returning(JOBS.c.finished_at)
        )
        .first()
    )
    if finished is None:
        return None
    events.job_finished(session, job_id, final, counts, finished.finished_at)
    return final


def fail_job(session: Session, job_id: str, message: str) -> bool:
    """The job fails as a whole: nothing more is sent, and every row not yet final ends
    ``failed`` with the job's error; ``False`` when it was already final or failing.

    Rows that were never part of a call end now. Rows an earlier call may have created stay
    with their chunk, which looks them up first (:mod:`worker.importer.settle`); the job is
    ``failed`` once no chunk is open.
    """
    result = session.connection().execute(
        update(JOBS)
        .where(
            JOBS.c.id == job_id,
            JOBS.c.status.not_in(tuple(FINAL_JOB_STATES)),
            JOBS.c.failure.is_(None),
        )
        # An intake still reading stops at its next batch (it no longer holds the job).
        .values(failure=message, last_error=message, intake_lease_until=None)
    )
    if not result.rowcount:
        return False
    settle_unsent(session, job_id, Stop(ItemStatus.FAILED, message), ChunkStatus.DONE)
    # A job is ``running`` from its intake's first stored batch: before it, it has no row.
    ended = session.connection().execute(
        update(JOBS)
        .where(JOBS.c.id == job_id, JOBS.c.status.in_((JobStatus.QUEUED, JobStatus.VALIDATING)))
        .values(status=JobStatus.FAILED, finished_at=func.now())
    )
    if ended.rowcount:
        events.job_finished(session, job_id, JobStatus.FAILED)
    else:
        finish_if_done(session, job_id)  # it emits the event when the job ends now
    return True


def cancel_job(session: Session, job_id: str) -> str | None:
    """Stops sending: rows never sent end ``cancelled`` now, the rest once their chunk has
    settled them; returns the new job state, or ``None`` when the job was already final."""
    result = session.connection().execute(
        update(JOBS)
        .where(
            JOBS.c.id == job_id,
            JOBS.c.status.in_(
                (JobStatus.QUEUED, JobStatus.VALIDATING, JobStatus.RUNNING, JobStatus.CANCELLING)
            ),
        )
        # An intake still reading stops at its next batch (it no longer holds the job).
        .values(status=JobStatus.CANCELLING, intake_lease_until=None)
    )
    if not result.rowcount:
        return None
    settle_unsent(
        session, job_id, Stop(ItemStatus.CANCELLED, CANCELLED_MESSAGE), ChunkStatus.CANCELLED
    )
    # A job cancelled before its intake stored a row has nothing in flight.
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
        # A product's room may have grown since (the operator raised its limit): ask again.
        session.connection().execute(delete(FULL_PRODUCTS).where(FULL_PRODUCTS.c.job_id == job_id))
        session.connection().execute(
            update(JOBS)
            .where(JOBS.c.id == job_id)
            .values(status=JobStatus.RUNNING, finished_at=None, last_error=None, failure=None)
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


def open_chunks_note(session: Session, job_id: str) -> str | None:
    """What the job's open chunks are waiting for, in words (``None`` when none is open): a
    job whose rows are all final may still wait for a lease to run out or a look-up."""
    now = db_epoch()
    row = (
        session.connection()
        .execute(
            select(
                func.count().filter(
                    CHUNKS.c.status == ChunkStatus.IN_FLIGHT, CHUNKS.c.lease_expires_at >= now
                ),
                func.max(CHUNKS.c.lease_expires_at - now).filter(
                    CHUNKS.c.status == ChunkStatus.IN_FLIGHT, CHUNKS.c.lease_expires_at >= now
                ),
                func.count().filter(
                    CHUNKS.c.status == ChunkStatus.IN_FLIGHT, CHUNKS.c.lease_expires_at < now
                ),
                func.count().filter(
                    CHUNKS.c.status == ChunkStatus.PENDING, CHUNKS.c.needs_reconcile.is_(True)
                ),
                func.count().filter(
                    CHUNKS.c.status == ChunkStatus.PENDING, CHUNKS.c.needs_reconcile.is_(False)
                ),
            ).where(
                CHUNKS.c.job_id == job_id,
                CHUNKS.c.status.in_((ChunkStatus.PENDING, ChunkStatus.IN_FLIGHT)),
            )
        )
        .one()
    )
    live, lease_left, expired, lookups, waiting = (row[0], row[1], row[2], row[3], row[4])
    parts = []
    if live:
        parts.append(f"{live} in flight (leases end within {float(lease_left or 0):.0f} s)")
    if expired:
        parts.append(f"{expired} whose worker stopped, waiting for the sweeper to send again")
    if lookups:
        parts.append(f"{lookups} to look up rows whose answer was lost")
    if waiting:
        parts.append(f"{waiting} waiting to be sent")
    return ", ".join(parts) or None


def last_retry(session: Session, job_id: str) -> tuple[int, str] | None:
    """Why the job's chunks wait to be sent again: the attempts and last error of its most tried
    waiting chunk. What an operator watching a job that does not move needs (EnOS down, a wrong
    URL, refused credentials); ``None`` while no waiting chunk has failed."""
    row = (
        session.connection()
        .execute(
            select(CHUNKS.c.attempts, CHUNKS.c.last_error)
            .where(
                CHUNKS.c.job_id == job_id,
                CHUNKS.c.status == ChunkStatus.PENDING,
                CHUNKS.c.last_error.is_not(None),
            )
            .order_by(CHUNKS.c.attempts.desc(), CHUNKS.c.id.desc())
            .limit(1)
        )
        .first()
    )
    return None if row is None else (row.attempts, row.last_error)
