"""Starting a job: commit the job row first, then read the file into it, then publish work."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from worker.db.session import Database
from worker.importer import chunks, jobs
from worker.importer.intake import IntakeSummary, ingest
from worker.logs import get_logger
from worker.readers.sources import Source, SourceError
from worker.settings import Settings

log = get_logger(__name__)


class _FencedOut(Exception):
    """Another intake of the same job took over while this one was reading."""


@dataclass
class IntakeResult:
    job_id: str
    summary: IntakeSummary | None  # None: the intake was not ours to do (a repeated delivery)
    publish: list[int] = field(default_factory=list)


def job_options(
    settings: Settings, *, require_secret: bool, intake: str, key_mode: str | None = None
) -> dict[str, Any]:
    return {
        "require_secret": require_secret,
        "key_mode": key_mode or settings.key_mode,
        "batch_size": settings.batch_size,
        "intake": intake,
    }


def create(
    db: Database, settings: Settings, job_id: str, org_id: str, label: str, options: dict[str, Any]
) -> bool:
    """Commits the queued job row; ``False`` if that job id exists already."""
    with db.begin() as session:
        created = jobs.create_job(session, job_id, org_id, label, options)
        if created:
            # The intake must start within a lease, or the sweeper takes the job back.
            jobs.claim_intake_deadline(session, job_id, settings.lease_s)
    return created


def run_intake(
    db: Database,
    settings: Settings,
    job_id: str,
    org_id: str,
    source: Source,
    options: dict[str, Any],
    progress: Callable[[int], None] | None = None,
) -> IntakeResult:
    with db.begin() as session:
        token = jobs.claim_intake(session, job_id, settings.lease_s)
    if token is None:
        log.info("intake.skipped", job_id=job_id)
        return IntakeResult(job_id, None)
    progress = _renewing(db, settings, job_id, token, progress)
    try:
        content_sha256 = source.sha256()
        with db.begin() as session:
            summary = ingest(
                session,
                job_id,
                org_id,
                source,
                content_sha256=content_sha256,
                batch_size=int(options.get("batch_size") or settings.batch_size),
                key_mode=str(options.get("key_mode") or settings.key_mode),
                progress=progress,
            )
            if not jobs.complete_intake(
                session, job_id, token, summary, source.columns, content_sha256
            ):
                raise _FencedOut
            ids = chunks.publish_due(
                session, job_id, settings.publish_window, settings.republish_after_s
            )
    except _FencedOut:
        log.warning("intake.fenced_out", job_id=job_id)
        return IntakeResult(job_id, None)
    except SourceError as exc:
        # The file changed under its one handle: nothing of it was kept (the intake's
        # transaction rolled back); the job fails, if this intake still holds it.
        with db.begin() as session:
            if jobs.holds_intake(session, job_id, token):
                jobs.fail_job(session, job_id, str(exc))
        log.warning("intake.source_failed", job_id=job_id, error=str(exc))
        return IntakeResult(job_id, IntakeSummary(error=str(exc)))
    finally:
        source.close()
    log.info(
        "intake.done",
        job_id=job_id,
        rows=summary.rows,
        valid=summary.valid,
        invalid=summary.invalid,
        chunks=summary.chunks,
        error=summary.error,
    )
    return IntakeResult(job_id, summary, ids)


def _renewing(
    db: Database,
    settings: Settings,
    job_id: str,
    token: int,
    progress: Callable[[int], None] | None,
) -> Callable[[int], None] | None:
    """A progress hook that also renews the intake's lease (a third of a lease apart), so that
    a long file is never taken for a dead intake. SQLite takes one writer at a time, and its
    embedded runner sweeps only after its intake: there, the hook is left as it is."""
    if not db.concurrent_writers:
        return progress
    renewed = [time.monotonic()]

    def hook(rows: int) -> None:
        if progress is not None:
            progress(rows)
        if time.monotonic() - renewed[0] >= settings.lease_s / 3:
            with db.begin() as session:
                jobs.renew_intake(session, job_id, token, settings.lease_s)
            renewed[0] = time.monotonic()

    return hook
