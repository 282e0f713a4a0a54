"""``rollback``: delete what a job created, as a job of its own."""

from __future__ import annotations

import sys

import click

from worker.cli.common import (
    EXIT_BY_STATE,
    follow,
    open_database,
    require_job,
    settings_from,
    stderr,
    summary_line,
)
from worker.importer import chunks
from worker.rollback import plan as rollback

# What an operator sees of a dry run before the list is cut short (the count is always whole).
SHOWN = 50


@click.command()
@click.argument("job_id")
@click.option("--dry-run", is_flag=True, help="List what would be deleted; delete nothing.")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@click.option("--wait", is_flag=True, help="Follow the rollback to its end; exit with its state.")
def rollback_command(job_id: str, dry_run: bool, yes: bool, wait: bool) -> None:
    """Delete from EnOS every device that JOB created (never adopted ones), as a job of its own;
    prints the rollback job's id."""
    settings = settings_from()
    db = open_database(settings)
    require_job(db, job_id)
    with db.read() as session:
        try:
            planned = rollback.plan(session, job_id)
        except rollback.RollbackRefused as exc:
            raise click.ClickException(str(exc)) from None
    count = len(planned.delete)
    if dry_run:
        _list(planned)
        return
    if not count:
        stderr.print(f"job {job_id}: no device of its own to delete", highlight=False)
        return
    _confirm(planned, yes)
    with db.begin() as session:
        try:
            planned = rollback.plan(session, job_id)  # again: the answer may have changed
        except rollback.RollbackRefused as exc:
            raise click.ClickException(str(exc)) from None
        new_id = rollback.create(session, planned)
        ids = chunks.publish_due(session, new_id, settings.publish_window,
                                 settings.republish_after_s)  # fmt: skip
    click.echo(new_id)
    sys.stdout.flush()
    from worker.tasks import publish_chunks  # the broker is only needed from here on

    publish_chunks(ids)
    view = require_job(db, new_id)
    stderr.print(summary_line(view), highlight=False)
    if wait:
        view = follow(db, new_id)
        stderr.print(summary_line(view), highlight=False)
        sys.exit(EXIT_BY_STATE.get(view.status, 1))


def _list(planned: rollback.RollbackPlan) -> None:
    click.echo("line\tproductKey\tdeviceKey\tassetId\taction")
    for candidate in planned.delete[:SHOWN]:
        click.echo(f"{candidate.line}\t{candidate.product_key}\t{candidate.device_key}\t"
                   f"{candidate.asset_id}\tdelete")  # fmt: skip
    for candidate, reason in planned.kept[:SHOWN]:
        click.echo(f"{candidate.line}\t{candidate.product_key}\t{candidate.device_key}\t"
                   f"{candidate.asset_id}\t{reason}")  # fmt: skip
    more = max(0, len(planned.delete) - SHOWN) + max(0, len(planned.kept) - SHOWN)
    if more:
        click.echo(f"… and {more} more")
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
