"""Job life: cancel, finish, and the sweeper that repairs lost messages and dead workers."""

from __future__ import annotations

import dataclasses
import time

import pytest
from sqlalchemy import select, update

from tests.importer.support import (
    STEADY,
    device,
    drive,
    fast_settings,
    job_status,
    rows,
    start_job,
)
from worker.context import WorkerContext
from worker.db.models import CHUNKS, JOBS
from worker.db.session import Database
from worker.enos.client import EnosClient
from worker.importer import jobs
from worker.importer.budget import LocalBudget
from worker.importer.send import send_chunk
from worker.importer.submit import create, job_options
from worker.importer.sweeper import seconds_since_beat, sweep
from worker.simulator.state import Store


@pytest.fixture
def ctx(db: Database, client: EnosClient) -> WorkerContext:
    settings = fast_settings(batch_size=2, window=2)
    return WorkerContext(db, client, settings, LocalBudget(2), owner="test-host:1")


def test_cancel_stops_sending_and_unsent_rows_end_cancelled(
    ctx: WorkerContext, sim_store: Store
) -> None:
    started = start_job(ctx.db, ctx.settings, [device(f"meter-{n:04d}") for n in range(1, 7)])
    send_chunk(ctx, started.publish[0])
    with ctx.db.begin() as session:
        assert jobs.cancel_job(session, started.job_id) == "cancelled"
    outcome = rows(ctx.db, started.job_id)
    assert [outcome[n]["status"] for n in range(1, 7)] == ["created"] * 2 + ["cancelled"] * 4
    assert job_status(ctx.db, started.job_id) == "cancelled"
    # A late delivery of a cancelled chunk sends nothing.
    send_chunk(ctx, started.publish[1])
    assert len(sim_store.assets) == 2


def test_a_chunk_in_flight_when_cancelled_finishes_then_the_job_is_cancelled(
    ctx: WorkerContext, sim_store: Store
) -> None:
    from worker.importer import chunks

    started = start_job(ctx.db, ctx.settings, [device(f"meter-{n:04d}") for n in range(1, 5)])
    with ctx.db.begin() as session:
        claim = chunks.claim(session, started.publish[0], "other:1", 30)
        assert jobs.cancel_job(session, started.job_id) == "cancelling"
    assert claim is not None
    with ctx.db.begin() as session:
        session.execute(
            update(CHUNKS).where(CHUNKS.c.id == claim.chunk_id).values(lease_expires_at=0)
        )
    report = send_chunk(ctx, claim.chunk_id)
    assert report.job_state == "cancelled"
    outcome = rows(ctx.db, started.job_id)
    assert {outcome[n]["status"] for n in (1, 2, 3, 4)} == {"cancelled"}
    assert len(sim_store.assets) == 0


def test_the_sweeper_publishes_a_chunk_whose_message_was_lost(ctx: WorkerContext) -> None:
    started = start_job(ctx.db, ctx.settings, [device("meter-0001")])
    lost = started.publish[0]  # published, but the broker lost the message
    published: list[int] = []
    sweep(ctx.db, ctx.settings, published.extend)
    assert published == []  # too early to call it lost
    time.sleep(ctx.settings.republish_after_s + 0.1)
    sweep(ctx.db, ctx.settings, published.extend)
    assert published == [lost]
    started.publish[:] = published
    assert drive(ctx, started) == "completed"


def test_the_sweeper_hands_a_dead_workers_chunk_to_another_worker(
    ctx: WorkerContext, sim_store: Store
) -> None:
    from worker.importer import chunks

    started = start_job(ctx.db, ctx.settings, [device("meter-0001"), device("meter-0002")])
    chunk_id = started.publish[0]
    with ctx.db.begin() as session:
        assert chunks.claim(session, chunk_id, "dead-worker:1", 0.2) is not None
    # The dead worker had sent the batch: EnOS holds the devices, the database does not know.
    ctx.client.batch_create("o-demo", [device("meter-0001"), device("meter-0002")])
    time.sleep(0.3)
    published: list[int] = []
    sweep(ctx.db, ctx.settings, published.extend)
    assert chunk_id in published
    started.publish[:] = published
    assert drive(ctx, started) == "completed"
    assert {r["status"] for r in rows(ctx.db, started.job_id).values()} == {"adopted"}
    assert len(sim_store.assets) == 2


def test_the_window_bounds_the_chunks_of_a_job_out_at_once(ctx: WorkerContext) -> None:
    ctx = dataclasses.replace(ctx, settings=ctx.settings.model_copy(update=STEADY))
    started = start_job(ctx.db, ctx.settings, [device(f"meter-{n:04d}") for n in range(1, 11)])
    assert len(started.publish) == 2  # 5 chunks, window 2
    report = send_chunk(ctx, started.publish[0])
    assert len(report.publish) == 1  # one finished, one more goes out
    started.publish[:] = started.publish[1:] + report.publish  # the messages still queued
    assert drive(ctx, started) == "completed"


def test_a_job_with_only_invalid_rows_ends_at_intake(ctx: WorkerContext) -> None:
    started = start_job(ctx.db, ctx.settings, [{"productKey": "pk-meter"}])
    assert started.summary is not None and started.summary.chunks == 0
    assert job_status(ctx.db, started.job_id) == "completed_with_errors"


def test_an_intake_that_stopped_half_way_is_failed_by_the_sweeper(ctx: WorkerContext) -> None:
    settings = ctx.settings.model_copy(update={"lease_s": 0.1})
    options = job_options(settings, require_secret=False, intake="cli")
    create(ctx.db, settings, "00000000-0000-4000-8000-000000000001", "o-demo", "x.csv", options)
    time.sleep(0.2)
    report = sweep(ctx.db, settings, lambda ids: None)
    assert report.intakes_failed == ["00000000-0000-4000-8000-000000000001"]
    with ctx.db.read() as session:
        error = session.execute(
            select(JOBS.c.last_error).where(JOBS.c.id == "00000000-0000-4000-8000-000000000001")
        ).scalar_one()
    assert "submit again" in error


def test_the_sweeper_leaves_a_beat_for_status(ctx: WorkerContext) -> None:
    with ctx.db.read() as session:
        assert seconds_since_beat(session) is None
    sweep(ctx.db, ctx.settings, lambda ids: None)
    with ctx.db.read() as session:
        age = seconds_since_beat(session)
    assert age is not None and 0 <= age < 5


def test_jobs_of_one_org_share_the_publish_window(db: Database) -> None:
    from worker.importer import chunks

    settings = fast_settings(batch_size=1, **STEADY)
    big = start_job(db, settings, [device(f"big-{n:05d}") for n in range(40)])
    assert len(big.publish) == settings.publish_window  # alone: the whole window
    small = start_job(db, settings, [device(f"small-{n:05d}") for n in range(40)])
    assert len(small.publish) == settings.publish_window // 2
    other_org = start_job(db, settings, [device(f"other-{n:05d}") for n in range(40)], "o-other")
    assert len(other_org.publish) == settings.publish_window
    with db.begin() as session:
        # The big job already has a whole window out: nothing more until it is below half.
        assert chunks.publish_due(session, big.job_id, settings.publish_window, 60.0) == []
