"""``enos-import rollback`` without a deployment: an import made with ``enos-import run`` (local
SQLite, no broker) is rolled back in the same way, in this process."""

from __future__ import annotations

from pathlib import Path

from tests.e2e.services import Simulator, job_id_from, outcomes, process_env
from tests.harness.processes import run_cli
from worker.db.session import Database


def test_an_embedded_import_is_rolled_back_in_process(simulator: Simulator, workdir: Path) -> None:
    path = workdir / "devices.csv"
    lines = ["productKey,deviceKey,deviceName,timezone"]
    lines += [f"pk-meter,local-{n:04d},Meter {n},+08:00" for n in range(120)]
    path.write_text("\n".join(lines) + "\n")
    url = f"sqlite:///{workdir / 'enos-import.db'}"
    env = process_env(simulator.url, url)
    env.pop("ENOS_IMPORT_DATABASE_URL")  # the local default of `run`: ./enos-import.db
    done = run_cli(["run", str(path), "--org", "o-demo"], env, workdir, timeout_s=120,
                   watched=[simulator.proc])  # fmt: skip
    assert done.returncode == 0, done.stderr
    job_id = job_id_from(done.stdout, done.stderr)
    assert len(simulator.devices()) == 120

    undone = run_cli(["rollback", job_id, "--yes"], env, workdir, timeout_s=120,
                     watched=[simulator.proc])  # fmt: skip
    assert undone.returncode == 0, undone.stderr
    rollback_id = job_id_from(undone.stdout, undone.stderr)
    assert simulator.devices() == {}
    db = Database(url)
    try:
        assert {r["status"] for r in outcomes(db, rollback_id).values()} == {"deleted"}
        assert {r["status"] for r in outcomes(db, job_id).values()} == {"rolled_back"}
    finally:
        db.dispose()
    again = run_cli(["rollback", job_id, "--yes"], env, workdir, timeout_s=60)
    assert again.returncode == 0 and "no device of its own to delete" in again.stderr
