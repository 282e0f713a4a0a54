"""When a row may become final without an answer of its own: the one rule, written once.

**No row becomes final while its device may exist on EnOS.** A row may exist when it was part
of a call whose answer did not say it was not created: a lost answer (timeout, reset, a worker
killed mid-call, whose chunk then ``needs_reconcile``), a gateway 5xx after the request left, or
a chunk still in flight. Such a row is settled only by its own chunk, after looking its deviceKey
up at least ``reconcile_delay_s`` after the call; a row EnOS generates the key for cannot be
looked up and goes to ``review``.

Every other way a row becomes final without a call's answer goes through here: the job failing
as a whole, a cancel, a product that is full, a chunk out of attempts. Each applies directly only
to rows that were never part of a call (``attempts == 0`` in a chunk that is neither in flight
nor waiting to reconcile); the rest are left to their chunk, which looks them up first.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from sqlalchemy import ColumnElement, and_, exists, func, select, update

from worker.db.models import CHUNKS, ITEMS, ChunkStatus, ItemStatus, JobStatus, KeySource
from worker.db.session import Session
from worker.importer.chunks import Claim, PendingItem
from worker.settings import Settings

NO_KEY_MESSAGE = (
    "the answer to an earlier attempt was lost and EnOS generates this row's deviceKey, so it "
    "cannot be told whether the device was created: check EnOS before sending it again"
)
CANCELLED_MESSAGE = "cancelled before it was sent"
# Seqs per statement when a job's chunks are settled in bulk (bounded IN lists).
_BATCH = 500


@dataclass(frozen=True, slots=True)
class Stop:
    """Why a chunk sends nothing more: its rows that cannot exist end in ``status``."""

    status: str
    message: str


def stop_for(job: Any, claim: Claim, settings: Settings) -> Stop | None:
    """Whether this claim only settles its rows (``None``: it may send).

    ``job`` has ``status``, ``failure`` and ``last_error``. A chunk past its attempts or its age
    gets one more claim after its last send, to look up what that send may have created.
    """
    if job.failure or job.status == JobStatus.FAILED:
        return Stop(ItemStatus.FAILED, job.failure or job.last_error or "the job failed")
    if job.status in (JobStatus.CANCELLING, JobStatus.CANCELLED):
        return Stop(ItemStatus.CANCELLED, CANCELLED_MESSAGE)
    if job.status != JobStatus.RUNNING:
        return Stop(ItemStatus.FAILED, job.last_error or f"the job is {job.status}")
    age = claim.now - claim.first_attempt_at
    if claim.attempts > settings.max_attempts or age >= settings.max_age_s:
        return Stop(ItemStatus.FAILED, give_up_message(claim.attempts - 1, age, claim.last_error))
    return None


def give_up_message(attempts: int, age_s: float, error: str | None) -> str:
    return f"gave up after {attempts} attempts over {age_s:.0f} s: {error or 'no answer'}"


def out_of_attempts(claim: Claim, settings: Settings) -> bool:
    """After this claim's send, no further send is allowed."""
    age = claim.now - claim.first_attempt_at
    return claim.attempts >= settings.max_attempts or age >= settings.max_age_s


def may_exist(item: PendingItem, claim: Claim) -> bool:
    """An earlier call may have created this row's device: its chunk's last answer was lost,
    or it was sent before (a 5xx may come after the work was done). A row whose key EnOS
    generates is marked by its chunk alone: every unclear answer for it sets
    ``needs_reconcile``, and its other answers (429, 11714) said it was not created."""
    if claim.needs_reconcile:
        return True
    return item.attempts > 0 and item.key_source != KeySource.PLATFORM


def not_sent_message(message: str) -> str:
    return f"not sent: {message}"


def settle_pending(
    session: Session,
    where: ColumnElement[bool],
    status: str,
    message: str,
    retryable: bool,
    error_code: int | None = None,
) -> int:
    """Ends the rows matched by ``where`` that are still pending; returns how many.

    Callers pass only rows that cannot exist on EnOS (see the module's rule).
    """
    result = session.connection().execute(
        update(ITEMS)
        .where(where, ITEMS.c.status == ItemStatus.PENDING)
        .values(
            status=status,
            error_code=error_code,
            error_message=message,
            retryable=retryable,
            updated_at=func.now(),
        )
    )
    return int(result.rowcount or 0)


def settle_items(
    session: Session,
    items: list[PendingItem],
    status: str,
    message: str,
    retryable: bool,
    error_code: int | None = None,
) -> None:
    if items:
        ids = [item.id for item in items]
        settle_pending(session, ITEMS.c.id.in_(ids), status, message, retryable, error_code)


def settle_unsent(session: Session, job_id: str, stop: Stop, close_as: str) -> int:
    """Ends, with ``stop``, the job's rows that were never part of a call: those of chunks that
    are pending, not waiting to reconcile, and that the row never left in. Their chunks close
    as ``close_as`` once they have no pending row; the others stay open for their own claim.

    The chunks are locked first, so that a worker claiming one at this moment reads its rows
    after this commit and finds them settled.
    """
    seqs = [
        row[0]
        for row in session.connection().execute(
            select(CHUNKS.c.seq)
            .where(
                CHUNKS.c.job_id == job_id,
                CHUNKS.c.status == ChunkStatus.PENDING,
                CHUNKS.c.needs_reconcile.is_(False),
            )
            .with_for_update()
        )
    ]
    settled = 0
    for part in _parts(seqs):
        settled += settle_pending(
            session,
            and_(ITEMS.c.job_id == job_id, ITEMS.c.chunk_seq.in_(part), ITEMS.c.attempts == 0),
            stop.status,
            stop.message,
            retryable=True,
        )
        still_pending = exists().where(
            ITEMS.c.job_id == CHUNKS.c.job_id,
            ITEMS.c.chunk_seq == CHUNKS.c.seq,
            ITEMS.c.status == ItemStatus.PENDING,
        )
        session.connection().execute(
            update(CHUNKS)
            .where(CHUNKS.c.job_id == job_id, CHUNKS.c.seq.in_(part), ~still_pending)
            .values(status=close_as, last_error=stop.message, lease_expires_at=None)
        )
    return settled


def _parts(seqs: list[int]) -> Iterator[list[int]]:
    for start in range(0, len(seqs), _BATCH):
        yield seqs[start : start + _BATCH]
