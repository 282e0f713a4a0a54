"""``enos-import submit --wait`` on a mixed file, against a Celery worker, beat, PostgreSQL, Redis
and the simulator, each a real process."""

from __future__ import annotations

import csv

from tests.e2e import mixed
from tests.e2e.conftest import Cluster
from tests.e2e.services import job_id_from, outcomes
from tests.harness.processes import run_cli


def test_mixed_file_ends_with_each_line_settled(cluster: Cluster) -> None:
    existing = mixed.prepare(cluster.simulator)
    path = mixed.write(cluster.workdir / "devices.csv")

    done = run_cli(
        ["submit", str(path), "--org", "o-demo", "--wait"],
        cluster.env, cluster.workdir, timeout_s=60, watched=cluster.processes,
    )  # fmt: skip

    job_id = job_id_from(done.stdout, done.stderr)
    assert done.returncode == 3, f"exit {done.returncode}\nstderr: {done.stderr}"
    mixed.check_outcomes(cluster.db, job_id, cluster.simulator, path, existing)

    export = cluster.workdir / "results.csv"
    listed = run_cli(
        ["results", job_id, "--format", "csv", "-o", str(export)],
        cluster.env, cluster.workdir, timeout_s=30,
    )  # fmt: skip
    assert listed.returncode == 0, listed.stderr
    with export.open(newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        assert reader.fieldnames == [
            *mixed.HEADER,
            "line",
            "status",
            "assetId",
            "errorCode",
            "errorMessage",
        ]
        exported = {int(record["line"]): record for record in reader}
    got = outcomes(cluster.db, job_id)
    keys = mixed.device_keys(path)
    assert sorted(exported) == [row.line for row in mixed.ROWS]
    for row in mixed.ROWS:
        record, outcome = exported[row.line], got[row.line]
        assert record["productKey"] == row.product, record
        assert record["deviceKey"] == keys[row.line], record
        assert record["deviceName"] == row.name, record
        # UTC offsets are not formulas: they come back as written.
        assert record["timezone"] == row.timezone, record
        assert record["tag.site"] == f"site-{row.line}", record
        assert record["status"] == row.status, record
        assert record["assetId"] == (outcome["asset_id"] or ""), record
        assert record["errorCode"] == ("" if row.code is None else str(row.code)), record
        assert record["errorMessage"] == (outcome["error_message"] or ""), record
