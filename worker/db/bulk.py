"""Writing many rows at once: COPY and one-statement updates on PostgreSQL, executemany elsewhere.

The intake writes every input row and the sender every outcome; one round trip per device would
dominate the service's CPU, so these are the only ways rows reach the database in bulk.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import orjson
from sqlalchemy import LargeBinary, cast, select

from worker.db.models import ITEMS, ItemStatus
from worker.db.session import Session

ITEM_COLUMNS = (
    "job_id", "chunk_seq", "line_no", "product_key", "device_key", "key_source", "payload",
    "cells", "status", "error_code", "error_message", "attempts", "retryable",
)  # fmt: skip


# How binary COPY sends ``ITEM_COLUMNS``. ``payload`` and ``cells`` come as UTF-8 JSON in a
# bytearray and go as they are: the binary form of text and of json is the UTF-8 text itself,
# which is what the bytea dumper writes (as str, each was decoded only for the text dumper to
# encode it again: twice the time of the copy). The server checks the encoding as for any text.
_ITEM_COPY_TYPES = (
    "text", "int4", "int4", "text", "text", "text", "bytea",
    "bytea", "text", "int4", "text", "int4", "bool",
)  # fmt: skip
_PAYLOAD, _CELLS = ITEM_COLUMNS.index("payload"), ITEM_COLUMNS.index("cells")


def insert_items(session: Session, rows: Sequence[Sequence[Any]]) -> None:
    """Inserts item rows given as sequences in ``ITEM_COLUMNS`` order, ``payload`` and
    ``cells`` as UTF-8 JSON (``bytearray``; ``payload`` may be ``None``)."""
    if not rows:
        return
    connection = session.connection()
    if connection.dialect.name == "postgresql":
        driver = connection.connection.driver_connection
        assert driver is not None
        with driver.cursor() as cursor:
            # Binary: no escaping of the JSON text on either side (a quarter less of the
            # intake's COPY time here, and less of the server's). The bytea columns by the
            # plain bytes dumper, which has a C version: the one psycopg picks for a bytea
            # column also accepts its ``Binary`` wrapper, and is Python (a call per cell, half
            # of the COPY's time in this process).
            from psycopg.types.string import BytesBinaryDumper  # the SQLite runner never needs it

            cursor.adapters.register_dumper(None, BytesBinaryDumper)
            sql = f"COPY import_items ({', '.join(ITEM_COLUMNS)}) FROM STDIN (FORMAT BINARY)"
            with cursor.copy(sql) as copy:
                copy.set_types(_ITEM_COPY_TYPES)
                for row in rows:
                    copy.write_row(row)
        return
    # SQLite: the driver's own executemany with tuples (SQLAlchemy would build
    # and process a dict per row: twice the time and memory of the whole insert).
    marks = ", ".join("?" for _ in ITEM_COLUMNS)
    sql = f"INSERT INTO import_items ({', '.join(ITEM_COLUMNS)}) VALUES ({marks})"
    connection.exec_driver_sql(sql, [_as_text(row) for row in rows])


def _as_text(row: Sequence[Any]) -> tuple[Any, ...]:
    """The row with its JSON as str (SQLite would keep bytes as a BLOB)."""
    values = list(row)
    for index in (_PAYLOAD, _CELLS):
        if values[index] is not None:
            values[index] = values[index].decode()
    return tuple(values)


OUTCOME_FIELDS = (
    "status", "asset_id", "error_code", "error_message", "attempts", "retryable",
    "device_secret", "session_key",
)  # fmt: skip


# PostgreSQL: one statement for a whole chunk. The outcomes travel as one JSON document that
# ``json_to_recordset`` turns back into rows: 1,000 single-row UPDATEs (even pipelined) cost the
# worker and the server several times more per row, and one array parameter per column costs the
# worker more than the JSON (psycopg quotes array elements one by one).
_PG_UPDATE_OUTCOMES = """
UPDATE import_items AS i SET
    status = v.status, asset_id = v.asset_id, error_code = v.error_code,
    error_message = v.error_message, attempts = v.attempts, retryable = v.retryable,
    device_secret = v.device_secret, session_key = v.session_key, updated_at = now()
FROM json_to_recordset(%s::json) AS v(
    item_id bigint, status text, asset_id text, error_code integer, error_message text,
    attempts integer, retryable boolean, device_secret text, session_key text
)
WHERE i.id = v.item_id
"""


def update_outcomes(session: Session, outcomes: Sequence[dict[str, Any]]) -> None:
    """Writes item outcomes; each dict has ``item_id`` and fields of ``OUTCOME_FIELDS``, a field
    left out being NULL."""
    if not outcomes:
        return
    connection = session.connection()
    if connection.dialect.name == "postgresql":
        # The dicts go as they are: keys other than the record's columns are ignored.
        document = orjson.dumps(list(outcomes)).decode()
        connection.exec_driver_sql(_PG_UPDATE_OUTCOMES, (document,))
        return
    sql = (
        f"UPDATE import_items SET {', '.join(f'{name} = ?' for name in OUTCOME_FIELDS)}, "
        "updated_at = CURRENT_TIMESTAMP WHERE id = ?"
    )
    connection.exec_driver_sql(
        sql, [(*(o.get(name) for name in OUTCOME_FIELDS), o["item_id"]) for o in outcomes]
    )


# PostgreSQL: the chunk's rows by (job_id, chunk_seq) alone, the pending ones kept here. With
# ``status`` in the WHERE clause too, a table not analyzed since its intake (every new job) lets
# the planner take the (job_id, status) index and walk every pending row of the job for each
# chunk: 0.3 s of database CPU per chunk at a million rows. The driver's own cursor with binary
# rows reads the chunk in a third of the time SQLAlchemy's result processing takes. The payload
# comes as the UTF-8 bytes it is sent as (decoding it to str, for orjson to encode it again into
# the request, cost the worker a tenth of its time per row here).
_PG_CHUNK_ROWS = (
    "SELECT id, line_no, product_key, device_key, key_source, convert_to(payload, 'UTF8'), "
    "attempts, status FROM import_items WHERE job_id = %s AND chunk_seq = %s ORDER BY line_no"
)
CHUNK_ROW_COLUMNS = (
    "id", "line_no", "product_key", "device_key", "key_source", "payload", "attempts",
)  # fmt: skip


def chunk_rows(session: Session, job_id: str, seq: int) -> list[Sequence[Any]]:
    """The pending rows of one chunk, in line order, as tuples of ``CHUNK_ROW_COLUMNS`` (the
    payload as UTF-8 bytes)."""
    connection = session.connection()
    if connection.dialect.name == "postgresql":
        driver = connection.connection.driver_connection
        assert driver is not None
        with driver.cursor(binary=True) as cursor:
            cursor.execute(_PG_CHUNK_ROWS, (job_id, seq))
            rows = cursor.fetchall()
        pending = ItemStatus.PENDING.value
        return [row[:7] for row in rows if row[7] == pending]
    columns = [
        cast(ITEMS.c.payload, LargeBinary) if name == "payload" else ITEMS.c[name]
        for name in CHUNK_ROW_COLUMNS
    ]
    result = connection.execute(
        select(*columns)
        .where(
            ITEMS.c.job_id == job_id,
            ITEMS.c.chunk_seq == seq,
            ITEMS.c.status == ItemStatus.PENDING,
        )
        .order_by(ITEMS.c.line_no)
    )
    # One fetch of the whole chunk: iterating the result fetches row by row.
    return list(result.all())
