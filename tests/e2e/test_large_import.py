"""5,000 devices over three products through ``submit --wait``: five batches sent by a real
worker pool, every device created once, and every assetId the one EnOS holds."""

from __future__ import annotations

import csv
from collections import Counter

from tests.e2e.conftest import Cluster
from tests.e2e.services import job_id_from, job_status, outcomes
from tests.harness.processes import run_cli

ROWS = 5_000
PRODUCTS = ("pk-meter", "pk-inverter", "pk-turbine")


def test_five_thousand_devices_all_created(cluster: Cluster) -> None:
    sim = cluster.simulator
    # Room for every device, whatever the defaults: about 1,667 per product.
    sim.set_limits(product_cap=ROWS, ou_cap=10 * ROWS)
    path = cluster.workdir / "big.csv"
    with path.open("w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["productKey", "deviceKey", "deviceName", "timezone", "attr.rated_kw"])
        for n in range(ROWS):
            key = "" if n % 10 == 0 else f"e2e-big-{n:05d}"  # every tenth key is derived
            writer.writerow([PRODUCTS[n % 3], key, f"Device {n}", "+08:00", str(n % 500)])

    done = run_cli(
        ["submit", str(path), "--org", "o-demo", "--wait"],
        cluster.env, cluster.workdir, timeout_s=90, watched=cluster.processes,
    )  # fmt: skip

    job_id = job_id_from(done.stdout, done.stderr)
    assert done.returncode == 0, f"exit {done.returncode}\nstderr: {done.stderr}"
    job = job_status(cluster.db, job_id)
    assert job is not None
    assert (job["status"], job["total"], job["created"], job["pending"]) == (
        "completed",
        ROWS,
        ROWS,
        0,
    ), job
    got = outcomes(cluster.db, job_id)
    enos = sim.devices()
    assert len(got) == ROWS
    assert len(enos) == ROWS
    stats = sim.stats()
    # One batchCreate per chunk of 1,000: no chunk was sent twice, no device created twice.
    assert (stats["created"], stats["calls"]) == (ROWS, ROWS // 1000), stats
    assert Counter(d["productKey"] for d in enos.values()) == Counter(
        PRODUCTS[n % 3] for n in range(ROWS)
    )
    mismatched = [
        (line, o["device_key"], o["asset_id"], enos.get(o["device_key"], {}).get("assetId"))
        for line, o in got.items()
        if o["status"] != "created" or o["asset_id"] != enos.get(o["device_key"], {}).get("assetId")
    ]
    assert not mismatched, f"{len(mismatched)} rows differ from EnOS, e.g. {mismatched[:5]}"
    keyed = {n + 2: f"e2e-big-{n:05d}" for n in range(ROWS) if n % 10}
    assert all(got[line]["device_key"] == key for line, key in keyed.items())
