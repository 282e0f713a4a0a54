"""Putting inbox files away: a file whose job ended goes to ``done/``, ``errors/`` or
``failed/`` under its org with its results (and the job's error) beside it; a file that is
refused (not a regular file, an org not allowed, content imported before) goes to ``failed/``
with a note. Nothing is deleted or overwritten.

Filing a job's file is idempotent and may be interrupted anywhere: the target is chosen and
recorded first (``moving``), each file is written whole under a new name or not at all, and the
file is moved by a link; a second run finishes what the first began. It runs on the job's
completion event (``enos_import.inbox_job_done``) and again from every scan for a job whose
file is still in the inbox.
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import TextIO

from sqlalchemy import and_, func, insert, select, update

from worker.db.models import FINAL_JOB_STATES, INBOX_FILES, JOBS, JobStatus
from worker.db.session import Database, Session
from worker.importer import results as export
from worker.inbox import folders
from worker.logs import get_logger
from worker.settings import Settings

log = get_logger(__name__)

# States of an inbox file row.
CLAIMED, MOVING, FILED = "claimed", "moving", "filed"
REFUSED, DUPLICATE = "refused", "duplicate"
IN_PROGRESS = (CLAIMED, MOVING)
MOVE_TRIES = 5


class InboxError(RuntimeError):
    """The inbox cannot be used (not configured, not a folder)."""


def inbox_root(settings: Settings) -> Path:
    if settings.inbox_dir is None:
        raise InboxError("ENOS_IMPORT_INBOX_DIR is not set: there is no inbox")
    if not settings.inbox_dir.is_dir():
        raise InboxError(f"ENOS_IMPORT_INBOX_DIR {settings.inbox_dir} is not a folder")
    return settings.inbox_dir


def refuse(
    db: Database, settings: Settings, org_id: str, path: Path, state: str, note: str
) -> Path | None:
    """Moves a file that is not imported to ``failed/`` with ``<name>.error.txt`` saying why,
    and records it; ``None`` if another scan moved it first."""
    target = _move(path, inbox_root(settings) / org_id / folders.FAILED)
    if target is None:
        return None
    folders.write_new(
        folders.beside(target, folders.ERROR_SUFFIX), lambda out: out.write(note + "\n")
    )
    with db.begin() as session:
        session.execute(
            insert(INBOX_FILES).values(
                org_id=org_id, name=path.name, size=0, state=state, note=note, moved_to=str(target)
            )
        )
    log.warning("inbox.refused", file=f"{org_id}/{path.name}", state=state, reason=note)
    return target


def _move(path: Path, folder: Path) -> Path | None:
    for _ in range(MOVE_TRIES):
        target = folders.placement(folder, path.name)
        try:
            return target if folders.move_new(path, target) else None
        except FileExistsError:
            continue  # another mover took that name a moment ago: choose again
    raise FileExistsError(f"{folder}: no free name for {path.name}")


def file_job(db: Database, settings: Settings, job_id: str) -> bool:
    """Puts the file of an ended inbox job away with its results; ``False`` when there is
    nothing to do (not an inbox job, not ended, already filed)."""
    with db.begin() as session:
        row = session.execute(
            select(INBOX_FILES, JOBS.c.status, JOBS.c.last_error)
            .join(JOBS, JOBS.c.id == INBOX_FILES.c.job_id)
            .where(INBOX_FILES.c.job_id == job_id, INBOX_FILES.c.state.in_(IN_PROGRESS))
        ).first()
        if row is None or row.status not in FINAL_JOB_STATES:
            return False
        inbox = inbox_root(settings)
        if row.state == CLAIMED:
            folder = inbox / row.org_id / folders.OUTCOME_FOLDERS[JobStatus(row.status)]
            target = folders.placement(folder, row.name)
            session.execute(
                update(INBOX_FILES)
                .where(INBOX_FILES.c.id == row.id)
                .values(state=MOVING, moved_to=str(target), updated_at=func.now())
            )
        else:
            target = Path(row.moved_to)
    # Committed: the target is ours, whichever run gets here.
    with db.read() as session:
        folders.write_new(
            folders.beside(target, folders.RESULTS_SUFFIX),
            lambda out: _write_results(session, job_id, out),
        )
    if row.status in (JobStatus.FAILED, JobStatus.CANCELLED) and row.last_error:
        error = f"job {job_id} {row.status}: {row.last_error}\n"
        folders.write_new(
            folders.beside(target, folders.ERROR_SUFFIX), lambda out: out.write(error)
        )
    source = inbox / row.org_id / row.name
    # FileExistsError: an earlier run moved it already, and its old name was taken again.
    with contextlib.suppress(FileExistsError):
        folders.move_new(source, target)
    with db.begin() as session:
        session.execute(
            update(INBOX_FILES)
            .where(INBOX_FILES.c.id == row.id)
            .values(state=FILED, updated_at=func.now())
        )
    log.info("inbox.filed", job_id=job_id, status=row.status, to=str(target))
    return True


def _write_results(session: Session, job_id: str, out: TextIO) -> None:
    columns = [*export.export_columns(session, job_id), *export.TAIL]
    export.write_csv(out, columns, export.rows(session, job_id))


def file_finished(db: Database, settings: Settings) -> list[str]:
    """Files every ended inbox job whose file is still in the inbox (the repair path)."""
    with db.read() as session:
        ended = [
            str(r[0])
            for r in session.execute(
                select(INBOX_FILES.c.job_id)
                .join(JOBS, JOBS.c.id == INBOX_FILES.c.job_id)
                .where(
                    and_(
                        INBOX_FILES.c.state.in_(IN_PROGRESS),
                        JOBS.c.status.in_(FINAL_JOB_STATES),
                    )
                )
            )
        ]
    return [job_id for job_id in ended if file_job(db, settings, job_id)]
