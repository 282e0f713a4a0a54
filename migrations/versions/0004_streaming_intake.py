"""The intake commits as it reads: the job keeps the last line it stored, to resume from

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-01 19:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Plain ALTER TABLE on both databases (see 0003).
    op.execute("ALTER TABLE import_jobs ADD COLUMN intake_line INTEGER")


def downgrade() -> None:
    op.execute("ALTER TABLE import_jobs DROP COLUMN intake_line")
