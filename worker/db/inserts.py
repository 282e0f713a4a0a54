"""Inserts that meet a unique key, in each dialect's words (PostgreSQL and SQLite share them)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Table
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session


def insert_or_ignore(session: Session, table: Table, values: dict[str, Any]) -> Any | None:
    """Inserts the row unless a unique key holds it already; returns its primary key, or
    ``None`` when another row was there first (RETURNING, not rowcount: psycopg does not
    report the rowcount of ON CONFLICT DO NOTHING)."""
    module: Any = postgresql if session.connection().dialect.name == "postgresql" else sqlite
    statement = module.insert(table).values(values).on_conflict_do_nothing()
    key = next(iter(table.primary_key.columns))
    row = session.connection().execute(statement.returning(key)).first()
    return None if row is None else row[0]


def upsert(session: Session, table: Table, values: dict[str, Any], keys: list[str]) -> None:
    """Inserts the row, or updates the row holding the same ``keys`` with ``values``."""
    module: Any = postgresql if session.connection().dialect.name == "postgresql" else sqlite
    statement = module.insert(table).values(values)
    changed = {name: statement.excluded[name] for name in values if name not in keys}
    session.connection().execute(statement.on_conflict_do_update(index_elements=keys, set_=changed))
