"""Deleting one chunk of a rollback job: claim it, check and delete each device, and write every
outcome with the chunk's new state in one transaction that commits only if the fencing token is
still ours (the same claim, lease and fencing as :mod:`worker.importer.send`).

The chunk's devices are looked up first (one Search Device by deviceKey) and each is deleted only
if it is still the device the import created (same assetId, deviceKey and productKey). Delete
Device has no batch form; every call, the search included, takes a slot of the shared rate budget
like a batchCreate. A chunk whose worker died is
claimed again and done again: devices already deleted are then ``not_found``, which is fine.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import orjson
from sqlalchemy import func, select, update

from worker.context import WorkerContext
from worker.db.bulk import update_outcomes
from worker.db.clock import db_epoch
from worker.db.models import ITEMS, JOBS, ChunkStatus, ItemStatus, JobStatus
from worker.db.session import Session
from worker.enos import errors
from worker.enos.models import Device
from worker.importer import chunks, jobs
from worker.importer.backoff import retry_delay
from worker.importer.chunks import Claim, PendingItem
from worker.importer.send import SendReport, Start, claim_chunk
from worker.logs import get_logger

log = get_logger(__name__)


@dataclass(slots=True)
class _Result:
    status: str
    message: str | None = None
    code: int | None = None


@dataclass
class _Attempt:
    results: dict[int, _Result] = field(default_factory=dict)
    called: set[int] = field(default_factory=set)
    error: str | None = None
    delay: float | None = None
    job_error: str | None = None


def delete_chunk(ctx: WorkerContext, chunk_id: int) -> SendReport:
    """Claims a rollback job's chunk and deletes its devices."""
    start = claim_chunk(ctx, chunk_id)
    if start is None:
        return SendReport(claimed=False)
    if not start.rollback:
        raise ValueError(f"chunk {chunk_id} belongs to an import: it creates, not deletes")
    return delete_claimed(ctx, start)


def delete_claimed(ctx: WorkerContext, start: Start) -> SendReport:
    """One attempt at a rollback job's chunk this process has claimed (``claim_chunk``)."""
    claim, items, chunk_id = start.claim, start.items, start.claim.chunk_id
    bound = log.bind(job_id=claim.job_id, chunk_id=chunk_id, attempt=claim.attempts)
    attempt = _Attempt()
    if start.job_status == JobStatus.RUNNING and items:
        _delete_all(ctx, claim, start.org_id, items, attempt)
    with ctx.db.begin() as session:
        state = _commit(session, ctx, claim, items, attempt)
        if state is None:
            bound.warning("rollback.fenced_out")
            return SendReport(claimed=True, job_id=claim.job_id)
    deleted = sum(1 for r in attempt.results.values() if r.status == ItemStatus.DELETED)
    bound.info("rollback.chunk", chunk_state=state, devices=len(items), deleted=deleted,
               error=attempt.error)  # fmt: skip
    report = SendReport(claimed=True, chunk_state=state, job_id=claim.job_id)
    with ctx.db.begin() as session:
        report.job_state = jobs.finish_if_done(session, claim.job_id)
        report.publish = chunks.publish_due(
            session, claim.job_id, ctx.settings.publish_window, ctx.settings.republish_after_s
        )
    return report


def _delete_all(
    ctx: WorkerContext, claim: Claim, org_id: str, items: list[PendingItem], attempt: _Attempt
) -> None:
    """One search for the chunk's devices, then one Delete Device per device still ours. A
    transient failure leaves its device for the next attempt and the others go on; throttling
    stops the chunk, so that every worker backs off together."""
    try:
        with ctx.budget.slot(org_id):
            _renew(ctx, claim)
            found = ctx.client.find_devices(org_id, [item.device_key or "" for item in items])
        for item in items:
            attempt.called.add(item.id)
            try:
                attempt.results[item.id] = _delete_one(ctx, claim, org_id, item, found)
            except errors.PermanentError as exc:
                attempt.results[item.id] = _Result(ItemStatus.FAILED, str(exc), exc.code)
            except errors.RateLimitedError:
                raise
            except (errors.TransientError, errors.AmbiguousError) as exc:
                # A delete whose answer was lost is settled by the next attempt's search.
                attempt.error = str(exc)
                attempt.delay = retry_delay(ctx.settings, claim.attempts, None)
    except _TakenOver:
        attempt.error = "the chunk was taken over"
    except errors.RateLimitedError as exc:
        ctx.budget.throttled(exc.retry_after, org_id)
        attempt.error = str(exc)
        attempt.delay = retry_delay(ctx.settings, claim.attempts, exc.retry_after)
    except (errors.TransientError, errors.AmbiguousError) as exc:
        attempt.error = str(exc)
        attempt.delay = retry_delay(ctx.settings, claim.attempts, None)
    except errors.EnosError as exc:  # authentication, configuration: nothing will pass
        attempt.error = attempt.job_error = f"EnOS refused the rollback: {exc}"


class _TakenOver(Exception):
    """Another attempt holds the chunk now: this one makes no more calls."""


def _renew(ctx: WorkerContext, claim: Claim) -> None:
    """The lease is renewed right before each call, as for a batchCreate, so that a call always
    ends inside the lease however long the chunk's calls take together."""
    with ctx.db.begin() as session:
        if not chunks.renew(session, claim, ctx.settings.lease_s):
            raise _TakenOver


def _delete_one(
    ctx: WorkerContext, claim: Claim, org_id: str, item: PendingItem, found: dict[str, Device]
) -> _Result:
    asset_id = _asset_id(item)
    device = found.get(item.device_key or "")
    if device is None or device.asset_id != asset_id:
        # Gone, or its deviceKey now names another device, which is not this job's to delete.
        return _Result(ItemStatus.NOT_FOUND, f"assetId {asset_id} was already gone")
    if device.product_key != item.product_key:
        return _Result(
            ItemStatus.FAILED,
            f"not deleted: assetId {asset_id} is now of productKey {device.product_key}, not "
            f"{item.product_key} as this job created it",
        )
    with ctx.budget.slot(org_id) as slot:
        _renew(ctx, claim)
        existed = ctx.client.delete_device(org_id, asset_id=asset_id)
        slot.succeeded()
    if not existed:
        return _Result(ItemStatus.NOT_FOUND, f"assetId {asset_id} was already gone")
    return _Result(ItemStatus.DELETED)


def _commit(
    session: Session, ctx: WorkerContext, claim: Claim, items: list[PendingItem], attempt: _Attempt
) -> str | None:
    if not chunks.lock(session, claim):
        return None
    job_now = session.execute(
        select(JOBS.c.status, JOBS.c.options, JOBS.c.last_error)
        .where(JOBS.c.id == claim.job_id)
        .with_for_update(read=True)
    ).one()
    rows = []
    for item in items:
        result = attempt.results.get(item.id)
        attempts = item.attempts + (1 if item.id in attempt.called else 0)
        if result is None:
            if item.id in attempt.called:
                rows.append(_outcome(item, ItemStatus.PENDING, attempts, attempt.error, None))
            continue
        rows.append(_outcome(item, result.status, attempts, result.message, result.code))
    update_outcomes(session, rows)
    _mark_originals(session, claim.job_id, str(job_now.options["of"]), items, attempt)

    done = {"status": ChunkStatus.DONE, "lease_expires_at": None, "needs_reconcile": False,
            "last_error": attempt.error}  # fmt: skip
    if attempt.job_error:
        jobs.fail_job(session, claim.job_id, attempt.job_error)
        chunks.fenced(session, claim, **done)
        return ChunkStatus.DONE
    remaining = [item.id for item in items if item.id not in attempt.results]
    if job_now.status in (JobStatus.CANCELLING, JobStatus.CANCELLED) and remaining:
        _settle(session, remaining, ItemStatus.CANCELLED, "cancelled before it was deleted")
        chunks.fenced(session, claim, **{**done, "status": ChunkStatus.CANCELLED})
        return ChunkStatus.CANCELLED
    if job_now.status == JobStatus.FAILED and remaining:
        _settle(session, remaining, ItemStatus.FAILED, job_now.last_error or "the job failed")
    if not remaining or job_now.status != JobStatus.RUNNING:
        chunks.fenced(session, claim, **done)
        return ChunkStatus.DONE
    age = claim.now - claim.first_attempt_at
    if claim.attempts >= ctx.settings.max_attempts or age >= ctx.settings.max_age_s:
        message = f"gave up after {claim.attempts} attempts over {age:.0f} s: {attempt.error}"
        _settle(session, remaining, ItemStatus.FAILED, message)
        chunks.fenced(session, claim, **{**done, "last_error": message})
        return ChunkStatus.DONE
    chunks.fenced(
        session,
        claim,
        status=ChunkStatus.PENDING,
        next_attempt_at=db_epoch() + (attempt.delay or 0.0),
        lease_expires_at=None,
        published_at=None,
        last_error=attempt.error,
    )
    return ChunkStatus.PENDING


def _mark_originals(
    session: Session, rollback_id: str, job_id: str, items: list[PendingItem], attempt: _Attempt
) -> None:
    """The import's rows whose device is gone now say so: ``rolled_back``, and by which job."""
    gone = (ItemStatus.DELETED, ItemStatus.NOT_FOUND)
    originals = [
        int(orjson.loads(item.payload)["of"])
        for item in items
        if (result := attempt.results.get(item.id)) is not None and result.status in gone
    ]
    if not originals:
        return
    session.execute(
        update(ITEMS)
        .where(
            ITEMS.c.id.in_(originals),
            ITEMS.c.job_id == job_id,
            ITEMS.c.status == ItemStatus.CREATED,
        )
        .values(
            status=ItemStatus.ROLLED_BACK,
            error_message=f"deleted from EnOS by rollback job {rollback_id}",
            updated_at=func.now(),
        )
    )


def _outcome(
    item: PendingItem, status: str, attempts: int, message: str | None, code: int | None
) -> dict[str, object]:
    return {
        "item_id": item.id,
        "status": status,
        "asset_id": _asset_id(item),
        "error_code": code,
        "error_message": message,
        "attempts": attempts,
        "retryable": status == ItemStatus.FAILED,
        "device_secret": None,
        "session_key": None,
    }


def _asset_id(item: PendingItem) -> str:
    return str(orjson.loads(item.payload)["assetId"])


def _settle(session: Session, ids: list[int], status: str, message: str) -> None:
    session.execute(
        update(ITEMS)
        .where(ITEMS.c.id.in_(ids), ITEMS.c.status == ItemStatus.PENDING)
        .values(status=status, error_message=message, retryable=True, updated_at=func.now())
    )
