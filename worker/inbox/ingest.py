"""The intake of a file taken from the inbox: read through one handle, and only if it is
still the content that was claimed."""

from __future__ import annotations

from collections.abc import Callable

from sqlalchemy import select

from worker.db.models import INBOX_FILES, JOBS
from worker.db.session import Database
from worker.importer import intake_lease, jobs
from worker.importer.submit import IntakeResult, run_intake
from worker.inbox.filing import inbox_root
from worker.logs import get_logger
from worker.readers.sources import SourceError, open_source
from worker.settings import Settings

log = get_logger(__name__)


def ingest_file(
    db: Database,
    settings: Settings,
    job_id: str,
    publish: Callable[[list[int]], None] | None = None,
) -> IntakeResult | None:
    """Reads the claimed file of ``job_id`` into its job; ``None`` when there is nothing to
    read (not an inbox job). A file that cannot be read, or whose content is no longer the
    claimed one, fails its job (and is then filed in ``failed/`` with the reason)."""
    with db.read() as session:
        row = session.execute(
            select(
                INBOX_FILES.c.org_id, INBOX_FILES.c.name, INBOX_FILES.c.content_sha256,
                JOBS.c.options,
            )
            .join(JOBS, JOBS.c.id == INBOX_FILES.c.job_id)
            .where(INBOX_FILES.c.job_id == job_id)
        ).first()  # fmt: skip
    if row is None:
        return None
    path = inbox_root(settings) / row.org_id / row.name
    try:
        source = open_source(path, None, settings.intake_limits())
    except SourceError as exc:
        _fail(db, settings, job_id, str(exc))
        return None
    try:
        if source.sha256() != row.content_sha256:
            raise SourceError(f"{row.name}: the file changed after it was taken; drop it again")
    except SourceError as exc:
        source.close()
        _fail(db, settings, job_id, str(exc))
        return None
    return run_intake(
        db, settings, job_id, row.org_id, source, dict(row.options or {}), publish=publish
    )


def _fail(db: Database, settings: Settings, job_id: str, reason: str) -> None:
    """Fails the job, unless another delivery is reading the file now."""
    with db.begin() as session:
        if intake_lease.claim_intake(session, job_id, settings.lease_s) is not None:
            jobs.fail_job(session, job_id, reason)
    log.warning("inbox.intake_failed", job_id=job_id, error=reason)
