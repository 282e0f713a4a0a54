"""Tables of the import: a job is split into chunks (one batchCreate each) of items (one device).

Times that the service reasons about (leases, retry schedule) are epoch seconds read from the
database's own clock (see :mod:`worker.db.clock`), so that workers on hosts with drifting clocks
agree. Times shown to people are timestamps.
"""

from __future__ import annotations

import enum
from datetime import datetime
from typing import Any, cast

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    Double,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    func,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

# SQLite only auto-increments INTEGER PRIMARY KEY; PostgreSQL gets a BIGINT identity.
BigId = BigInteger().with_variant(Integer(), "sqlite")


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)


class JobStatus(enum.StrEnum):
    QUEUED = "queued"
    VALIDATING = "validating"
    RUNNING = "running"
    COMPLETED = "completed"
    COMPLETED_WITH_ERRORS = "completed_with_errors"
    FAILED = "failed"
    CANCELLING = "cancelling"
    CANCELLED = "cancelled"


FINAL_JOB_STATES = frozenset(
    {JobStatus.COMPLETED, JobStatus.COMPLETED_WITH_ERRORS, JobStatus.FAILED, JobStatus.CANCELLED}
)


class ItemStatus(enum.StrEnum):
    PENDING = "pending"
    INVALID = "invalid"
    CREATED = "created"
    ADOPTED = "adopted"
    CONFLICT = "conflict"
    FAILED = "failed"
    REVIEW = "review"
    CANCELLED = "cancelled"
    # A created row whose device a rollback job deleted (or found already gone).
    ROLLED_BACK = "rolled_back"
    # The rows of a rollback job: one per device to delete.
    DELETED = "deleted"
    NOT_FOUND = "not_found"


ROLLBACK_STATES = frozenset({ItemStatus.ROLLED_BACK, ItemStatus.DELETED, ItemStatus.NOT_FOUND})
SUCCESS_STATES = frozenset(
    {ItemStatus.CREATED, ItemStatus.ADOPTED, ItemStatus.DELETED, ItemStatus.NOT_FOUND}
)


class ChunkStatus(enum.StrEnum):
    PENDING = "pending"  # waiting for next_attempt_at
    IN_FLIGHT = "in_flight"  # claimed by a worker until lease_expires_at
    DONE = "done"  # every item is final, or moved to the chunks it was split into
    CANCELLED = "cancelled"


class KeySource(enum.StrEnum):
    FILE = "file"  # the operator's deviceKey
    DERIVED = "derived"  # derived from org, file content hash and line: stable across re-imports
    PLATFORM = "platform"  # left to EnOS to generate


class Job(Base):
    __tablename__ = "import_jobs"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    status: Mapped[str] = mapped_column(String(24), default=JobStatus.QUEUED)
    org_id: Mapped[str] = mapped_column(String(128))
    source: Mapped[str] = mapped_column(Text)
    source_sha256: Mapped[str | None] = mapped_column(String(64))
    options: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    columns: Mapped[list[str] | None] = mapped_column(JSON)
    total: Mapped[int] = mapped_column(Integer, default=0)
    last_error: Mapped[str | None] = mapped_column(Text)
    # Set when the job fails as a whole: nothing more is sent, but it stays open until every
    # chunk that may have created devices has looked its rows up (see importer/settle.py).
    failure: Mapped[str | None] = mapped_column(Text)
    # Fencing for intake: a second delivery of the same submit finds the intake claimed.
    intake_token: Mapped[int] = mapped_column(Integer, default=0)
    intake_lease_until: Mapped[float | None] = mapped_column(Double)
    intake_attempts: Mapped[int] = mapped_column(Integer, default=0)
    # The intake commits as it reads: the last line it stored, where a new intake resumes. The
    # intake is open while ``intake_lease_until`` is set, whatever the job's status.
    intake_line: Mapped[int | None] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    started_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))

    __table_args__ = (Index("ix_import_jobs_status", "status"),)


class Chunk(Base):
    __tablename__ = "import_chunks"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    job_id: Mapped[str] = mapped_column(ForeignKey("import_jobs.id", ondelete="CASCADE"))
    seq: Mapped[int] = mapped_column(Integer)
    status: Mapped[str] = mapped_column(String(16), default=ChunkStatus.PENDING)
    size: Mapped[int] = mapped_column(Integer)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    fencing_token: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[float] = mapped_column(Double, default=0.0)
    lease_expires_at: Mapped[float | None] = mapped_column(Double)
    lease_owner: Mapped[str | None] = mapped_column(String(128))
    # Set when an attempt may have reached EnOS without its answer being recorded: the next
    # attempt first looks its deviceKeys up.
    needs_reconcile: Mapped[bool] = mapped_column(Boolean, default=False)
    first_attempt_at: Mapped[float | None] = mapped_column(Double)
    last_error: Mapped[str | None] = mapped_column(Text)
    published_at: Mapped[float | None] = mapped_column(Double)

    __table_args__ = (
        Index("uq_import_chunks_job_seq", "job_id", "seq", unique=True),
        Index("ix_import_chunks_job_status", "job_id", "status"),
        Index("ix_import_chunks_status_due", "status", "next_attempt_at"),
    )


class Item(Base):
    __tablename__ = "import_items"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    # No foreign key: checking one costs the database a lookup per row written, and rows are
    # only inserted for a job held locked (the intake) or just created (a rollback's plan); a
    # trigger deletes a job's rows with it (migration 0006).
    job_id: Mapped[str] = mapped_column(String(36))
    chunk_seq: Mapped[int | None] = mapped_column(Integer)
    line_no: Mapped[int] = mapped_column(Integer)
    product_key: Mapped[str | None] = mapped_column(String(128))
    device_key: Mapped[str | None] = mapped_column(String(64))
    key_source: Mapped[str] = mapped_column(String(8), default=KeySource.FILE)
    # The CreateOption exactly as it will be sent (JSON text: joined into request bodies as is).
    payload: Mapped[str | None] = mapped_column(Text)
    # The input row's own cells, by column name (the results export starts with them).
    cells: Mapped[dict[str, Any]] = mapped_column(JSON)
    status: Mapped[str] = mapped_column(String(16))
    asset_id: Mapped[str | None] = mapped_column(String(64))
    error_code: Mapped[int | None] = mapped_column(Integer)
    error_message: Mapped[str | None] = mapped_column(Text)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    # A failed row that ``enos-import retry`` sends again (it gave up on transient errors, its job
    # failed as a whole, or it was never sent); validation errors and refusals are not retried.
    retryable: Mapped[bool] = mapped_column(Boolean, default=False)
    # With requireSecret: the ciphertexts exactly as EnOS returned them, never decrypted here.
    device_secret: Mapped[str | None] = mapped_column(Text)
    session_key: Mapped[str | None] = mapped_column(Text)
    updated_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now(), onupdate=func.now()
    )

    __table_args__ = (
        Index("uq_import_items_job_line", "job_id", "line_no", unique=True),
        Index("ix_import_items_job_chunk", "job_id", "chunk_seq"),
        # Room on each page for a row's outcome, written in place (migration 0005).
        {"postgresql_with": {"fillfactor": 50}},
    )


class OrgBatchLimit(Base):
    """What EnOS has shown about an org's batch limit: the largest batch that passed, and the
    smallest refused with 99400, so later chunks are split before they are sent."""

    __tablename__ = "import_org_batch_limits"

    org_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    largest_ok: Mapped[int] = mapped_column(Integer, default=0)
    smallest_refused: Mapped[int | None] = mapped_column(Integer)


class FullProduct(Base):
    """A product of a job that EnOS said is full (11739): its rows are no longer sent; each chunk
    settles its own rows of it, after a look-up for those an earlier call may have created."""

    __tablename__ = "import_full_products"

    job_id: Mapped[str] = mapped_column(
        ForeignKey("import_jobs.id", ondelete="CASCADE"), primary_key=True
    )
    product_key: Mapped[str] = mapped_column(String(128), primary_key=True)
    message: Mapped[str] = mapped_column(Text)


class ServiceBeat(Base):
    """When periodic duties last ran (the sweeper), so ``status`` can warn when beat is missing."""

    __tablename__ = "import_service_beats"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    last_run_at: Mapped[float] = mapped_column(Double)


class JobEvent(Base):
    """The outbox of completion events: written in the transaction that gives a job its final
    state, published after commit, and published again by the sweeper until marked."""

    __tablename__ = "import_job_events"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    job_id: Mapped[str] = mapped_column(ForeignKey("import_jobs.id", ondelete="CASCADE"))
    task: Mapped[str] = mapped_column(String(200))
    queue: Mapped[str] = mapped_column(String(200))
    kwargs: Mapped[dict[str, Any]] = mapped_column(JSON)
    created_at: Mapped[float] = mapped_column(Double)
    published_at: Mapped[float | None] = mapped_column(Double)

    __table_args__ = (Index("ix_import_job_events_published_at", "published_at"),)


class InboxFile(Base):
    """A file of the inbox that was taken (or refused): claimed by (org, content hash) in the
    transaction that creates its job, so that one content makes one job."""

    __tablename__ = "import_inbox_files"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    org_id: Mapped[str] = mapped_column(String(128))
    name: Mapped[str] = mapped_column(Text)
    content_sha256: Mapped[str | None] = mapped_column(String(64))
    size: Mapped[int] = mapped_column(BigInteger, default=0)
    job_id: Mapped[str | None] = mapped_column(ForeignKey("import_jobs.id", ondelete="SET NULL"))
    state: Mapped[str] = mapped_column(String(16))
    note: Mapped[str | None] = mapped_column(Text)
    moved_to: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())

    __table_args__ = (
        Index("uq_import_inbox_files_org_sha", "org_id", "content_sha256", unique=True),
        Index("ix_import_inbox_files_state", "state"),
    )


class InboxSighting(Base):
    """The last look at a file still in the inbox: it is taken once its size and mtime stayed
    the same across two looks at least INBOX_SETTLE_S apart."""

    __tablename__ = "import_inbox_sightings"

    org_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    name: Mapped[str] = mapped_column(String(1024), primary_key=True)
    size: Mapped[int] = mapped_column(BigInteger)
    mtime_ns: Mapped[int] = mapped_column(BigInteger)
    seen_at: Mapped[float] = mapped_column(Double)


def _table(model: type[Base]) -> Table:
    return cast(Table, model.__table__)


# The tables, for Core statements on the hot paths (bulk writes, claims).
JOBS = _table(Job)
CHUNKS = _table(Chunk)
ITEMS = _table(Item)
FULL_PRODUCTS = _table(FullProduct)
EVENTS = _table(JobEvent)
INBOX_FILES = _table(InboxFile)
SIGHTINGS = _table(InboxSighting)
BATCH_LIMITS = _table(OrgBatchLimit)
