"""``enos-import run``: the same mixed file in one process (embedded Celery worker, SQLite),
against a fresh simulator process set up the same way."""

from __future__ import annotations

from pathlib import Path

from tests.e2e import mixed
from tests.e2e.services import Simulator, job_id_from, process_env
from tests.harness.processes import run_cli
from worker.db.session import Database


def test_run_settles_the_mixed_file_like_submit(simulator: Simulator, workdir: Path) -> None:
    existing = mixed.prepare(simulator)
    path = mixed.write(workdir / "devices.csv")
    url = f"sqlite:///{workdir / 'enos-import.db'}"

    done = run_cli(
        ["run", str(path), "--org", "o-demo"],
        process_env(simulator.url, url), workdir, timeout_s=60, watched=[simulator.proc],
    )  # fmt: skip

    job_id = job_id_from(done.stdout, done.stderr)
    assert done.returncode == 3, f"exit {done.returncode}\nstderr: {done.stderr}"
    db = Database(url)
    try:
        mixed.check_outcomes(db, job_id, simulator, path, existing)
    finally:
        db.dispose()
