"""Engines and sessions: one engine per process, the unit of work owns the transaction."""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.orm import Session, sessionmaker

DEFAULT_SQLITE = "enos-import.db"


def database_url(configured: str) -> str:
    """The configured URL, or a local SQLite file (the embedded default)."""
    if configured:
        if configured.startswith("postgresql://"):
            # The plain scheme selects psycopg2 in SQLAlchemy; this project ships psycopg 3.
            return "postgresql+psycopg://" + configured.removeprefix("postgresql://")
        return configured
    return f"sqlite:///{Path(DEFAULT_SQLITE).resolve()}"


def make_engine(url: str, **kwargs: Any) -> Engine:
    if url.startswith("sqlite"):
        engine = create_engine(url, connect_args={"timeout": 60}, **kwargs)
        event.listen(engine, "connect", _sqlite_pragmas)
        # pysqlite's own transaction handling defers BEGIN; take it over so that a write
        # transaction takes its lock at BEGIN (no deadlock between two readers upgrading).
        event.listen(engine, "begin", lambda conn: conn.exec_driver_sql("BEGIN IMMEDIATE"))
        return engine
    kwargs.setdefault("pool_pre_ping", True)
    kwargs.setdefault("pool_size", 10)
    kwargs.setdefault("max_overflow", 10)
    return create_engine(url, **kwargs)


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA busy_timeout=60000")
    cursor.close()


class Database:
    """The engine of this process and its session factory.

    ``with db.begin() as session:`` is the unit of work: it commits on success and rolls back
    on error; code below it only adds and flushes.
    """

    def __init__(self, url: str, **engine_kwargs: Any) -> None:
        self.url = url
        self.engine = make_engine(url, **engine_kwargs)
        self.sessions = sessionmaker(self.engine, expire_on_commit=False)
        self._pid = os.getpid()
        # SQLite takes one writer at a time, and a writer that finds the file locked sleeps in
        # steps of up to 100 ms: threads of one process (the embedded runner's senders and its
        # intake) queue here instead, and each gets the lock the moment it is free.
        self._writer = threading.RLock() if not self.concurrent_writers else None

    @property
    def concurrent_writers(self) -> bool:
        """Whether a second transaction may write while one is open (not on SQLite, whose
        writers take turns)."""
        return self.engine.dialect.name != "sqlite"

    @contextmanager
    def begin(self) -> Iterator[Session]:
        self._after_fork()
        with self._writer or nullcontext(), self.sessions.begin() as session:
            yield session

    @contextmanager
    def read(self) -> Iterator[Session]:
        self._after_fork()
        with self.sessions() as session:
            yield session

    def _after_fork(self) -> None:
        # A prefork child inherits the parent's pooled connections; it must not share them.
        if os.getpid() != self._pid:
            self.engine.dispose(close=False)
            self._pid = os.getpid()
            if self._writer is not None:
                self._writer = threading.RLock()

    def dispose(self) -> None:
        self.engine.dispose()
