"""``enos_import.submit`` published by name from a process that imports nothing of ours, as
another system would: a path the workers read, and an inline list of CreateOption objects.
A second delivery with the same ``job_id`` changes nothing."""

from __future__ import annotations

import hashlib
import json
import subprocess
import time
import uuid
from pathlib import Path
from typing import Any

import redis

from tests.e2e.conftest import Cluster
from tests.e2e.services import FINAL, job_ids, job_status, outcomes
from tests.harness.processes import BIN, diagnostics, wait_until
from worker.importer.keys import derive_device_key

# The publisher: Celery and kombu only. ``queue`` mirrors worker/celery_app.py: the queue
# "enos_import", either by name or as declared there (default exchange, routing key = queue).
PUBLISHER = """\
import json
import sys

from celery import Celery
from kombu import Exchange, Queue

broker, route, kwargs = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
app = Celery(broker=broker)
if route == "name":
    queue = "enos_import"
else:
    queue = Queue("enos_import", Exchange(""), routing_key="enos_import")
app.send_task("enos_import.submit", kwargs=kwargs, queue=queue)
app.close()
ours = sorted(m for m in sys.modules if m.split(".")[0] in ("worker", "tests"))
assert not ours, f"the publisher imported {ours}"
"""
PRODUCTS = ("pk-meter", "pk-inverter", "pk-turbine")


def publish(cluster: Cluster, route: str, kwargs: dict[str, Any]) -> None:
    script = cluster.workdir / "publisher.py"
    script.write_text(PUBLISHER)
    # -I: isolated mode, no PYTHONPATH, no current directory on the path.
    done = subprocess.run(
        [str(BIN / "python"), "-I", str(script), cluster.broker_url, route, json.dumps(kwargs)],
        cwd=cluster.workdir, env=cluster.env, capture_output=True, text=True, timeout=30,
        check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr


def wait_final(cluster: Cluster, job_id: str) -> dict[str, Any]:
    def final() -> dict[str, Any] | None:
        job = job_status(cluster.db, job_id)
        return job if job is not None and job["status"] in FINAL else None

    return wait_until(final, f"job {job_id} to end", 60, cluster.processes)


def snapshot(cluster: Cluster, job_id: str) -> dict[str, Any]:
    return {
        "jobs": sorted(job_ids(cluster.db)),
        "job": job_status(cluster.db, job_id),
        "outcomes": outcomes(cluster.db, job_id),
        "enos": cluster.simulator.devices(),
        "enos_stats": cluster.simulator.stats(),
    }


def redeliver_and_compare(cluster: Cluster, route: str, kwargs: dict[str, Any]) -> None:
    job_id = kwargs["job_id"]
    before = snapshot(cluster, job_id)
    publish(cluster, route, kwargs)
    # The worker says so when it drops a repeated intake; then let beat sweep twice more.
    wait_until(
        lambda: _logged(cluster, "intake.skipped", job_id),
        f"the worker to skip the repeated intake of {job_id}",
        30,
        cluster.processes,
    )
    _wait_queue_drained(cluster)
    time.sleep(2.5)
    assert snapshot(cluster, job_id) == before


def _logged(cluster: Cluster, event: str, job_id: str) -> bool:
    text = cluster.worker.log.read_text(errors="replace")
    return any(event in line and job_id in line for line in text.splitlines())


def _wait_queue_drained(cluster: Cluster) -> None:
    """No message waiting in the queue nor held unacknowledged by the worker, twice in a row."""
    client = redis.Redis.from_url(cluster.broker_url)
    try:
        quiet = [0]

        def drained() -> bool:
            empty = client.llen("enos_import") == 0 and client.hlen("unacked") == 0
            quiet[0] = quiet[0] + 1 if empty else 0
            return quiet[0] >= 2

        wait_until(drained, "the broker queue to drain", 30, cluster.processes, interval_s=0.3)
    finally:
        client.close()


def check_created(cluster: Cluster, job_id: str, count: int, keys: dict[int, str]) -> None:
    """The job completed, every row created once with the deviceKey of ``keys`` (where given)
    and the assetId EnOS holds for it."""
    job = wait_final(cluster, job_id)
    assert job["status"] == "completed", f"{job}\n{diagnostics(cluster.processes)}"
    assert (job["total"], job["created"]) == (count, count), job
    got = outcomes(cluster.db, job_id)
    enos = cluster.simulator.devices()
    assert len(got) == count
    for line, outcome in got.items():
        assert outcome["status"] == "created", outcome
        if line in keys:
            assert outcome["device_key"] == keys[line], outcome
        device = enos[outcome["device_key"]]
        assert outcome["asset_id"] == device["assetId"], (outcome, device)
        assert outcome["product_key"] == device["productKey"], (outcome, device)
    stats = cluster.simulator.stats()
    # One batchCreate call, and every device EnOS ever created is one of this job's.
    assert (stats["created"], stats["calls"]) == (count, 1), stats
    assert len(enos) == count


def device_option(n: int, *, keyed: bool = True) -> dict[str, Any]:
    option: dict[str, Any] = {
        "productKey": PRODUCTS[n % 3],
        "deviceName": {"defaultValue": f"Task device {n}"},
        "timezone": "+08:00",
    }
    if keyed:
        option["deviceKey"] = f"e2e-task-{n:03d}"
    return option


def test_submit_task_by_name_with_a_path(cluster: Cluster) -> None:
    path: Path = cluster.workdir / "task-devices.csv"
    rows = ["productKey,deviceKey,deviceName,timezone"] + [
        f"{PRODUCTS[n % 3]},{f'e2e-file-{n:03d}' if n % 4 else ''},File device {n},+08:00"
        for n in range(12)
    ]
    path.write_text("\n".join(rows) + "\n", encoding="utf-8")
    job_id = str(uuid.uuid4())
    kwargs = {"source": str(path), "org_id": "o-demo", "options": {}, "job_id": job_id}

    publish(cluster, "name", kwargs)

    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    keys = {
        n + 2: f"e2e-file-{n:03d}" if n % 4 else derive_device_key("o-demo", digest, n + 2)
        for n in range(12)
    }
    check_created(cluster, job_id, 12, keys)
    redeliver_and_compare(cluster, "name", kwargs)


def test_submit_task_by_name_with_inline_devices(cluster: Cluster) -> None:
    devices = [device_option(n, keyed=n % 5 != 0) for n in range(15)]
    job_id = str(uuid.uuid4())
    kwargs = {"source": devices, "org_id": "o-demo", "options": {}, "job_id": job_id}

    publish(cluster, "default-exchange", kwargs)

    keys = {n + 1: f"e2e-task-{n:03d}" for n in range(15) if n % 5 != 0}
    check_created(cluster, job_id, 15, keys)
    redeliver_and_compare(cluster, "default-exchange", kwargs)
