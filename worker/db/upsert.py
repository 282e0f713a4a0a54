"""Inserts that tolerate an existing row, on PostgreSQL and SQLite alike.

The import logic never imports ``sqlalchemy.dialects``: the two databases' forms of "insert
unless it exists" live here.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from sqlalchemy import Table
from sqlalchemy.dialects import postgresql, sqlite

from worker.db.session import Session


def insert_ignore(
    session: Session, table: Table, values: dict[str, Any] | list[dict[str, Any]]
) -> bool:
    """Inserts ``values`` unless a row with the same key exists; ``True`` if a row was added.

    RETURNING, not rowcount: psycopg does not report the rowcount of ON CONFLICT DO NOTHING.
    """
    dialect = session.connection().dialect.name
    module: Any = postgresql if dialect == "postgresql" else sqlite
    statement = module.insert(table).values(values).on_conflict_do_nothing()
    primary = next(iter(table.primary_key.columns))
    return session.connection().execute(statement.returning(primary)).first() is not None


def upsert(
    session: Session,
    table: Table,
    values: dict[str, Any],
    key: list[str],
    update: Callable[[Any], dict[str, Any]],
) -> None:
    """Inserts ``values``, or updates the row with the same ``key`` columns; ``update`` gets the
    proposed row (``excluded``) and returns the columns to set."""
    dialect = session.connection().dialect.name
    module: Any = postgresql if dialect == "postgresql" else sqlite
    statement = module.insert(table).values(values)
    session.execute(
        statement.on_conflict_do_update(index_elements=key, set_=update(statement.excluded))
    )
