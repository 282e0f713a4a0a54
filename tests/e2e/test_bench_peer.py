"""The strong peer of bench.end_to_end against the real simulator with strict auth: it signs as
EnOS demands, creates every row of the file as the service would send it, and counts what EnOS
refused instead of hiding it."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

from bench.throughput.inputs import device, write_csv
from tests.e2e.services import Simulator
from tests.harness.processes import BIN, ROOT, base_env
from worker.simulator.state import DEMO_APP_KEY, DEMO_APP_SECRET, DEMO_ORG

DEVICES = 2_500


def run_peer(sim: Simulator, path: Path) -> tuple[int, dict[str, Any]]:
    env = base_env()
    env.update(
        ENOS_IMPORT_API_URL=sim.url,
        ENOS_IMPORT_ACCESS_KEY=DEMO_APP_KEY,
        ENOS_IMPORT_SECRET_KEY=DEMO_APP_SECRET,
        ENOS_IMPORT_ORG_ID=DEMO_ORG,
    )
    done = subprocess.run(
        [str(BIN / "python"), "-m", "bench.peer", str(path), "--concurrency", "2"],
        env=env, cwd=ROOT, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert done.stdout, done.stderr
    return done.returncode, json.loads(done.stdout)


def test_the_peer_creates_every_row_as_the_service_would_send_it(
    simulator: Simulator, workdir: Path
) -> None:
    code, tally = run_peer(simulator, write_csv(workdir / "peer.csv", "peer", DEVICES))

    assert code == 0
    assert {k: tally[k] for k in ("devices", "created", "failed", "calls")} == {
        "devices": DEVICES, "created": DEVICES, "failed": 0, "calls": 3,
    }  # fmt: skip
    held = simulator.devices()
    assert set(held) == {f"peer-{i:07d}" for i in range(DEVICES)}
    for i in (0, 1_001, DEVICES - 1):
        sent = device("peer", i)
        got = held[sent["deviceKey"]]
        assert (got["productKey"], got["deviceName"]) == (sent["productKey"], sent["deviceName"])


def test_the_peer_counts_refused_rows_and_fails(simulator: Simulator, workdir: Path) -> None:
    simulator.create_devices([device("taken", 7)])  # EnOS already holds row 7's deviceKey

    code, tally = run_peer(simulator, write_csv(workdir / "taken.csv", "taken", DEVICES))

    assert code == 1
    assert (tally["created"], tally["failed"]) == (DEVICES - 1, 1)
