"""The nightly import from real processes: PostgreSQL, Redis, Celery workers, two beats scanning
the inbox every second (the crontab's fast stand-in, ``INBOX_SCAN_INTERVAL_S``), the simulator,
and a second Celery app that consumes the completion events.

The inbox holds a good file, the same content under a second name, a file still being written,
a ``.part`` file, a binary file and a symlink out of the roots; two beats scan at once, the CLI
scans too, and the worker is SIGKILLed as soon as the first file is claimed. The result: one
job per distinct content, every file in ``done/``, ``errors/`` or ``failed/`` with its results
or error beside it, EnOS holding exactly the devices the rows say, an event per job consumed,
and ``LISTEN enos_import_jobs`` seeing every job end.
"""

from __future__ import annotations

import json
import os
import random
import signal
import threading
from pathlib import Path
from typing import Any

import psycopg
import pytest
from sqlalchemy import text

from tests.e2e.conftest import Cluster, start_worker
from tests.e2e.services import FINAL, job_ids, job_status
from tests.harness.processes import BIN, base_env, run_cli, start, wait_until
from worker.db.session import Database

ORG = "o-demo"
HEADER = "productKey,deviceKey,deviceName,timezone\n"
CONSUMER = """\
import json
import os

from celery import Celery

app = Celery("consumer", broker=os.environ["CONSUMER_BROKER"])
app.conf.task_default_queue = "consumer_events"


@app.task(name="consumer.job_done")
def job_done(**event):
    with open(os.environ["CONSUMER_OUT"], "a") as out:
        out.write(json.dumps(event) + "\\n")
"""


@pytest.fixture
def cluster_env(workdir: Path) -> dict[str, str]:
    (workdir / "inbox" / ORG).mkdir(parents=True)
    return {
        "ENOS_IMPORT_INBOX_DIR": str(workdir / "inbox"),
        "ENOS_IMPORT_INBOX_SCAN_INTERVAL_S": "1",
        "ENOS_IMPORT_INBOX_SETTLE_S": "2",
        "ENOS_IMPORT_ON_FINISH_TASK": "consumer.job_done",
        "ENOS_IMPORT_ON_FINISH_QUEUE": "consumer_events",
        # Short leases: an intake cut by the SIGKILL is started again within seconds.
        "ENOS_IMPORT_READ_TIMEOUT_S": "4",
        "ENOS_IMPORT_CONNECT_TIMEOUT_S": "2",
        "ENOS_IMPORT_LEASE_S": "10",
    }


def rows(prefix: str, count: int) -> str:
    return "".join(f"pk-meter,{prefix}-{n:03d},Device {prefix} {n},+08:00\n" for n in range(count))


def grow(path: Path, stop: threading.Event) -> None:
    """Another system writing a file slowly, in place (the unsafe way)."""
    with path.open("a") as out:
        for n in range(1, 13):
            if stop.wait(0.5):
                return
            out.write(rows(f"grow{n:02d}", 1))
            out.flush()


@pytest.mark.slow
def test_the_inbox_imports_each_content_once(cluster: Cluster, pg_db: Database) -> None:
    inbox = cluster.workdir / "inbox" / ORG
    dsn = pg_db.url.replace("postgresql+psycopg://", "postgresql://")
    listener = psycopg.connect(dsn, autocommit=True)
    listener.execute("LISTEN enos_import_jobs")
    consumer = _start_consumer(cluster)
    beat2 = start("celery-beat-2", [str(BIN / "celery"), "-A", "worker.celery_app", "beat", "-s",
                                    str(cluster.workdir / "beat-2-schedule"), "--loglevel",
                                    "WARNING"], cluster.env, cluster.workdir)  # fmt: skip
    stop = threading.Event()
    grower = threading.Thread(target=grow, args=(inbox / "growing.csv", stop), daemon=True)
    worker2 = None
    try:
        good = HEADER + rows("good", 30)
        (inbox / "a-good.csv").write_text(good)
        (inbox / "b-copy.csv").write_text(good)
        (inbox / "growing.csv").write_text(HEADER + rows("grow00", 1))
        (inbox / "data.csv.part").write_text(HEADER + rows("part", 3))
        (inbox / "binary.csv").write_bytes(random.Random(7).randbytes(8192))
        (inbox / "link.csv").symlink_to("/etc/passwd")
        grower.start()
        wait_until(lambda: _claims(pg_db), "a first claim", 60, cluster.processes)
        assert cluster.worker.popen is not None
        os.killpg(cluster.worker.popen.pid, signal.SIGKILL)  # mid-scan, mid-intake: whatever
        worker2 = start_worker(cluster.env, cluster.workdir, "celery-worker-2")
        scanned = run_cli(["inbox", "scan", "--no-wait"], cluster.env, cluster.workdir, 60)
        assert scanned.returncode == 0, scanned.stderr
        assert "taken" in scanned.stderr
        grower.join()
        watched = [worker2, cluster.beat, beat2, consumer, cluster.simulator.proc]
        wait_until(lambda: _all_filed(inbox), "every file filed", 100, watched)
        events = wait_until(lambda: _events(cluster, 3), "three completion events", 30, watched)
        notified = {n.payload for n in listener.notifies(timeout=5, stop_after=3)}
    finally:
        stop.set()
        listener.close()
        for proc in (worker2, beat2, consumer):
            if proc is not None:
                proc.stop()

    found = [job_status(pg_db, j) for j in job_ids(pg_db)]
    jobs = {job["source"]: job for job in found if job is not None}
    assert sorted(jobs) == [f"inbox:{ORG}/{n}" for n in ("a-good.csv", "binary.csv", "growing.csv")]
    good_job, grow_job = jobs[f"inbox:{ORG}/a-good.csv"], jobs[f"inbox:{ORG}/growing.csv"]
    binary_job = jobs[f"inbox:{ORG}/binary.csv"]
    assert (good_job["status"], good_job["created"]) == ("completed", 30)
    assert (grow_job["status"], grow_job["total"], grow_job["created"]) == ("completed", 13, 13)
    assert binary_job["status"] == "failed"
    assert all(job["status"] in FINAL for job in jobs.values())

    assert (inbox / "done" / "a-good.csv").read_text() == good
    assert (inbox / "done" / "a-good.results.csv").exists()
    assert (inbox / "done" / "growing.results.csv").exists()
    assert (
        "the same content was imported from a-good.csv"
        in (inbox / "failed" / "b-copy.error.txt").read_text()
    )
    assert (inbox / "failed" / "binary.results.csv").exists()
    assert "failed" in (inbox / "failed" / "binary.error.txt").read_text()
    assert (inbox / "failed" / "link.csv").is_symlink()
    assert "not a regular file" in (inbox / "failed" / "link.error.txt").read_text()
    assert sorted(p.name for p in inbox.iterdir() if not p.is_dir()) == ["data.csv.part"]

    devices = cluster.simulator.devices()
    expected = {f"good-{n:03d}" for n in range(30)} | {f"grow{n:02d}-000" for n in range(13)}
    assert set(devices) == expected

    by_job = {event["job_id"]: event for event in events}
    assert {j["job_id"] for j in jobs.values()} == set(by_job)
    for job in jobs.values():
        event = by_job[job["job_id"]]
        assert (event["status"], event["source"], event["total"], event["created"]) == (
            job["status"], job["source"], job["total"], job["created"],
        )  # fmt: skip
    assert notified == {f"{j['job_id']} {j['status']}" for j in jobs.values()}

    shown = run_cli(["inbox", "status"], cluster.env, cluster.workdir, 60)
    assert shown.returncode == 0, shown.stderr
    for name, state in (("a-good.csv", "filed"), ("b-copy.csv", "duplicate"),
                        ("link.csv", "refused"), ("binary.csv", "filed")):  # fmt: skip
        assert any(name in line and state in line for line in shown.stdout.splitlines()), (
            name,
            shown.stdout,
        )


def _start_consumer(cluster: Cluster) -> Any:
    (cluster.workdir / "consumer.py").write_text(CONSUMER)
    env = base_env()
    env.update(
        PYTHONPATH=str(cluster.workdir),
        CONSUMER_BROKER=cluster.broker_url,
        CONSUMER_OUT=str(cluster.workdir / "events.jsonl"),
    )
    argv = [str(BIN / "celery"), "-A", "consumer", "worker", "-Q", "consumer_events",
            "--pool", "solo", "--loglevel", "WARNING"]  # fmt: skip
    return start("consumer", argv, env, cluster.workdir)


def _claims(db: Database) -> bool:
    with db.read() as session:
        return bool(session.execute(text("SELECT count(*) FROM import_inbox_files")).scalar())


def _all_filed(inbox: Path) -> bool:
    left = {p.name for p in inbox.iterdir() if not p.is_dir()}
    return left == {"data.csv.part"} and (inbox / "done" / "growing.results.csv").exists()


def _events(cluster: Cluster, count: int) -> list[dict[str, Any]] | None:
    path = cluster.workdir / "events.jsonl"
    if not path.exists():
        return None
    events = [json.loads(line) for line in path.read_text().splitlines()]
    return events if len({e["job_id"] for e in events}) >= count else None
