"""``enos-import rollback`` end to end: an import of 5,000 rows (some adopted, some invalid) is
rolled back by a Celery worker while the simulator injects faults into Delete Device; the worker
is SIGKILLed once and a new one finishes. EnOS then holds exactly the devices of the other job
(the adopted ones among them), and the rows say what happened."""

from __future__ import annotations

import os
import signal
import time
from collections import Counter
from pathlib import Path

import httpx
import pytest
from sqlalchemy import text

from tests.e2e.conftest import Cluster
from tests.e2e.services import FINAL, job_id_from, job_status, outcomes
from tests.harness.processes import BIN, Proc, run_cli, start, wait_until

ROWS = 5000
OTHER = 300  # devices of another job; this job adopts the first ADOPTED of them
ADOPTED = 200
INVALID = 100
FAULTS = {
    "http503": 0.04, "http429": 0.02, "reset_before_commit": 0.02, "reset_after_commit": 0.04,
    "timeout_after_commit": 0.002, "retry_after_s": 0.2, "seed": 21,
}  # fmt: skip


def _write(path: Path, keys: list[str]) -> None:
    lines = ["productKey,deviceKey,deviceName,timezone"]
    lines += [f"pk-meter,{key},Device {key},+08:00" for key in keys]
    path.write_text("\n".join(lines) + "\n")


def _import(cluster: Cluster, name: str, keys: list[str]) -> str:
    path = cluster.workdir / f"{name}.csv"
    _write(path, keys)
    done = run_cli(["submit", str(path), "--org", "o-demo", "--wait"], cluster.env,
                   cluster.workdir, timeout_s=180, watched=cluster.processes)  # fmt: skip
    assert done.returncode in (0, 3), done.stderr
    return job_id_from(done.stdout, done.stderr)


def _settled(cluster: Cluster, job_id: str) -> int:
    with cluster.db.read() as session:
        return int(
            session.execute(
                text("SELECT count(*) FROM import_items WHERE job_id = :j AND status <> 'pending'"),
                {"j": job_id},
            ).scalar_one()
        )


def _new_worker(cluster: Cluster) -> Proc:
    argv = [str(BIN / "celery"), "-A", "worker.celery_app", "worker", "--concurrency", "4",
            "--loglevel", "WARNING", "--hostname", f"e2e-again-{os.getpid()}@%h"]  # fmt: skip
    return start("celery-worker-2", argv, cluster.env, cluster.workdir)


@pytest.mark.timeout(540)
def test_rollback_under_faults_and_a_killed_worker_deletes_exactly_what_was_created(
    cluster: Cluster,
) -> None:
    sim = cluster.simulator
    other_keys = [f"other-{n:04d}" for n in range(OTHER)]
    other_job = _import(cluster, "other", other_keys)
    keys = other_keys[:ADOPTED] + [f"bad key {n}" for n in range(INVALID)]
    keys += [f"mine-{n:05d}" for n in range(ROWS - len(keys))]
    job_id = _import(cluster, "mine", keys)
    statuses = [row["status"] for row in outcomes(cluster.db, job_id).values()]
    assert (statuses.count("adopted"), statuses.count("invalid")) == (ADOPTED, INVALID)
    created = statuses.count("created")
    assert created == ROWS - ADOPTED - INVALID
    assert len(sim.devices()) == OTHER + created

    dry = run_cli(["rollback", job_id, "--dry-run"], cluster.env, cluster.workdir, timeout_s=60)
    assert dry.returncode == 0, dry.stderr
    assert f"would delete {created} devices" in dry.stderr
    refused = run_cli(["rollback", job_id], cluster.env, cluster.workdir, timeout_s=60)
    assert refused.returncode == 2 and "--yes" in refused.stderr  # no terminal, no --yes
    assert len(sim.devices()) == OTHER + created  # neither deleted anything

    httpx.post(f"{sim.url}/__sim/faults", json=FAULTS).raise_for_status()
    started = run_cli(["rollback", job_id, "--yes"], cluster.env, cluster.workdir, timeout_s=60)
    assert started.returncode == 0, started.stderr
    rollback_id = job_id_from(started.stdout, started.stderr)

    started_at = time.monotonic()
    wait_until(lambda: _settled(cluster, rollback_id) >= 800, "a part of the deletes", 120,
               cluster.processes)  # fmt: skip
    cluster.worker.kill(signal.SIGKILL)
    print(f"killed after {time.monotonic() - started_at:.1f} s at {_settled(cluster, rollback_id)}")
    assert _settled(cluster, rollback_id) < created, "the rollback ended before the kill"
    again = _new_worker(cluster)
    try:
        wait_until(
            lambda: (job_status(cluster.db, rollback_id) or {}).get("status") in FINAL,
            "the rollback to end", 240, [again, cluster.beat, sim.proc],
        )  # fmt: skip
        print(f"rollback ended after {time.monotonic() - started_at:.1f} s")
    finally:
        again.stop()

    view = job_status(cluster.db, rollback_id)
    rolled = outcomes(cluster.db, rollback_id)
    problems = Counter(
        (row["status"], row["error_message"])
        for row in rolled.values()
        if row["status"] == "failed"
    )
    assert view is not None and view["status"] == "completed", (view, problems.most_common(5))
    assert len(rolled) == created
    assert {row["status"] for row in rolled.values()} <= {"deleted", "not_found"}
    assert sum(row["status"] == "deleted" for row in rolled.values()) >= created * 0.9
    # EnOS holds exactly the other job's devices, the adopted ones among them.
    assert set(sim.devices()) == set(other_keys)
    after = [row["status"] for row in outcomes(cluster.db, job_id).values()]
    assert after.count("rolled_back") == created
    assert (after.count("adopted"), after.count("invalid")) == (ADOPTED, INVALID)
    assert {row["status"] for row in outcomes(cluster.db, other_job).values()} == {"created"}
    stats = httpx.get(f"{sim.url}/__sim/stats").json()
    assert sum(stats["faults"].values()) >= 50, stats
