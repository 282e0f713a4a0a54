"""Rollback: a job of its own that deletes what an import created, and nothing else.

The plain functions run against the in-process simulator and a real database (PostgreSQL and
SQLite); chunks are delivered by hand, as a worker would (``drive``)."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
from sqlalchemy import select, update

from tests.importer.support import device, drive, fast_settings, job_status, rows, start_job
from worker.context import WorkerContext
from worker.db.models import CHUNKS, FINAL_JOB_STATES, ITEMS, JOBS
from worker.db.session import Database
from worker.enos.client import EnosClient
from worker.importer import chunks, jobs, results
from worker.importer.budget import LocalBudget
from worker.importer.send import claim_chunk, send_chunk
from worker.importer.sweeper import sweep
from worker.rollback import plan as rollback
from worker.rollback.delete import delete_chunk, delete_claimed
from worker.settings import Settings
from worker.simulator.state import Store


@pytest.fixture
def settings() -> Settings:
    return fast_settings(batch_size=10)


@pytest.fixture
def ctx(db: Database, client: EnosClient, settings: Settings) -> Iterator[WorkerContext]:
    yield WorkerContext(db, client, settings, LocalBudget(2), owner="test-host:1")


def run_rollback(ctx: WorkerContext, job_id: str, chunk_size: int = 4) -> str:
    with ctx.db.begin() as session:
        new_id = rollback.create(session, rollback.plan(session, job_id), chunk_size)
    deadline = time.monotonic() + 30
    queue: list[int] = []
    while time.monotonic() < deadline:
        if queue:
            chunk_id = queue.pop(0)
            queue.extend(delete_chunk(ctx, chunk_id).publish)
            continue
        sweep(ctx.db, ctx.settings, queue.extend)
        if job_status(ctx.db, new_id) in FINAL_JOB_STATES:
            return new_id
        if not queue:
            time.sleep(0.02)
    raise AssertionError("the rollback did not end")


def keys(store: Store) -> set[str]:
    return {d.device_key for d in store.assets.values()}


def test_rollback_deletes_what_the_job_created_and_nothing_else(
    ctx: WorkerContext, sim_store: Store, client: EnosClient
) -> None:
    before = start_job(ctx.db, ctx.settings, [device(f"other-{n}") for n in range(3)])
    assert drive(ctx, before) == "completed"
    mine = [device(f"mine-{n:02d}") for n in range(12)]
    # Two rows adopt devices that already exist; one row is invalid.
    started = start_job(ctx.db, ctx.settings, [*mine, device("other-0"), device("other-1"),
                                               device("bad key")])  # fmt: skip
    assert drive(ctx, started) == "completed_with_errors"
    outcome = rows(ctx.db, started.job_id)
    assert sorted(r["status"] for r in outcome.values()).count("adopted") == 2
    # One created device was changed on EnOS since: another product now holds its assetId.
    moved = next(d for d in sim_store.assets.values() if d.device_key == "mine-05")
    moved.product_key = "pk-inverter"

    with ctx.db.read() as session:
        planned = rollback.plan(session, started.job_id)
    assert len(planned.delete) == 12 and planned.kept == []
    rollback_id = run_rollback(ctx, started.job_id)

    assert job_status(ctx.db, rollback_id) == "completed_with_errors"
    statuses = {r["device_key"]: r["status"] for r in rows(ctx.db, rollback_id).values()}
    assert statuses.pop("mine-05") == "failed"
    assert set(statuses.values()) == {"deleted"}
    assert keys(sim_store) == {"other-0", "other-1", "other-2", "mine-05"}
    original = {r["device_key"]: r["status"] for r in rows(ctx.db, started.job_id).values()}
    assert [k for k, s in original.items() if s == "rolled_back"] == sorted(statuses)
    assert original["mine-05"] == "created"
    assert original["other-0"] == original["other-1"] == "adopted"
    # The rollback's export shows each device's own row of the file it undoes.
    with ctx.db.read() as session:
        exported = list(results.rows(session, rollback_id))
    assert {r["deviceKey"]: r["deviceName"] for r in exported} == {
        f"mine-{n:02d}": f"Device mine-{n:02d}" for n in range(12)
    }


def test_a_device_gone_already_is_not_found_and_a_chunk_done_twice_deletes_once(
    ctx: WorkerContext, sim_store: Store, client: EnosClient
) -> None:
    started = start_job(ctx.db, ctx.settings, [device(f"gone-{n}") for n in range(6)])
    assert drive(ctx, started) == "completed"
    client.delete_device("o-demo", product_key="pk-meter", device_key="gone-0")
    with ctx.db.begin() as session:
        new_id = rollback.create(session, rollback.plan(session, started.job_id), 6)
        chunk_id = session.execute(select(CHUNKS.c.id).where(CHUNKS.c.job_id == new_id)).scalar()
    assert chunk_id is not None
    first = delete_chunk(ctx, chunk_id)
    assert first.chunk_state == "done"
    # A duplicate delivery finds nothing to claim; a chunk taken over after its lease ran out
    # (its worker died after deleting) finds the devices gone and deletes nothing again.
    assert not delete_chunk(ctx, chunk_id).claimed
    statuses = sorted(r["status"] for r in rows(ctx.db, new_id).values())
    assert statuses == ["deleted"] * 5 + ["not_found"]
    assert keys(sim_store) == set()
    with ctx.db.begin() as session:
        session.execute(update(ITEMS).where(ITEMS.c.job_id == new_id).values(status="pending"))
        session.execute(update(CHUNKS).where(CHUNKS.c.id == chunk_id).values(status="pending"))
        session.execute(update(JOBS).where(JOBS.c.id == new_id).values(status="running"))
    delete_chunk(ctx, chunk_id)
    assert sorted(r["status"] for r in rows(ctx.db, new_id).values()) == ["not_found"] * 6


def test_one_claim_tells_a_rollback_chunk_from_an_import_chunk(ctx: WorkerContext) -> None:
    """The task claims every chunk alike and deletes or sends by what the claim read; a chunk
    handed to the other kind's function is refused before anything is called."""
    started = start_job(ctx.db, ctx.settings, [device(f"kind-{n}") for n in range(4)])
    with ctx.db.read() as session:
        import_chunk = session.execute(
            select(CHUNKS.c.id).where(CHUNKS.c.job_id == started.job_id)
        ).scalar_one()

    def give_back(chunk_id: int) -> None:  # as if the claim's lease had run out
        with ctx.db.begin() as session:
            session.execute(update(CHUNKS).where(CHUNKS.c.id == chunk_id).values(status="pending"))

    start = claim_chunk(ctx, import_chunk)
    assert start is not None and not start.rollback and start.job_status == "running"
    give_back(import_chunk)
    with pytest.raises(ValueError, match="belongs to an import"):
        delete_chunk(ctx, import_chunk)
    give_back(import_chunk)
    assert drive(ctx, started) == "completed"

    with ctx.db.begin() as session:
        new_id = rollback.create(session, rollback.plan(session, started.job_id), 4)
        chunk_id = session.execute(
            select(CHUNKS.c.id).where(CHUNKS.c.job_id == new_id)
        ).scalar_one()
    with pytest.raises(ValueError, match="belongs to a rollback job"):
        send_chunk(ctx, chunk_id)
    give_back(chunk_id)
    start = claim_chunk(ctx, chunk_id)
    assert start is not None and start.rollback
    assert delete_claimed(ctx, start).chunk_state == "done"
    assert job_status(ctx.db, new_id) == "completed"


def test_a_rollback_is_refused_while_the_job_or_another_rollback_runs(
    ctx: WorkerContext, sim_store: Store
) -> None:
    started = start_job(ctx.db, ctx.settings, [device("busy-1")])
    with ctx.db.read() as session, pytest.raises(rollback.RollbackRefused, match="is running"):
        rollback.plan(session, started.job_id)
    assert drive(ctx, started) == "completed"
    with ctx.db.begin() as session:
        rollback.create(session, rollback.plan(session, started.job_id))
    with ctx.db.read() as session, pytest.raises(rollback.RollbackRefused, match="still running"):
        rollback.plan(session, started.job_id)


def test_a_device_another_job_adopted_is_kept(ctx: WorkerContext, sim_store: Store) -> None:
    first = start_job(ctx.db, ctx.settings, [device("shared-1"), device("own-1")])
    assert drive(ctx, first) == "completed"
    second = start_job(ctx.db, ctx.settings, [device("shared-1")])
    assert drive(ctx, second) == "completed"  # adopted
    with ctx.db.read() as session:
        planned = rollback.plan(session, first.job_id)
    assert [c.device_key for c in planned.delete] == ["own-1"]
    assert [(c.device_key, why) for c, why in planned.kept] == [
        ("shared-1", f"kept: job {second.job_id} also holds this device")
    ]
    rollback_id = run_rollback(ctx, first.job_id)
    statuses = {r["device_key"]: r["status"] for r in rows(ctx.db, rollback_id).values()}
    assert statuses == {"own-1": "deleted", "shared-1": "failed"}
    assert keys(sim_store) == {"shared-1"}


def test_a_rollback_row_that_failed_is_deleted_by_retry(
    ctx: WorkerContext, sim_store: Store
) -> None:
    started = start_job(ctx.db, ctx.settings, [device(f"again-{n}") for n in range(5)])
    assert drive(ctx, started) == "completed"
    moved = next(d for d in sim_store.assets.values() if d.device_key == "again-2")
    moved.product_key = "pk-inverter"
    rollback_id = run_rollback(ctx, started.job_id)
    assert job_status(ctx.db, rollback_id) == "completed_with_errors"
    assert keys(sim_store) == {"again-2"}

    moved.product_key = "pk-meter"  # put back as it was: the rollback may go on
    with ctx.db.begin() as session:
        assert jobs.retry_job(session, rollback_id, rollback.CHUNK_SIZE) == 1
        queue = chunks.publish_due(session, rollback_id, 4, 0.2)
    while queue:
        queue.extend(delete_chunk(ctx, queue.pop(0)).publish)
    assert job_status(ctx.db, rollback_id) == "completed"
    assert keys(sim_store) == set()
    original = {r["device_key"]: r["status"] for r in rows(ctx.db, started.job_id).values()}
    assert set(original.values()) == {"rolled_back"}
