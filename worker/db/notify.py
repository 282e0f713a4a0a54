"""PostgreSQL's LISTEN/NOTIFY, behind one function; SQLite has no such thing and skips it."""

from __future__ import annotations

from sqlalchemy import func, select
from sqlalchemy.orm import Session


def notify(session: Session, channel: str, payload: str) -> None:
    """Sends ``payload`` on ``channel`` when the transaction commits (PostgreSQL only): a
    rolled-back transaction notifies nobody."""
    connection = session.connection()
    if connection.dialect.name == "postgresql":
        connection.execute(select(func.pg_notify(channel, payload)))
