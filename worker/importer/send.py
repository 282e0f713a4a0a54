"""Sending one chunk: claim it, reconcile if an earlier answer was lost, call batchCreate, and
write every outcome with the chunk's new state in one transaction that commits only if the
fencing token is still ours."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import orjson
from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from worker.db.bulk import update_outcomes
from worker.db.clock import db_epoch
from worker.db.models import (
    CHUNKS,
    ITEMS,
    JOBS,
    ChunkStatus,
    ItemStatus,
    JobStatus,
    KeySource,
    OrgBatchLimit,
)
from worker.db.session import Database
from worker.enos import errors
from worker.enos.client import EnosClient
from worker.importer import batch_limits, chunks, jobs
from worker.importer.answers import NO_KEY_MESSAGE, Answers, no_public_key_message
from worker.importer.backoff import retry_delay
from worker.importer.budget import RateBudget
from worker.importer.chunks import Claim, PendingItem
from worker.logs import get_logger
from worker.settings import Settings

log = get_logger(__name__)


@dataclass
class SendContext:
    """What a worker process holds for sending: one of each, created once per process."""

    db: Database
    client: EnosClient
    settings: Settings
    budget: RateBudget
    owner: str


@dataclass
class SendReport:
    """What became of one delivery; ``publish`` are chunk ids to publish after commit."""

    claimed: bool
    chunk_state: str | None = None
    job_id: str | None = None
    job_state: str | None = None
    publish: list[int] = field(default_factory=list)


@dataclass
class _Plan:
    """The decision of one attempt, written by ``_commit``."""

    answers: Answers = field(default_factory=Answers)
    split: list[list[PendingItem]] = field(default_factory=list)
    delay: float | None = None
    reconcile_next: bool = False
    error: str | None = None
    ok_size: int | None = None
    refused_size: int | None = None
    call_s: float | None = None  # how long the batchCreate call took (for the log)


def send_chunk(ctx: SendContext, chunk_id: int) -> SendReport:
    # The claim and what the attempt needs to know commit together, before the call.
    with ctx.db.begin() as session:
        claim = chunks.claim(session, chunk_id, ctx.owner, ctx.settings.lease_s)
        if claim is None:
            return SendReport(claimed=False)
        job = session.execute(
            select(JOBS.c.status, JOBS.c.org_id, JOBS.c.options).where(JOBS.c.id == claim.job_id)
        ).one()
        items = chunks.pending_items(session, claim.job_id, claim.seq)
        limit = session.get(OrgBatchLimit, job.org_id)
        refused = limit.smallest_refused if limit else None
        largest_ok = limit.largest_ok if limit else 0
    bound = log.bind(job_id=claim.job_id, chunk_id=chunk_id, attempt=claim.attempts)

    plan = _Plan()
    if job.status == JobStatus.RUNNING and items:
        _attempt(ctx, claim, job.org_id, job.options or {}, items, plan, refused, largest_ok)

    with ctx.db.begin() as session:
        state = _commit(session, ctx.settings, claim, job.status, items, plan)
        if state is None:
            bound.warning("chunk.fenced_out")
            return SendReport(claimed=True, job_id=claim.job_id)
    bound.info(
        "chunk.sent" if state == ChunkStatus.DONE else "chunk.retry",
        chunk_state=state,
        devices=len(items),
        created=plan.answers.created,
        delay_s=plan.delay,
        error=plan.error,
        call_s=None if plan.call_s is None else round(plan.call_s, 3),
    )
    report = SendReport(claimed=True, chunk_state=state, job_id=claim.job_id)
    with ctx.db.begin() as session:
        report.job_state = jobs.finish_if_done(session, claim.job_id)
        report.publish = chunks.publish_due(
            session, claim.job_id, ctx.settings.publish_window, ctx.settings.republish_after_s
        )
    if report.job_state:
        log.info("job.finished", job_id=claim.job_id, status=report.job_state)
    return report


def _attempt(
    ctx: SendContext,
    claim: Claim,
    org_id: str,
    options: dict[str, Any],
    items: list[PendingItem],
    plan: _Plan,
    refused: int | None,
    largest_ok: int,
) -> None:
    answers = plan.answers
    todo = items
    try:
        require_secret = bool(options.get("require_secret"))
        if claim.needs_reconcile:
            answers.reconcile(ctx.client, org_id, todo, require_secret=require_secret)
            todo = [item for item in todo if item.id not in answers.outcomes]
        # A refusal only teaches a size limit when a smaller batch has passed: one bad device
        # can make EnOS refuse a whole batch too, and must not cap the org's calls for good.
        if refused is not None and 0 < largest_ok < refused <= len(todo):
            plan.split = [todo[i : i + largest_ok] for i in range(0, len(todo), largest_ok)]
            return
        if not todo:
            return
        with ctx.budget.slot():
            answers.sent.update(item.id for item in todo)
            called = time.perf_counter()
            result = ctx.client.batch_create(
                org_id,
                [orjson.Fragment(item.payload) for item in todo],  # type: ignore[misc]
                require_secret=require_secret,
            )
            plan.call_s = time.perf_counter() - called
        ctx.budget.succeeded()
        exists = answers.apply(result, todo)
        if answers.created and len(todo) > largest_ok:
            # Only news is written: the org's row would otherwise be rewritten by every chunk.
            plan.ok_size = len(todo)
        if exists:
            answers.resolve_existing(ctx.client, org_id, exists, require_secret=require_secret)
    except errors.RateLimitedError as exc:
        ctx.budget.throttled(exc.retry_after)
        plan.error = str(exc)
        plan.delay = retry_delay(ctx.settings, claim.attempts, exc.retry_after)
        plan.reconcile_next = plan.reconcile_next or claim.needs_reconcile
    except errors.TransientError as exc:
        plan.error = str(exc)
        plan.delay = retry_delay(ctx.settings, claim.attempts, exc.retry_after)
        # A gateway 5xx may come after the platform did the work: harmless for rows with a
        # deviceKey (a resend finds them), not for rows whose key EnOS generates.
        keyless = any(item.key_source == KeySource.PLATFORM for item in todo)
        sent = bool(answers.sent) and exc.sent
        plan.reconcile_next = (claim.needs_reconcile and not answers.sent) or (sent and keyless)
    except errors.AmbiguousError as exc:
        plan.error = str(exc)
        # EnOS's reads lag its writes by about two seconds: wait at least that long.
        plan.delay = max(
            ctx.settings.reconcile_delay_s, retry_delay(ctx.settings, claim.attempts, None)
        )
        plan.reconcile_next = True
    except errors.InvalidArgumentsError as exc:
        if len(todo) > 1:
            half = (len(todo) + 1) // 2
            plan.split = [todo[:half], todo[half:]]
            plan.refused_size = len(todo)
        else:
            answers.fail_single(todo[0], str(exc))
    except errors.ConfigurationError as exc:
        plan.error = answers.job_error = (
            no_public_key_message(exc.message) if exc.code == 11858 else str(exc)
        )
    except errors.PermanentError as exc:
        plan.error = answers.job_error = f"EnOS refused the import: {exc}"
    if answers.last_error and plan.delay is None:
        plan.error = answers.last_error
        plan.delay = retry_delay(ctx.settings, claim.attempts, None)


def _commit(
    session: Session,
    settings: Settings,
    claim: Claim,
    job_status: str,
    items: list[PendingItem],
    plan: _Plan,
) -> str | None:
    answers = plan.answers
    # Lock the chunk first: from here on, this attempt either owns the chunk or writes nothing.
    if not chunks.fenced(session, claim, lease_owner=CHUNKS.c.lease_owner):
        return None
    # The job's state now, not at the claim: it may have failed or been cancelled meanwhile.
    # (FOR SHARE: a concurrent fail_job waits for this commit, then settles what is left.)
    job_now = session.execute(
        select(JOBS.c.status, JOBS.c.last_error)
        .where(JOBS.c.id == claim.job_id)
        .with_for_update(read=True)
    ).one()
    job_status = job_now.status
    rows = []
    moved = {item.id for piece in plan.split for item in piece}
    remaining = [i for i in items if i.id not in answers.outcomes and i.id not in moved]
    for item in items:
        outcome = answers.outcomes.get(item.id)
        attempts = item.attempts + (1 if item.id in answers.sent else 0)
        if outcome is None:
            if item.id in answers.sent:
                rows.append(_row(item.id, ItemStatus.PENDING, attempts, message=plan.error))
            continue
        rows.append(
            {
                "item_id": item.id,
                "status": outcome.status,
                "asset_id": outcome.asset_id,
                "error_code": outcome.error_code,
                "error_message": outcome.error_message,
                "attempts": attempts,
                "retryable": outcome.retryable,
                "device_secret": outcome.device_secret,
                "session_key": outcome.session_key,
            }
        )
    update_outcomes(session, rows)

    for product_key, message in answers.full_products.items():
        session.execute(
            update(ITEMS)
            .where(
                ITEMS.c.job_id == claim.job_id,
                ITEMS.c.product_key == product_key,
                ITEMS.c.status == ItemStatus.PENDING,
            )
            .values(
                status=ItemStatus.FAILED,
                error_code=11739,
                error_message=f"not sent: {message}",
                updated_at=func.now(),
            )
        )
    remaining = [i for i in remaining if i.product_key not in answers.full_products]

    if plan.split:
        chunks.split(session, claim.job_id, [[i.id for i in piece] for piece in plan.split])
    if plan.ok_size is not None or plan.refused_size is not None:
        org_id = session.execute(
            select(JOBS.c.org_id).where(JOBS.c.id == claim.job_id)
        ).scalar_one()
        batch_limits.record(session, org_id, plan.ok_size, plan.refused_size)

    done: dict[str, Any] = {
        "status": ChunkStatus.DONE,
        "lease_expires_at": None,
        "needs_reconcile": False,
        "last_error": plan.error,
    }
    if answers.job_error:
        jobs.fail_job(session, claim.job_id, answers.job_error)
        chunks.fenced(session, claim, **done)
        return ChunkStatus.DONE
    unknown = plan.reconcile_next or claim.needs_reconcile
    if job_status in (JobStatus.CANCELLING, JobStatus.CANCELLED) and remaining:
        remaining = _review_keyless(session, remaining, unknown)
        _settle(session, remaining, ItemStatus.CANCELLED, "cancelled before it was sent", True)
        chunks.fenced(session, claim, **{**done, "status": ChunkStatus.CANCELLED})
        return ChunkStatus.CANCELLED
    if job_status == JobStatus.FAILED and remaining:
        remaining = _review_keyless(session, remaining, unknown)
        _settle(session, remaining, ItemStatus.FAILED, job_now.last_error or "the job failed", True)
    if not remaining or job_status != JobStatus.RUNNING:
        chunks.fenced(session, claim, **done)
        return ChunkStatus.DONE
    age = claim.now - claim.first_attempt_at
    if claim.attempts >= settings.max_attempts or age >= settings.max_age_s:
        message = f"gave up after {claim.attempts} attempts over {age:.0f} s: {plan.error}"
        remaining = _review_keyless(session, remaining, unknown)
        _settle(session, remaining, ItemStatus.FAILED, message, True)
        chunks.fenced(session, claim, **{**done, "last_error": message})
        return ChunkStatus.DONE
    chunks.fenced(
        session,
        claim,
        status=ChunkStatus.PENDING,
        # Counted from now, not from the claim: the call's own time is no part of the wait.
        next_attempt_at=db_epoch() + (plan.delay or 0.0),
        lease_expires_at=None,
        published_at=None,
        needs_reconcile=plan.reconcile_next,
        last_error=plan.error,
    )
    return ChunkStatus.PENDING


def _review_keyless(session: Session, items: list[PendingItem], unknown: bool) -> list[PendingItem]:
    """Rows whose key EnOS generates, when the chunk's last answer was lost, go to ``review``
    rather than ``failed``/``cancelled`` (which ``retry`` would send again); returns the rest."""
    if not unknown:
        return items
    keyless = [i for i in items if i.key_source == KeySource.PLATFORM]
    if keyless:
        _settle(session, keyless, ItemStatus.REVIEW, NO_KEY_MESSAGE, False)
    return [i for i in items if i.key_source != KeySource.PLATFORM]


def _row(item_id: int, status: str, attempts: int, message: str | None) -> dict[str, Any]:
    return {
        "item_id": item_id,
        "status": status,
        "asset_id": None,
        "error_code": None,
        "error_message": message,
        "attempts": attempts,
        "retryable": False,
        "device_secret": None,
        "session_key": None,
    }


def _settle(
    session: Session, items: list[PendingItem], status: str, message: str, retryable: bool
) -> None:
    ids = [item.id for item in items]
    session.execute(
        update(ITEMS)
        .where(ITEMS.c.id.in_(ids), ITEMS.c.status == ItemStatus.PENDING)
        .values(status=status, error_message=message, retryable=retryable, updated_at=func.now())
    )
