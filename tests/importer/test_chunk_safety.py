"""A chunk's lease, fencing and commit under concurrency: a chunk taken over is not sent, the
lease is renewed before the call, a failed commit gives the chunk back, and chunks that split at
once never collide."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from sqlalchemy import func, select, update
from sqlalchemy.exc import OperationalError

from tests.importer.support import (
    STEADY,
    assert_enos_matches_rows,
    drive,
    fast_settings,
    meters,
    rows,
    start_job,
)
from worker.context import WorkerContext
from worker.db.clock import db_epoch
from worker.db.models import CHUNKS
from worker.db.session import Database
from worker.enos.client import EnosClient
from worker.importer import chunks, outcome, send
from worker.importer.budget import LocalBudget
from worker.importer.send import send_chunk
from worker.importer.submit import IntakeResult
from worker.settings import Settings
from worker.simulator.state import Store

SUCCESS = {"created", "adopted"}


@pytest.fixture
def settings() -> Settings:
    return fast_settings(batch_size=4)


@pytest.fixture
def ctx(db: Database, client: EnosClient, settings: Settings) -> Iterator[WorkerContext]:
    yield WorkerContext(db, client, settings, LocalBudget(4), owner="test-host:1")


def test_a_chunk_taken_over_while_it_waited_for_its_call_is_not_sent(
    ctx: WorkerContext, sim_app
) -> None:
    started = start_job(ctx.db, ctx.settings, meters(1, 2))
    chunk_id = started.publish[0]
    with ctx.db.begin() as session:
        start = send._start(session, ctx.settings, chunk_id, "w:1")
    assert start is not None
    # The lease ran out while this attempt waited (for its rate budget slot, say), and another
    # worker took the chunk over: the renewal before the call fails, and no call is made.
    start.claimed_at -= ctx.settings.lease_s
    with ctx.db.begin() as session:
        session.execute(update(CHUNKS).where(CHUNKS.c.id == chunk_id).values(lease_expires_at=0))
        assert chunks.claim(session, chunk_id, "w:2", ctx.settings.lease_s) is not None
    plan = send.attempt(ctx, start)
    assert sim_app.state.api.stats.calls == 0
    with ctx.db.begin() as session:
        assert outcome.write_outcome(session, ctx.settings, start, plan) is None


def test_the_lease_is_renewed_right_before_the_call(ctx: WorkerContext) -> None:
    started = start_job(ctx.db, ctx.settings, meters(1, 2))
    chunk_id = started.publish[0]
    with ctx.db.begin() as session:
        start = send._start(session, ctx.settings, chunk_id, "w:1")
        # Claimed long ago: the lease has 1 s left when the attempt starts.
        session.execute(
            update(CHUNKS).where(CHUNKS.c.id == chunk_id).values(lease_expires_at=db_epoch() + 1)
        )
    assert start is not None
    start.claimed_at -= ctx.settings.lease_s - 1
    send.attempt(ctx, start)
    with ctx.db.read() as session:
        left = session.execute(
            select(CHUNKS.c.lease_expires_at - db_epoch()).where(CHUNKS.c.id == chunk_id)
        ).scalar_one()
    assert left > ctx.settings.lease_s - 5


def test_a_fresh_claim_calls_without_renewing_its_lease(ctx: WorkerContext, sim_app) -> None:
    started = start_job(ctx.db, ctx.settings, meters(1, 2))
    chunk_id = started.publish[0]
    with ctx.db.begin() as session:
        start = send._start(session, ctx.settings, chunk_id, "w:1")
    assert start is not None
    with ctx.db.read() as session:
        claimed = session.execute(
            select(CHUNKS.c.lease_expires_at).where(CHUNKS.c.id == chunk_id)
        ).scalar_one()
    send.attempt(ctx, start)
    assert sim_app.state.api.stats.calls == 1
    with ctx.db.read() as session:
        after = session.execute(
            select(CHUNKS.c.lease_expires_at).where(CHUNKS.c.id == chunk_id)
        ).scalar_one()
    # The claim's lease still covered the call with room to spare: no second write.
    assert after == claimed


def test_a_database_error_in_the_commit_gives_the_chunk_back(
    ctx: WorkerContext, sim_store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    started = start_job(ctx.db, ctx.settings, meters(1, 2))
    real = outcome.update_outcomes  # type: ignore[attr-defined]

    def broken(*args: Any, **kwargs: Any) -> None:
        raise OperationalError("UPDATE import_items", {}, Exception("connection lost"))

    monkeypatch.setattr(outcome, "update_outcomes", broken)
    with pytest.raises(OperationalError):
        send_chunk(ctx, started.publish[0])
    monkeypatch.setattr(outcome, "update_outcomes", real)
    with ctx.db.read() as session:
        chunk = session.execute(select(CHUNKS).where(CHUNKS.c.id == started.publish[0])).one()
    assert chunk.status == "pending" and chunk.lease_expires_at is None
    assert chunk.needs_reconcile  # the call went out: look its rows up first

    assert drive(ctx, started) == "completed"
    assert {row["status"] for row in rows(ctx.db, started.job_id).values()} == {"adopted"}
    assert len(sim_store.assets) == 2


class _SplitTogether(EnosClient):
    """Every batchCreate answer is held until all workers have theirs, so that every chunk
    splits at the same moment."""

    barrier: threading.Barrier = threading.Barrier(1)

    def batch_create(self, *args: Any, **kwargs: Any) -> Any:
        try:
            return super().batch_create(*args, **kwargs)
        finally:
            with contextlib.suppress(threading.BrokenBarrierError):
                self.barrier.wait(timeout=5)


def test_chunks_that_split_at_once_never_collide(
    pg_db: Database, sim_server: str, sim_store: Store
) -> None:
    from worker.simulator.state import DEMO_APP_KEY, DEMO_APP_SECRET

    sim_store.limits.batch_max = 3
    settings = fast_settings(batch_size=8, max_concurrency=6, **STEADY)
    client = _SplitTogether(sim_server, DEMO_APP_KEY, DEMO_APP_SECRET)
    with client:
        client.barrier = threading.Barrier(6)
        ctx = WorkerContext(pg_db, client, settings, LocalBudget(6), owner="test-host:1")
        started = start_job(pg_db, settings, meters(1, 48))
        assert len(started.publish) == 6
        with ThreadPoolExecutor(6) as pool:
            reports = list(pool.map(lambda chunk: send_chunk(ctx, chunk), started.publish))
        assert all(report.chunk_state == "done" for report in reports)
        client.barrier = threading.Barrier(1)
        queue = IntakeResult(
            started.job_id, None, [r for report in reports for r in report.publish]
        )
        assert drive(ctx, queue) == "completed"
    with pg_db.read() as session:
        seqs = session.execute(
            select(CHUNKS.c.seq, func.count()).group_by(CHUNKS.c.seq).having(func.count() > 1)
        ).all()
    assert seqs == []
    assert len(sim_store.assets) == 48
    assert_enos_matches_rows(sim_store, pg_db, [started.job_id])
