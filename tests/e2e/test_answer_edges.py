"""The answer table's edges, from outside: real worker processes, the strict simulator server,
lost answers, and products or batches over EnOS's limits.

EnOS must end up holding exactly one device per created or adopted row and none for another
row, and the job must end in about the time its faults cost, never waiting on a lease.
"""

from __future__ import annotations

import csv
import time
from collections import Counter
from pathlib import Path

from tests.e2e.conftest import Cluster
from tests.e2e.services import Simulator, job_id_from, job_status, outcomes, process_env
from tests.harness.processes import run_cli
from worker.db.session import Database

SUCCESS = ("created", "adopted")


def write_devices(path: Path, rows: list[tuple[str, str, str]]) -> Path:
    with path.open("w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["productKey", "deviceKey", "deviceName", "timezone"])
        for product, key, name in rows:
            writer.writerow([product, key, name, "+08:00"])
    return path


def assert_enos_holds_exactly_the_rows(cluster: Cluster, job_id: str) -> Counter[str]:
    got = outcomes(cluster.db, job_id)
    enos = cluster.simulator.devices()
    ok = {o["device_key"]: o["asset_id"] for o in got.values() if o["status"] in SUCCESS}
    others = [o for o in got.values() if o["status"] not in SUCCESS]
    mine = {key: enos[key]["assetId"] for key in ok if key in enos}
    assert mine == ok, f"{len(ok) - len(mine)} created or adopted rows are not on EnOS"
    strays = [o for o in others if o["device_key"] in enos and o["status"] != "conflict"]
    assert not strays, f"{len(strays)} rows not created hold a device on EnOS: {strays[:3]}"
    return Counter(o["status"] for o in got.values())


def test_products_over_their_room_under_lost_answers(cluster: Cluster) -> None:
    """30,000 rows over two products of 10,000 (the default room), a fifth of the answers lost
    after EnOS did the work: EnOS holds 20,000 devices, and each is a created or adopted row."""
    sim = cluster.simulator
    sim.set_faults({"latency_ms": 300, "reset_after_commit": 0.2, "http503": 0.05, "seed": 5})
    rows = [
        (("pk-meter", "pk-inverter")[n % 2], f"cap-{n:05d}", f"Capped {n}") for n in range(30_000)
    ]
    path = write_devices(cluster.workdir / "capped.csv", rows)
    env = {**cluster.env, "ENOS_IMPORT_BATCH_SIZE": "100"}
    done = run_cli(
        ["submit", str(path), "--org", "o-demo", "--wait"],
        env, cluster.workdir, timeout_s=240, watched=cluster.processes,
    )  # fmt: skip
    job_id = job_id_from(done.stdout, done.stderr)
    assert done.returncode == 3, done.stderr[-2000:]  # completed_with_errors
    counts = assert_enos_holds_exactly_the_rows(cluster, job_id)
    assert counts["created"] + counts["adopted"] == 20_000, counts
    assert counts["failed"] == 10_000, counts
    assert len(sim.devices()) == 20_000


def test_chunks_split_at_once_by_99400_finish_without_waiting_on_a_lease(
    cluster: Cluster,
) -> None:
    """EnOS takes 250 devices a call; 1,000-device chunks split all at once, under lost answers,
    with devices that exist already (adopted) or belong to others (conflict)."""
    sim = cluster.simulator
    sim.set_limits(batch_max=250)
    existing = [
        {"productKey": "pk-meter", "deviceKey": f"split-{n:05d}", "timezone": "+08:00",
         "deviceName": {"defaultValue": f"Split {n}" if n < 600 else f"Someone else {n}"}}
        for n in range(900)
    ]  # fmt: skip
    for start in range(0, len(existing), 250):
        sim.create_devices(existing[start : start + 250])
    sim.set_faults({"latency_ms": 100, "reset_after_commit": 0.2, "http503": 0.05, "seed": 9})
    rows = [("pk-meter", f"split-{n:05d}", f"Split {n}") for n in range(6_000)]
    path = write_devices(cluster.workdir / "split.csv", rows)
    env = {**cluster.env, "ENOS_IMPORT_BATCH_SIZE": "1000"}
    started = time.monotonic()
    done = run_cli(
        ["submit", str(path), "--org", "o-demo", "--wait"],
        env, cluster.workdir, timeout_s=120, watched=cluster.processes,
    )  # fmt: skip
    elapsed = time.monotonic() - started
    job_id = job_id_from(done.stdout, done.stderr)
    assert done.returncode == 3, done.stderr[-2000:]
    job = job_status(cluster.db, job_id)
    assert job is not None and job["pending"] == 0
    counts = assert_enos_holds_exactly_the_rows(cluster, job_id)
    # Lost answers make some created devices "adopted" too; the 600 that existed are adopted.
    assert counts["created"] + counts["adopted"] == 5_700 and counts["conflict"] == 300, counts
    got = outcomes(cluster.db, job_id)
    assert all(got[n + 2]["status"] == "adopted" for n in range(600))
    # A chunk left leased by a failed split would hold the job for the 30 s lease.
    assert elapsed < 60, f"the job took {elapsed:.0f} s"
    log = (cluster.workdir / "celery-worker.log").read_text(errors="replace")
    assert "UniqueViolation" not in log


def test_submit_without_wait_exits_4_when_the_intake_failed_the_job(
    simulator: Simulator, pg_db: Database, redis_url: str, workdir: Path
) -> None:
    path = workdir / "empty.csv"
    path.write_text("productKey,deviceKey,deviceName,timezone\n", encoding="utf-8")
    env = process_env(simulator.url, pg_db.url, redis_url)
    done = run_cli(["submit", str(path), "--org", "o-demo"], env, workdir, timeout_s=60)
    job_id = job_id_from(done.stdout, done.stderr)
    assert done.returncode == 4, done.stderr
    job = job_status(pg_db, job_id)
    assert job is not None and job["status"] == "failed"
    assert "no devices" in str(job["last_error"])
