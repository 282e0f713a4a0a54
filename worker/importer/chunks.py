"""Chunks: claimed with a lease and a fencing token, published in a bounded window.

The database is the queue; a Celery message only says "look at chunk 42". A delivery that finds
nothing to claim (a duplicate, a late copy, a chunk not due yet) does nothing. The sweeper and the
end of every chunk publish the next due chunks of a job, at most ``window`` at a time, so that a
lost message delays a chunk but never loses it and the broker never holds a job's whole plan.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import Double, Integer, String, and_, bindparam, func, or_, select, update

from worker.db.bulk import chunk_rows
from worker.db.clock import db_epoch
from worker.db.models import CHUNKS, ITEMS, JOBS, ChunkStatus, JobStatus
from worker.db.session import Session


@dataclass(frozen=True, slots=True)
class Claim:
    chunk_id: int
    job_id: str
    seq: int
    token: int
    attempts: int
    needs_reconcile: bool
    first_attempt_at: float
    now: float
    last_error: str | None = None


@dataclass(slots=True)  # not frozen: 1,000 are made per chunk, and frozen ones cost twice as much
class PendingItem:
    id: int
    line: int
    product_key: str
    device_key: str | None
    key_source: str
    payload: bytes  # the CreateOption as the UTF-8 JSON it is sent as
    attempts: int


# The statements every chunk runs are built once: making a statement's Python form and its cache
# key cost the worker more than the database's own work on it.
def _claim_statement() -> Any:
    now = db_epoch()
    return (
        update(CHUNKS)
        .where(
            CHUNKS.c.id == bindparam("p_chunk_id"),
            or_(
                and_(CHUNKS.c.status == ChunkStatus.PENDING, CHUNKS.c.next_attempt_at <= now),
                and_(CHUNKS.c.status == ChunkStatus.IN_FLIGHT, CHUNKS.c.lease_expires_at < now),
            ),
        )
        .values(
            status=ChunkStatus.IN_FLIGHT,
            fencing_token=CHUNKS.c.fencing_token + 1,
            attempts=CHUNKS.c.attempts + 1,
            lease_expires_at=now + bindparam("p_lease_s", type_=Double()),
            lease_owner=bindparam("p_owner", type_=String()),
            needs_reconcile=or_(CHUNKS.c.needs_reconcile, CHUNKS.c.status == ChunkStatus.IN_FLIGHT),
            first_attempt_at=func.coalesce(CHUNKS.c.first_attempt_at, now),
        )
        .returning(
            CHUNKS.c.job_id,
            CHUNKS.c.seq,
            CHUNKS.c.fencing_token,
            CHUNKS.c.attempts,
            CHUNKS.c.needs_reconcile,
            CHUNKS.c.first_attempt_at,
            now,
            CHUNKS.c.last_error,
        )
    )


_CLAIM = _claim_statement()


def claim(session: Session, chunk_id: int, owner: str, lease_s: float) -> Claim | None:
    """Takes the chunk if it is due, or if its last holder's lease ran out; else ``None``.

    Taking over an expired lease means the earlier attempt may have reached EnOS without its
    answer being written, so the new attempt must reconcile first.
    """
    row = (
        session.connection()
        .execute(_CLAIM, {"p_chunk_id": chunk_id, "p_owner": owner, "p_lease_s": lease_s})
        .first()
    )
    if row is None:
        return None
    return Claim(chunk_id, row[0], row[1], row[2], row[3], bool(row[4]), row[5], row[6], row[7])


def pending_items(session: Session, job_id: str, seq: int) -> list[PendingItem]:
    """The chunk's pending rows, in line order."""
    return [PendingItem(*row) for row in chunk_rows(session, job_id, seq)]


def renew(session: Session, claim: Claim, lease_s: float) -> bool:
    """Extends the lease from now while ``claim`` still holds the chunk; ``False``: another
    attempt took it over (this one must not call EnOS)."""
    result = session.connection().execute(
        update(CHUNKS)
        .where(
            CHUNKS.c.id == claim.chunk_id,
            CHUNKS.c.fencing_token == claim.token,
            CHUNKS.c.status == ChunkStatus.IN_FLIGHT,
        )
        .values(lease_expires_at=db_epoch() + lease_s)
    )
    return bool(result.rowcount)


def release(session: Session, claim: Claim, maybe_sent: bool, delay_s: float) -> bool:
    """Gives the chunk back when this attempt cannot finish (its commit failed): due again after
    ``delay_s``, looking its rows up first when they may have reached EnOS."""
    values: dict[str, object] = {
        "status": ChunkStatus.PENDING,
        "lease_expires_at": None,
        "published_at": None,
        "next_attempt_at": db_epoch() + delay_s,
    }
    if maybe_sent:
        values["needs_reconcile"] = True
    return fenced(session, claim, **values)


_HOLDER = (CHUNKS.c.id == bindparam("p_chunk_id")) & (
    CHUNKS.c.fencing_token == bindparam("p_token")
)
# Locks the chunk's row while the claim holds it, changing nothing.
_LOCK = update(CHUNKS).where(_HOLDER).values(lease_owner=CHUNKS.c.lease_owner)
_CLOSE = (
    update(CHUNKS)
    .where(_HOLDER)
    .values(
        status=bindparam("p_status", type_=String()),
        lease_expires_at=None,
        needs_reconcile=False,
        last_error=bindparam("p_last_error", type_=String()),
    )
)


def lock(session: Session, claim: Claim) -> bool:
    """Locks the chunk's row while ``claim`` still holds it (``fenced`` changing nothing)."""
    result = session.connection().execute(_LOCK, _holder(claim))
    return bool(result.rowcount)


def close(session: Session, claim: Claim, status: str, last_error: str | None) -> bool:
    """Ends the chunk in ``status`` while ``claim`` still holds it (``fenced``)."""
    params = {**_holder(claim), "p_status": status, "p_last_error": last_error}
    return bool(session.connection().execute(_CLOSE, params).rowcount)


def _holder(claim: Claim) -> dict[str, Any]:
    return {"p_chunk_id": claim.chunk_id, "p_token": claim.token}


def fenced(session: Session, claim: Claim, **values: object) -> bool:
    """Updates the chunk only while ``claim`` still holds it; ``False`` means another attempt
    took the chunk over and everything this attempt wrote must be rolled back."""
    result = session.connection().execute(
        update(CHUNKS)
        .where(CHUNKS.c.id == claim.chunk_id, CHUNKS.c.fencing_token == claim.token)
        .values(**values)
    )
    return bool(result.rowcount)


def publish_due(session: Session, job_id: str, window: int, republish_after_s: float) -> list[int]:
    """Marks up to ``window`` minus the chunks already out as published; returns their ids.

    A chunk is out when it is held under a live lease, or was published recently and not yet
    taken. Due chunks never published, published long ago (the message may be lost), or whose
    holder's lease ran out are candidates, oldest first.
    """
    # One publisher of a job at a time: workers that finish chunks at the same moment would
    # otherwise count the same chunks out and publish the same next chunk twice (a duplicate
    # delivery: harmless, but a process's time). PostgreSQL: the job's row lock, held to the
    # end of the transaction; SQLite has no row locks and needs none, its writers take turns.
    connection = session.connection()
    job = connection.execute(_PUBLISHER, {"p_job_id": job_id}).first()
    if job is None or job.status not in (JobStatus.RUNNING, JobStatus.CANCELLING):
        return []  # a failed or finished job sends nothing more
    params = {"p_job_id": job_id, "p_org_id": job.org_id, "p_republish_s": republish_after_s}
    active, out = connection.execute(_ACTIVE_AND_OUT, params).one()
    room = fair_share(window, active) - int(out)
    if room <= 0:
        return []
    marked = connection.execute(_MARK_PUBLISHED, {**params, "p_room": room}).all()
    # RETURNING keeps no order: the oldest chunks go first.
    return [chunk_id for chunk_id, _ in sorted(marked, key=lambda row: row[1])]


def _publish_statements() -> tuple[Any, Any, Any]:
    """``publish_due``'s three statements: the job's lock, the counts, the chunks marked."""
    job_id = bindparam("p_job_id", type_=String())
    republish_s: Any = bindparam("p_republish_s", type_=Double())
    now = db_epoch()
    publisher = select(JOBS.c.status, JOBS.c.org_id).where(JOBS.c.id == job_id).with_for_update()
    counts = select(
        _active_jobs(bindparam("p_org_id", type_=String())), _out(job_id, now, republish_s)
    )
    fresh = CHUNKS.c.published_at >= now - republish_s
    candidates = (
        select(CHUNKS.c.id)
        .where(
            CHUNKS.c.job_id == job_id,
            or_(
                and_(
                    CHUNKS.c.status == ChunkStatus.PENDING,
                    CHUNKS.c.next_attempt_at <= now,
                    or_(CHUNKS.c.published_at.is_(None), ~fresh),
                ),
                and_(CHUNKS.c.status == ChunkStatus.IN_FLIGHT, CHUNKS.c.lease_expires_at < now),
            ),
        )
        .order_by(CHUNKS.c.seq)
        .limit(bindparam("p_room", type_=Integer()))
    )
    mark = (
        update(CHUNKS)
        .where(CHUNKS.c.id.in_(candidates.scalar_subquery()))
        .values(published_at=now)
        .returning(CHUNKS.c.id, CHUNKS.c.seq)
    )
    return publisher, counts, mark


def _count(table: Any, *conditions: Any) -> Any:
    """How many rows of ``table`` meet ``conditions``, as a scalar subquery (so that several
    counts are read in one statement)."""
    return select(func.count()).select_from(table).where(*conditions).scalar_subquery()


def _out(job_id: Any, now: Any, republish_after_s: Any) -> Any:
    """How many of the job's chunks are out: held under a live lease, or published lately and
    not yet taken."""
    fresh = CHUNKS.c.published_at >= now - republish_after_s
    return _count(
        CHUNKS,
        CHUNKS.c.job_id == job_id,
        or_(
            and_(CHUNKS.c.status == ChunkStatus.IN_FLIGHT, CHUNKS.c.lease_expires_at >= now),
            and_(CHUNKS.c.status == ChunkStatus.PENDING, CHUNKS.c.published_at.is_not(None), fresh),
        ),
    )


def _active_jobs(org_id: Any) -> Any:
    """How many jobs of the org are sending."""
    return _count(
        JOBS, JOBS.c.org_id == org_id, JOBS.c.status.in_((JobStatus.RUNNING, JobStatus.CANCELLING))
    )


_PUBLISHER, _ACTIVE_AND_OUT, _MARK_PUBLISHED = _publish_statements()


def fair_share(window: int, active: int) -> int:
    """The part of the window one job of the org may have out: jobs of one org share its rate
    budget, so a small job submitted beside a big one waits behind at most its share of the big
    one's messages, not the whole window."""
    return max(1, window // max(1, int(active)))


def open_chunks(job_id: Any) -> Any:
    """How many of the job's chunks are pending or in flight (a scalar subquery)."""
    return _count(
        CHUNKS,
        CHUNKS.c.job_id == job_id,
        CHUNKS.c.status.in_((ChunkStatus.PENDING, ChunkStatus.IN_FLIGHT)),
    )


def next_seq(session: Session, job_id: str) -> int:
    """The job's next free chunk seq. The job's row is locked to the end of the transaction, so
    that two chunks split at the same moment never take the same seq (SQLite's writers take
    turns and need no lock)."""
    session.connection().execute(select(JOBS.c.id).where(JOBS.c.id == job_id).with_for_update())
    top = (
        session.connection()
        .execute(select(func.max(CHUNKS.c.seq)).where(CHUNKS.c.job_id == job_id))
        .scalar_one()
    )
    return int(top) + 1 if top is not None else 0


def split(session: Session, job_id: str, pieces: list[list[int]]) -> None:
    """Moves each piece (item ids) of a chunk's rows into a chunk of its own, due now."""
    seq = next_seq(session, job_id)
    for offset, piece in enumerate(pieces):
        session.connection().execute(
            update(ITEMS).where(ITEMS.c.id.in_(piece)).values(chunk_seq=seq + offset)
        )
        session.connection().execute(
            CHUNKS.insert().values(
                job_id=job_id,
                seq=seq + offset,
                size=len(piece),
                status=ChunkStatus.PENDING,
                attempts=0,
                fencing_token=0,
                next_attempt_at=0.0,
                needs_reconcile=False,
            )
        )
