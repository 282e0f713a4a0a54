"""``enos-import db upgrade``: apply the Alembic migrations."""

from __future__ import annotations

import click

from worker.cli.common import settings_from, stderr
from worker.db.migrate import upgrade as apply_migrations
from worker.db.session import database_url
from worker.preflight import refuse_placeholders
from worker.settings import SettingsError


@click.group()
def db() -> None:
    """The database schema."""


@db.command()
@click.option("--revision", default="head", show_default=True, help="Target revision.")
def upgrade(revision: str) -> None:
    """Apply the migrations (ENOS_IMPORT_DATABASE_URL, or the local SQLite file)."""
    settings = settings_from()
    try:
        refuse_placeholders(settings)
    except SettingsError as exc:
        raise click.ClickException(str(exc)) from exc
    url = database_url(settings.database_url)
    apply_migrations(url, revision)
    stderr.print(f"database at {_safe(url)} is at revision {revision}", highlight=False)


def _safe(url: str) -> str:
    """The URL without its password."""
    from sqlalchemy.engine import make_url

    return make_url(url).render_as_string(hide_password=True)
