"""``submit``, ``status``, ``results``, ``retry`` and ``cancel``: jobs through the database."""

from __future__ import annotations

import json
import sys
import time
import uuid
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.live import Live
from rich.table import Table
from sqlalchemy import select, text

from worker.cli.common import (
    EXIT_BY_STATE,
    FILE_ARGUMENT,
    FORMAT_OPTION,
    ORG_OPTION,
    JobView,
    follow,
    intake_line,
    job_state,
    job_view,
    open_database,
    open_input,
    require_job,
    resolve_job_id,
    settings_from,
    stderr,
    summary_line,
)
from worker.cli.output import STDOUT, export_target
from worker.cli.verbosity import VERBOSE_OPTION
from worker.db.models import FINAL_JOB_STATES, JOBS, ItemStatus, JobStatus
from worker.db.session import Database
from worker.db.views import JOB_STATUS_COLUMNS
from worker.host import collector_paused, tune_collector
from worker.importer import chunks, jobs
from worker.importer import results as export
from worker.importer.submit import create, job_options, run_intake
from worker.importer.sweeper import seconds_since_beat
from worker.rollback.plan import CHUNK_SIZE as ROLLBACK_CHUNK
from worker.rollback.plan import SOURCE_PREFIX as ROLLBACK_SOURCE

FILE = click.Path(exists=True, dir_okay=False, path_type=Path)
WRITERS: dict[str, Callable[..., int]] = {
    "csv": export.write_csv,
    "jsonl": export.write_jsonl,
    "xlsx": export.write_xlsx,
}


@click.command()
@FILE_ARGUMENT
@ORG_OPTION
@click.option("--require-secret", is_flag=True, help="Ask EnOS for encrypted device secrets.")
@click.option("--wait", is_flag=True, help="Follow the job to its end; exit with its state.")
@FORMAT_OPTION
@click.option(
    "--key-mode",
    type=click.Choice(["derive", "platform"]),
    help="Rows without deviceKey: a derived stable key, or one EnOS generates "
    "[env ENOS_IMPORT_KEY_MODE].",
)
@VERBOSE_OPTION
def submit(
    file: Path,
    org_id: str | None,
    require_secret: bool,
    wait: bool,
    fmt: str | None,
    key_mode: str | None,
) -> None:
    """Store FILE's devices as a job and queue it; prints the job id."""
    with collector_paused():  # the rest of the start-up: the driver, and Celery to publish
        settings = settings_from(org_id=org_id, key_mode=key_mode)
        source = open_input(file, fmt, settings)
        db = open_database(settings)
        from worker.publish import publish_chunks
    job_id = str(uuid.uuid4())
    options = job_options(settings, require_secret=require_secret, intake="cli", key_mode=key_mode)
    create(db, settings, job_id, settings.org_id, str(file.resolve()), options)
    click.echo(job_id)
    sys.stdout.flush()
    tune_collector()
    # Each batch's chunks are published as it is committed: sending starts while reading.
    taken = run_intake(
        db, settings, job_id, settings.org_id, source, options, _rows_note(), publish_chunks
    )
    state = job_state(db, job_id)
    if taken.summary is not None and state not in FINAL_JOB_STATES:
        # What the intake read, not the rows' states: counting them is a pass over every row
        # of the job, most of a second of the database's work at a million.
        stderr.print(intake_line(job_id, state, taken.summary), highlight=False)
    else:
        view = require_job(db, job_id)
        stderr.print(summary_line(view), highlight=False)
        if view.status == JobStatus.FAILED:
            sys.exit(EXIT_BY_STATE[JobStatus.FAILED])  # the intake failed it (no valid row, say)
    if wait:
        view = follow(db, job_id)
        stderr.print(summary_line(view), highlight=False)
        sys.exit(EXIT_BY_STATE.get(view.status, 1))


def _rows_note() -> Callable[[int], None] | None:
    if not sys.stderr.isatty():
        return None
    last = [0.0]

    def note(rows: int) -> None:
        now = time.monotonic()
        if now - last[0] > 0.5:
            stderr.print(f"reading: {rows:,} rows", end="\r")
            last[0] = now

    return note


@click.command()
@click.argument("job_id", required=False)
@click.option("--watch", is_flag=True, help="Refresh until the job ends.")
@click.option(
    "--limit",
    default=20,
    show_default=True,
    type=click.IntRange(min=1),
    help="Jobs in the table of recent jobs.",
)
@click.option(
    "--json", "as_json", is_flag=True, help="The import_job_status view's row(s) as JSON."
)
def status(job_id: str | None, watch: bool, limit: int, as_json: bool) -> None:
    """One job (counts, progress, rate, ETA) or a table of recent jobs. JOB is a job id or a
    unique prefix of it (at least 6 characters)."""
    settings = settings_from()
    db = open_database(settings)
    _warn_without_sweeper(db, settings.sweep_interval_s)
    if as_json:
        _status_json(db, job_id, limit)
        return
    if job_id is None:
        click.echo(_render(_recent(db, limit)))
        return
    view = require_job(db, job_id)
    job_id = view.job_id
    if not watch:
        click.echo(_render(_job_table(view)))
        sys.exit(EXIT_BY_STATE.get(view.status, 0) if view.status in FINAL_JOB_STATES else 0)
    with Live(_job_table(view), console=stderr, auto_refresh=False) as live:
        while view.status not in FINAL_JOB_STATES:
            time.sleep(1.0)
            view = require_job(db, job_id)
            live.update(_job_table(view), refresh=True)
    click.echo(_render(_job_table(view)))
    sys.exit(EXIT_BY_STATE.get(view.status, 1))


def _status_json(db: Database, job_id: str | None, limit: int) -> None:
    """One object (a job) or a list (recent jobs), with the view's columns; a job's exit status
    is the same as without ``--json``."""
    if job_id is None:
        click.echo(json.dumps(status_rows(db, None, limit), default=_json_value))
        return
    full = resolve_job_id(db, job_id)
    row = status_rows(db, full, 1)[0]
    click.echo(json.dumps(row, default=_json_value))
    final = row["status"] in FINAL_JOB_STATES
    sys.exit(EXIT_BY_STATE.get(row["status"], 0) if final else 0)


def status_rows(db: Database, job_id: str | None, limit: int) -> list[dict[str, Any]]:
    """Rows of the ``import_job_status`` view: one job, or the most recent ``limit``."""
    query = f"SELECT {', '.join(JOB_STATUS_COLUMNS)} FROM import_job_status"
    params: dict[str, Any] = {"limit": limit}
    if job_id is not None:
        query += " WHERE job_id = :job_id"
        params["job_id"] = job_id
    query += " ORDER BY created_at DESC LIMIT :limit"
    with db.read() as session:
        return [dict(row) for row in session.execute(text(query), params).mappings()]


def _json_value(value: object) -> str:
    if isinstance(value, datetime):
        return value.isoformat()
    raise TypeError(f"{type(value).__name__} is not JSON")


def _render(table: Table) -> str:
    console = Console(width=120, color_system=None, file=None, markup=False, highlight=False)
    with console.capture() as capture:
        console.print(table)
    return capture.get().rstrip("\n")


def _job_table(view: JobView) -> Table:
    table = Table(title=f"job {view.job_id}", show_header=False)
    table.add_column("field", no_wrap=True)
    table.add_column("value", overflow="fold")
    table.add_row("status", view.status)
    table.add_row("org", view.org_id)
    table.add_row("source", view.source)
    table.add_row("total", str(view.total))
    for state in ItemStatus:
        table.add_row(state.value, str(view.counts.get(state, 0)))
    progress = 100.0 * view.done / view.total if view.total else 0.0
    table.add_row("progress", f"{progress:.1f}%")
    rate = view.rate()
    table.add_row("rate", f"{rate:,.1f} devices/s" if rate else "-")
    eta = view.eta_s()
    table.add_row("eta", f"{eta:,.0f} s" if eta is not None else "-")
    table.add_row("created", str(view.created_at or "-"))
    table.add_row("started", str(view.started_at or "-"))
    table.add_row("finished", str(view.finished_at or "-"))
    if view.open_chunks:
        table.add_row("waiting for", view.open_chunks)
        if view.status not in FINAL_JOB_STATES and not view.counts.get(ItemStatus.PENDING):
            table.add_row("note", "every row is final; the job ends once these chunks close")
    if view.retrying:
        table.add_row("retrying", view.retrying)
    if view.last_error:
        table.add_row("error", view.last_error)
    return table


def _recent(db: Database, limit: int) -> Table:
    table = Table(title="recent jobs")
    # A job id is never cut short: it must be possible to type it from the screen.
    table.add_column("job", no_wrap=True, min_width=36)
    for column in ("status", "org", "total", "pending", "ok", "errors", "created"):
        table.add_column(column, overflow="fold")
    with db.read() as session:
        ids = [
            row[0]
            for row in session.execute(
                select(JOBS.c.id).order_by(JOBS.c.created_at.desc()).limit(limit)
            )
        ]
    for job_id in ids:
        view = job_view(db, job_id)
        if view is None:
            continue
        ok = view.counts.get(ItemStatus.CREATED, 0) + view.counts.get(ItemStatus.ADOPTED, 0)
        pending = view.counts.get(ItemStatus.PENDING, 0)
        table.add_row(
            view.job_id, view.status, view.org_id, str(view.total), str(pending), str(ok),
            str(view.total - ok - pending), str(view.created_at),
        )  # fmt: skip
    return table


def _warn_without_sweeper(db: Database, interval_s: float) -> None:
    with db.read() as session:
        active = session.execute(
            select(JOBS.c.id).where(JOBS.c.status.not_in(tuple(FINAL_JOB_STATES))).limit(1)
        ).first()
        if active is None:
            return
        age = seconds_since_beat(session)
    if age is None or age > max(60.0, 6 * interval_s):
        when = "never" if age is None else f"{age:,.0f} s ago"
        stderr.print(
            f"warning: the sweeper last ran {when}; without it, lost messages and retries "
            "wait forever. Is `celery -A worker.celery_app beat` running?",
            style="yellow",
            highlight=False,
        )


@click.command()
@click.argument("job_id")
@click.option(
    "--status", "statuses", multiple=True, type=click.Choice([s.value for s in ItemStatus]),
    help="Only rows in this state (repeatable).",
)  # fmt: skip
@click.option("--format", "fmt", type=click.Choice(["csv", "jsonl", "xlsx"]), default="csv",
              show_default=True)  # fmt: skip
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path),
              help="Write here instead of stdout; '-' is stdout. --secrets needs it.")  # fmt: skip
@click.option(
    "--secrets",
    is_flag=True,
    help="Explicit secrets export: add deviceSecret, decrypted with the private key.",
)
@click.option(
    "--private-key", type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="PEM private key of the service account [env ENOS_IMPORT_PRIVATE_KEY_FILE].",
)  # fmt: skip
def results(
    job_id: str,
    statuses: tuple[str, ...],
    fmt: str,
    output: Path | None,
    secrets: bool,
    private_key: Path | None,
) -> None:
    """Per-device outcomes: the input row's own columns, then line, status, assetId, errorCode,
    errorMessage. JOB is a job id or a unique prefix of it (at least 6 characters)."""
    settings = settings_from(private_key_file=private_key)
    db = open_database(settings)
    job_id = require_job(db, job_id).job_id
    opener = None
    if secrets:
        if settings.private_key_file is None:
            raise click.UsageError(
                "--secrets needs --private-key (or ENOS_IMPORT_PRIVATE_KEY_FILE)"
            )
        from worker.enos.secret_box import Opener  # only an export of secrets needs the key

        opener = Opener(settings.private_key_file.read_bytes())
    with db.read() as session:
        columns = [*export.export_columns(session, job_id), *export.TAIL]
        if opener is not None:
            columns.extend(export.SECRET_COLUMNS)
        records = export.rows(session, job_id, list(statuses) or None, opener)
        writer = WRITERS[fmt]
        with export_target(output, private=secrets, binary=fmt == "xlsx") as handle:
            count = writer(handle, columns, records)
    if output is not None and output != STDOUT:
        stderr.print(f"{count} rows written to {output}", highlight=False)


@click.command()
@click.argument("job_id")
def retry(job_id: str) -> None:
    """Send again the rows that failed for a retryable reason or were never sent."""
    settings = settings_from()
    db = open_database(settings)
    view = require_job(db, job_id)
    job_id = view.job_id
    # A rollback's chunks are Delete Device calls one by one: they keep their own, smaller size.
    size = ROLLBACK_CHUNK if view.source.startswith(ROLLBACK_SOURCE) else settings.batch_size
    with db.begin() as session:
        count = jobs.retry_job(session, job_id, size)
        ids = (
            chunks.publish_due(session, job_id, settings.publish_window, settings.republish_after_s)
            if count
            else []
        )
    if not count:
        stderr.print(f"job {job_id}: nothing to send again", highlight=False)
        return
    from worker.publish import publish_chunks

    publish_chunks(ids)
    stderr.print(f"job {job_id}: {count} rows queued again", highlight=False)


@click.command()
@click.argument("job_id")
def cancel(job_id: str) -> None:
    """Stop sending; rows not yet sent end as cancelled."""
    db = open_database(settings_from())
    job_id = require_job(db, job_id).job_id
    with db.begin() as session:
        state = jobs.cancel_job(session, job_id)
    view = require_job(db, job_id)
    if state is None:
        stderr.print(f"job {job_id} had already ended: {view.status}", highlight=False)
    else:
        stderr.print(summary_line(view), highlight=False)
    sys.exit(EXIT_BY_STATE.get(view.status, 0))
