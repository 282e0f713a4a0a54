"""The sweeper: run periodically (Celery beat, or the embedded runner's loop).

It makes lost messages harmless: it publishes due chunks whose message is missing or late and
chunks whose worker died (expired lease), finishes jobs whose last chunk closed, and restarts or
fails intakes that stopped half way. Running it twice at once is harmless too: claims and
fenced writes absorb duplicate messages.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import select

from worker.db.clock import db_epoch
from worker.db.models import JOBS, SERVICE_BEATS, JobStatus
from worker.db.session import Database, Session
from worker.db.upsert import upsert
from worker.importer import chunks, events, jobs
from worker.logs import get_logger
from worker.settings import Settings

log = get_logger(__name__)
BEAT = "sweeper"


@dataclass
class SweepReport:
    published: list[int] = field(default_factory=list)
    finished: dict[str, str] = field(default_factory=dict)
    intakes_restarted: list[str] = field(default_factory=list)
    intakes_failed: list[str] = field(default_factory=list)
    events_published: int = 0


def sweep(
    db: Database,
    settings: Settings,
    publish_chunks: Callable[[list[int]], None],
    restart_intake: Callable[[str, str, str, dict[str, object]], bool] | None = None,
) -> SweepReport:
    """One pass. ``restart_intake(job_id, source, org_id, options)`` re-queues a task intake and
    says whether it could; CLI intakes cannot be restarted and fail instead."""
    report = SweepReport()
    with db.begin() as session:
        record_beat(session)
        active = [
            row[0]
            for row in session.execute(
                select(JOBS.c.id).where(
                    JOBS.c.status.in_((JobStatus.RUNNING, JobStatus.CANCELLING))
                )
            )
        ]
        stale = session.execute(
            select(
                JOBS.c.id,
                JOBS.c.source,
                JOBS.c.org_id,
                JOBS.c.options,
                db_epoch() - JOBS.c.intake_lease_until,
                JOBS.c.intake_attempts,
                JOBS.c.last_error,
            ).where(
                # A running job's intake is still open while it reads the rest of the file.
                JOBS.c.status.in_((JobStatus.QUEUED, JobStatus.VALIDATING, JobStatus.RUNNING)),
                JOBS.c.intake_lease_until < db_epoch(),
            )
        ).all()
    for job_id in active:
        _advance(db, settings, job_id, publish_chunks, report)
    for row in stale:
        _recover_intake(db, settings, row, restart_intake, report)
    report.events_published = events.publish_pending(db)
    if report.published or report.finished:
        log.info(
            "sweep.done",
            published=len(report.published),
            finished=len(report.finished),
        )
    return report


def _gave_up(attempts: int, last_error: str | None) -> str:
    message = (
        f"the intake was started {attempts} times and never ended (ENOS_IMPORT_MAX_INTAKE_ATTEMPTS)"
    )
    return f"{message}; last error: {last_error}" if last_error else message


def _advance(
    db: Database,
    settings: Settings,
    job_id: str,
    publish_chunks: Callable[[list[int]], None],
    report: SweepReport,
) -> None:
    """Finishes the job if no chunk is open, else publishes its due chunks."""
    with db.begin() as session:
        state = jobs.finish_if_done(session, job_id)
        ids = (
            []
            if state
            else chunks.publish_due(
                session, job_id, settings.publish_window, settings.republish_after_s
            )
        )
    if state:
        report.finished[job_id] = state
        log.info("job.finished", job_id=job_id, status=state)
    if ids:
        publish_chunks(ids)
        report.published.extend(ids)


def _recover_intake(
    db: Database,
    settings: Settings,
    row: Any,
    restart_intake: Callable[[str, str, str, dict[str, object]], bool] | None,
    report: SweepReport,
) -> None:
    """An intake whose lease ran out: started again where it can be, else failed."""
    job_id, source, org_id, options, expired_for, attempts, last_error = row
    options = dict(options or {})
    if attempts >= settings.max_intake_attempts:
        # Bounded: an intake that keeps stopping (a file that vanished, a worker killed by
        # the input) fails with what is known instead of being sent again forever.
        with db.begin() as session:
            if jobs.fail_job(session, job_id, _gave_up(attempts, last_error)):
                report.intakes_failed.append(job_id)
        return
    if options.get("intake") in ("task", "inbox") and restart_intake is not None:
        if restart_intake(job_id, source, org_id, options):
            report.intakes_restarted.append(job_id)
            return
        # Inline devices live only in their message, which comes back by itself (the submit
        # task retries after a lease); past that, the message is gone.
        if expired_for < 6 * settings.lease_s:
            return
    with db.begin() as session:
        if jobs.fail_job(
            session, job_id, "the intake of the file stopped before it ended; submit again"
        ):
            report.intakes_failed.append(job_id)


def record_beat(session: Session, name: str = BEAT) -> None:
    upsert(
        session,
        SERVICE_BEATS,
        {"name": name, "last_run_at": db_epoch()},
        ["name"],
        lambda excluded: {"last_run_at": excluded.last_run_at},
    )


def seconds_since_beat(session: Session, name: str = BEAT) -> float | None:
    """How long ago the sweeper last ran, by the database clock; ``None`` if it never ran."""
    row = session.execute(
        select(db_epoch() - SERVICE_BEATS.c.last_run_at).where(SERVICE_BEATS.c.name == name)
    ).first()
    return None if row is None else float(row[0])
