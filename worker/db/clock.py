"""The database's clock, as epoch seconds, and the scalar functions whose names differ, on
PostgreSQL and SQLite alike.

Leases and retry times are compared with this clock only, never with a worker's own.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import DateTime, Double
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.functions import FunctionElement


class db_epoch(FunctionElement[float]):
    """``now`` in epoch seconds (with sub-second precision) from the database server."""

    type = Double()
    inherit_cache = True
    name = "db_epoch"


@compiles(db_epoch, "postgresql")
def _pg_epoch(element: db_epoch, compiler: Any, **kw: Any) -> str:
    # clock_timestamp(), not now(): a long transaction must not see time stand still.
    return "extract(epoch from clock_timestamp())::double precision"


@compiles(db_epoch, "sqlite")
def _sqlite_epoch(element: db_epoch, compiler: Any, **kw: Any) -> str:
    return "((julianday('now') - 2440587.5) * 86400.0)"


@compiles(db_epoch)
def _default_epoch(element: db_epoch, compiler: Any, **kw: Any) -> str:
    raise NotImplementedError(f"no database clock for {compiler.dialect.name}")


class db_now(FunctionElement[datetime]):
    """The database's wall clock as a timestamp, at the moment the statement runs (not the
    transaction's start, as ``now()`` is on PostgreSQL)."""

    type = DateTime(timezone=True)
    inherit_cache = True
    name = "db_now"


@compiles(db_now, "postgresql")
def _pg_now(element: db_now, compiler: Any, **kw: Any) -> str:
    return "clock_timestamp()"


@compiles(db_now, "sqlite")
def _sqlite_now(element: db_now, compiler: Any, **kw: Any) -> str:
    return "CURRENT_TIMESTAMP"


class greatest(FunctionElement[Any]):
    """The larger of two values (``greatest`` on PostgreSQL, two-argument ``max`` on SQLite)."""

    inherit_cache = True
    name = "greatest"


class least(FunctionElement[Any]):
    """The smaller of two values (``least`` on PostgreSQL, two-argument ``min`` on SQLite)."""

    inherit_cache = True
    name = "least"


@compiles(greatest)
@compiles(least)
def _pg_extreme(element: FunctionElement[Any], compiler: Any, **kw: Any) -> str:
    return f"{element.name}({compiler.process(element.clauses, **kw)})"


@compiles(greatest, "sqlite")
def _sqlite_greatest(element: greatest, compiler: Any, **kw: Any) -> str:
    return f"max({compiler.process(element.clauses, **kw)})"


@compiles(least, "sqlite")
def _sqlite_least(element: least, compiler: Any, **kw: Any) -> str:
    return f"min({compiler.process(element.clauses, **kw)})"
