"""Engines and units of work: one engine per process, the unit of work owns the transaction."""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, CursorResult, Engine, create_engine, event
from sqlalchemy.sql.base import Executable

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


class Session:
    """One unit of work: a transaction on one connection, Core statements only.

    The service writes through SQLAlchemy Core (tables, not mapped objects), so the ORM's
    session, with its identity map, flush and state machine, was only overhead: about a third
    of the client CPU of a short transaction, and a chunk takes three. This keeps the part of
    its interface the code uses (``execute``, ``connection``) and its laziness (the connection
    is taken, and its transaction begun, at the first statement), and adds ``after_commit``.
    """

    __slots__ = ("_after_commit", "_begin", "_connection", "_engine")

    def __init__(self, engine: Engine, begin: bool) -> None:
        self._engine = engine
        self._begin = begin
        self._connection: Connection | None = None
        self._after_commit: list[Callable[[], object]] = []

    def connection(self) -> Connection:
        if self._connection is None:
            connection = self._engine.connect()
            if self._begin:
                try:
                    connection.begin()
                except BaseException:
                    connection.close()
                    raise
            self._connection = connection
        return self._connection

    def execute(
        self, statement: Executable, parameters: Any = None
    ) -> CursorResult[*tuple[Any, ...]]:
        return self.connection().execute(statement, parameters)

    @property
    def engine(self) -> Engine:
        return self._engine

    def after_commit(self, callback: Callable[[], object]) -> None:
        """``callback`` runs once the transaction has committed (never after a rollback)."""
        self._after_commit.append(callback)

    def _end(self, commit: bool) -> None:
        """Commits (or rolls back) and gives the connection back to the pool."""
        connection, self._connection = self._connection, None
        if connection is None:
            return
        try:
            if commit:
                connection.commit()
        finally:
            connection.close()  # rolls back whatever was not committed

    def _committed(self) -> None:
        for callback in self._after_commit:
            callback()


class Database:
    """The engine of this process and its units of work.

    ``with db.begin() as session:`` is the unit of work: it commits on success and rolls back
    on error.
    """

    def __init__(self, url: str, **engine_kwargs: Any) -> None:
        self.url = url
        self.engine = make_engine(url, **engine_kwargs)
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
        session = Session(self.engine, begin=True)
        with self._writer or nullcontext():
            try:
                yield session
            except BaseException:
                session._end(commit=False)
                raise
            session._end(commit=True)
        session._committed()

    @contextmanager
    def read(self) -> Iterator[Session]:
        """A unit of work that writes nothing: rolled back at its end."""
        self._after_fork()
        session = Session(self.engine, begin=False)
        try:
            yield session
        finally:
            session._end(commit=False)

    def _after_fork(self) -> None:
        # A prefork child inherits the parent's pooled connections; it must not share them.
        if os.getpid() != self._pid:
            self.engine.dispose(close=False)
            self._pid = os.getpid()
            if self._writer is not None:
                self._writer = threading.RLock()

    def dispose(self) -> None:
        self.engine.dispose()
