"""Outcome updates in place: import_items loses its (job_id, status) index, and on PostgreSQL
keeps room in each page for the new version of its rows

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-01 19:40:00
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # An outcome changes no indexed column now, so PostgreSQL writes it as a heap-only tuple:
    # no index entry is added for it (there were four). Queries by status take a job's rows
    # through (job_id, chunk_seq) or (job_id, line_no) instead.
    op.drop_index("ix_import_items_job_status", table_name="import_items")
    if op.get_bind().dialect.name == "postgresql":
        # A heap-only update needs room on the row's own page for the new version: a row is
        # written once by the intake and once by its outcome.
        op.execute("ALTER TABLE import_items SET (fillfactor = 50)")


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("ALTER TABLE import_items RESET (fillfactor)")
    op.create_index("ix_import_items_job_status", "import_items", ["job_id", "status"])
