"""``enos-import run``: the whole import in this process (the embedded default)."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from worker.cli.common import (
    EXIT_BY_STATE,
    FILE_ARGUMENT,
    FORMAT_OPTION,
    INSECURE_OPTION,
    ORG_OPTION,
    follow,
    open_input,
    settings_from,
    stderr,
    summary_line,
)
from worker.cli.verbosity import VERBOSE_OPTION
from worker.embedded import Embedded, embedded_settings, open_embedded_database, start_or_resume
from worker.host import one_malloc_arena, tune_collector


@click.command()
@FILE_ARGUMENT
@ORG_OPTION
@click.option("--require-secret", is_flag=True, help="Ask EnOS for encrypted device secrets.")
@FORMAT_OPTION
@click.option("--key-mode", type=click.Choice(["derive", "platform"]),
              help="Rows without deviceKey [env ENOS_IMPORT_KEY_MODE].")  # fmt: skip
@INSECURE_OPTION
@VERBOSE_OPTION
@click.option(
    "--concurrency",
    type=click.IntRange(min=1),
    help="Calls in flight [env ENOS_IMPORT_MAX_CONCURRENCY].",
)
def run(
    file: Path,
    org_id: str | None,
    require_secret: bool,
    fmt: str | None,
    key_mode: str | None,
    insecure: bool | None,
    concurrency: int | None,
) -> None:
    """Import FILE in this process: a real Celery worker on an embedded broker, the database of
    ENOS_IMPORT_DATABASE_URL or a local SQLite file. Run again after a crash, it resumes."""
    one_malloc_arena()  # before the sending threads start
    tune_collector()
    settings = embedded_settings(
        settings_from(
            org_id=org_id,
            key_mode=key_mode,
            max_concurrency=concurrency,
            verify_tls=False if insecure else None,
        )
    )
    source = open_input(file, fmt, settings)
    db = open_embedded_database(settings)
    runner = Embedded(settings, db)
    runner.start()
    try:

        def announce(job_id: str) -> None:
            click.echo(job_id)
            sys.stdout.flush()

        from worker.publish import publish_chunks

        job_id, _ = start_or_resume(
            db, settings, settings.org_id, source, require_secret, key_mode, announce,
            publish_chunks,
        )  # fmt: skip
        # The job's row is read every 0.2 s (the run ends that soon after the job); the
        # sweep runs every SWEEP_INTERVAL_S.
        view = follow(db, job_id, poll_s=0.2, tick=runner.tick)
    finally:
        runner.stop()
    stderr.print(summary_line(view), highlight=False)
    sys.exit(EXIT_BY_STATE.get(view.status, 1))
