"""No row becomes final while its device may exist on EnOS.

Each path by which a row can end without an answer of its own (a full product, a cancel, a job
failing, a chunk out of attempts) is driven here while another call's answer is still out, or
was lost; EnOS must end up holding exactly one device per created or adopted row.
"""

from __future__ import annotations

import io
import sys
from collections.abc import Iterator, Sequence
from unittest import mock

import pytest
from rich.console import Console
from sqlalchemy import select, update

from tests.importer.support import (
    assert_enos_matches_rows,
    drive,
    due_now,
    fast_settings,
    job_status,
    meters,
    rows,
    start_job,
)
from worker.cli import common as cli_common
from worker.cli.common import job_view
from worker.context import WorkerContext
from worker.db.models import CHUNKS
from worker.db.session import Database
from worker.enos.client import EnosClient
from worker.enos.models import Device
from worker.importer import chunks, jobs, outcome, send
from worker.importer.budget import LocalBudget
from worker.importer.send import send_chunk
from worker.importer.submit import IntakeResult
from worker.settings import Settings
from worker.simulator.api import SimConfig
from worker.simulator.faults import FaultProfile
from worker.simulator.state import Store


@pytest.fixture
def settings() -> Settings:
    return fast_settings(batch_size=4)


@pytest.fixture
def ctx(db: Database, client: EnosClient, settings: Settings) -> Iterator[WorkerContext]:
    yield WorkerContext(db, client, settings, LocalBudget(4), owner="test-host:1")


def claim_and_call(ctx: WorkerContext, chunk_id: int) -> tuple[send.Start, outcome.Plan]:
    """A worker's claim and call, stopped before it writes the answer (still in flight)."""
    with ctx.db.begin() as session:
        start = send._start(session, ctx.settings, chunk_id, "other-host:9")
    assert start is not None
    return start, send.attempt(ctx, start)


def test_11739_while_a_chunk_of_the_product_is_in_flight_leaves_its_rows_alone(
    ctx: WorkerContext, sim_store: Store
) -> None:
    sim_store.limits.product_cap = 6
    started = start_job(ctx.db, ctx.settings, meters(1, 8))
    first, second = started.publish[:2]
    # Chunk 1's call creates 4 devices; its answer is not written yet.
    start, plan = claim_and_call(ctx, first)
    # Chunk 2 fills the product: 2 created, 2 refused with 11739.
    assert send_chunk(ctx, second).chunk_state == "done"
    outcome_now = rows(ctx.db, started.job_id)
    assert [outcome_now[n]["status"] for n in range(1, 5)] == ["pending"] * 4
    assert [outcome_now[n]["status"] for n in range(5, 9)] == ["created"] * 2 + ["failed"] * 2
    with ctx.db.read() as session:
        note = jobs.open_chunks_note(session, started.job_id)
    assert note is not None and note.startswith("1 in flight (leases end within")

    with ctx.db.begin() as session:
        assert outcome.write_outcome(session, ctx.settings, start, plan) == "done"
    assert drive(ctx, started) == "completed_with_errors"
    final = rows(ctx.db, started.job_id)
    assert [final[n]["status"] for n in range(1, 5)] == ["created"] * 4
    assert final[7]["error_code"] == 11739 and final[7]["retryable"]
    assert len(sim_store.assets) == 6
    assert_enos_matches_rows(sim_store, ctx.db, [started.job_id])


class _LaggingClient(EnosClient):
    """EnOS's reads lag its writes: the first look-up misses every device."""

    misses = 1

    def find_devices(
        self, org_id: str, device_keys: Sequence[str], *, group: int = 200
    ) -> dict[str, Device]:
        if self.misses:
            self.misses -= 1
            return {}
        return super().find_devices(org_id, device_keys, group=group)


@pytest.mark.parametrize("order", ["room-first", "exists-first"])
def test_11739_on_a_resend_after_a_lost_answer_is_looked_up_before_it_fails(
    db: Database, sim_transport, sim_app, sim_store: Store, settings: Settings, order: str
) -> None:
    from worker.simulator.state import DEMO_APP_KEY, DEMO_APP_SECRET

    api = sim_app.state.api
    api.config = SimConfig(check_order=order)  # type: ignore[arg-type]
    sim_store.limits.product_cap = 4
    with _LaggingClient(
        "http://enos.test", DEMO_APP_KEY, DEMO_APP_SECRET, transport=sim_transport
    ) as client:
        ctx = WorkerContext(db, client, settings, LocalBudget(2), owner="test-host:1")
        started = start_job(db, settings, meters(1, 4))
        api.faults = FaultProfile(timeout_after_commit=1.0)
        assert send_chunk(ctx, started.publish[0]).chunk_state == "pending"
        api.faults = FaultProfile()
        assert len(sim_store.assets) == 4  # created; the answer was lost; the product is full

        assert drive(ctx, started) == "completed"
    final = rows(db, started.job_id)
    assert {row["status"] for row in final.values()} == {"adopted"}
    if order == "room-first":
        assert api.stats.item_errors[11739] == 4  # the resend was refused as "full"
    assert_enos_matches_rows(sim_store, db, [started.job_id])


def test_a_killed_workers_chunk_during_product_full_is_looked_up_not_failed(
    ctx: WorkerContext, sim_store: Store
) -> None:
    sim_store.limits.product_cap = 6
    started = start_job(ctx.db, ctx.settings, meters(1, 8))
    first, second = started.publish[:2]
    claim_and_call(ctx, first)  # the worker dies after its call: nothing is written
    assert send_chunk(ctx, second).chunk_state == "done"
    assert {rows(ctx.db, started.job_id)[n]["status"] for n in range(1, 5)} == {"pending"}
    with ctx.db.begin() as session:
        session.execute(update(CHUNKS).where(CHUNKS.c.id == first).values(lease_expires_at=0))

    assert drive(ctx, started) == "completed_with_errors"
    final = rows(ctx.db, started.job_id)
    assert [final[n]["status"] for n in range(1, 5)] == ["adopted"] * 4
    assert_enos_matches_rows(sim_store, ctx.db, [started.job_id])


def test_rows_of_a_full_product_that_were_sent_before_are_looked_up(
    ctx: WorkerContext, sim_app, sim_store: Store
) -> None:
    # Chunk 1 gets a 5xx (its rows now "may exist"); chunk 2 then fills the product, and chunk
    # 1's resend is refused as full: its rows are looked up before they fail.
    sim_store.limits.product_cap = 4
    started = start_job(ctx.db, ctx.settings, meters(1, 8))
    first, second = started.publish[:2]
    sim_app.state.api.faults = FaultProfile(http503=1.0)
    assert send_chunk(ctx, first).chunk_state == "pending"
    sim_app.state.api.faults = FaultProfile()
    send_chunk(ctx, second)  # 4 created: the product is full now
    due_now(ctx.db, first)
    calls = sim_app.state.api.stats.calls
    assert send_chunk(ctx, first).chunk_state == "pending"  # 11739: not final yet
    assert {rows(ctx.db, started.job_id)[n]["status"] for n in range(1, 5)} == {"pending"}

    assert drive(ctx, started) == "completed_with_errors"
    final = rows(ctx.db, started.job_id)
    assert [final[n]["status"] for n in range(1, 9)] == ["failed"] * 4 + ["created"] * 4
    assert all(final[n]["error_code"] == 11739 for n in range(1, 5))
    assert_enos_matches_rows(sim_store, ctx.db, [started.job_id])
    assert sim_app.state.api.stats.calls == calls + 1  # then looked up, not sent again


def test_cancel_leaves_a_chunk_whose_answer_was_lost_to_look_its_rows_up(
    ctx: WorkerContext, sim_app, sim_store: Store
) -> None:
    started = start_job(ctx.db, ctx.settings, meters(1, 8))
    first = started.publish[0]
    sim_app.state.api.faults = FaultProfile(timeout_after_commit=1.0)
    assert send_chunk(ctx, first).chunk_state == "pending"
    sim_app.state.api.faults = FaultProfile()

    with ctx.db.begin() as session:
        assert jobs.cancel_job(session, started.job_id) == "cancelling"
    now = rows(ctx.db, started.job_id)
    assert [now[n]["status"] for n in range(1, 9)] == ["pending"] * 4 + ["cancelled"] * 4
    with ctx.db.read() as session:
        note = jobs.open_chunks_note(session, started.job_id)
    assert note == "1 to look up rows whose answer was lost"

    assert drive(ctx, started) == "cancelled"
    final = rows(ctx.db, started.job_id)
    assert [final[n]["status"] for n in range(1, 5)] == ["adopted"] * 4
    assert_enos_matches_rows(sim_store, ctx.db, [started.job_id])


def test_a_failing_job_waits_for_its_lost_answers_to_be_looked_up(
    ctx: WorkerContext, sim_app, sim_store: Store
) -> None:
    started = start_job(ctx.db, ctx.settings, meters(1, 8))
    sim_app.state.api.faults = FaultProfile(reset_after_commit=1.0)
    assert send_chunk(ctx, started.publish[0]).chunk_state == "pending"
    sim_app.state.api.faults = FaultProfile()

    with ctx.db.begin() as session:
        assert jobs.fail_job(session, started.job_id, "EnOS refused the import: Denied")
    assert job_status(ctx.db, started.job_id) == "running"  # not final while rows may exist
    assert drive(ctx, started) == "failed"
    final = rows(ctx.db, started.job_id)
    assert [final[n]["status"] for n in range(1, 9)] == ["adopted"] * 4 + ["failed"] * 4
    assert all(final[n]["retryable"] for n in range(5, 9))
    assert_enos_matches_rows(sim_store, ctx.db, [started.job_id])


@pytest.mark.parametrize(
    ("fault", "expected"),
    [("timeout_after_commit", "adopted"), ("reset_before_commit", "failed")],
)
def test_giving_up_after_a_lost_answer_looks_the_rows_up_first(
    db: Database, client: EnosClient, sim_app, sim_store: Store, fault: str, expected: str
) -> None:
    settings = fast_settings(batch_size=4, max_attempts=1)
    ctx = WorkerContext(db, client, settings, LocalBudget(2), owner="test-host:1")
    started = start_job(db, settings, meters(1, 2))
    sim_app.state.api.faults = FaultProfile.from_mapping({fault: 1.0})
    assert send_chunk(ctx, started.publish[0]).chunk_state == "pending"
    sim_app.state.api.faults = FaultProfile()

    drive(ctx, started)
    final = rows(db, started.job_id)
    assert {row["status"] for row in final.values()} == {expected}
    if expected == "failed":
        assert all(row["error_message"].startswith("gave up after 1") for row in final.values())
    assert sim_app.state.api.stats.calls == 1  # the bound was kept: nothing sent again
    assert_enos_matches_rows(sim_store, db, [started.job_id])


class _SearchDownOnce(EnosClient):
    """The look-up after a lost answer fails once, as EnOS's search may."""

    failures = 1

    def find_devices(
        self, org_id: str, device_keys: Sequence[str], *, group: int = 200
    ) -> dict[str, Device]:
        if self.failures:
            self.failures -= 1
            from worker.enos.errors import TransientError

            raise TransientError("EnOS answered HTTP 502", sent=True)
        return super().find_devices(org_id, device_keys, group=group)


def test_a_failed_look_up_is_not_taken_for_an_answer_to_the_call(
    db: Database, sim_transport, sim_app, sim_store: Store, settings: Settings
) -> None:
    from worker.simulator.state import DEMO_APP_KEY, DEMO_APP_SECRET

    api = sim_app.state.api
    with _SearchDownOnce(
        "http://enos.test", DEMO_APP_KEY, DEMO_APP_SECRET, transport=sim_transport
    ) as client:
        ctx = WorkerContext(db, client, settings, LocalBudget(2), owner="test-host:1")
        started = start_job(db, settings, meters(1, 3))
        api.faults = FaultProfile(reset_after_commit=1.0)
        assert send_chunk(ctx, started.publish[0]).chunk_state == "pending"
        api.faults = FaultProfile()
        due_now(db, started.publish[0])
        # The look-up fails: nothing is sent, and the chunk still has to look its rows up.
        assert send_chunk(ctx, started.publish[0]).chunk_state == "pending"
        assert api.stats.calls == 1
        with db.read() as session:
            chunk = session.execute(select(CHUNKS).where(CHUNKS.c.id == started.publish[0])).one()
        assert chunk.needs_reconcile
        assert drive(ctx, started) == "completed"
    assert {row["status"] for row in rows(db, started.job_id).values()} == {"adopted"}
    assert api.stats.calls == 1


def test_rows_of_a_full_product_never_sent_can_be_retried(
    ctx: WorkerContext, sim_store: Store
) -> None:
    sim_store.limits.product_cap = 2
    started = start_job(ctx.db, ctx.settings, meters(1, 8))
    assert drive(ctx, started) == "completed_with_errors"
    final = rows(ctx.db, started.job_id)
    unsent = [final[n] for n in range(5, 9)]
    assert all(r["error_message"].startswith("not sent: ") for r in unsent)
    assert all(r["retryable"] and r["error_code"] == 11739 and r["attempts"] == 0 for r in unsent)

    sim_store.limits.product_cap = 100  # the operator raised the product's room
    with ctx.db.begin() as session:
        assert jobs.retry_job(session, started.job_id, ctx.settings.batch_size) == 6
        again = chunks.publish_due(session, started.job_id, 4, 1.0)
    assert drive(ctx, IntakeResult(started.job_id, None, again)) == "completed"
    assert_enos_matches_rows(sim_store, ctx.db, [started.job_id])


def test_a_job_whose_chunk_waits_to_be_sent_again_says_why(
    ctx: WorkerContext, sim_app, sim_store: Store
) -> None:
    """What an operator watching a job that does not move reads (`status`, the progress bar of
    `run` and `submit --wait`): the last error of the chunk to send again, and its attempts."""
    started = start_job(ctx.db, ctx.settings, meters(1, 8))
    first, second = started.publish[:2]
    before = job_view(ctx.db, started.job_id)
    assert before is not None and before.retry is None and before.retrying is None

    sim_app.state.api.faults = FaultProfile(http503=1.0)
    assert send_chunk(ctx, first).chunk_state == "pending"
    sim_app.state.api.faults = FaultProfile()
    assert send_chunk(ctx, second).chunk_state == "done"  # a chunk that went through: silent
    view = job_view(ctx.db, started.job_id)
    assert view is not None and view.retry is not None
    attempts, error = view.retry
    assert attempts == 1 and "503" in error, view.retry
    assert view.retrying == f"sending again after 1 attempt: {error}"

    assert drive(ctx, started) == "completed"
    final = job_view(ctx.db, started.job_id)
    assert final is not None and final.retry is None
    assert_enos_matches_rows(sim_store, ctx.db, [started.job_id])


def test_the_progress_bar_tells_each_error_that_holds_a_job_back_once(
    ctx: WorkerContext, sim_app, sim_store: Store
) -> None:
    started = start_job(ctx.db, ctx.settings, meters(1, 8))
    first = started.publish[0]
    sim_app.state.api.faults = FaultProfile(http503=1.0)
    assert send_chunk(ctx, first).chunk_state == "pending"
    sim_app.state.api.faults = FaultProfile()
    ticks: list[int] = []
    views_while_held: list[int] = []

    def tick() -> None:  # the follower's poll: the job moves on at its 30th (~0.3 s)
        ticks.append(1)
        if len(ticks) == 30:
            views_while_held.append(views.call_count)
            due_now(ctx.db, first)
            drive(ctx, started)

    shown = io.StringIO()
    terminal = Console(file=shown, force_terminal=True, width=120)
    with (
        mock.patch.object(cli_common, "stderr", terminal),
        mock.patch.object(sys.stderr, "isatty", return_value=True),
        mock.patch.object(cli_common, "job_view", side_effect=cli_common.job_view) as views,
    ):
        view = cli_common.follow(ctx.db, started.job_id, poll_s=0.01, tick=tick)
    assert view.status == "completed"
    assert views_while_held[0] >= 2  # the bar was drawn again while the chunk waited
    told = [line for line in shown.getvalue().splitlines() if "retrying: " in line]
    assert len(told) == 1 and "503" in told[0], shown.getvalue()
    assert_enos_matches_rows(sim_store, ctx.db, [started.job_id])
