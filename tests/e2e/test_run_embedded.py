"""``enos-import run``: the same mixed file in one process (embedded Celery worker, SQLite),
against a fresh simulator process set up the same way."""

from __future__ import annotations

import uuid
from pathlib import Path

from tests.e2e import mixed
from tests.e2e.processes import run_cli
from tests.e2e.services import Simulator, process_env
from worker.db.session import Database


def test_run_settles_the_mixed_file_like_submit(simulator: Simulator, workdir: Path) -> None:
    existing = mixed.prepare(simulator)
    path = mixed.write(workdir / "devices.csv")
    url = f"sqlite:///{workdir / 'enos-import.db'}"

    done = run_cli(
        ["run", str(path), "--org", "o-demo"],
        process_env(simulator.url, url), workdir, timeout_s=60, watched=[simulator.proc],
    )  # fmt: skip

    lines = done.stdout.splitlines()
    assert lines, f"no job id on stdout\nstderr: {done.stderr}"
    job_id = str(uuid.UUID(lines[0]))
    assert lines[0] == job_id, done.stdout
    assert done.returncode == 3, f"exit {done.returncode}\nstderr: {done.stderr}"
    db = Database(url)
    try:
        mixed.check_outcomes(db, job_id, simulator, path, existing)
    finally:
        db.dispose()
