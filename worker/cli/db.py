"""``enos-import db upgrade``: apply the Alembic migrations."""

from __future__ import annotations

import click

from worker.cli.common import settings_from, stderr
from worker.db.migrate import upgrade as apply_migrations
from worker.db.session import database_url


@click.group()
def db() -> None:
    """The database schema."""


@db.command()
@click.option("--revision", default="head", show_default=True, help="Target revision.")
def upgrade(revision: str) -> None:
    """Apply the migrations (ENOS_IMPORT_DATABASE_URL, or the local SQLite file)."""
    url = database_url(settings_from().database_url)
    apply_migrations(url, revision)
    stderr.print(f"database at {_safe(url)} is at revision {revision}", highlight=False)


def _safe(url: str) -> str:
    """The URL without its password."""
    from sqlalchemy.engine import make_url

    return make_url(url).render_as_string(hide_password=True)
