"""One scan of the inbox: take every complete file, once.

A file is taken when it is complete: its name is not hidden nor unfinished, its size and mtime
stayed the same across two looks at least ``INBOX_SETTLE_S`` apart (the looks are kept in the
database, so they may come from different scans), and, when required, its ``.ready`` marker is
there. It is then claimed by (org, content hash) in the transaction that creates its job: two
scans at once, a beat that fires twice or a scan killed half way can never make two jobs of
one content. A scan is cheap and idempotent; one missed is done by the next.
"""

from __future__ import annotations

import os
import stat
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import delete, select, update

from worker.db.clock import db_epoch
from worker.db.models import INBOX_FILES, SIGHTINGS
from worker.db.session import Database, Session
from worker.db.upsert import insert_ignore, upsert
from worker.importer import boundary, intake_lease, jobs
from worker.importer.submit import job_options
from worker.inbox import filing, folders
from worker.inbox.filing import CLAIMED, DUPLICATE, IN_PROGRESS, REFUSED, inbox_root
from worker.inbox.org_options import OrgOptionsError, read_org_options
from worker.logs import get_logger
from worker.readers.base import SourceError
from worker.readers.opening import SourcePermissionError, open_regular
from worker.settings import Settings

log = get_logger(__name__)


@dataclass
class ScanReport:
    taken: list[str] = field(default_factory=list)  # job ids
    waiting: list[str] = field(default_factory=list)  # not settled, or no marker yet
    refused: list[str] = field(default_factory=list)
    duplicates: list[str] = field(default_factory=list)
    left: list[str] = field(default_factory=list)  # not readable now: next scan
    filed: list[str] = field(default_factory=list)  # job ids whose files were put away


@dataclass
class _Pass:
    """What one scan works with."""

    db: Database
    settings: Settings
    report: ScanReport
    start_intake: Callable[[str], None]


@dataclass
class _Org:
    org_id: str
    refusal: str | None  # why its files are refused (an org not allowed)
    options: dict[str, Any]  # from its .enos-import.json


def scan(db: Database, settings: Settings, start_intake: Callable[[str], None]) -> ScanReport:
    """One pass over every org folder; ``start_intake(job_id)`` queues the intake of a file
    taken (after its claim committed)."""
    inbox = inbox_root(settings)
    run = _Pass(db, settings, ScanReport(), start_intake)
    for org_folder in folders.org_folders(inbox):
        org = _org(settings, org_folder)
        if org is None:
            continue
        for entry in folders.candidates(org_folder):
            _look(run, org, Path(entry.path))
    report = run.report
    report.filed = filing.file_finished(db, settings)
    log.info(
        "inbox.scanned",
        taken=len(report.taken),
        waiting=len(report.waiting),
        refused=len(report.refused),
        duplicates=len(report.duplicates),
        left=len(report.left),
        filed=len(report.filed),
    )
    return report


def _org(settings: Settings, folder: Path) -> _Org | None:
    """The org of a folder, or ``None`` while its options file is invalid (its files wait)."""
    try:
        boundary.check_org(settings, folder.name)
        refusal = None
    except boundary.Refused as exc:
        refusal = str(exc)
    try:
        options = read_org_options(folder)
    except OrgOptionsError as exc:
        log.error("inbox.org_options_invalid", org_id=folder.name, error=str(exc))
        return None
    return _Org(folder.name, refusal, options)


def _look(run: _Pass, org: _Org, path: Path) -> None:
    db, settings, report = run.db, run.settings, run.report
    org_id, refusal = org.org_id, org.refusal
    label = f"{org_id}/{path.name}"
    try:
        info = os.lstat(path)
    except FileNotFoundError:
        return
    with db.read() as session:
        if _in_progress(session, org_id, path.name):
            return
    if refusal is None and not stat.S_ISREG(info.st_mode):
        refusal = (
            f"{path.name}: not a regular file (a symbolic link, a FIFO …); drop the file itself"
        )
    if refusal is not None:
        filing.refuse(db, settings, org_id, path, REFUSED, refusal)
        report.refused.append(label)
        return
    if settings.inbox_require_ready and not os.path.lexists(folders.ready_marker(path)):
        report.waiting.append(label)
        return
    if not _settled(db, settings, org_id, path.name, info):
        report.waiting.append(label)
        return
    _claim(run, org, path)


def _in_progress(session: Session, org_id: str, name: str) -> bool:
    row = session.execute(
        select(INBOX_FILES.c.id).where(
            INBOX_FILES.c.org_id == org_id,
            INBOX_FILES.c.name == name,
            INBOX_FILES.c.state.in_(IN_PROGRESS),
        )
    ).first()
    return row is not None


def _settled(
    db: Database, settings: Settings, org_id: str, name: str, info: os.stat_result
) -> bool:
    """Whether the file kept its size and mtime since a look at least SETTLE_S ago; records
    this look when it did not (a new file, or one that changed)."""
    with db.begin() as session:
        seen = session.execute(
            select(SIGHTINGS.c.size, SIGHTINGS.c.mtime_ns, db_epoch() - SIGHTINGS.c.seen_at).where(
                SIGHTINGS.c.org_id == org_id, SIGHTINGS.c.name == name
            )
        ).first()
        if seen is not None and (seen.size, seen.mtime_ns) == (info.st_size, info.st_mtime_ns):
            return float(seen[2]) >= settings.inbox_settle_s
        values = {
            "org_id": org_id,
            "name": name,
            "size": info.st_size,
            "mtime_ns": info.st_mtime_ns,
            "seen_at": db_epoch(),
        }
        upsert(
            session,
            SIGHTINGS,
            values,
            ["org_id", "name"],
            lambda new: {c: new[c] for c in ("size", "mtime_ns", "seen_at")},
        )
    return settings.inbox_settle_s <= 0


def _claim(run: _Pass, org: _Org, path: Path) -> None:
    db, settings, report, org_id = run.db, run.settings, run.report, org.org_id
    label = f"{org_id}/{path.name}"
    try:
        opened = open_regular(path, settings.max_file_bytes)
    except SourcePermissionError as exc:
        # Left where it is, and tried again by the next scan: logged, not lost.
        log.warning("inbox.unreadable", file=label, error=str(exc))
        report.left.append(label)
        return
    except SourceError as exc:
        filing.refuse(db, settings, org_id, path, REFUSED, str(exc))
        report.refused.append(label)
        return
    try:
        sha256 = opened.sha256()
        size = opened.opened.st_size
    except SourceError:
        report.waiting.append(label)  # written to while hashed: not complete yet
        return
    finally:
        opened.close()
    job_id = str(uuid.uuid4())
    with db.begin() as session:
        earlier = _claim_in(session, settings, org, path.name, sha256, size, job_id)
    if earlier is None:
        log.info("inbox.taken", file=label, job_id=job_id)
        report.taken.append(job_id)
        run.start_intake(job_id)
        return
    earlier_job, earlier_name, earlier_state = earlier
    if earlier_name == path.name and earlier_state in IN_PROGRESS:
        return  # another scan took this very file a moment ago
    note = (
        f"{path.name}: not imported: the same content was imported from {earlier_name} "
        f"as job {earlier_job}"
    )
    filing.refuse(db, settings, org_id, path, DUPLICATE, note)
    report.duplicates.append(label)


def _claim_in(
    session: Session,
    settings: Settings,
    org: _Org,
    name: str,
    sha256: str,
    size: int,
    job_id: str,
) -> tuple[str | None, str, str] | None:
    """Claims (org, content) and creates its job, in the caller's transaction; returns the
    earlier claim's (job, name, state) when the content was claimed before."""
    org_id = org.org_id
    claimed = insert_ignore(
        session,
        INBOX_FILES,
        {"org_id": org_id, "name": name, "content_sha256": sha256, "size": size, "state": CLAIMED},
    )
    row = session.execute(
        select(
            INBOX_FILES.c.id, INBOX_FILES.c.job_id, INBOX_FILES.c.name, INBOX_FILES.c.state
        ).where(INBOX_FILES.c.org_id == org_id, INBOX_FILES.c.content_sha256 == sha256)
    ).one()
    if not claimed:
        return row.job_id, row.name, row.state
    row_id = row.id
    options = job_options(
        settings,
        require_secret=bool(org.options.get("require_secret", False)),
        intake="inbox",
        key_mode=org.options.get("key_mode"),
    )
    options["source_kind"] = "inbox"
    jobs.create_job(session, job_id, org_id, f"inbox:{org_id}/{name}", options)
    intake_lease.claim_intake_deadline(session, job_id, settings.lease_s)
    session.execute(update(INBOX_FILES).where(INBOX_FILES.c.id == row_id).values(job_id=job_id))
    session.execute(delete(SIGHTINGS).where(SIGHTINGS.c.org_id == org_id, SIGHTINGS.c.name == name))
    return None
