"""Starting a job: commit the job row first, then read the file into it, then publish work."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import func, select

from worker.db.models import CHUNKS, ITEMS, ItemStatus
from worker.db.session import Database
from worker.importer import chunks, intake_lease, jobs
from worker.importer.cells import CellsEncoder
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
            intake_lease.claim_intake_deadline(session, job_id, settings.lease_s)
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
        token = intake_lease.claim_intake(session, job_id, settings.lease_s)
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
        summary = _Streaming(
            db, settings, job_id, token, org_id, source, options, progress, hand_over
        ).run()
    except _FencedOut:
        log.warning("intake.fenced_out", job_id=job_id)
        return IntakeResult(job_id, None, published)
    except SourceError as exc:
        # The file changed under its one handle (or since an earlier intake of the job read
        # it): nothing more of it is kept, and the job fails if this intake still holds it.
        with db.begin() as session:
            if intake_lease.holds_intake(session, job_id, token):
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


class _Streaming:
    """One intake's read of its file: rows prepared in order, batches committed as they fill."""

    def __init__(
        self,
        db: Database,
        settings: Settings,
        job_id: str,
        token: int,
        org_id: str,
        source: Source,
        options: dict[str, Any],
        progress: Callable[[int], None] | None,
        publish: Callable[[list[int]], None],
    ) -> None:
        self.db, self.settings, self.job_id, self.token = db, settings, job_id, token
        self.org_id, self.source, self.progress, self.publish = org_id, source, progress, publish
        self.batch_size = int(options.get("batch_size") or settings.batch_size)
        self.key_mode = str(options.get("key_mode") or settings.key_mode)
        self.content_sha256 = ""
        self.keys = KeyIndex()
        self.summary = IntakeSummary()
        self.batch = Batch()
        self.cells = CellsEncoder(source.columns)
        self.target = self.batch_size  # the first commit: one chunk
        self.started = time.monotonic()

    def run(self) -> IntakeSummary:
        resume_after = self._resume()
        for row in self.source.rows():
            if row.line <= resume_after:
                continue  # stored by an earlier intake of this job
            prepared = prepare_row(row, self.org_id, self.content_sha256, self.key_mode)
            valid_before = self.batch.valid
            self.batch.add(self.job_id, row, prepared, self.keys, self.cells)
            if self._due(added_valid=self.batch.valid != valid_before):
                self._commit(final=False)
        self._commit(final=True)
        return self.summary

    def _resume(self) -> int:
        """Hashes the file (through its one handle, before a row is read) and picks up what an
        earlier intake of the job stored; returns the last line it stored (0: none)."""
        self.content_sha256 = self.source.sha256()
        with self.db.begin() as session:
            resume_after, read_before = intake_lease.intake_resume_point(session, self.job_id)
            if resume_after:
                self.summary = _stored_so_far(session, self.job_id)
                self.keys.load(session, self.job_id)
        if read_before is not None and read_before != self.content_sha256:
            raise SourceError(
                f"{self.source.name}: the file changed since its intake began (line "
                f"{resume_after} was stored); submit it again as a new job"
            )
        if resume_after:
            log.info("intake.resumed", job_id=self.job_id, after_line=resume_after)
        return resume_after

    def _due(self, added_valid: bool) -> bool:
        """A batch is committed at a chunk's end once it holds its target (or has taken
        ``COMMIT_AFTER_S``), or when invalid rows fill it."""
        batch = self.batch
        if added_valid and batch.valid % self.batch_size == 0:
            return batch.valid >= self.target or time.monotonic() - self.started >= COMMIT_AFTER_S
        return len(batch.rows) >= MAX_BATCH_ROWS

    def _commit(self, final: bool) -> None:
        with self.db.begin() as session:
            self._write(session, final)
            ids = chunks.publish_due(
                session, self.job_id, self.settings.publish_window,
                self.settings.republish_after_s,
            )  # fmt: skip
        self.publish(ids)
        if self.progress is not None:
            self.progress(self.summary.rows)
        self.batch = Batch()
        self.target = max(self.batch_size, COMMIT_ROWS // self.batch_size * self.batch_size)
        self.started = time.monotonic()

    def _write(self, session: Any, final: bool) -> None:
        """The batch, its chunks and the job's intake record, fenced by the intake token; the
        last one also ends the intake."""
        batch, summary, job_id = self.batch, self.summary, self.job_id
        if batch.rows and not intake_lease.store_intake_batch(
            session, job_id, self.token, len(batch.rows), batch.last_line,
            self.settings.lease_s, self.content_sha256, self.source.columns,
        ):  # fmt: skip
            raise _FencedOut
        batch.resolve(session, job_id, self.keys)
        summary.chunks += store_batch(session, job_id, batch, self.batch_size)
        summary.rows += len(batch.rows)
        summary.valid += batch.valid
        summary.invalid += batch.invalid + batch.duplicates
        summary.duplicates += batch.duplicates
        if not final:
            return
        if self.source.error is not None:
            summary.error = f"{self.source.name}: {self.source.error}"
        if not intake_lease.complete_intake(
            session, job_id, self.token, summary, self.source.columns, self.content_sha256
        ):
            raise _FencedOut


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
