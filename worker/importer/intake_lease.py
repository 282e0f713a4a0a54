"""The intake's hold on its job: claimed with a token and a lease, renewed by every batch it
stores, and ended by completing it; a cancel, a job failure or a takeover after the lease ran out
ends it too, and the intake then stops at its next batch. Each function works inside the
caller's transaction and never commits."""

from __future__ import annotations

from typing import Any

from sqlalchemy import and_, case, func, select, update

from worker.db.clock import db_epoch, db_now
from worker.db.models import JOBS, JobStatus
from worker.db.session import Session
from worker.importer import events
from worker.importer.intake import IntakeSummary
from worker.importer.jobs import finish_if_done


def claim_intake_deadline(session: Session, job_id: str, lease_s: float) -> None:
    session.connection().execute(
        update(JOBS).where(JOBS.c.id == job_id).values(intake_lease_until=db_epoch() + lease_s)
    )


def _holding(job_id: str, token: int) -> Any:
    """The job's intake is open and ``token`` holds it (not taken over, failed or cancelled)."""
    return and_(
        JOBS.c.id == job_id,
        JOBS.c.intake_token == token,
        JOBS.c.intake_lease_until.is_not(None),
        JOBS.c.status.in_((JobStatus.VALIDATING, JobStatus.RUNNING)),
        JOBS.c.failure.is_(None),
    )


def renew_intake(session: Session, job_id: str, token: int, lease_s: float) -> bool:
    """Extends a running intake's lease while ``token`` still holds it."""
    result = session.connection().execute(
        update(JOBS).where(_holding(job_id, token)).values(intake_lease_until=db_epoch() + lease_s)
    )
    return bool(result.rowcount)


def claim_intake(session: Session, job_id: str, lease_s: float) -> int | None:
    """The intake token if this caller may read the job's file now; ``None`` if another caller
    holds it, or the intake is already done. An intake whose lease ran out is taken over: it
    resumes after the last line its job stored (``intake_line``)."""
    now = db_epoch()
    row = (
        session.connection()
        .execute(
            update(JOBS)
            .where(
                JOBS.c.id == job_id,
                (JOBS.c.status == JobStatus.QUEUED)
                | and_(
                    JOBS.c.status.in_((JobStatus.VALIDATING, JobStatus.RUNNING)),
                    JOBS.c.intake_lease_until < now,
                    JOBS.c.failure.is_(None),
                ),
            )
            .values(
                status=case(
                    (JOBS.c.status == JobStatus.QUEUED, JobStatus.VALIDATING), else_=JOBS.c.status
                ),
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
    row = session.connection().execute(select(JOBS.c.id).where(_holding(job_id, token)))
    return row.first() is not None


def intake_resume_point(session: Session, job_id: str) -> tuple[int, str | None]:
    """The last line an earlier intake of the job stored (0: none) and the content hash it read."""
    row = (
        session.connection()
        .execute(select(JOBS.c.intake_line, JOBS.c.source_sha256).where(JOBS.c.id == job_id))
        .first()
    )
    if row is None or row.intake_line is None:
        return 0, None
    return int(row.intake_line), row.source_sha256


def store_intake_batch(
    session: Session,
    job_id: str,
    token: int,
    rows: int,
    last_line: int,
    lease_s: float,
    content_sha256: str,
    columns: list[str],
) -> bool:
    """Records a batch of the intake on its job, first thing in the batch's transaction (the
    job's row lock then orders it against a cancel, a failure or a split); ``False``: the intake
    is no longer this one's, and the batch must not be written. The job is ``running`` from
    its first batch: its chunks are sent while the rest of the file is read. ``columns``, the
    file's so far, name the values of the batch's stored cells (:mod:`worker.importer.cells`)."""
    result = session.connection().execute(
        update(JOBS)
        .where(_holding(job_id, token))
        .values(
            status=JobStatus.RUNNING,
            total=JOBS.c.total + rows,
            intake_line=last_line,
            intake_lease_until=db_epoch() + lease_s,
            source_sha256=content_sha256,
            columns=list(columns),
            started_at=func.coalesce(JOBS.c.started_at, db_now()),
        )
    )
    return bool(result.rowcount)


def complete_intake(
    session: Session,
    job_id: str,
    token: int,
    summary: IntakeSummary,
    columns: list[str],
    content_sha256: str,
) -> bool:
    """Ends the intake (fenced by its token): the job, ``running`` since its first batch, may
    now finish once its chunks have; a file without a row fails it. ``False``: someone else's."""
    values: dict[str, Any] = {
        "columns": columns,
        "source_sha256": content_sha256,
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
        update(JOBS).where(_holding(job_id, token)).values(**values)
    )
    if not result.rowcount:
        return False
    if summary.rows == 0:
        events.job_finished(session, job_id, JobStatus.FAILED)
    else:
        finish_if_done(session, job_id)
    return True
