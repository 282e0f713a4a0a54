"""The mixed device file of the end-to-end tests, with what must become of each of its lines.

Three products; valid rows, invalid rows (bad timezone, short deviceKey, missing productKey,
missing timezone), deviceKeys repeated in the file, rows without a deviceKey (derived keys), keys
that exist on EnOS before the import (two describe the same device, one another device), and a
product that overflows its capacity.

The simulator's capacity applies to every product alike: at 10, ``pk-meter`` (2 devices before
the import + 7 created) and ``pk-inverter`` (1 + 7) fit, and ``pk-turbine`` takes the first 10 of
its 15 sendable rows; the other 5 fail with 11739. All sendable rows fit one batch, sent in line
order, so which turbine rows overflow is fixed.
"""

from __future__ import annotations

import csv
import hashlib
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.e2e.services import Simulator, job_status, outcomes
from worker.db.session import Database
from worker.importer.keys import derive_device_key
from worker.simulator.state import DEMO_ORG

PRODUCT_CAP = 10
HEADER = ["productKey", "deviceKey", "deviceName", "timezone", "tag.site"]


@dataclass(frozen=True)
class Row:
    line: int
    product: str
    key: str  # "" → the import derives one
    name: str
    timezone: str
    status: str
    code: int | None = None
    why: str = ""  # for an invalid row: what its error message must name


# fmt: off
ROWS = [
    #    line  productKey     deviceKey        deviceName            timezone            expected
    Row(2,   "pk-meter",    "e2e-meter-01",  "Meter 01",           "+08:00",           "created"),
    Row(3,   "pk-meter",    "e2e-meter-02",  "Meter 02",           "Asia/Shanghai",    "created"),
    Row(4,   "pk-meter",    "e2e-meter-03",  "Meter 03",           "+08:00",           "adopted"),
    Row(5,   "pk-meter",    "e2e-meter-04",  "Meter 04",           "Mars/Olympus",     "invalid",
        why="timezone"),
    Row(6,   "pk-inverter", "e2e-inv-01",    "Inverter 01",        "Europe/Berlin",    "created"),
    Row(7,   "pk-inverter", "e2e-inv-02",    "Inverter 02",        "+01:00",           "created"),
    Row(8,   "pk-turbine",  "e2e-turb-01",   "Turbine 01",         "-05:00",           "created"),
    Row(9,   "pk-turbine",  "e2e-turb-02",   "Turbine 02",         "America/New_York", "created"),
    Row(10,  "pk-meter",    "ab",            "Meter short key",    "+08:00",           "invalid",
        why="deviceKey"),
    Row(11,  "",            "e2e-orphan-01", "No product",         "+08:00",           "invalid",
        why="productKey"),
    Row(12,  "pk-inverter", "e2e-inv-03",    "Inverter 03",        "UTC",              "created"),
    Row(13,  "pk-inverter", "e2e-inv-04",    "Inverter 04",        "+01:00",           "conflict",
        code=11702),
    Row(14,  "pk-meter",    "",              "Meter derived A",    "+08:00",           "created"),
    Row(15,  "pk-turbine",  "e2e-turb-03",   "Turbine 03",         "-05:00",           "created"),
    Row(16,  "pk-meter",    "e2e-meter-05",  "Meter 05",           "+08:00",           "created"),
    Row(17,  "pk-inverter", "e2e-inv-02",    "Inverter 02 again",  "+01:00",           "invalid",
        why="repeats line 7"),
    Row(18,  "pk-turbine",  "e2e-turb-04",   "Turbine 04",         "-05:00",           "created"),
    Row(19,  "pk-meter",    "e2e-meter-06",  "Meter 06",           "+08:00",           "adopted"),
    Row(20,  "pk-turbine",  "e2e-turb-05",   "Turbine 05",         "-05:00",           "created"),
    Row(21,  "pk-inverter", "",              "Inverter derived B", "+01:00",           "created"),
    Row(22,  "pk-turbine",  "e2e-turb-06",   "Turbine 06",         "-05:00",           "created"),
    Row(23,  "pk-turbine",  "e2e-turb-07",   "Turbine 07",         "+25:00",           "invalid",
        why="timezone"),
    Row(24,  "pk-turbine",  "e2e-turb-08",   "Turbine 08",         "-05:00",           "created"),
    Row(25,  "pk-meter",    "e2e-meter-07",  "Meter 07",           "+08:00",           "created"),
    Row(26,  "pk-turbine",  "",              "Turbine derived C",  "-05:00",           "created"),
    Row(27,  "pk-turbine",  "e2e-turb-09",   "Turbine 09",         "-05:00",           "created"),
    Row(28,  "pk-inverter", "e2e-inv-05",    "Inverter 05",        "+01:00",           "created"),
    Row(29,  "pk-turbine",  "e2e-turb-10",   "Turbine 10",         "-05:00",           "created"),
    Row(30,  "pk-turbine",  "e2e-turb-11",   "Turbine 11",         "-05:00",           "failed",
        code=11739),
    Row(31,  "pk-meter",    "",              "Meter derived D",    "+08:00",           "created"),
    Row(32,  "pk-turbine",  "e2e-turb-12",   "Turbine 12",         "-05:00",           "failed",
        code=11739),
    Row(33,  "pk-inverter", "e2e-inv-06",    "Inverter 06",        "+01:00",           "created"),
    Row(34,  "pk-turbine",  "",              "Turbine derived E",  "-05:00",           "failed",
        code=11739),
    Row(35,  "pk-turbine",  "e2e-turb-13",   "Turbine 13",         "-05:00",           "failed",
        code=11739),
    Row(36,  "pk-meter",    "e2e-meter-01",  "Meter 01 again",     "+08:00",           "invalid",
        why="repeats line 2"),
    Row(37,  "pk-inverter", "x",             "Inverter short key", "+01:00",           "invalid",
        why="deviceKey"),
    Row(38,  "pk-meter",    "e2e-meter-09",  "Meter 09",           "+08:00",           "created"),
    Row(39,  "pk-turbine",  "e2e-turb-14",   "Turbine 14",         "-05:00",           "failed",
        code=11739),
    Row(40,  "pk-inverter", "e2e-inv-08",    "Inverter 08",        "+01:00",           "created"),
    Row(41,  "pk-meter",    "e2e-meter-10",  "Meter 10",           "",                 "invalid",
        why="timezone"),
]
# fmt: on

# On EnOS before the import: two describe the same devices as lines 4 and 19 (→ adopted), one
# holds line 13's deviceKey under another name (→ conflict).
EXISTING: list[dict[str, Any]] = [
    {"productKey": "pk-meter", "deviceKey": "e2e-meter-03",
     "deviceName": {"defaultValue": "Meter 03"}, "timezone": "+08:00"},
    {"productKey": "pk-meter", "deviceKey": "e2e-meter-06",
     "deviceName": {"defaultValue": "Meter 06"}, "timezone": "+08:00"},
    {"productKey": "pk-inverter", "deviceKey": "e2e-inv-04",
     "deviceName": {"defaultValue": "Inverter 04 (old)"}, "timezone": "+01:00"},
]  # fmt: skip

assert [row.line for row in ROWS] == list(range(2, len(ROWS) + 2)), "lines must follow each other"


def write(path: Path) -> Path:
    with path.open("w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(HEADER)
        for row in ROWS:
            writer.writerow([row.product, row.key, row.name, row.timezone, f"site-{row.line}"])
    return path


def prepare(sim: Simulator) -> dict[str, str]:
    """Sets the simulator up for the file; returns the existing devices' assetIds by key."""
    sim.set_limits(product_cap=PRODUCT_CAP)
    return sim.create_devices(EXISTING)


def device_keys(path: Path) -> dict[int, str]:
    """Each line's deviceKey: the file's, or the one the import derives (org, content, line)."""
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    return {row.line: row.key or derive_device_key(DEMO_ORG, digest, row.line) for row in ROWS}


def check_outcomes(
    db: Database, job_id: str, sim: Simulator, path: Path, existing: dict[str, str]
) -> None:
    """The job, every line's outcome, and EnOS's devices are exactly what ``ROWS`` says."""
    expected = Counter(row.status for row in ROWS)
    job = job_status(db, job_id)
    assert job is not None, f"no job {job_id} in import_job_status"
    assert job["status"] == "completed_with_errors", job
    assert job["total"] == len(ROWS), job
    for state in ("pending", "created", "adopted", "invalid", "failed", "conflict", "review",
                  "cancelled"):  # fmt: skip
        assert job[state] == expected.get(state, 0), (state, job)

    got = outcomes(db, job_id)
    assert {line: (o["status"], o["error_code"]) for line, o in got.items()} == {
        row.line: (row.status, row.code) for row in ROWS
    }
    keys = device_keys(path)
    enos = sim.devices()
    for row in ROWS:
        outcome = got[row.line]
        assert outcome["device_key"] == keys[row.line], (row, outcome)
        assert outcome["product_key"] == (row.product or None), (row, outcome)
        if row.status in ("created", "adopted"):
            device = enos.get(keys[row.line])
            assert device is not None, f"line {row.line}: {keys[row.line]} is not on EnOS"
            assert outcome["asset_id"] == device["assetId"], (row, outcome, device)
            assert device["productKey"] == row.product, (row, device)
            assert device["deviceName"]["defaultValue"] == row.name, (row, device)
            assert outcome["error_code"] is None and not outcome["error_message"], outcome
        else:
            assert outcome["asset_id"] is None, (row, outcome)
            assert outcome["error_message"], (row, outcome)
        if row.status == "adopted":
            assert outcome["asset_id"] == existing[row.key], (row, outcome)
        if row.status == "invalid":
            assert row.why in outcome["error_message"], (row, outcome)
            assert outcome["attempts"] == 0, (row, outcome)
        if row.status == "failed":
            assert "pk-turbine" in outcome["error_message"], (row, outcome)

    created = [row for row in ROWS if row.status == "created"]
    assert set(enos) == set(existing) | {keys[row.line] for row in created}
    on_enos = Counter(device["productKey"] for device in enos.values())
    wanted = Counter(row.product for row in created) + Counter(
        device["productKey"] for device in EXISTING
    )
    assert on_enos == wanted
    # Every creation EnOS ever made: the devices set up before, and one per created row; and
    # every batchCreate call: the set-up's, and one for the file's sendable rows (one batch).
    stats = sim.stats()
    assert (stats["created"], stats["calls"]) == (len(EXISTING) + len(created), 2), stats
