"""Tables of the import: a job is split into chunks (one batchCreate each) of items (one device).

Plain SQLAlchemy Core tables: every statement of the service is a Core one, and a command that
only starts a job does not pay for importing the ORM.

Times that the service reasons about (leases, retry schedule) are epoch seconds read from the
database's own clock (see :mod:`worker.db.clock`), so that workers on hosts with drifting clocks
agree. Times shown to people are timestamps.
"""

from __future__ import annotations

import enum

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Column,
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

NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

# SQLite only auto-increments INTEGER PRIMARY KEY; PostgreSQL gets a BIGINT identity.
BigId = BigInteger().with_variant(Integer(), "sqlite")


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


METADATA = MetaData(naming_convention=NAMING)


JOBS = Table(
    "import_jobs",
    METADATA,
    Column("id", String(36), primary_key=True),
    Column("status", String(24), default=JobStatus.QUEUED, nullable=False),
    Column("org_id", String(128), nullable=False),
    Column("source", Text, nullable=False),
    Column("source_sha256", String(64)),
    Column("options", JSON, default=dict, nullable=False),
    Column("columns", JSON),
    Column("total", Integer, default=0, nullable=False),
    Column("last_error", Text),
    # Set when the job fails as a whole: nothing more is sent, but it stays open until every
    # chunk that may have created devices has looked its rows up (see importer/settle.py).
    Column("failure", Text),
    # Fencing for intake: a second delivery of the same submit finds the intake claimed.
    Column("intake_token", Integer, default=0, nullable=False),
    Column("intake_lease_until", Double),
    Column("intake_attempts", Integer, default=0, nullable=False),
    # The intake commits as it reads: the last line it stored, where a new intake resumes. The
    # intake is open while ``intake_lease_until`` is set, whatever the job's status.
    Column("intake_line", Integer),
    Column("created_at", DateTime(timezone=True), server_default=func.now(), nullable=False),
    Column("started_at", DateTime(timezone=True)),
    Column("finished_at", DateTime(timezone=True)),
    Index("ix_import_jobs_status", "status"),
)

CHUNKS = Table(
    "import_chunks",
    METADATA,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("job_id", ForeignKey("import_jobs.id", ondelete="CASCADE"), nullable=False),
    Column("seq", Integer, nullable=False),
    Column("status", String(16), default=ChunkStatus.PENDING, nullable=False),
    Column("size", Integer, nullable=False),
    Column("attempts", Integer, default=0, nullable=False),
    Column("fencing_token", Integer, default=0, nullable=False),
    Column("next_attempt_at", Double, default=0.0, nullable=False),
    Column("lease_expires_at", Double),
    Column("lease_owner", String(128)),
    # Set when an attempt may have reached EnOS without its answer being recorded: the next
    # attempt first looks its deviceKeys up.
    Column("needs_reconcile", Boolean, default=False, nullable=False),
    Column("first_attempt_at", Double),
    Column("last_error", Text),
    Column("published_at", Double),
    Index("uq_import_chunks_job_seq", "job_id", "seq", unique=True),
    Index("ix_import_chunks_job_status", "job_id", "status"),
    Index("ix_import_chunks_status_due", "status", "next_attempt_at"),
)

ITEMS = Table(
    "import_items",
    METADATA,
    Column("id", BigId, primary_key=True, autoincrement=True),
    # No foreign key: checking one costs the database a lookup per row written, and rows are
    # only inserted for a job held locked (the intake) or just created (a rollback's plan); a
    # trigger deletes a job's rows with it (migration 0006).
    Column("job_id", String(36), nullable=False),
    Column("chunk_seq", Integer),
    Column("line_no", Integer, nullable=False),
    Column("product_key", String(128)),
    Column("device_key", String(64)),
    Column("key_source", String(8), default=KeySource.FILE, nullable=False),
    # The CreateOption exactly as it will be sent (JSON text: joined into request bodies as is).
    Column("payload", Text),
    # The input row's own cells (the results export starts with them): a JSON array in the
    # order of its job's columns, or an object by column name (worker.importer.cells).
    Column("cells", JSON, nullable=False),
    Column("status", String(16), nullable=False),
    Column("asset_id", String(64)),
    Column("error_code", Integer),
    Column("error_message", Text),
    Column("attempts", Integer, default=0, nullable=False),
    # A failed row that ``enos-import retry`` sends again (it gave up on transient errors, its job
    # failed as a whole, or it was never sent); validation errors and refusals are not retried.
    Column("retryable", Boolean, default=False, nullable=False),
    # With requireSecret: the ciphertexts exactly as EnOS returned them, never decrypted here.
    Column("device_secret", Text),
    Column("session_key", Text),
    Column(
        "updated_at",
        DateTime(timezone=True),
        server_default=func.now(),
        onupdate=func.now(),
        nullable=False,
    ),
    Index("uq_import_items_job_line", "job_id", "line_no", unique=True),
    Index("ix_import_items_job_chunk", "job_id", "chunk_seq"),
    # Room on each page for a row's outcome, written in place (migration 0005).
    postgresql_with={"fillfactor": 50},
)

# What EnOS has shown about an org's batch limit: the largest batch that passed, and the
# smallest refused with 99400, so later chunks are split before they are sent.
BATCH_LIMITS = Table(
    "import_org_batch_limits",
    METADATA,
    Column("org_id", String(128), primary_key=True),
    Column("largest_ok", Integer, default=0, nullable=False),
    Column("smallest_refused", Integer),
)

# A product of a job that EnOS said is full (11739): its rows are no longer sent; each chunk
# settles its own rows of it, after a look-up for those an earlier call may have created.
FULL_PRODUCTS = Table(
    "import_full_products",
    METADATA,
    Column("job_id", ForeignKey("import_jobs.id", ondelete="CASCADE"), primary_key=True),
    Column("product_key", String(128), primary_key=True),
    Column("message", Text, nullable=False),
)

# When periodic duties last ran (the sweeper), so ``status`` can warn when beat is missing.
SERVICE_BEATS = Table(
    "import_service_beats",
    METADATA,
    Column("name", String(64), primary_key=True),
    Column("last_run_at", Double, nullable=False),
)

# The outbox of completion events: written in the transaction that gives a job its final
# state, published after commit, and published again by the sweeper until marked.
EVENTS = Table(
    "import_job_events",
    METADATA,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("job_id", ForeignKey("import_jobs.id", ondelete="CASCADE"), nullable=False),
    Column("task", String(200), nullable=False),
    Column("queue", String(200), nullable=False),
    Column("kwargs", JSON, nullable=False),
    Column("created_at", Double, nullable=False),
    Column("published_at", Double),
    Index("ix_import_job_events_published_at", "published_at"),
)

# A file of the inbox that was taken (or refused): claimed by (org, content hash) in the
# transaction that creates its job, so that one content makes one job.
INBOX_FILES = Table(
    "import_inbox_files",
    METADATA,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("org_id", String(128), nullable=False),
    Column("name", Text, nullable=False),
    Column("content_sha256", String(64)),
    Column("size", BigInteger, default=0, nullable=False),
    Column("job_id", ForeignKey("import_jobs.id", ondelete="SET NULL")),
    Column("state", String(16), nullable=False),
    Column("note", Text),
    Column("moved_to", Text),
    Column("created_at", DateTime(timezone=True), server_default=func.now(), nullable=False),
    Column("updated_at", DateTime(timezone=True), server_default=func.now(), nullable=False),
    Index("uq_import_inbox_files_org_sha", "org_id", "content_sha256", unique=True),
    Index("ix_import_inbox_files_state", "state"),
)

# The last look at a file still in the inbox: it is taken once its size and mtime stayed the
# same across two looks at least INBOX_SETTLE_S apart.
SIGHTINGS = Table(
    "import_inbox_sightings",
    METADATA,
    Column("org_id", String(128), primary_key=True),
    Column("name", String(1024), primary_key=True),
    Column("size", BigInteger, nullable=False),
    Column("mtime_ns", BigInteger, nullable=False),
    Column("seen_at", Double, nullable=False),
)
