"""With ``--require-secret``, every created or adopted row ends with its secret, even when the
answers that carried them were lost: adopted rows get theirs through Get Device."""

from __future__ import annotations

import json
from pathlib import Path

import httpx

from tests.e2e.services import Simulator, job_id_from, process_env
from tests.harness.processes import run_cli

ROWS = 1000


def test_the_secrets_export_has_no_holes_after_lost_answers(
    simulator: Simulator, workdir: Path
) -> None:
    # 15% of calls lose their answer after EnOS committed: those rows end adopted.
    faults = {"reset_after_commit": 0.15, "seed": 12}
    httpx.post(f"{simulator.url}/__sim/faults", json=faults).raise_for_status()
    path = workdir / "devices.csv"
    lines = ["productKey,deviceKey,deviceName,timezone"]
    lines += [f"pk-meter,full-{n:05d},Meter {n},+08:00" for n in range(1, ROWS + 1)]
    path.write_text("\n".join(lines) + "\n")
    env = process_env(simulator.url, f"sqlite:///{workdir / 'enos-import.db'}")
    env.update(ENOS_IMPORT_BATCH_SIZE="20", ENOS_IMPORT_RECONCILE_DELAY_S="0.1")

    done = run_cli(["run", str(path), "--org", "o-demo", "--require-secret"], env, workdir,
                   timeout_s=240, watched=[simulator.proc])  # fmt: skip
    assert done.returncode == 0, done.stderr
    job_id = job_id_from(done.stdout, done.stderr)
    key = workdir / "demo-private-key.pem"
    export = run_cli(["results", job_id, "--secrets", "--private-key", str(key), "-o", "-",
                      "--format", "jsonl"], env, workdir, timeout_s=60)  # fmt: skip
    assert export.returncode == 0, export.stderr

    rows = [json.loads(line) for line in export.stdout.splitlines()]
    plaintext = {key: device["deviceSecret"] for key, device in simulator.devices().items()}
    statuses = [row["status"] for row in rows]
    assert len(rows) == ROWS
    assert set(statuses) == {"created", "adopted"}
    assert statuses.count("adopted") >= 50, "too few lost answers to test anything"
    opened = {row["deviceKey"]: row["deviceSecret"] for row in rows}
    assert opened == {row["deviceKey"]: plaintext[row["deviceKey"]] for row in rows}
    assert all(row["secretError"] == "" for row in rows)
    stats = httpx.get(f"{simulator.url}/__sim/stats").json()
    assert stats["faults"]["reset_after_commit"] >= 5, stats
