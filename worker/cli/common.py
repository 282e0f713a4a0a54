"""What every command shares: settings with flag overrides, the database, exit statuses, and
following a job to its end with progress on a terminal."""

from __future__ import annotations

import contextlib
import json
import sys
import time
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn
from sqlalchemy import select

from worker.cli import verbosity
from worker.db.models import FINAL_JOB_STATES, JOBS, ItemStatus, JobStatus
from worker.db.notify import listening
from worker.db.session import Database, database_url
from worker.importer import events, jobs
from worker.importer.intake import IntakeSummary
from worker.logs import configure
from worker.readers.sources import FORMATS, SUFFIX_FORMATS, Source, SourceError, open_source
from worker.settings import Settings, SettingsError, load_settings

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_BY_STATE: dict[str, int] = {
    JobStatus.COMPLETED: 0,
    JobStatus.COMPLETED_WITH_ERRORS: 3,
    JobStatus.FAILED: 4,
    JobStatus.CANCELLED: 5,
}

# Text from the data (file names, columns, EnOS's messages) is never read as rich markup: a
# "[/x]" in a CSV header must print as itself.
stderr = Console(stderr=True, markup=False, highlight=False)


def settings_from(**overrides: Any) -> Settings:
    """The settings, with every flag that was given taking precedence over its variable."""
    given = {key: value for key, value in overrides.items() if value is not None}
    try:
        settings = load_settings(**given)
    except SettingsError as exc:
        raise click.UsageError(str(exc)) from exc
    configure(settings.log_level, settings.log_format, verbose=verbosity.verbose)
    return settings


FILE_ARGUMENT = click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
ORG_OPTION = click.option("--org", "org_id", help="Organization (OU) id [env ENOS_IMPORT_ORG_ID].")
FORMAT_OPTION = click.option(
    "--format", "fmt", type=click.Choice(FORMATS), help="Input format (default: by name)."
)
INSECURE_OPTION = click.option(
    "--insecure",
    is_flag=True,
    default=None,
    help="Do not verify the gateway's TLS certificate (a warning is logged) "
    "[env ENOS_IMPORT_VERIFY_TLS=false].",
)


def open_input(file: Path, fmt: str | None, settings: Settings) -> Source:
    """The device file, or a clean error naming it; the org must be known by now."""
    if not settings.org_id:
        raise click.UsageError("--org (or ENOS_IMPORT_ORG_ID) is required")
    try:
        # The operator names the file: a symlink is theirs to follow (the queue's sources are
        # refused at a symlink instead, see worker/importer/boundary.py).
        fmt = fmt or SUFFIX_FORMATS.get(file.suffix.lower())  # by the name the operator gave
        return open_source(file.resolve(), fmt, settings.intake_limits())
    except SourceError as exc:
        raise click.ClickException(str(exc)) from exc


def open_database(settings: Settings) -> Database:
    return Database(database_url(settings.database_url))


@dataclass
class JobView:
    job_id: str
    status: str
    org_id: str
    source: str
    total: int
    counts: dict[str, int]
    last_error: str | None
    started_at: datetime | None
    finished_at: datetime | None
    created_at: datetime | None
    open_chunks: str | None = None  # what the job is waiting for, while it is not final
    retry: tuple[int, str] | None = None  # attempts and last error of a chunk to send again

    @property
    def retrying(self) -> str | None:
        if self.retry is None:
            return None
        attempts, error = self.retry
        return f"sending again after {attempts} attempt{'s' if attempts != 1 else ''}: {error}"

    @property
    def done(self) -> int:
        return self.total - self.counts.get(ItemStatus.PENDING, 0)

    def rate(self) -> float | None:
        """Rows settled per second since the job started."""
        if self.started_at is None:
            return None
        end = self.finished_at or datetime.now(UTC)
        start = self.started_at if self.started_at.tzinfo else self.started_at.replace(tzinfo=UTC)
        end = end if end.tzinfo else end.replace(tzinfo=UTC)
        elapsed = (end - start).total_seconds()
        sent = self.done - self.counts.get(ItemStatus.INVALID, 0)
        return sent / elapsed if elapsed > 0 and sent > 0 else None

    def eta_s(self) -> float | None:
        rate = self.rate()
        pending = self.counts.get(ItemStatus.PENDING, 0)
        return pending / rate if rate and pending and self.status not in FINAL_JOB_STATES else None


def job_view(
    db: Database, job_id: str, finished: Mapping[str, Any] | None = None
) -> JobView | None:
    """The job and its rows' counts; ``finished``: a note of ``events.COUNTS_CHANNEL``, whose
    counts are taken instead of counting when it is of the job's present end."""
    with db.read() as session:
        row = session.execute(select(JOBS).where(JOBS.c.id == job_id)).first()
        if row is None:
            return None
        if finished is not None and _of_this_end(finished, row):
            counts = Counter(finished["counts"])
        else:
            counts = jobs.item_counts(session, job_id)
        waiting = retry = None
        if row.status not in FINAL_JOB_STATES:
            waiting = jobs.open_chunks_note(session, job_id)
            retry = jobs.last_retry(session, job_id)
            if row.status == JobStatus.RUNNING and row.intake_lease_until is not None:
                reading = f"the file is still being read ({row.total} rows stored so far)"
                waiting = f"{reading}; {waiting}" if waiting else reading
    return JobView(
        job_id=row.id,
        status=row.status,
        org_id=row.org_id,
        source=row.source,
        total=row.total,
        counts=dict(counts),
        last_error=row.last_error,
        started_at=row.started_at,
        finished_at=row.finished_at,
        created_at=row.created_at,
        open_chunks=waiting,
        retry=retry,
    )


def _of_this_end(finished: Mapping[str, Any], row: Any) -> bool:
    """Whether the note tells the end the job row shows (not an earlier one, before a retry)."""
    try:
        # The same instant, whatever time zone each connection shows it in.
        ended = datetime.fromisoformat(str(finished.get("finished_at")))
    except ValueError:
        return False
    return (
        finished.get("job_id") == row.id
        and finished.get("status") == row.status
        and row.finished_at is not None
        and ended.tzinfo is not None
        and row.finished_at.tzinfo is not None
        and ended == row.finished_at
        and isinstance(finished.get("counts"), dict)
    )


def require_job(db: Database, job_id: str) -> JobView:
    """The job named by its id or by a unique prefix of it (at least 6 characters)."""
    view = job_view(db, resolve_job_id(db, job_id))
    if view is None:
        raise click.ClickException(f"no job {job_id}")
    return view


MIN_PREFIX = 6


def resolve_job_id(db: Database, given: str) -> str:
    """The full id of the one job whose id starts with ``given``; a clean error otherwise."""
    given = given.strip().lower()
    if not given:
        raise click.ClickException("no job id given (a job id, or at least 6 of its characters)")
    with db.read() as session:
        if session.execute(select(JOBS.c.id).where(JOBS.c.id == given)).first() is not None:
            return given
        if len(given) < MIN_PREFIX:
            raise click.ClickException(
                f"no job {given} (a job id prefix needs at least {MIN_PREFIX} characters)"
            )
        # LIKE's own wildcards in what was typed are literal characters of an id.
        pattern = given.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
        found = list(
            session.execute(
                select(JOBS.c.id).where(JOBS.c.id.like(pattern, escape="\\")).limit(5)
            ).scalars()
        )
    if not found:
        raise click.ClickException(f"no job {given}")
    if len(found) > 1:
        shown = ", ".join(found[:4]) + (", …" if len(found) > 4 else "")
        raise click.ClickException(f"job id prefix {given} is ambiguous: it matches {shown}")
    return str(found[0])


def follow(db: Database, job_id: str, poll_s: float = 1.0, tick: Any = None) -> JobView:
    """Waits for the job's final state; a progress bar on stderr when it is a terminal.

    ``tick`` is called on every poll (the embedded runner sweeps there). On PostgreSQL the wait
    between two polls ends at once when a job ends (its NOTIFY), so the command returns with the
    job, not up to a poll later.
    """
    show = sys.stderr.isatty()
    progress = Progress(
        TextColumn("{task.fields[state]}", style="bold", markup=False),
        BarColumn(),
        TextColumn("{task.completed}/{task.total} devices"),
        TextColumn("{task.fields[rate]}"),
        TimeRemainingColumn(),
        console=stderr,
        disable=not show,
        transient=False,
    )
    finished: dict[str, Any] | None = None  # the job's counts as its end counted them
    with (
        progress,
        listening(db.engine, events.CHANNEL, events.COUNTS_CHANNEL) as listener,
    ):
        task = progress.add_task("job", total=None, state="queued", rate="")
        told: set[str] = set()  # the errors told above the bar: each one once
        next_view = 0.0
        while True:
            if tick is not None:
                tick()
            # Only the job's row is read on every poll: the counts behind the progress bar are
            # work for the database (one pass over the job's rows, most of a second at a
            # million), so they are read while a bar is shown, for at most a tenth of the time;
            # at the end, the finishing worker's counts are taken from its notification.
            state = job_state(db, job_id)
            if state in FINAL_JOB_STATES:
                finished = counts_note(listener.notes(0), job_id) or finished
            if state in FINAL_JOB_STATES or (show and time.monotonic() >= next_view):
                started = time.monotonic()
                view = job_view(db, job_id, finished)
                if view is None:
                    raise click.ClickException(f"no job {job_id}")
                next_view = time.monotonic() + 10 * (time.monotonic() - started)
                rate = view.rate()
                progress.update(
                    task,
                    total=view.total or None,
                    completed=view.done,
                    state=view.status,
                    rate=f"{rate:,.0f}/s" if rate else "",
                )
                if show and view.retry is not None and view.retry[1] not in told:
                    told.add(view.retry[1])  # why the bar does not move: EnOS down, a wrong URL
                    progress.console.print(
                        f"retrying: {view.retry[1]}", style="yellow", markup=False
                    )
                if view.status in FINAL_JOB_STATES:
                    return view
            finished = counts_note(listener.notes(poll_s), job_id) or finished


def counts_note(notes: list[tuple[str, str]], job_id: str) -> dict[str, Any] | None:
    """The last of ``notes`` telling the counts of ``job_id``'s end (``events.COUNTS_CHANNEL``)."""
    found = None
    for channel, payload in notes:
        if channel == events.COUNTS_CHANNEL:
            with contextlib.suppress(ValueError):
                note = json.loads(payload)
                if isinstance(note, dict) and note.get("job_id") == job_id:
                    found = note
    return found


def job_state(db: Database, job_id: str) -> str:
    """The job's state alone (one row by its key); a missing job is an error, as in
    :func:`require_job`."""
    with db.read() as session:
        state = session.execute(select(JOBS.c.status).where(JOBS.c.id == job_id)).scalar()
    if state is None:
        raise click.ClickException(f"no job {job_id}")
    return str(state)


def intake_line(job_id: str, status: str, summary: IntakeSummary) -> str:
    """What an intake read, for a job still running: ``summary_line`` without the rows' states."""
    text = (
        f"job {job_id} {status}: {summary.rows} rows read, {summary.valid} to send "
        f"in {summary.chunks} chunks, {summary.invalid} invalid"
    )
    if summary.duplicates:
        text += f" ({summary.duplicates} repeated deviceKeys)"
    if summary.error:
        text += f"\n  error: {summary.error}"
    return text


def summary_line(view: JobView) -> str:
    parts = [f"{state} {view.counts[state]}" for state in ItemStatus if view.counts.get(state)]
    text = f"job {view.job_id} {view.status}: {view.total} rows ({', '.join(parts) or 'none'})"
    if view.last_error:
        text += f"\n  error: {view.last_error}"
    return text
