"""An ``enos_import.submit`` message, taken in: checked at the trust boundary, recorded as a job,
and its intake run. A malformed or refused message fails its job once (or, without a job id, is
logged and dropped); a repeated delivery of the same ``job_id`` does nothing."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import select

from worker.context import WorkerContext
from worker.db.models import JOBS, JobStatus
from worker.importer import boundary, intake_lease, jobs
from worker.importer.submit import create, job_options, run_intake
from worker.logs import get_logger
from worker.readers.base import Source
from worker.readers.sources import InlineSource, SourceError, open_source

log = get_logger(__name__)


@dataclass
class Taken:
    """What became of one message: its job (``None``: dropped), the chunks to publish, and
    whether another delivery holds the intake (come back after a lease)."""

    job_id: str | None
    publish: list[int] = field(default_factory=list)
    invalid: int = 0
    come_back: bool = False


def take_submit(
    ctx: WorkerContext,
    source: Any,
    org_id: Any,
    options: Any,
    job_id: Any,
    unknown: dict[str, Any],
    publish: Callable[[list[int]], None] | None = None,
) -> Taken:
    settings = ctx.settings
    try:
        message = boundary.parse_submit(source, org_id, options, job_id, unknown)
        boundary.check_org(settings, message.org_id)
        path = (
            None
            if isinstance(message.source, list)
            else boundary.check_source_path(settings, message.source)
        )
    except boundary.Refused as exc:
        return Taken(_refuse(ctx, job_id, org_id, source, str(exc)))
    new_id: str = message.job_id or str(uuid.uuid4())
    opts = job_options(
        settings,
        require_secret=bool(message.options.get("require_secret", False)),
        intake="task",
        key_mode=message.options.get("key_mode"),
    )
    inline = isinstance(message.source, list)
    opts["source_kind"] = "inline" if inline else "path"
    label = f"inline ({len(message.source)} devices)" if inline else str(message.source)
    created = create(ctx.db, settings, new_id, message.org_id, label, opts)
    try:
        reader: Source = (
            InlineSource(message.source, settings.intake_limits())  # type: ignore[arg-type]
            if inline
            else open_source(
                path or Path(str(message.source)),
                message.options.get("format"),
                settings.intake_limits(),
            )
        )
    except SourceError as exc:
        _fail_intake(ctx, new_id, created, str(exc))
        return Taken(new_id)
    result = run_intake(ctx.db, settings, new_id, message.org_id, reader, opts, publish=publish)
    if result.summary is None:
        # Another delivery holds the intake (or held it and died): come back after its lease,
        # so that an intake interrupted by a killed worker is done again, not forgotten.
        return Taken(new_id, result.publish, come_back=_intake_open(ctx, new_id))
    return Taken(new_id, result.publish, result.summary.invalid)


def _refuse(ctx: WorkerContext, job_id: Any, org_id: Any, source: Any, reason: str) -> str | None:
    """A message that must not be done: its job fails once with the reason; without a job id
    it is logged and dropped. Nothing of the source is read."""
    known = boundary.job_id_of(job_id)
    if known is None:
        log.warning("submit.refused", error=reason)
        return None
    org = org_id if isinstance(org_id, str) else ""
    label = source if isinstance(source, str) else f"(refused {type(source).__name__})"
    with ctx.db.begin() as session:
        # A job that exists already is another delivery's: it is not this message's to fail.
        if jobs.create_job(session, known, org[: boundary.MAX_ORG_ID], label[:1000], {}):
            jobs.fail_job(session, known, reason)
    log.warning("submit.refused", job_id=known, error=reason)
    return known


def _fail_intake(ctx: WorkerContext, job_id: str, created: bool, reason: str) -> None:
    """The source cannot be opened: the job fails, unless another delivery is reading it now
    (a repeated delivery must not touch the intake the first one holds)."""
    with ctx.db.begin() as session:
        if intake_lease.claim_intake(session, job_id, ctx.settings.lease_s) is not None or created:
            jobs.fail_job(session, job_id, reason)
    log.warning("intake.source_failed", job_id=job_id, error=reason)


def _intake_open(ctx: WorkerContext, job_id: str) -> bool:
    with ctx.db.read() as session:
        row = session.execute(
            select(JOBS.c.status, JOBS.c.intake_lease_until).where(JOBS.c.id == job_id)
        ).first()
    if row is None:
        return False
    return row.status == JobStatus.QUEUED or (
        row.status in (JobStatus.VALIDATING, JobStatus.RUNNING)
        and row.intake_lease_until is not None
    )
