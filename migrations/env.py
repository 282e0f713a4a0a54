"""Alembic environment: the URL comes from the caller's config (set by ``enos-import db upgrade``)
or from the settings, never from alembic.ini."""

from __future__ import annotations

from alembic import context
from sqlalchemy import Connection

from worker.db.models import METADATA
from worker.db.session import database_url, make_engine
from worker.settings import get_settings

config = context.config
target_metadata = METADATA


def run(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        compare_type=True,
        render_as_batch=connection.dialect.name == "sqlite",
    )
    with context.begin_transaction():
        context.run_migrations()


connection = config.attributes.get("connection")
if connection is not None:
    run(connection)
else:
    url = config.get_main_option("sqlalchemy.url") or database_url(get_settings().database_url)
    engine = make_engine(url)
    with engine.connect() as conn:
        run(conn)
    engine.dispose()
