"""Sending chunks: each answer of the answer table (docs/architecture.md), leases, fencing, retries.

The plain functions run against the in-process simulator and a real database (PostgreSQL and
SQLite); deliveries are made by hand (``support.drive``), as a Celery worker would make them.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from sqlalchemy import select, update

from tests.importer.support import device, drive, fast_settings, job_status, rows, start_job
from worker.context import WorkerContext
from worker.db.models import BATCH_LIMITS, CHUNKS, JOBS
from worker.db.session import Database
from worker.enos.client import EnosClient
from worker.enos.secret_box import Opener
from worker.importer import chunks
from worker.importer.budget import LocalBudget
from worker.importer.send import send_chunk
from worker.settings import Settings
from worker.simulator.faults import FaultProfile
from worker.simulator.inprocess import InProcessTransport
from worker.simulator.state import DEMO_APP_KEY, Store


@pytest.fixture
def settings() -> Settings:
    return fast_settings(batch_size=4)


@pytest.fixture
def ctx(db: Database, client: EnosClient, settings: Settings) -> Iterator[WorkerContext]:
    yield WorkerContext(db, client, settings, LocalBudget(2), owner="test-host:1")


def sim_devices(store: Store) -> dict[str, tuple[str, str, str]]:
    """EnOS's truth: deviceKey → (assetId, productKey, defaultValue)."""
    return {
        d.device_key: (d.asset_id, d.product_key, d.name["defaultValue"])
        for d in store.assets.values()
    }


def test_every_valid_row_is_created_once_with_enos_asset_id(
    ctx: WorkerContext, sim_store: Store
) -> None:
    devices = [device(f"meter-{n:04d}") for n in range(1, 10)] + [device(None, "pk-inverter")]
    started = start_job(ctx.db, ctx.settings, devices)
    assert started.summary is not None and started.summary.chunks == 3

    assert drive(ctx, started) == "completed"

    truth = sim_devices(sim_store)
    outcome = rows(ctx.db, started.job_id)
    assert len(truth) == 10
    for line, row in outcome.items():
        assert row["status"] == "created", line
        assert row["asset_id"] == truth[row["device_key"]][0]
        assert row["attempts"] == 1


def test_an_existing_device_is_adopted_and_a_different_one_is_a_conflict(
    ctx: WorkerContext, sim_store: Store, client: EnosClient
) -> None:
    existing = client.batch_create("o-demo", [device("meter-0001"), device("meter-0002")])
    started = start_job(
        ctx.db,
        ctx.settings,
        [device("meter-0001"), device("meter-0002", name="Another name"), device("meter-0003")],
    )

    assert drive(ctx, started) == "completed_with_errors"

    outcome = rows(ctx.db, started.job_id)
    assert outcome[1]["status"] == "adopted"
    assert outcome[1]["asset_id"] == existing.items[0].asset_id
    assert outcome[2]["status"] == "conflict"
    assert outcome[2]["error_code"] == 11702
    assert "belongs to another device" in outcome[2]["error_message"]
    assert outcome[3]["status"] == "created"
    assert len(sim_store.assets) == 3


def test_a_full_product_fails_its_remaining_rows_without_further_calls(
    ctx: WorkerContext, sim_store: Store, sim_app
) -> None:
    sim_store.limits.product_cap = 3
    devices = [device(f"meter-{n:04d}") for n in range(1, 8)] + [device("inv-0001", "pk-inverter")]
    started = start_job(ctx.db, ctx.settings, devices)

    assert drive(ctx, started) == "completed_with_errors"

    outcome = rows(ctx.db, started.job_id)
    statuses = [outcome[line]["status"] for line in range(1, 9)]
    assert statuses == ["created"] * 3 + ["failed"] * 4 + ["created"]
    assert all(outcome[line]["error_code"] == 11739 for line in range(4, 8))
    # EnOS said 11739 once; the product's later rows were never sent.
    assert sim_app.state.api.stats.item_errors[11739] == 1
    assert outcome[7]["attempts"] == 0


def test_11714_sends_that_row_again_until_enos_generates_a_key(
    ctx: WorkerContext, sim_store: Store, sim_app
) -> None:
    api = sim_app.state.api
    api.faults = FaultProfile(item11714=1.0)
    started = start_job(
        ctx.db, ctx.settings, [device(None), device("meter-0002")], key_mode="platform"
    )
    # The first delivery: the keyless row gets 11714 and stays pending; the other is created.
    report = send_chunk(ctx, started.publish[0])
    assert report.chunk_state == "pending"
    assert rows(ctx.db, started.job_id)[1]["status"] == "pending"

    api.faults = FaultProfile()
    assert drive(ctx, started) == "completed"
    outcome = rows(ctx.db, started.job_id)
    assert outcome[1]["attempts"] == 2
    assert outcome[1]["device_key"] is None  # EnOS generated it; the row keeps the assetId
    assert outcome[1]["asset_id"] in sim_store.assets


def test_99400_splits_the_chunk_and_remembers_the_org_batch_limit(
    ctx: WorkerContext, sim_store: Store, sim_app, db: Database
) -> None:
    sim_store.limits.batch_max = 2
    started = start_job(ctx.db, ctx.settings, [device(f"meter-{n:04d}") for n in range(1, 5)])

    assert drive(ctx, started) == "completed"
    assert len(sim_store.assets) == 4
    with db.read() as session:
        limit = session.execute(
            select(BATCH_LIMITS).where(BATCH_LIMITS.c.org_id == "o-demo")
        ).one_or_none()
        assert limit is not None
        assert (limit.largest_ok, limit.smallest_refused) == (2, 4)

    # The next job's chunks of 4 are cut to the known size before they are sent.
    calls = sim_app.state.api.stats.calls
    again = start_job(ctx.db, ctx.settings, [device(f"meter-{n:04d}") for n in range(5, 9)])
    assert drive(ctx, again) == "completed"
    assert sim_app.state.api.stats.calls - calls == 2


def test_99400_for_a_single_device_fails_that_row_with_enos_message(
    ctx: WorkerContext, sim_store: Store
) -> None:
    sim_store.limits.batch_max = 0
    started = start_job(ctx.db, ctx.settings, [device("meter-0001")])

    assert drive(ctx, started) == "completed_with_errors"
    row = rows(ctx.db, started.job_id)[1]
    assert row["status"] == "failed"
    assert row["error_code"] == 99400
    assert "exceeds the limit" in row["error_message"]


def test_11858_fails_the_job_and_says_to_create_the_rsa_key_pair(
    db: Database, sim_store: Store, sim_transport: InProcessTransport, settings: Settings
) -> None:
    sim_store.add_account("b1c2d3e4-0000-4000-8000-000000000001", "s3cr3t-no-key", {"o-demo"}, None)
    with EnosClient(
        "http://enos.test",
        "b1c2d3e4-0000-4000-8000-000000000001",
        "s3cr3t-no-key",
        transport=sim_transport,
    ) as client:
        ctx = WorkerContext(db, client, settings, LocalBudget(2), owner="test-host:1")
        started = start_job(db, settings, [device("meter-0001")], require_secret=True)
        assert drive(ctx, started) == "failed"
    with db.read() as session:
        error = session.execute(
            select(JOBS.c.last_error).where(JOBS.c.id == started.job_id)
        ).scalar_one()
    assert "RSA key pair" in error
    row = rows(db, started.job_id)[1]
    assert row["status"] == "failed" and "RSA key pair" in row["error_message"]
    assert row["retryable"]


def test_99403_fails_the_whole_job_with_enos_message(ctx: WorkerContext) -> None:
    started = start_job(ctx.db, ctx.settings, [device("meter-0001")], org_id="o-forbidden")
    assert drive(ctx, started) == "failed"
    row = rows(ctx.db, started.job_id)[1]
    assert row["status"] == "failed"
    assert "Denied resource" in row["error_message"]


def test_a_5xx_puts_the_chunk_back_and_the_next_attempt_creates(
    ctx: WorkerContext, sim_app, sim_store: Store
) -> None:
    sim_app.state.api.faults = FaultProfile(http503=1.0)
    started = start_job(ctx.db, ctx.settings, [device("meter-0001")])
    report = send_chunk(ctx, started.publish[0])
    assert report.chunk_state == "pending"
    with ctx.db.read() as session:
        chunk = session.execute(select(CHUNKS).where(CHUNKS.c.id == started.publish[0])).one()
    assert "HTTP 503" in chunk.last_error
    assert chunk.needs_reconcile is False or chunk.needs_reconcile == 0

    sim_app.state.api.faults = FaultProfile()
    assert drive(ctx, started) == "completed"
    assert rows(ctx.db, started.job_id)[1]["attempts"] == 2
    assert len(sim_store.assets) == 1


@pytest.mark.parametrize("fault", ["reset_after_commit", "timeout_after_commit"])
def test_a_lost_answer_is_reconciled_and_nothing_is_created_twice(
    ctx: WorkerContext, sim_app, sim_store: Store, fault: str
) -> None:
    sim_app.state.api.faults = FaultProfile.parse(f"{fault}=1")
    started = start_job(ctx.db, ctx.settings, [device(f"meter-{n:04d}") for n in range(1, 4)])
    report = send_chunk(ctx, started.publish[0])
    assert report.chunk_state == "pending"
    assert len(sim_store.assets) == 3  # EnOS did the work; the answer was lost

    sim_app.state.api.faults = FaultProfile()
    assert drive(ctx, started) == "completed"
    outcome = rows(ctx.db, started.job_id)
    truth = sim_devices(sim_store)
    assert {row["status"] for row in outcome.values()} == {"adopted"}
    assert all(row["asset_id"] == truth[row["device_key"]][0] for row in outcome.values())
    assert len(sim_store.assets) == 3


def test_a_lost_answer_for_a_platform_key_row_is_sent_to_review(
    ctx: WorkerContext, sim_app, sim_store: Store
) -> None:
    sim_app.state.api.faults = FaultProfile(reset_after_commit=1.0)
    started = start_job(ctx.db, ctx.settings, [device(None)], key_mode="platform")
    send_chunk(ctx, started.publish[0])
    sim_app.state.api.faults = FaultProfile()

    assert drive(ctx, started) == "completed_with_errors"
    row = rows(ctx.db, started.job_id)[1]
    assert row["status"] == "review"
    assert len(sim_store.assets) == 1  # not sent a second time


def test_rows_fail_after_the_attempt_bound_and_retry_sends_them_again(
    db: Database, client: EnosClient, sim_app, sim_store: Store
) -> None:
    from worker.importer import jobs

    settings = fast_settings(max_attempts=3)
    ctx = WorkerContext(db, client, settings, LocalBudget(2), owner="test-host:1")
    sim_app.state.api.faults = FaultProfile(http500=1.0)
    started = start_job(db, settings, [device("meter-0001"), device("meter-0002")])

    assert drive(ctx, started) == "completed_with_errors"
    row = rows(db, started.job_id)[1]
    assert row["status"] == "failed" and row["retryable"]
    assert row["error_message"].startswith("gave up after 3 attempts")

    sim_app.state.api.faults = FaultProfile()
    with db.begin() as session:
        assert jobs.retry_job(session, started.job_id, settings.batch_size) == 2
        started.publish[:] = chunks.publish_due(session, started.job_id, 4, 1.0)
    assert drive(ctx, started) == "completed"
    assert len(sim_store.assets) == 2


def test_require_secret_stores_the_ciphertext_as_received(
    ctx: WorkerContext, sim_store: Store
) -> None:
    started = start_job(ctx.db, ctx.settings, [device("meter-0001")], require_secret=True)
    assert drive(ctx, started) == "completed"
    row = rows(ctx.db, started.job_id)[1]
    stored = sim_store.orgs["o-demo"].by_key["meter-0001"].secret
    assert row["device_secret"] and row["session_key"]
    assert stored not in row["device_secret"]
    private = sim_store.accounts[DEMO_APP_KEY].private_pem
    assert private is not None
    assert Opener(private).open(row["device_secret"], row["session_key"]) == stored


def test_a_duplicate_delivery_finds_nothing_to_claim(ctx: WorkerContext, sim_store: Store) -> None:
    started = start_job(ctx.db, ctx.settings, [device("meter-0001")])
    first = send_chunk(ctx, started.publish[0])
    second = send_chunk(ctx, started.publish[0])
    assert first.claimed and not second.claimed
    assert len(sim_store.assets) == 1


def test_a_stale_attempt_cannot_write_after_its_lease_was_taken_over(
    ctx: WorkerContext, sim_store: Store
) -> None:
    started = start_job(ctx.db, ctx.settings, [device("meter-0001")])
    chunk_id = started.publish[0]
    with ctx.db.begin() as session:
        stale = chunks.claim(session, chunk_id, "worker-a:1", lease_s=30)
    assert stale is not None
    # Worker A stalls past its lease; the chunk is taken over and finished by another worker.
    with ctx.db.begin() as session:
        session.execute(update(CHUNKS).where(CHUNKS.c.id == chunk_id).values(lease_expires_at=0))
    report = send_chunk(ctx, chunk_id)
    assert report.chunk_state == "done"
    # The new holder looked the key up first (A may have sent); A had not, so it was created.
    assert rows(ctx.db, started.job_id)[1]["status"] == "created"

    with ctx.db.begin() as session:
        assert chunks.fenced(session, stale, status="pending") is False
    with ctx.db.read() as session:
        assert (
            session.execute(select(CHUNKS.c.status).where(CHUNKS.c.id == chunk_id)).scalar_one()
            == "done"
        )


class _FailsTheJobMidCall(LocalBudget):
    """A budget that lets another worker fail the job while this one is about to call EnOS."""

    def __init__(self, db: Database, job_id: str) -> None:
        super().__init__(2)
        self.db, self.job_id = db, job_id

    def slot(self, org_id: str = ""):
        from worker.importer import jobs

        with self.db.begin() as session:
            jobs.fail_job(session, self.job_id, "EnOS refused the import: Denied resource")
        return super().slot(org_id)


def test_a_chunk_in_flight_when_its_job_fails_looks_its_rows_up_before_they_fail(
    db: Database, client: EnosClient, settings: Settings, sim_app
) -> None:
    from worker.importer.sweeper import sweep

    sim_app.state.api.faults = FaultProfile(http503=1.0)
    started = start_job(db, settings, [device(f"meter-{n:04d}") for n in range(1, 3)])
    ctx = WorkerContext(db, client, settings, _FailsTheJobMidCall(db, started.job_id), "w:1")

    # The job failed while the call was out; a 5xx after sending may come after EnOS did the
    # work, so the rows stay pending and the job open until they have been looked up.
    report = send_chunk(ctx, started.publish[0])
    assert report.chunk_state == "pending"
    assert {row["status"] for row in rows(db, started.job_id).values()} == {"pending"}
    assert job_status(db, started.job_id) == "running"

    sim_app.state.api.faults = FaultProfile()
    assert drive(ctx, started) == "failed"
    outcome = rows(db, started.job_id)
    assert {row["status"] for row in outcome.values()} == {"failed"}
    assert all("Denied resource" in row["error_message"] for row in outcome.values())
    assert sim_app.state.api.stats.calls == 1  # looked up, never sent again
    published: list[int] = []
    sweep(db, settings, published.extend)
    assert published == []


def test_a_whole_request_99400_caused_by_one_device_does_not_cap_the_org(
    ctx: WorkerContext, sim_store: Store, sim_app, db: Database
) -> None:
    # Earlier chunks of 4 passed; then one refusal of a pair (as for one bad device).
    started = start_job(ctx.db, ctx.settings, [device(f"meter-{n:04d}") for n in range(1, 5)])
    assert drive(ctx, started) == "completed"
    with db.begin() as session:
        session.execute(
            update(BATCH_LIMITS)
            .where(BATCH_LIMITS.c.org_id == "o-demo")
            .values(largest_ok=4, smallest_refused=2)
        )
    calls = sim_app.state.api.stats.calls
    again = start_job(ctx.db, ctx.settings, [device(f"meter-{n:04d}") for n in range(5, 9)])
    assert drive(ctx, again) == "completed"
    assert sim_app.state.api.stats.calls - calls == 1  # one call of 4, not 4 calls of 1
