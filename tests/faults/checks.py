"""The fault scenario's checks: what EnOS holds against what the import database says."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Any

from sqlalchemy import text

from tests.faults.report import Report
from tests.faults.services import Simulator

# The simulator's default room per product, as EnOS's: the capped scenario's file holds more.
DEFAULT_PRODUCT_CAP = 10_000


@dataclass(frozen=True)
class Expected:
    """What the scenario's file was: its size, its seed (in every device name), whether it is
    over its products' room, and its products."""

    devices: int
    seed: int
    capped: bool
    products: tuple[str, ...]


def check(engine: Any, report: Report, expected: Expected, simulator: Simulator) -> None:
    """The scenario's verdict, with no manual step: every row final, the view's counts the
    rows', EnOS holding exactly one device per created or adopted row and none for another row,
    and every assetId EnOS's."""
    problems = report.problems
    with engine.connect() as conn:
        rows = conn.execute(
            text(
                "SELECT line_no, product_key, device_key, asset_id, status, error_code "
                "FROM import_device_outcome WHERE job_id = :id"
            ),
            {"id": report.job_id},
        ).all()
        view = (
            conn.execute(
                text("SELECT * FROM import_job_status WHERE job_id = :id"),
                {"id": report.job_id},
            )
            .mappings()
            .one()
        )
    counts = Counter(row.status for row in rows)
    report.counts = dict(counts)
    if len(rows) != expected.devices:
        problems.append(f"{len(rows)} rows recorded for {expected.devices} input rows")
    for state, count in counts.items():
        if view[state] != count:
            problems.append(f"view says {view[state]} {state}, rows say {count}")
    if counts.get("pending"):
        problems.append(f"{counts['pending']} rows still pending")
    final = {"created", "adopted", "invalid", "review"} | ({"failed"} if expected.capped else set())
    unexpected = set(counts) - final
    if unexpected:
        problems.append(f"unexpected final states: {sorted(unexpected)} {dict(counts)}")

    devices = [d for d in simulator.devices() if d["orgId"] == "o-demo"]
    report.enos_devices = len(devices)
    report.simulator = simulator.stats()
    by_key: dict[str, list[dict[str, Any]]] = {}
    by_name: dict[str, list[dict[str, Any]]] = {}
    for device in devices:
        by_key.setdefault(str(device["deviceKey"]), []).append(device)
        name = device["deviceName"]["defaultValue"]  # type: ignore[index]
        by_name.setdefault(str(name), []).append(device)
    for name, same in by_name.items():
        if len(same) > 1:
            problems.append(f"EnOS holds {len(same)} devices named {name!r}")
    claimed: set[str] = set()
    for row in rows:
        name = f"device {expected.seed}-{row.line_no - 1}"
        on_enos = by_name.get(name, [])
        if row.status == "invalid":
            if on_enos:
                problems.append(f"line {row.line_no}: invalid but on EnOS")
            continue
        if row.status == "failed":
            if row.error_code != 11739:
                problems.append(f"line {row.line_no}: failed with {row.error_code}")
            if on_enos:
                problems.append(f"line {row.line_no}: failed but {len(on_enos)} on EnOS")
            continue
        if row.status == "review":
            if row.device_key is not None:
                problems.append(f"line {row.line_no}: review for a row with its own key")
            claimed.update(d["assetId"] for d in on_enos)
            continue
        if len(on_enos) != 1:
            problems.append(f"line {row.line_no}: {row.status} but {len(on_enos)} on EnOS")
            continue
        device = on_enos[0]
        claimed.add(str(device["assetId"]))
        if device["assetId"] != row.asset_id:
            problems.append(f"line {row.line_no}: assetId {row.asset_id} != EnOS's")
        if device["productKey"] != row.product_key:
            problems.append(f"line {row.line_no}: product differs on EnOS")
        if row.device_key is not None and device["deviceKey"] != row.device_key:
            problems.append(f"line {row.line_no}: deviceKey differs on EnOS")
    strays = [d for d in devices if d["assetId"] not in claimed]
    if strays:
        problems.append(f"{len(strays)} devices on EnOS belong to no row")
    if expected.capped:
        per_product = Counter(str(d["productKey"]) for d in devices)
        for product in expected.products:
            if per_product[product] != DEFAULT_PRODUCT_CAP:
                problems.append(f"EnOS holds {per_product[product]} devices of {product}")
    report.problems = problems[:50]
