"""Import jobs, chunks, items, and the status views

Revision ID: 0001
Revises:
Create Date: 2026-11-26 03:07:29.578504
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# The contract views (columns documented in the README); written out here so that this
# revision stays what it was whatever the code becomes.
IMPORT_JOB_STATUS = """
CREATE VIEW import_job_status AS
SELECT
    j.id AS job_id,
    j.status AS status,
    j.org_id AS org_id,
    j.source AS source,
    j.total AS total,
    COALESCE(c.pending, 0) AS pending,
    COALESCE(c.created, 0) AS created,
    COALESCE(c.adopted, 0) AS adopted,
    COALESCE(c.invalid, 0) AS invalid,
    COALESCE(c.failed, 0) AS failed,
    COALESCE(c.conflict, 0) AS conflict,
    COALESCE(c.review, 0) AS review,
    COALESCE(c.cancelled, 0) AS cancelled,
    j.created_at AS created_at,
    j.started_at AS started_at,
    j.finished_at AS finished_at,
    j.last_error AS last_error
FROM import_jobs AS j
LEFT JOIN (
    SELECT
        job_id,
        SUM(CASE WHEN status = 'pending' THEN 1 ELSE 0 END) AS pending,
        SUM(CASE WHEN status = 'invalid' THEN 1 ELSE 0 END) AS invalid,
        SUM(CASE WHEN status = 'created' THEN 1 ELSE 0 END) AS created,
        SUM(CASE WHEN status = 'adopted' THEN 1 ELSE 0 END) AS adopted,
        SUM(CASE WHEN status = 'conflict' THEN 1 ELSE 0 END) AS conflict,
        SUM(CASE WHEN status = 'failed' THEN 1 ELSE 0 END) AS failed,
        SUM(CASE WHEN status = 'review' THEN 1 ELSE 0 END) AS review,
        SUM(CASE WHEN status = 'cancelled' THEN 1 ELSE 0 END) AS cancelled
    FROM import_items
    GROUP BY job_id
) AS c ON c.job_id = j.id
"""

IMPORT_DEVICE_OUTCOME = """
CREATE VIEW import_device_outcome AS
SELECT
    job_id, line_no, product_key, device_key, asset_id, status, error_code, error_message,
    attempts, updated_at
FROM import_items
"""


def upgrade() -> None:
    op.create_table(
        "import_jobs",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("status", sa.String(length=24), nullable=False),
        sa.Column("org_id", sa.String(length=128), nullable=False),
        sa.Column("source", sa.Text(), nullable=False),
        sa.Column("source_sha256", sa.String(length=64), nullable=True),
        sa.Column("options", sa.JSON(), nullable=False),
        sa.Column("columns", sa.JSON(), nullable=True),
        sa.Column("total", sa.Integer(), nullable=False),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("intake_token", sa.Integer(), nullable=False),
        sa.Column("intake_lease_until", sa.Double(), nullable=True),
        sa.Column("intake_attempts", sa.Integer(), nullable=False),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("CURRENT_TIMESTAMP"),
            nullable=False,
        ),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_import_jobs")),
    )
    with op.batch_alter_table("import_jobs", schema=None) as batch_op:
        batch_op.create_index("ix_import_jobs_status", ["status"], unique=False)

    op.create_table(
        "import_org_batch_limits",
        sa.Column("org_id", sa.String(length=128), nullable=False),
        sa.Column("largest_ok", sa.Integer(), nullable=False),
        sa.Column("smallest_refused", sa.Integer(), nullable=True),
        sa.PrimaryKeyConstraint("org_id", name=op.f("pk_import_org_batch_limits")),
    )
    op.create_table(
        "import_service_beats",
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("last_run_at", sa.Double(), nullable=False),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_import_service_beats")),
    )
    op.create_table(
        "import_chunks",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("job_id", sa.String(length=36), nullable=False),
        sa.Column("seq", sa.Integer(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("size", sa.Integer(), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("fencing_token", sa.Integer(), nullable=False),
        sa.Column("next_attempt_at", sa.Double(), nullable=False),
        sa.Column("lease_expires_at", sa.Double(), nullable=True),
        sa.Column("lease_owner", sa.String(length=128), nullable=True),
        sa.Column("needs_reconcile", sa.Boolean(), nullable=False),
        sa.Column("first_attempt_at", sa.Double(), nullable=True),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("published_at", sa.Double(), nullable=True),
        sa.ForeignKeyConstraint(
            ["job_id"],
            ["import_jobs.id"],
            name=op.f("fk_import_chunks_job_id_import_jobs"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_import_chunks")),
    )
    with op.batch_alter_table("import_chunks", schema=None) as batch_op:
        batch_op.create_index("ix_import_chunks_job_status", ["job_id", "status"], unique=False)
        batch_op.create_index(
            "ix_import_chunks_status_due", ["status", "next_attempt_at"], unique=False
        )
        batch_op.create_index("uq_import_chunks_job_seq", ["job_id", "seq"], unique=True)

    op.create_table(
        "import_items",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("job_id", sa.String(length=36), nullable=False),
        sa.Column("chunk_seq", sa.Integer(), nullable=True),
        sa.Column("line_no", sa.Integer(), nullable=False),
        sa.Column("product_key", sa.String(length=128), nullable=True),
        sa.Column("device_key", sa.String(length=64), nullable=True),
        sa.Column("key_source", sa.String(length=8), nullable=False),
        sa.Column("payload", sa.Text(), nullable=True),
        sa.Column("cells", sa.JSON(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("asset_id", sa.String(length=64), nullable=True),
        sa.Column("error_code", sa.Integer(), nullable=True),
        sa.Column("error_message", sa.Text(), nullable=True),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("retryable", sa.Boolean(), nullable=False),
        sa.Column("device_secret", sa.Text(), nullable=True),
        sa.Column("session_key", sa.Text(), nullable=True),
        sa.Column(
            "updated_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("CURRENT_TIMESTAMP"),
            nullable=False,
        ),
        sa.ForeignKeyConstraint(
            ["job_id"],
            ["import_jobs.id"],
            name=op.f("fk_import_items_job_id_import_jobs"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_import_items")),
    )
    with op.batch_alter_table("import_items", schema=None) as batch_op:
        batch_op.create_index("ix_import_items_job_chunk", ["job_id", "chunk_seq"], unique=False)
        batch_op.create_index("ix_import_items_job_status", ["job_id", "status"], unique=False)
        batch_op.create_index("uq_import_items_job_line", ["job_id", "line_no"], unique=True)

    op.execute(IMPORT_JOB_STATUS)
    op.execute(IMPORT_DEVICE_OUTCOME)


def downgrade() -> None:
    op.execute("DROP VIEW IF EXISTS import_device_outcome")
    op.execute("DROP VIEW IF EXISTS import_job_status")
    with op.batch_alter_table("import_items", schema=None) as batch_op:
        batch_op.drop_index("uq_import_items_job_line")
        batch_op.drop_index("ix_import_items_job_status")
        batch_op.drop_index("ix_import_items_job_chunk")

    op.drop_table("import_items")
    with op.batch_alter_table("import_chunks", schema=None) as batch_op:
        batch_op.drop_index("uq_import_chunks_job_seq")
        batch_op.drop_index("ix_import_chunks_status_due")
        batch_op.drop_index("ix_import_chunks_job_status")

    op.drop_table("import_chunks")
    op.drop_table("import_service_beats")
    op.drop_table("import_org_batch_limits")
    with op.batch_alter_table("import_jobs", schema=None) as batch_op:
        batch_op.drop_index("ix_import_jobs_status")

    op.drop_table("import_jobs")
