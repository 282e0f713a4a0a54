"""The inbox's files and sightings, and the outbox of completion events

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-01 15:30:00.000000
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

BIG_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "import_job_events",
        sa.Column("id", BIG_ID, autoincrement=True, nullable=False),
        sa.Column("job_id", sa.String(length=36), nullable=False),
        sa.Column("task", sa.String(length=200), nullable=False),
        sa.Column("queue", sa.String(length=200), nullable=False),
        sa.Column("kwargs", sa.JSON(), nullable=False),
        sa.Column("created_at", sa.Double(), nullable=False),
        sa.Column("published_at", sa.Double(), nullable=True),
        sa.ForeignKeyConstraint(
            ["job_id"],
            ["import_jobs.id"],
            name=op.f("fk_import_job_events_job_id_import_jobs"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_import_job_events")),
    )
    with op.batch_alter_table("import_job_events", schema=None) as batch_op:
        batch_op.create_index("ix_import_job_events_published_at", ["published_at"], unique=False)

    op.create_table(
        "import_inbox_files",
        sa.Column("id", BIG_ID, autoincrement=True, nullable=False),
        sa.Column("org_id", sa.String(length=128), nullable=False),
        sa.Column("name", sa.Text(), nullable=False),
        sa.Column("content_sha256", sa.String(length=64), nullable=True),
        sa.Column("size", sa.BigInteger(), nullable=False),
        sa.Column("job_id", sa.String(length=36), nullable=True),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("note", sa.Text(), nullable=True),
        sa.Column("moved_to", sa.Text(), nullable=True),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("CURRENT_TIMESTAMP"),
            nullable=False,
        ),
        sa.Column(
            "updated_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("CURRENT_TIMESTAMP"),
            nullable=False,
        ),
        sa.ForeignKeyConstraint(
            ["job_id"],
            ["import_jobs.id"],
            name=op.f("fk_import_inbox_files_job_id_import_jobs"),
            ondelete="SET NULL",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_import_inbox_files")),
    )
    with op.batch_alter_table("import_inbox_files", schema=None) as batch_op:
        batch_op.create_index(
            "uq_import_inbox_files_org_sha", ["org_id", "content_sha256"], unique=True
        )
        batch_op.create_index("ix_import_inbox_files_state", ["state"], unique=False)

    op.create_table(
        "import_inbox_sightings",
        sa.Column("org_id", sa.String(length=128), nullable=False),
        sa.Column("name", sa.String(length=1024), nullable=False),
        sa.Column("size", sa.BigInteger(), nullable=False),
        sa.Column("mtime_ns", sa.BigInteger(), nullable=False),
        sa.Column("seen_at", sa.Double(), nullable=False),
        sa.PrimaryKeyConstraint("org_id", "name", name=op.f("pk_import_inbox_sightings")),
    )


def downgrade() -> None:
    op.drop_table("import_inbox_sightings")
    with op.batch_alter_table("import_inbox_files", schema=None) as batch_op:
        batch_op.drop_index("ix_import_inbox_files_state")
        batch_op.drop_index("uq_import_inbox_files_org_sha")
    op.drop_table("import_inbox_files")
    with op.batch_alter_table("import_job_events", schema=None) as batch_op:
        batch_op.drop_index("ix_import_job_events_published_at")
    op.drop_table("import_job_events")
