"""Helpers for driving the import's plain functions against the in-process simulator."""

from __future__ import annotations

import time
import uuid
from typing import Any

from sqlalchemy import select, update

from worker.context import WorkerContext
from worker.db.models import CHUNKS, FINAL_JOB_STATES, ITEMS, JOBS, SUCCESS_STATES
from worker.db.session import Database
from worker.enos.models import CreateOption
from worker.importer.send import send_chunk
from worker.importer.submit import IntakeResult, create, job_options, run_intake
from worker.importer.sweeper import sweep
from worker.readers.sources import InlineSource
from worker.settings import Settings
from worker.simulator.state import Store

# For a test that counts the chunks published: none goes out again during it. With
# ``fast_settings``' 0.2 s, a chunk published by the intake's first commit and not taken yet
# is published again by a later commit or chunk end whenever the machine pauses that long.
STEADY = {"republish_after_s": 3600.0}


def fast_settings(**overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "batch_size": 1000,
        "backoff_base_s": 0.01,
        "backoff_max_s": 0.05,
        "reconcile_delay_s": 0.0,
        "republish_after_s": 0.2,
        "max_attempts": 6,
        "read_timeout_s": 5,
        "lease_s": 30,
        "visibility_timeout_s": 60,
        "max_concurrency": 2,
    }
    values.update(overrides)
    return Settings(**values)


def device(key: str | None, product: str = "pk-meter", name: str | None = None) -> CreateOption:
    option: CreateOption = {
        "productKey": product,
        "deviceName": {"defaultValue": name or f"Device {key}"},
        "timezone": "+08:00",
    }
    if key is not None:
        option["deviceKey"] = key
    return option


def start_job(
    db: Database,
    settings: Settings,
    devices: list[Any],
    org_id: str = "o-demo",
    require_secret: bool = False,
    key_mode: str | None = None,
) -> IntakeResult:
    job_id = str(uuid.uuid4())
    options = job_options(settings, require_secret=require_secret, intake="task", key_mode=key_mode)
    create(db, settings, job_id, org_id, "inline", options)
    return run_intake(db, settings, job_id, org_id, InlineSource(devices), options)


def job_status(db: Database, job_id: str) -> str:
    with db.read() as session:
        return str(session.execute(select(JOBS.c.status).where(JOBS.c.id == job_id)).scalar_one())


def drive(ctx: WorkerContext, started: IntakeResult, timeout_s: float = 30.0) -> str:
    """Delivers every published chunk, sweeping when the queue runs dry, until the job ends."""
    queue = list(started.publish)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if queue:
            queue.extend(send_chunk(ctx, queue.pop(0)).publish)
            continue
        sweep(ctx.db, ctx.settings, queue.extend)
        state = job_status(ctx.db, started.job_id)
        if state in FINAL_JOB_STATES:
            return state
        if not queue:
            time.sleep(0.02)
    raise AssertionError(f"job {started.job_id} did not end in {timeout_s} s")


def rows(db: Database, job_id: str) -> dict[int, dict[str, Any]]:
    """Each item by line: status, device_key, asset_id, error_code, error_message, attempts."""
    with db.read() as session:
        result = session.execute(
            select(
                ITEMS.c.line_no,
                ITEMS.c.status,
                ITEMS.c.device_key,
                ITEMS.c.asset_id,
                ITEMS.c.error_code,
                ITEMS.c.error_message,
                ITEMS.c.attempts,
                ITEMS.c.retryable,
                ITEMS.c.device_secret,
                ITEMS.c.session_key,
            ).where(ITEMS.c.job_id == job_id)
        )
        return {row.line_no: dict(row._mapping) for row in result}


def meters(first: int, last: int) -> list[CreateOption]:
    return [device(f"meter-{n:04d}") for n in range(first, last + 1)]


def assert_enos_matches_rows(store: Store, db: Database, job_ids: list[str]) -> None:
    """EnOS holds exactly one device per created or adopted row, and none for another row."""
    on_enos = {d.device_key: d.asset_id for d in store.assets.values()}
    ok: dict[str, str] = {}
    for job_id in job_ids:
        for row in rows(db, job_id).values():
            if row["status"] in SUCCESS_STATES:
                ok[row["device_key"]] = row["asset_id"]
            else:
                assert row["device_key"] not in on_enos, row
    assert ok == on_enos


def due_now(db: Database, chunk_id: int) -> None:
    with db.begin() as session:
        session.execute(update(CHUNKS).where(CHUNKS.c.id == chunk_id).values(next_attempt_at=0))
