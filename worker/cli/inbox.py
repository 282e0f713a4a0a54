"""``enos-import inbox scan`` and ``enos-import inbox status``: the nightly import, now."""

from __future__ import annotations

import time

import click
from rich.console import Console
from rich.table import Table
from sqlalchemy import select

from worker.cli.common import open_database, settings_from, stderr
from worker.db.models import INBOX_FILES, JOBS, SIGHTINGS
from worker.inbox.filing import InboxError


@click.group()
def inbox() -> None:
    """The inbox of nightly imports (ENOS_IMPORT_INBOX_DIR/<org_id>/<file>)."""


@inbox.command()
@click.option(
    "--no-wait",
    is_flag=True,
    help="Look once; files not settled yet are left to the next scan.",
)
def scan(no_wait: bool) -> None:
    """Scan the inbox now (as Celery beat does on ENOS_IMPORT_INBOX_SCHEDULE): take every
    complete file once and queue its import. Prints the ids of the jobs it started."""
    settings = settings_from()
    db = open_database(settings)

    from worker.inbox.scan import scan as scan_once  # the broker is only needed from here on
    from worker.inbox.tasks import start_intake

    try:
        report = scan_once(db, settings, start_intake)
        if report.waiting and not no_wait and settings.inbox_settle_s > 0:
            # A file seen for the first time needs a second look SETTLE_S later.
            stderr.print(
                f"{len(report.waiting)} file(s) settling; looking again in "
                f"{settings.inbox_settle_s:.0f} s",
                highlight=False,
            )
            time.sleep(settings.inbox_settle_s + 0.5)
            again = scan_once(db, settings, start_intake)
            again.taken[:0] = report.taken
            report = again
    except InboxError as exc:
        raise click.ClickException(str(exc)) from exc
    for job_id in report.taken:
        click.echo(job_id)
    stderr.print(
        f"taken {len(report.taken)}, waiting {len(report.waiting)}, duplicates "
        f"{len(report.duplicates)}, refused {len(report.refused)}, unreadable "
        f"{len(report.left)}, filed {len(report.filed)}",
        highlight=False,
    )


@inbox.command()
@click.option(
    "--limit",
    default=50,
    show_default=True,
    type=click.IntRange(min=1),
    help="Most recent files shown.",
)
def status(limit: int) -> None:
    """The files the inbox knows: taken (with their jobs), refused, and still settling."""
    settings = settings_from()
    db = open_database(settings)
    table = Table("org", "file", "state", "job", "job status", "where / why")
    with db.read() as session:
        rows = session.execute(
            select(
                INBOX_FILES.c.org_id, INBOX_FILES.c.name, INBOX_FILES.c.state,
                INBOX_FILES.c.job_id, JOBS.c.status, INBOX_FILES.c.moved_to, INBOX_FILES.c.note,
            )
            .outerjoin(JOBS, JOBS.c.id == INBOX_FILES.c.job_id)
            .order_by(INBOX_FILES.c.id.desc())
            .limit(limit)
        ).all()  # fmt: skip
        settling = session.execute(select(SIGHTINGS.c.org_id, SIGHTINGS.c.name)).all()
    for row in rows:
        table.add_row(
            row.org_id, row.name, row.state, row.job_id or "", row.status or "",
            row.note or row.moved_to or "",
        )  # fmt: skip
    for org_id, name in settling:
        table.add_row(org_id, name, "settling", "", "", "")
    Console(width=200).print(table)
