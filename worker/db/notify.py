"""PostgreSQL's LISTEN/NOTIFY, behind one function; SQLite has no such thing and skips it."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from sqlalchemy import Engine, func, select

from worker.db.session import Session


def notify(session: Session, channel: str, payload: str) -> None:
    """Sends ``payload`` on ``channel`` when the transaction commits (PostgreSQL only): a
    rolled-back transaction notifies nobody."""
    connection = session.connection()
    if connection.dialect.name == "postgresql":
        connection.execute(select(func.pg_notify(channel, payload)))


class Listener:
    """Waits for a notification on its channels (PostgreSQL), or just sleeps (elsewhere)."""

    def __init__(self, connection: Any | None) -> None:
        self._connection = connection

    def notes(self, timeout_s: float) -> list[tuple[str, str]]:
        """The (channel, payload) of what was received within ``timeout_s`` (returns at the
        first one; 0: only what has already arrived)."""
        if self._connection is None:
            time.sleep(timeout_s)
            return []
        received = self._connection.notifies(timeout=timeout_s, stop_after=1)
        return [(n.channel, n.payload) for n in received]

    def wait(self, timeout_s: float) -> list[str]:
        """The payloads received within ``timeout_s`` (returns at the first one)."""
        return [payload for _, payload in self.notes(timeout_s)]


@contextmanager
def listening(engine: Engine, *channels: str) -> Iterator[Listener]:
    """A :class:`Listener` on ``channels``, on a connection of its own for as long as it is
    used."""
    if engine.dialect.name != "postgresql":
        yield Listener(None)
        return
    raw = engine.raw_connection()
    try:
        driver = raw.driver_connection
        assert driver is not None
        driver.autocommit = True
        for channel in channels:
            driver.execute(f"LISTEN {channel}")
        yield Listener(driver)
    finally:
        raw.invalidate()  # closed, not handed back to the pool in autocommit mode
