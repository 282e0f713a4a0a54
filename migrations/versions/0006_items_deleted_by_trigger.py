"""A job's items are deleted with it by a trigger instead of a foreign key

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-02 01:00:00
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence

from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

FK = "fk_import_items_job_id_import_jobs"

# PostgreSQL checks a foreign key with a trigger and a lookup for every row written: for the
# intake's COPY that was 40% of the server's work per row. Items are only ever inserted by the
# intake, for the job it holds locked, and by a rollback's plan, for the job it has just created,
# so the check finds nothing; what the key still did, a job's deletion taking its items with
# it, is kept by a trigger (once per deleting statement on PostgreSQL).
PG_FUNCTION = """
CREATE FUNCTION import_jobs_delete_items() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    DELETE FROM import_items WHERE job_id IN (SELECT id FROM deleted_jobs);
    RETURN NULL;
END
$$
"""
PG_TRIGGER = """
CREATE TRIGGER import_jobs_delete_items AFTER DELETE ON import_jobs
REFERENCING OLD TABLE AS deleted_jobs
FOR EACH STATEMENT EXECUTE FUNCTION import_jobs_delete_items()
"""
SQLITE_TRIGGER = """
CREATE TRIGGER import_jobs_delete_items AFTER DELETE ON import_jobs
FOR EACH ROW BEGIN
    DELETE FROM import_items WHERE job_id = OLD.id;
END
"""


def upgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.drop_constraint(FK, "import_items", type_="foreignkey")
        op.execute(PG_FUNCTION)
        op.execute(PG_TRIGGER)
        return
    with _sqlite_copy(), op.batch_alter_table("import_items") as batch_op:
        batch_op.drop_constraint(FK, type_="foreignkey")
    op.execute(SQLITE_TRIGGER)


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP TRIGGER import_jobs_delete_items ON import_jobs")
        op.execute("DROP FUNCTION import_jobs_delete_items()")
        op.create_foreign_key(
            FK, "import_items", "import_jobs", ["job_id"], ["id"], ondelete="CASCADE"
        )
        return
    op.execute("DROP TRIGGER import_jobs_delete_items")
    with _sqlite_copy(), op.batch_alter_table("import_items") as batch_op:
        batch_op.create_foreign_key(FK, "import_jobs", ["job_id"], ["id"], ondelete="CASCADE")


@contextlib.contextmanager
def _sqlite_copy() -> Iterator[None]:
    """SQLite changes a constraint by copying the table and renaming the copy. The status views
    refer to the table by name: legacy renaming leaves them as they are, so that they read the
    copy, instead of failing at the moment the old table is gone."""
    op.execute("PRAGMA legacy_alter_table = ON")
    try:
        yield
    finally:
        op.execute("PRAGMA legacy_alter_table = OFF")
