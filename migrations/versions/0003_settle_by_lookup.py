"""A failing job stays open until its chunks are settled; full products are kept per job

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-01 15:30:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Plain ALTER TABLE on both databases: SQLite's batch mode would copy the table, which the
    # status views refer to.
    op.execute("ALTER TABLE import_jobs ADD COLUMN failure TEXT")
    op.create_table(
        "import_full_products",
        sa.Column("job_id", sa.String(length=36), nullable=False),
        sa.Column("product_key", sa.String(length=128), nullable=False),
        sa.Column("message", sa.Text(), nullable=False),
        sa.ForeignKeyConstraint(
            ["job_id"],
            ["import_jobs.id"],
            name=op.f("fk_import_full_products_job_id_import_jobs"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("job_id", "product_key", name=op.f("pk_import_full_products")),
    )


def downgrade() -> None:
    op.drop_table("import_full_products")
    op.execute("ALTER TABLE import_jobs DROP COLUMN failure")
