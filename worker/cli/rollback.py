"""``rollback``: delete what a job created, as a job of its own.

With a deployment's database (``ENOS_IMPORT_DATABASE_URL``), the rollback job is queued for the
workers, like ``submit``. Without one (the local SQLite file of ``enos-import run``), or with
``--here``, it runs in this process on the embedded worker, like ``run``; killed and run again,
it resumes the same rollback job.
"""

from __future__ import annotations

import sys
from collections.abc import Callable

import click
from sqlalchemy import select, update

from worker.cli.common import (
    EXIT_BY_STATE,
    follow,
    open_database,
    require_job,
    settings_from,
    stderr,
    summary_line,
)
from worker.db.models import CHUNKS, FINAL_JOB_STATES, JOBS, ChunkStatus
from worker.db.session import Database, Session
from worker.importer import chunks
from worker.rollback import plan as rollback
from worker.settings import Settings


@click.command()
@click.argument("job_id")
@click.option("--dry-run", is_flag=True, help="List what would be deleted; delete nothing.")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@click.option("--wait", is_flag=True, help="Follow the rollback to its end; exit with its state.")
@click.option("--here", is_flag=True, help="Run it in this process, not on the workers.")
def rollback_command(job_id: str, dry_run: bool, yes: bool, wait: bool, here: bool) -> None:
    """Delete from EnOS every device that JOB created (never adopted ones), as a job of its own;
    prints the rollback job's id."""
    settings = settings_from()
    if here or not settings.database_url:
        _in_process(settings, job_id, dry_run, yes)
        return
    db = open_database(settings)
    new_id = _start(db, settings, job_id, dry_run, yes)
    if new_id is None:
        return
    from worker.publish import publish_chunks  # the broker is only needed from here on

    with db.begin() as session:
        publish_chunks(chunks.publish_due(session, new_id, settings.publish_window,
                                          settings.republish_after_s))  # fmt: skip
    view = require_job(db, new_id)
    stderr.print(summary_line(view), highlight=False)
    if wait:
        view = follow(db, new_id)
        stderr.print(summary_line(view), highlight=False)
        sys.exit(EXIT_BY_STATE.get(view.status, 1))


def _in_process(settings: Settings, job_id: str, dry_run: bool, yes: bool) -> None:
    from worker.embedded import (
        Embedded,
        embedded_settings,
        open_embedded_database,
        release_dead_leases,
    )

    settings = embedded_settings(settings)
    db = open_embedded_database(settings)
    job_id = require_job(db, job_id).job_id
    new_id = _resumable(db, job_id, release_dead_leases) if not dry_run else None
    if new_id is not None:
        click.echo(new_id)
        stderr.print(f"resuming rollback job {new_id}", highlight=False)
    else:
        new_id = _start(db, settings, job_id, dry_run, yes)
        if new_id is None:
            return
    runner = Embedded(settings, db)
    runner.start()
    try:
        view = follow(db, new_id, poll_s=0.5, tick=runner.tick)
    finally:
        runner.stop()
    stderr.print(summary_line(view), highlight=False)
    sys.exit(EXIT_BY_STATE.get(view.status, 1))


def _resumable(db: Database, job_id: str, release: Callable[..., int]) -> str | None:
    """An unfinished rollback of ``job_id`` whose runner died: its chunks are due again."""
    with db.begin() as session:
        found = session.execute(
            select(JOBS.c.id).where(
                JOBS.c.source == rollback.SOURCE_PREFIX + job_id,
                JOBS.c.status.not_in(tuple(FINAL_JOB_STATES)),
            )
        ).scalar()
        if found is None:
            return None
        release(session, found)
        # Its messages lived in the dead runner's memory: publish afresh.
        session.execute(
            update(CHUNKS)
            .where(CHUNKS.c.job_id == found, CHUNKS.c.status == ChunkStatus.PENDING)
            .values(published_at=None)
        )
        return str(found)


def _start(db: Database, settings: Settings, job_id: str, dry_run: bool, yes: bool) -> str | None:
    """Plans, lists or confirms, and records the rollback job; its id, or ``None`` when there
    is nothing to do."""
    job_id = require_job(db, job_id).job_id
    with db.read() as session:
        planned = _plan(session, job_id)
    if dry_run:
        _list(planned)
        return None
    if not planned.delete:
        stderr.print(f"job {job_id}: no device of its own to delete", highlight=False)
        return None
    _confirm(planned, yes)
    with db.begin() as session:
        new_id = rollback.create(session, _plan(session, job_id))  # again: it may have changed
    click.echo(new_id)
    sys.stdout.flush()
    return new_id


def _plan(session: Session, job_id: str) -> rollback.RollbackPlan:
    try:
        return rollback.plan(session, job_id)
    except rollback.RollbackRefused as exc:
        raise click.ClickException(str(exc)) from None


def _list(planned: rollback.RollbackPlan) -> None:
    """Every device, one a line (tab-separated, for a pipe); the summary on stderr."""
    click.echo("line\tproductKey\tdeviceKey\tassetId\taction")
    for candidate in planned.delete:
        click.echo(f"{candidate.line}\t{candidate.product_key}\t{candidate.device_key}\t"
                   f"{candidate.asset_id}\tdelete")  # fmt: skip
    for candidate, reason in planned.kept:
        click.echo(f"{candidate.line}\t{candidate.product_key}\t{candidate.device_key}\t"
                   f"{candidate.asset_id}\t{reason}")  # fmt: skip
    stderr.print(
        f"dry run: would delete {len(planned.delete)} devices of org {planned.org_id} created by "
        f"job {planned.job_id}; {len(planned.kept)} kept; nothing was deleted",
        highlight=False,
    )


def _confirm(planned: rollback.RollbackPlan, yes: bool) -> None:
    if yes:
        return
    question = (
        f"Delete {len(planned.delete)} devices of org {planned.org_id} that job "
        f"{planned.job_id} created? This cannot be undone."
    )
    if not sys.stdin.isatty():
        raise click.UsageError(f"{question} Not a terminal: pass --yes to confirm.")
    if not click.confirm(question, default=False, err=True):
        raise click.Abort
