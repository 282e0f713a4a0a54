"""Sending one chunk: claim it, look up what earlier calls may have created, call batchCreate,
and write every outcome with the chunk's new state in one transaction that commits only if the
fencing token is still ours.

Three transactions around one call: the claim (with what the attempt needs to know), the
outcome (fenced), and the job's next step (finish, publish the next chunks). The attempt itself
(:func:`attempt`) touches no database, and the outcome's rows and the chunk's next state are
computed by plain functions (:mod:`worker.importer.outcome`).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import orjson
from sqlalchemy import String, bindparam, exists, select
from sqlalchemy.exc import SQLAlchemyError

from worker.context import WorkerContext
from worker.db.models import BATCH_LIMITS as LIMITS
from worker.db.models import FULL_PRODUCTS, JOBS, ChunkStatus, KeySource
from worker.db.session import Session
from worker.enos import errors
from worker.importer import chunks, jobs
from worker.importer.answers import Answers
from worker.importer.backoff import retry_delay
from worker.importer.chunks import Claim, PendingItem
from worker.importer.outcome import Plan, write_outcome
from worker.importer.settle import Stop, may_exist, stop_for
from worker.logs import get_logger
from worker.rollback.plan import SOURCE_PREFIX as ROLLBACK_SOURCE
from worker.settings import Settings

log = get_logger(__name__)


@dataclass
class SendReport:
    """What became of one delivery; ``publish`` are chunk ids to publish after commit."""

    claimed: bool
    chunk_state: str | None = None
    job_id: str | None = None
    job_state: str | None = None
    publish: list[int] = field(default_factory=list)
    plan: Plan | None = None  # the attempt's decision, for the metrics


@dataclass
class Start:
    """What the claim's transaction read for one attempt."""

    claim: Claim
    org_id: str
    job_status: str  # at the claim
    rollback: bool  # the chunk is a rollback job's: its devices are deleted
    options: dict[str, Any]
    items: list[PendingItem]
    stop: Stop | None  # why this claim only settles its rows (``None``: it may send)
    full: dict[str, str]  # the job's full products → EnOS's message
    refused: int | None
    largest_ok: int
    # This process's clock just before the claim: the lease runs at least ``lease_s`` from it.
    claimed_at: float = field(default_factory=time.monotonic)


def send_chunk(ctx: WorkerContext, chunk_id: int) -> SendReport:
    """Claims the chunk of an import and sends it (a rollback's chunk: see ``claim_chunk``)."""
    start = claim_chunk(ctx, chunk_id)
    if start is None:
        return SendReport(claimed=False)
    if start.rollback:
        raise ValueError(f"chunk {chunk_id} belongs to a rollback job: it deletes, not creates")
    return send_claimed(ctx, start)


def claim_chunk(ctx: WorkerContext, chunk_id: int) -> Start | None:
    """Claims the chunk and reads what its attempt needs, in one transaction; ``None`` when it
    is not due or is held by someone else. The same for every chunk, an import's or a
    rollback's (``Start.rollback``: the caller deletes instead of sending)."""
    with ctx.db.begin() as session:
        return _start(session, ctx.settings, chunk_id, ctx.owner)


def send_claimed(ctx: WorkerContext, start: Start) -> SendReport:
    """One attempt at an import's chunk this process has claimed."""
    claim = start.claim
    bound = log.bind(job_id=claim.job_id, chunk_id=claim.chunk_id, attempt=claim.attempts)

    plan = Plan()
    try:
        plan = attempt(ctx, start)
        with ctx.db.begin() as session:
            state = write_outcome(session, ctx.settings, start, plan)
    except SQLAlchemyError:
        _release(ctx, start, plan)
        raise
    if state is None:
        bound.warning("chunk.fenced_out")
        return SendReport(claimed=True, job_id=claim.job_id)
    bound.info(
        "chunk.sent" if state != ChunkStatus.PENDING else "chunk.retry",
        chunk_state=state,
        devices=len(start.items),
        created=plan.answers.created,
        delay_s=plan.delay,
        error=plan.error,
        call_s=None if plan.call_s is None else round(plan.call_s, 3),
    )
    report = SendReport(claimed=True, chunk_state=state, job_id=claim.job_id, plan=plan)
    with ctx.db.begin() as session:
        report.job_state = jobs.finish_if_done(session, claim.job_id)
        report.publish = chunks.publish_due(
            session, claim.job_id, ctx.settings.publish_window, ctx.settings.republish_after_s
        )
    if report.job_state:
        log.info("job.finished", job_id=claim.job_id, status=report.job_state)
    return report


# The job, its org's batch limit and whether it has full products in one statement, and the
# full products themselves when it has any (rarely): every chunk reads them (built once, see
# ``chunks``).
_FULL_PRODUCTS = select(FULL_PRODUCTS.c.product_key, FULL_PRODUCTS.c.message).where(
    FULL_PRODUCTS.c.job_id == bindparam("p_job_id", type_=String())
)
_JOB_AND_LIMITS = (
    select(
        JOBS.c.status, JOBS.c.org_id, JOBS.c.options, JOBS.c.failure, JOBS.c.last_error,
        JOBS.c.source, LIMITS.c.largest_ok, LIMITS.c.smallest_refused,
        exists().where(FULL_PRODUCTS.c.job_id == JOBS.c.id).label("has_full"),
    )
    .select_from(JOBS.outerjoin(LIMITS, LIMITS.c.org_id == JOBS.c.org_id))
    .where(JOBS.c.id == bindparam("p_job_id", type_=String()))
)  # fmt: skip


def _start(session: Session, settings: Settings, chunk_id: int, owner: str) -> Start | None:
    claimed_at = time.monotonic()
    claim = chunks.claim(session, chunk_id, owner, settings.lease_s)
    if claim is None:
        return None
    connection = session.connection()
    job = connection.execute(_JOB_AND_LIMITS, {"p_job_id": claim.job_id}).one()
    full = (
        dict(connection.execute(_FULL_PRODUCTS, {"p_job_id": claim.job_id}).all())
        if job.has_full
        else {}
    )
    return Start(
        claim=claim,
        org_id=job.org_id,
        job_status=job.status,
        rollback=job.source.startswith(ROLLBACK_SOURCE),
        options=job.options or {},
        items=chunks.pending_items(session, claim.job_id, claim.seq),
        stop=stop_for(job, claim, settings),
        full=full,
        refused=job.smallest_refused,
        largest_ok=job.largest_ok or 0,
        claimed_at=claimed_at,
    )


def attempt(ctx: WorkerContext, start: Start) -> Plan:
    """One attempt at EnOS: look-ups first, then (unless the chunk only settles) the call."""
    claim, items = start.claim, start.items
    plan = Plan(
        answers=Answers(
            earlier=frozenset(i.id for i in items if may_exist(i, claim)),
            require_secret=bool(start.options.get("require_secret")),
        )
    )
    answers = plan.answers
    try:
        _look_up_first(ctx, start, answers)
        if start.stop is not None or not items:
            return plan
        todo = [
            i for i in items if i.id not in answers.outcomes and i.product_key not in start.full
        ]
        # A refusal only teaches a size limit when a smaller batch has passed: one bad device
        # can make EnOS refuse a whole batch too, and must not cap the org's calls for good.
        if start.refused is not None and 0 < start.largest_ok < start.refused <= len(todo):
            size = start.largest_ok
            plan.split = [todo[i : i + size] for i in range(0, len(todo), size)]
            return plan
        if todo:
            _call(ctx, start, todo, plan)
    except errors.EnosError as exc:
        _read_error(ctx, start, plan, exc)
    if answers.last_error and plan.delay is None:
        plan.error = answers.last_error
        plan.delay = retry_delay(ctx.settings, claim.attempts, None)
    return plan


def _look_up_first(ctx: WorkerContext, start: Start, answers: Answers) -> None:
    """After a lost answer every row is looked up; otherwise only the rows that will not be sent
    (the chunk only settles, or their product is full) and that an earlier call may have made."""
    if start.claim.needs_reconcile:
        answers.reconcile(ctx.client, start.org_id, start.items)
        return
    unsent = [
        i
        for i in start.items
        if (start.stop is not None or i.product_key in start.full)
        and i.id in answers.maybe
        and i.device_key
    ]
    answers.look_up(ctx.client, start.org_id, unsent)


def _call(ctx: WorkerContext, start: Start, todo: list[PendingItem], plan: Plan) -> None:
    answers = plan.answers
    with ctx.budget.slot(start.org_id) as slot:
        # The call (connect + read timeout, less than the lease) must end before anyone may
        # take the chunk over: unless the claim's own lease still covers it with room to spare,
        # it is renewed right before the call, and a chunk taken over while this attempt
        # waited (for its slot, say) is not sent by this attempt.
        if not _lease_covers_call(ctx.settings, start):
            with ctx.db.begin() as session:
                if not chunks.renew(session, start.claim, ctx.settings.lease_s):
                    plan.error = plan.fenced_out = "the chunk was taken over before the call"
                    return
        answers.sent.update(item.id for item in todo)
        called = time.perf_counter()
        result = ctx.client.batch_create(
            start.org_id,
            [orjson.Fragment(item.payload) for item in todo],  # type: ignore[misc,unused-ignore]
            require_secret=bool(start.options.get("require_secret")),
        )
        plan.call_s = time.perf_counter() - called
        slot.succeeded()  # told to the budget as the slot is released
    exists, full_but_maybe = answers.apply(result, todo)
    if answers.created and len(todo) > start.largest_ok:
        # Only news is written: the org's row would otherwise be rewritten by every chunk.
        plan.ok_size = len(todo)
    if full_but_maybe:
        # Looked up on the next attempt, once EnOS's reads have caught up with that call.
        plan.error = answers.full_products[full_but_maybe[0].product_key]
        plan.delay = ctx.settings.reconcile_delay_s
        plan.reconcile_next = True
    answers.resolve_existing(ctx.client, start.org_id, exists)


def _lease_covers_call(settings: Settings, start: Start) -> bool:
    """Whether the lease taken at the claim outlasts a call started now, with half the lease's
    slack over a call's longest time to spare (5 s by default): a fresh claim needs no second
    write before its call. The lease ran from the claim's database time, which is later than
    ``claimed_at`` on this process's clock, and nobody may take a chunk over before its lease
    ends."""
    call_s = settings.connect_timeout_s + settings.read_timeout_s
    spare = (settings.lease_s - call_s) / 2
    return time.monotonic() - start.claimed_at + call_s + spare <= settings.lease_s


def _read_error(ctx: WorkerContext, start: Start, plan: Plan, exc: errors.EnosError) -> None:
    """Maps an error of the look-ups or of the call to the plan (one place for the answer
    table's whole-request rows)."""
    settings, claim, answers = ctx.settings, start.claim, plan.answers
    plan.error = str(exc)
    sent = [i for i in start.items if i.id in answers.sent and i.id not in answers.outcomes]
    if isinstance(exc, errors.RateLimitedError):
        ctx.budget.throttled(exc.retry_after, start.org_id)
        plan.delay = retry_delay(settings, claim.attempts, exc.retry_after)
        plan.reconcile_next = claim.needs_reconcile and not answers.sent
    elif isinstance(exc, errors.TransientError):
        plan.delay = retry_delay(settings, claim.attempts, exc.retry_after)
        if not answers.sent:
            # A look-up failed: the rows it was for are still unknown.
            plan.reconcile_next = claim.needs_reconcile
        elif exc.sent:
            # A gateway 5xx may come after the platform did the work. Rows with a deviceKey
            # are found again by the next send (11702), or looked up before they are settled
            # otherwise; rows whose key EnOS generates must be reconciled first.
            answers.lost(sent)
            plan.reconcile_next = any(i.key_source == KeySource.PLATFORM for i in sent)
            plan.delay = max(plan.delay, settings.reconcile_delay_s)
    elif isinstance(exc, errors.AmbiguousError):
        answers.lost(sent)
        # EnOS's reads lag its writes by about two seconds: wait at least that long.
        plan.delay = max(settings.reconcile_delay_s, retry_delay(settings, claim.attempts, None))
        plan.reconcile_next = True
    elif isinstance(exc, errors.InvalidArgumentsError) and not answers.sent:
        # A look-up refused: nothing was sent, and what it was for is still unknown.
        plan.delay = retry_delay(settings, claim.attempts, None)
        plan.reconcile_next = claim.needs_reconcile
    elif isinstance(exc, errors.InvalidArgumentsError):
        todo = [i for i in start.items if i.id in answers.sent]
        if len(todo) > 1:
            half = (len(todo) + 1) // 2
            plan.split = [todo[:half], todo[half:]]
            plan.refused_size = len(todo)
        else:
            answers.fail_single(todo[0], str(exc))
    elif isinstance(exc, errors.ConfigurationError):
        plan.error = answers.job_error = str(exc)  # 11858 carries its advice from the client
    else:
        plan.error = answers.job_error = f"EnOS refused the import: {exc}"


def _release(ctx: WorkerContext, start: Start, plan: Plan) -> None:
    """The outcome could not be written: give the chunk back at once rather than leave it
    leased to an attempt that has ended (best effort; the lease runs out otherwise)."""
    maybe_sent = bool(plan.answers.sent)
    delay = ctx.settings.reconcile_delay_s if maybe_sent else 0.0
    try:
        with ctx.db.begin() as session:
            chunks.release(session, start.claim, maybe_sent, delay)
    except SQLAlchemyError as exc:
        log.warning("chunk.release_failed", chunk_id=start.claim.chunk_id, error=str(exc))
    else:
        log.warning("chunk.released", chunk_id=start.claim.chunk_id, job_id=start.claim.job_id)
