"""The outcome of one attempt at a chunk: its rows and the chunk's next state, written in one
transaction that commits only while the attempt's fencing token still holds the chunk.

:func:`next_state` decides, from what the attempt learnt, which rows end now and how the chunk
goes on; it applies :mod:`worker.importer.settle`'s rule and touches no database.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from sqlalchemy import String, bindparam, select

from worker.db.bulk import update_outcomes
from worker.db.clock import db_epoch
from worker.db.models import FULL_PRODUCTS, JOBS, ChunkStatus, ItemStatus, KeySource
from worker.db.session import Session
from worker.db.upsert import insert_ignore
from worker.enos.models import PRODUCT_FULL
from worker.importer import batch_limits, chunks, jobs
from worker.importer.answers import Answers
from worker.importer.chunks import Claim, PendingItem
from worker.importer.settle import (
    NO_KEY_MESSAGE,
    Stop,
    give_up_message,
    not_sent_message,
    out_of_attempts,
    settle_items,
    stop_for,
)
from worker.settings import Settings

if TYPE_CHECKING:
    from worker.importer.send import Start


@dataclass
class Plan:
    """What one attempt learnt, gathered before anything is written."""

    answers: Answers = field(default_factory=Answers)
    split: list[list[PendingItem]] = field(default_factory=list)
    delay: float | None = None
    reconcile_next: bool = False
    error: str | None = None
    ok_size: int | None = None
    refused_size: int | None = None
    call_s: float | None = None  # how long the batchCreate call took (for the log)
    fenced_out: str | None = None  # another attempt took the chunk over: write nothing


@dataclass(frozen=True)
class Settlement:
    items: list[PendingItem]
    status: str
    message: str
    retryable: bool
    error_code: int | None = None


@dataclass
class Next:
    """The chunk's next state and the rows that end now."""

    state: str
    settlements: list[Settlement] = field(default_factory=list)
    needs_reconcile: bool = False
    delay: float = 0.0


_JOB_NOW = select(JOBS.c.status, JOBS.c.failure, JOBS.c.last_error).where(
    JOBS.c.id == bindparam("p_job_id", type_=String())
)
_JOB_SHARED = _JOB_NOW.with_for_update(read=True)
_JOB_EXCLUSIVE = _JOB_NOW.with_for_update()


def write_outcome(session: Session, settings: Settings, start: Start, plan: Plan) -> str | None:
    """Writes the attempt; returns the chunk's new state, or ``None`` when fenced out."""
    claim, answers = start.claim, plan.answers
    if plan.fenced_out:
        return None
    # Lock the chunk first: from here on, this attempt either owns the chunk or writes nothing.
    if not chunks.lock(session, claim):
        return None
    # The job's state now, not at the claim: it may have failed or been cancelled meanwhile.
    # Shared, so that chunks of one job commit side by side and a concurrent fail or cancel
    # waits for this commit; exclusive when this attempt splits or fails the job, which write
    # the job's other chunks (a shared lock taken first could not be upgraded without risk of
    # deadlock against another chunk doing the same).
    exclusive = bool(plan.split or answers.job_error)
    update_outcomes(session, outcome_rows(start.items, answers, plan.error))
    _write_learnt(session, start, plan)
    job = (
        session.connection()
        .execute(_JOB_EXCLUSIVE if exclusive else _JOB_SHARED, {"p_job_id": claim.job_id})
        .one()
    )
    if plan.split:
        chunks.split(session, claim.job_id, [[i.id for i in piece] for piece in plan.split])
    if plan.ok_size is not None or plan.refused_size is not None:
        batch_limits.record(session, start.org_id, plan.ok_size, plan.refused_size)

    moved = {item.id for piece in plan.split for item in piece}
    remaining = [i for i in start.items if i.id not in answers.outcomes and i.id not in moved]
    stop = stop_for(job, claim, settings)
    if stop is None and remaining and out_of_attempts(claim, settings):
        age = claim.now - claim.first_attempt_at
        stop = Stop(ItemStatus.FAILED, give_up_message(claim.attempts, age, plan.error))
    full = {**start.full, **answers.full_products}
    step = next_state(remaining, answers.maybe, stop, full, plan, settings)
    closing = stop.message if stop is not None and remaining else plan.error
    _apply(session, claim, step, plan.error, closing)
    return step.state


def _write_learnt(session: Session, start: Start, plan: Plan) -> None:
    """What the attempt learnt beyond its rows' outcomes: full products, a split, the org's
    batch limits, and a failure of the whole job."""
    claim, answers = start.claim, plan.answers
    if answers.full_products:
        rows = [
            {"job_id": claim.job_id, "product_key": key, "message": message}
            for key, message in answers.full_products.items()
        ]
        insert_ignore(session, FULL_PRODUCTS, rows)
    if answers.job_error:
        jobs.fail_job(session, claim.job_id, answers.job_error)


def _apply(
    session: Session, claim: Claim, step: Next, error: str | None, closing: str | None
) -> None:
    """Ends the rows ``step`` settles and moves the chunk on; its ``last_error`` is the
    attempt's ``error`` while it stays open, ``closing`` once it closes."""
    for settled in step.settlements:
        settle_items(
            session, settled.items, settled.status, settled.message, settled.retryable,
            settled.error_code,
        )  # fmt: skip
    if step.state != ChunkStatus.PENDING:
        chunks.close(session, claim, step.state, closing)
        return
    chunks.fenced(
        session,
        claim,
        status=ChunkStatus.PENDING,
        # Counted from now, not from the claim: the call's own time is no part of the wait.
        next_attempt_at=db_epoch() + step.delay,
        lease_expires_at=None,
        published_at=None,
        needs_reconcile=step.needs_reconcile,
        last_error=error,
    )


def next_state(
    remaining: list[PendingItem],
    maybe: set[int],
    stop: Stop | None,
    full: dict[str, str],
    plan: Plan,
    settings: Settings,
) -> Next:
    """Which rows without an outcome end now, and what becomes of the chunk.

    Rows that may exist (``maybe``) never end here, except in ``review`` when EnOS generates
    their key; the chunk then comes back to look them up.
    """
    sure = [i for i in remaining if i.id not in maybe]
    unsure = [i for i in remaining if i.id in maybe]
    keyless = [i for i in unsure if i.key_source == KeySource.PLATFORM]
    waiting = [i for i in unsure if i.key_source != KeySource.PLATFORM]
    settlements: list[Settlement] = []
    if stop is not None:
        settlements.append(Settlement(sure, stop.status, stop.message, retryable=True))
        settlements.append(Settlement(keyless, ItemStatus.REVIEW, NO_KEY_MESSAGE, False))
        if waiting:
            return Next(ChunkStatus.PENDING, settlements, True, _reconcile_delay(plan, settings))
        closed = ChunkStatus.CANCELLED if stop.status == ItemStatus.CANCELLED else ChunkStatus.DONE
        return Next(closed, settlements)
    ended: set[int] = set()
    for product_key, message in full.items():
        rows = [i for i in sure if i.product_key == product_key]
        if rows:
            settlements.append(
                Settlement(rows, ItemStatus.FAILED, not_sent_message(message), True, PRODUCT_FULL)
            )
            ended.update(i.id for i in rows)
    if all(i.id in ended for i in remaining):
        return Next(ChunkStatus.DONE, settlements)
    # Rows of a full product that may exist are looked up before they end.
    reconcile = plan.reconcile_next or any(i.product_key in full for i in unsure)
    delay = _reconcile_delay(plan, settings) if reconcile else (plan.delay or 0.0)
    return Next(ChunkStatus.PENDING, settlements, reconcile, delay)


def _reconcile_delay(plan: Plan, settings: Settings) -> float:
    # A look-up means something only once EnOS's reads have caught up with the last call.
    return max(plan.delay or 0.0, settings.reconcile_delay_s)


def outcome_rows(
    items: list[PendingItem], answers: Answers, error: str | None
) -> list[dict[str, Any]]:
    """The rows to write: each outcome, and the sent rows still pending (their attempt counted,
    which also marks them as rows an earlier call may have created). A field left out is NULL:
    the database parses a chunk's outcomes as one document, and a created row needs five of
    its nine fields."""
    rows: list[dict[str, Any]] = []
    outcomes, sent = answers.outcomes, answers.sent
    for item in items:
        outcome = outcomes.get(item.id)
        attempts = item.attempts + 1 if item.id in sent else item.attempts
        if outcome is not None:
            row = {
                "item_id": item.id,
                "status": outcome.status,
                "attempts": attempts,
                "retryable": outcome.retryable,
            }
            if outcome.asset_id is not None:
                row["asset_id"] = outcome.asset_id
            if outcome.error_code is not None:
                row["error_code"] = outcome.error_code
            if outcome.error_message is not None:
                row["error_message"] = outcome.error_message
            if outcome.device_secret is not None:
                row["device_secret"] = outcome.device_secret
            if outcome.session_key is not None:
                row["session_key"] = outcome.session_key
            rows.append(row)
        elif item.id in sent:
            row = {
                "item_id": item.id,
                "status": ItemStatus.PENDING,
                "attempts": attempts,
                "retryable": False,
            }
            if error is not None:
                row["error_message"] = error
            rows.append(row)
    return rows
