"""Hostile queue messages, sent to a real worker by name as another system would: each ends in
a clear error (the job failed, or the row invalid), no worker process passes 300 MB resident,
nothing of a refused file reaches the database, and the same worker then completes a normal
job."""

from __future__ import annotations

import os
import threading
import uuid
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text

from tests.e2e.conftest import Cluster
from tests.e2e.services import job_ids, job_status, outcomes
from tests.e2e.test_submit_task import publish, wait_final
from tests.harness.processes import wait_until
from worker.db.session import Database

RSS_LIMIT = 300 * 1024 * 1024
HEADER = b"productKey,deviceKey,deviceName,timezone\n"


@pytest.fixture
def cluster_env() -> dict[str, str]:
    return {"ENOS_IMPORT_ALLOWED_ORGS": "o-demo", "ENOS_IMPORT_ORG_ID": "o-demo"}


class RssWatch:
    """Samples the resident memory of every process of the worker's process group."""

    def __init__(self, pgid: int) -> None:
        self.pgid = pgid
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> RssWatch:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()
        self.sample()

    def _run(self) -> None:
        while not self._stop.wait(0.05):
            self.sample()

    def sample(self) -> None:
        for pid in os.listdir("/proc"):
            if not pid.isdigit():
                continue
            try:
                stat = Path(f"/proc/{pid}/stat").read_text()
                if int(stat.rsplit(")", 1)[1].split()[2]) != self.pgid:
                    continue
                status = Path(f"/proc/{pid}/status").read_text()
            except (OSError, IndexError, ValueError):
                continue
            for line in status.splitlines():
                if line.startswith(("VmRSS:", "VmHWM:")):
                    self.peak = max(self.peak, int(line.split()[1]) * 1024)


def submit(cluster: Cluster, source: Any, org_id: str = "o-demo") -> str:
    job_id = str(uuid.uuid4())
    publish(cluster, "name", {"source": source, "org_id": org_id, "options": {}, "job_id": job_id})
    return job_id


def items(db: Database, job_id: str) -> int:
    with db.read() as session:
        return int(
            session.execute(
                text("SELECT count(*) FROM import_items WHERE job_id = :j"), {"j": job_id}
            ).scalar_one()
        )


def write_files(work: Path) -> dict[str, Path]:
    files = {
        "deep40": work / "deep40.json",
        "deep200": work / "deep200.json",
        "string": work / "string.json",
        "cells": work / "cells.csv",
        "fifo": work / "pipe.csv",
        "passwd": work / "passwd.csv",
    }
    for name, size in (("deep40", 20_000), ("deep200", 100_000)):
        files[name].write_bytes(b'{"deviceList": [' + b"[" * size + b"]" * size + b"]}")
    with files["string"].open("wb") as out:
        out.write(b'[{"productKey": "')
        block = b"x" * (1 << 20)
        for _ in range(200):
            out.write(block)
        out.write(b'"}]')
    with files["cells"].open("wb") as out:
        out.write(HEADER + b'pk-meter,"')
        line = b'a",' + b"b," * 1000 + b'"\n'
        for _ in range(3000):  # three million cells in one record
            out.write(line)
        out.write(b'x",Meter,+08:00\npk-meter,hostile-csv-ok,Fine,+08:00\n')
    os.mkfifo(files["fifo"])
    files["passwd"].symlink_to("/etc/passwd")
    return files


@pytest.mark.slow
def test_hostile_inputs_fail_clearly_in_bounded_memory(cluster: Cluster, pg_db: Database) -> None:
    work = cluster.workdir
    assert cluster.worker.popen is not None
    with RssWatch(cluster.worker.popen.pid) as rss:
        replaced = _replaced_while_read(cluster, pg_db)
        files = write_files(work)
        jobs = {name: submit(cluster, str(path)) for name, path in files.items()}
        jobs["proc"] = submit(cluster, "/proc/self/environ")
        jobs["outside"] = submit(cluster, "/etc/hostname")
        jobs["org"] = submit(cluster, str(files["cells"]), org_id="o-evil")
        jobs["dict"] = submit(cluster, {"path": "/etc/passwd"})
        final = {name: wait_final(cluster, job_id) for name, job_id in jobs.items()}
    assert rss.peak < RSS_LIMIT, f"a worker process reached {rss.peak / 2**20:.0f} MB"

    for name in ("deep40", "deep200"):
        assert (final[name]["status"], final[name]["invalid"]) == ("completed_with_errors", 1)
        row = outcomes(pg_db, jobs[name])[1]
        assert row["error_message"] == "line 1: nested deeper than 32 levels"
    assert final["string"]["status"] == "failed"
    assert "a single JSON value is longer than" in final["string"]["last_error"]
    assert (final["cells"]["invalid"], final["cells"]["created"]) == (1, 1)
    assert "the record is longer than" in outcomes(pg_db, jobs["cells"])[2]["error_message"]
    refused = {
        "fifo": "not a regular file (a FIFO)",
        "passwd": "source is outside the allowed folders",
        "proc": "source is outside the allowed folders",
        "outside": "source is outside the allowed folders",
        "org": "org 'o-evil' is not allowed",
        "dict": "malformed message: source must be a path",
    }
    for name, error in refused.items():
        assert final[name]["status"] == "failed", (name, final[name])
        assert error in final[name]["last_error"], (name, final[name]["last_error"])
        assert items(pg_db, jobs[name]) == 0
    assert replaced["status"] == "failed"
    assert "replaced or removed while it was read" in replaced["last_error"]
    # The intake commits as it reads: what it stored before it found out stays, and is final.
    assert replaced["pending"] == 0 and replaced["created"] == 0
    secrets = (Path("/etc/passwd").read_text().split(":", 1)[0] + ":", "PATH=")
    for job in (*final.values(), replaced):
        assert not any(s in str(job["last_error"]) for s in secrets), job

    # Without a job id, a malformed message is logged and dropped: no job, no redelivery.
    before = len(job_ids(pg_db))
    publish(cluster, "name", {"source": {"path": "/etc/passwd"}, "org_id": "o-demo"})
    wait_until(lambda: _dropped(cluster), "the worker to drop the message", 30, cluster.processes)
    assert len(job_ids(pg_db)) == before

    # The same worker goes on with a normal job.
    (work / "normal.csv").write_bytes(HEADER + b"pk-meter,hostile-after,After,+08:00\n")
    normal = wait_final(cluster, submit(cluster, str(work / "normal.csv")))
    assert (normal["status"], normal["created"]) == ("completed", 1)
    cluster.worker.check_alive()


def _dropped(cluster: Cluster) -> bool:
    """The worker logged a refused message that had no job (its line names no job_id)."""
    lines = cluster.worker.log.read_text(errors="replace").splitlines()
    return any("submit.refused" in line and "job_id" not in line for line in lines)


def _replaced_while_read(cluster: Cluster, db: Database) -> dict[str, Any]:
    """A large file renamed over while its intake reads it. Its rows are invalid (a bad time
    zone), so that even a read that missed the replacement would send nothing."""
    path = cluster.workdir / "replaced.csv"
    with path.open("wb") as out:
        out.write(HEADER)
        for n in range(300_000):
            out.write(b"pk-meter,replaced-%06d,Replaced %d,GMT+8\n" % (n, n))
    job_id = submit(cluster, str(path))

    def reading() -> bool:
        job = job_status(db, job_id)
        # The job is ``running`` from the intake's first stored batch on.
        return job is not None and job["status"] in ("validating", "running")

    wait_until(reading, "the intake to start reading", 30, cluster.processes, interval_s=0.02)
    other = cluster.workdir / "other.csv"
    other.write_bytes(HEADER + b"pk-meter,replaced-other,Other,+08:00\n")
    other.rename(path)
    return wait_final(cluster, job_id)
