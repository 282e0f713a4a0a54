"""``enos-import run`` killed with SIGKILL mid-import and run again on the same file: it resumes
the same job and creates nothing twice."""

from __future__ import annotations

import csv
import signal
from pathlib import Path

import httpx
from sqlalchemy import text

from tests.e2e.services import Simulator, job_id_from, outcomes, process_env
from tests.harness.processes import BIN, Proc, run_cli, start, wait_until
from worker.db.session import Database

ROWS = 3000


def _write(path: Path) -> None:
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["productKey", "deviceKey", "deviceName", "timezone"])
        for n in range(1, ROWS + 1):
            key = "" if n % 4 == 0 else f"resume-{n:05d}"  # a quarter get derived keys
            writer.writerow([("pk-meter", "pk-inverter", "pk-turbine")[n % 3], key, f"dev {n}",
                             "+08:00"])  # fmt: skip


def _start_run(simulator: Simulator, workdir: Path, path: Path) -> tuple[str, dict[str, str], Proc]:
    """``enos-import run`` on a fresh SQLite file, 100-device batches and 2 calls in flight
    (so that a kill lands mid-import); its database URL, environment and process."""
    url = f"sqlite:///{workdir / 'enos-import.db'}"
    env = process_env(simulator.url, url)
    env["ENOS_IMPORT_BATCH_SIZE"] = "100"
    env["ENOS_IMPORT_MAX_CONCURRENCY"] = "2"
    proc = start("run-1", [str(BIN / "enos-import"), "run", str(path), "--org", "o-demo"],
                 env, workdir)  # fmt: skip
    return url, env, proc


def _settled(url: str) -> int:
    db = Database(url)
    try:
        with db.read() as session:
            return int(
                session.execute(
                    text("SELECT count(*) FROM import_items WHERE status <> 'pending'")
                ).scalar_one()
            )
    except Exception:
        return 0
    finally:
        db.dispose()


def test_run_killed_and_run_again_resumes_and_creates_nothing_twice(
    simulator: Simulator, workdir: Path
) -> None:
    # Slow calls (batches of 100, 0.4 s each) so that the kill lands in the middle.
    httpx.post(f"{simulator.url}/__sim/faults", json={"latency_ms": 400}).raise_for_status()
    path = workdir / "devices.csv"
    _write(path)
    url, env, first = _start_run(simulator, workdir, path)
    try:
        wait_until(lambda: _settled(url) >= 600, "a fifth of the rows to settle", 60,
                   [simulator.proc], shown=[first])  # fmt: skip
    finally:
        first.kill(signal.SIGKILL)
    assert first.popen is not None and first.popen.returncode == -signal.SIGKILL
    killed_at = _settled(url)
    assert killed_at < ROWS, "the import ended before it could be killed"
    job_id = (workdir / "run-1.log").read_text().splitlines()[0]

    again = run_cli(["run", str(path), "--org", "o-demo"], env, workdir, timeout_s=120,
                    watched=[simulator.proc])  # fmt: skip

    assert again.returncode == 0, again.stderr
    assert job_id_from(again.stdout, again.stderr) == job_id  # the same job, resumed
    db = Database(url)
    try:
        rows = outcomes(db, job_id)
        with db.read() as session:
            jobs = session.execute(text("SELECT count(*) FROM import_jobs")).scalar_one()
    finally:
        db.dispose()
    assert jobs == 1
    assert len(rows) == ROWS
    assert {row["status"] for row in rows.values()} <= {"created", "adopted"}
    on_enos = simulator.devices()  # fails on a deviceKey held twice
    assert len(on_enos) == ROWS
    for row in rows.values():
        assert on_enos[row["device_key"]]["assetId"] == row["asset_id"]


INTAKE_ROWS = 100_000


def _reading(url: str) -> tuple[int, bool, int]:
    """The job's stored rows, whether its intake is still open, and the rows settled."""
    db = Database(url)
    try:
        with db.read() as session:
            row = session.execute(
                text("SELECT total, intake_lease_until IS NOT NULL FROM import_jobs")
            ).first()
            settled = session.execute(
                text("SELECT count(*) FROM import_items WHERE status IN ('created', 'adopted')")
            ).scalar_one()
    except Exception:
        return 0, False, 0
    finally:
        db.dispose()
    return (0, False, 0) if row is None else (int(row[0]), bool(row[1]), int(settled))


def test_run_killed_while_reading_its_file_reads_on_and_creates_nothing_twice(
    simulator: Simulator, workdir: Path
) -> None:
    """The intake commits as it reads and chunks go out meanwhile: killed then, the next run
    takes the same job's intake over after the last stored line."""
    httpx.post(f"{simulator.url}/__sim/faults", json={"latency_ms": 300}).raise_for_status()
    limits = {"product_cap": INTAKE_ROWS, "ou_cap": 2 * INTAKE_ROWS}
    httpx.post(f"{simulator.url}/__sim/limits", json=limits).raise_for_status()
    path = workdir / "devices.csv"
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["productKey", "deviceKey", "deviceName", "timezone"])
        for n in range(1, INTAKE_ROWS + 1):
            key = "" if n % 5 == 0 else f"reading-{n:06d}"  # a fifth get derived keys
            writer.writerow(["pk-meter", key, f"dev {n}", "+08:00"])
        writer.writerow(["pk-meter", "reading-000001", "a repeat of line 2", "+08:00"])
    url, env, first = _start_run(simulator, workdir, path)
    try:

        def midway() -> bool:
            stored, reading, settled = _reading(url)
            return reading and settled > 0 and 0 < stored < INTAKE_ROWS

        wait_until(midway, "chunks sent while the file is still read", 60, [simulator.proc],
                   interval_s=0.01, shown=[first])  # fmt: skip
    finally:
        first.kill(signal.SIGKILL)
    stored, reading, _ = _reading(url)
    assert reading and stored < INTAKE_ROWS + 1, "the intake ended before it could be killed"
    job_id = (workdir / "run-1.log").read_text().splitlines()[0]

    httpx.post(f"{simulator.url}/__sim/faults", json={"latency_ms": 0}).raise_for_status()
    again = run_cli(["run", str(path), "--org", "o-demo"], env, workdir, timeout_s=240,
                    watched=[simulator.proc])  # fmt: skip

    assert again.returncode == 3, again.stderr  # completed with errors: the repeated key
    assert job_id_from(again.stdout, again.stderr) == job_id
    db = Database(url)
    try:
        rows = outcomes(db, job_id)
    finally:
        db.dispose()
    assert sorted(rows) == list(range(2, INTAKE_ROWS + 3))
    repeat = rows[INTAKE_ROWS + 2]
    assert repeat["status"] == "invalid"
    assert "repeats line 2" in repeat["error_message"]
    sent = [row for line, row in rows.items() if line != INTAKE_ROWS + 2]
    assert {row["status"] for row in sent} <= {"created", "adopted"}
    on_enos = simulator.devices()  # fails on a deviceKey held twice
    assert len(on_enos) == INTAKE_ROWS
    for row in sent:
        assert on_enos[row["device_key"]]["assetId"] == row["asset_id"]
