"""Starting a job: commit the job row first, then read the file into it, then publish work."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import func, select

from worker.db.models import CHUNKS, ITEMS, ItemStatus
from worker.db.session import Database
from worker.importer import chunks, jobs
from worker.importer.intake import (
    REPEAT_MARK,
    Batch,
    IntakeSummary,
    KeyIndex,
    prepare_row,
    store_batch,
)
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
    publish: Callable[[list[int]], None] | None = None,
) -> IntakeResult:
    """Reads ``source`` into the job a batch at a time, each batch committed with its chunks
    and the due chunks handed to ``publish`` at once (without it, they are returned in the
    result): the first chunks are sent while the rest of the file is read. An intake that was
    stopped resumes after the last line its job stored."""
    with db.begin() as session:
        token = jobs.claim_intake(session, job_id, settings.lease_s)
    if token is None:
        log.info("intake.skipped", job_id=job_id)
        source.close()
        return IntakeResult(job_id, None)
    published: list[int] = []

    def hand_over(ids: list[int]) -> None:
        if publish is None:
            published.extend(ids)
        elif ids:
            publish(ids)

    try:
        summary = _stream(db, settings, job_id, token, org_id, source, options, progress, hand_over)
    except _FencedOut:
        log.warning("intake.fenced_out", job_id=job_id)
        return IntakeResult(job_id, None, published)
    except SourceError as exc:
        # The file changed under its one handle (or since an earlier intake of the job read
        # it): nothing more of it is kept, and the job fails if this intake still holds it.
        with db.begin() as session:
            if jobs.holds_intake(session, job_id, token):
                jobs.fail_job(session, job_id, str(exc))
        log.warning("intake.source_failed", job_id=job_id, error=str(exc))
        return IntakeResult(job_id, IntakeSummary(error=str(exc)), published)
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
    return IntakeResult(job_id, summary, published)


# Rows per commit once the first chunk is out (a commit is always at a chunk's end, unless a
# run of invalid rows fills ``MAX_BATCH_ROWS``); the first commit holds one chunk, so that the
# first call goes out within moments of the start whatever the file's size.
COMMIT_ROWS = 5_000
MAX_BATCH_ROWS = 2 * COMMIT_ROWS
# A batch that has taken this long is committed at its next chunk's end (a slow reader).
COMMIT_AFTER_S = 0.5


def _stream(
    db: Database,
    settings: Settings,
    job_id: str,
    token: int,
    org_id: str,
    source: Source,
    options: dict[str, Any],
    progress: Callable[[int], None] | None,
    publish: Callable[[list[int]], None],
) -> IntakeSummary:
    batch_size = int(options.get("batch_size") or settings.batch_size)
    key_mode = str(options.get("key_mode") or settings.key_mode)
    content_sha256 = source.sha256()
    keys = KeyIndex()
    with db.begin() as session:
        resume_after, read_before = jobs.intake_resume_point(session, job_id)
        summary = _stored_so_far(session, job_id) if resume_after else IntakeSummary()
        if resume_after:
            keys.load(session, job_id)
    if read_before is not None and read_before != content_sha256:
        raise SourceError(
            f"{source.name}: the file changed since its intake began (line {resume_after} "
            "was stored); submit it again as a new job"
        )
    if resume_after:
        log.info("intake.resumed", job_id=job_id, after_line=resume_after)
    target = batch_size
    batch = Batch()
    started = time.monotonic()

    def commit(final: bool) -> None:
        nonlocal batch, target, started
        with db.begin() as session:
            if batch.rows and not jobs.store_intake_batch(
                session, job_id, token, len(batch.rows), batch.last_line, settings.lease_s,
                content_sha256,
            ):  # fmt: skip
                raise _FencedOut
            batch.resolve(session, job_id, keys)
            summary.chunks += store_batch(session, job_id, batch, batch_size)
            summary.rows += len(batch.rows)
            summary.valid += batch.valid
            summary.invalid += batch.invalid + batch.duplicates
            summary.duplicates += batch.duplicates
            if final:
                if source.error is not None:
                    summary.error = f"{source.name}: {source.error}"
                if not jobs.complete_intake(
                    session, job_id, token, summary, source.columns, content_sha256
                ):
                    raise _FencedOut
            ids = chunks.publish_due(
                session, job_id, settings.publish_window, settings.republish_after_s
            )
        publish(ids)
        if progress is not None:
            progress(summary.rows)
        batch = Batch()
        target = max(batch_size, COMMIT_ROWS // batch_size * batch_size)
        started = time.monotonic()

    for row in source.rows():
        if row.line <= resume_after:
            continue  # stored by an earlier intake of this job
        valid_before = batch.valid
        batch.add(job_id, row, prepare_row(row, org_id, content_sha256, key_mode), keys)
        if batch.valid != valid_before and batch.valid % batch_size == 0:
            if batch.valid >= target or time.monotonic() - started >= COMMIT_AFTER_S:
                commit(final=False)
        elif len(batch.rows) >= MAX_BATCH_ROWS:
            commit(final=False)
    commit(final=True)
    return summary


def _stored_so_far(session: Any, job_id: str) -> IntakeSummary:
    """What earlier intakes of the job stored, for the summary of a resumed one."""
    counts = jobs.item_counts(session, job_id)
    rows = sum(counts.values())
    invalid = counts[ItemStatus.INVALID]
    duplicates, planned = session.execute(
        select(
            select(func.count())
            .where(
                ITEMS.c.job_id == job_id,
                ITEMS.c.status == ItemStatus.INVALID,
                ITEMS.c.error_message.like(f"%{REPEAT_MARK}"),
            )
            .scalar_subquery(),
            select(func.count()).where(CHUNKS.c.job_id == job_id).scalar_subquery(),
        )
    ).one()
    return IntakeSummary(
        rows=rows,
        valid=rows - invalid,
        invalid=invalid,
        duplicates=int(duplicates),
        chunks=int(planned),
    )
