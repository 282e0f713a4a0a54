"""Intake: a device file becomes items and planned chunks of a job, in one transaction.

Every row is checked by the shared CreateOption rules; a bad row becomes an ``invalid`` item whose
message names the line, the field and the rule, and the valid rows go on. Every valid row gets
its deviceKey here (the operator's, or a derived one), a repeated deviceKey makes the later rows
``invalid``, and the valid rows are grouped into chunks of at most the batch size.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import orjson
from sqlalchemy import Text, and_, func, insert, literal, select, update
from sqlalchemy.orm import Session

from worker.db.bulk import insert_items
from worker.db.models import CHUNKS, ITEMS, ChunkStatus, ItemStatus, KeySource
from worker.enos.validation import check_create_option
from worker.importer.keys import derive_device_key
from worker.readers.sources import Source, SourceRow

INSERT_BATCH = 5_000
# The widths of the items' product_key and device_key columns.
PRODUCT_KEY_MAX = 128
DEVICE_KEY_MAX = 64


@dataclass
class IntakeSummary:
    rows: int = 0
    valid: int = 0
    invalid: int = 0
    duplicates: int = 0
    chunks: int = 0
    error: str | None = None


@dataclass(frozen=True, slots=True)
class Prepared:
    line: int
    product_key: str | None
    device_key: str | None
    key_source: str
    payload: bytes | None
    problems: str | None


def prepare_row(row: SourceRow, org_id: str, content_sha256: str, key_mode: str) -> Prepared:
    """A row checked and given its deviceKey; ``problems`` is set when it must not be sent."""
    option = row.option
    product_key = option.get("productKey") if isinstance(option, dict) else None
    product_key = product_key if isinstance(product_key, str) else None
    given = option.get("deviceKey") if isinstance(option, dict) else None
    given = given if isinstance(given, str) else None
    if row.problems:
        return _invalid(row.line, product_key, given, row.problems)
    found = [f"line {row.line}: {p.field}: {p.message}" for p in check_create_option(option)]
    if product_key is not None and (len(product_key) > PRODUCT_KEY_MAX or "\x00" in product_key):
        found.append(
            f"line {row.line}: productKey: must be at most {PRODUCT_KEY_MAX} characters, "
            "without NUL"
        )
    if found:
        return _invalid(row.line, product_key, given, found)
    key, key_source = given, KeySource.FILE
    if given is None and key_mode == "platform":
        key_source = KeySource.PLATFORM
    elif given is None:
        key, key_source = derive_device_key(org_id, content_sha256, row.line), KeySource.DERIVED
        option["deviceKey"] = key
    try:
        payload = orjson.dumps(option)
    except TypeError as exc:  # orjson encodes at most 254 levels of nesting
        problem = f"line {row.line}: cannot be stored as JSON ({exc})"
        return _invalid(row.line, product_key, given, [problem])
    return Prepared(row.line, product_key, key, key_source, payload, None)


def _invalid(
    line: int, product_key: str | None, device_key: str | None, problems: list[str]
) -> Prepared:
    """An invalid row, holding only what the database can store: keys that fit their columns,
    and no NUL character (PostgreSQL text cannot hold one)."""
    text = "; ".join(problems).replace("\x00", "\\x00")
    return Prepared(
        line,
        _storable(product_key, PRODUCT_KEY_MAX),
        _storable(device_key, DEVICE_KEY_MAX),
        KeySource.FILE,
        None,
        text,
    )


def _storable(value: str | None, width: int) -> str | None:
    return value if value is not None and len(value) <= width and "\x00" not in value else None


def ingest(
    session: Session,
    job_id: str,
    org_id: str,
    source: Source,
    *,
    content_sha256: str,
    batch_size: int,
    key_mode: str,
    progress: Callable[[int], None] | None = None,
) -> IntakeSummary:
    """Streams ``source`` into items and chunks of ``job_id``; flushes, never commits."""
    summary = IntakeSummary()
    buffer: list[tuple[Any, ...]] = []
    for row in source.rows():
        prepared = prepare_row(row, org_id, content_sha256, key_mode)
        summary.rows += 1
        if prepared.problems is None:
            chunk_seq: int | None = summary.valid // batch_size
            summary.valid += 1
            status, payload = ItemStatus.PENDING, prepared.payload
            assert payload is not None
            payload_text: str | None = payload.decode()
        else:
            chunk_seq, status, payload_text = None, ItemStatus.INVALID, None
            summary.invalid += 1
        buffer.append(
            (
                job_id, chunk_seq, prepared.line, prepared.product_key, prepared.device_key,
                prepared.key_source, payload_text, orjson.dumps(row.cells).decode(), status,
                None, prepared.problems, 0, False,
            )
        )  # fmt: skip
        if len(buffer) >= INSERT_BATCH:
            insert_items(session, buffer)
            buffer.clear()
            if progress is not None:
                progress(summary.rows)
    insert_items(session, buffer)
    if progress is not None:
        progress(summary.rows)
    if source.error is not None:
        summary.error = f"{source.name}: {source.error}"
    summary.duplicates = mark_duplicate_keys(session, job_id)
    summary.valid -= summary.duplicates
    summary.invalid += summary.duplicates
    summary.chunks = plan_chunks(session, job_id)
    return summary


def mark_duplicate_keys(session: Session, job_id: str) -> int:
    """Later rows that repeat a deviceKey of the file become ``invalid``; the first row wins."""
    items = ITEMS
    ranked = (
        select(
            items.c.id.label("dup_id"),
            func.min(items.c.line_no).over(partition_by=items.c.device_key).label("first_line"),
            func.row_number()
            .over(partition_by=items.c.device_key, order_by=items.c.line_no)
            .label("rank"),
        )
        .where(
            items.c.job_id == job_id,
            items.c.status == ItemStatus.PENDING,
            items.c.device_key.is_not(None),
        )
        .subquery()
    )
    message = (
        literal("line ", Text)
        + func.cast(items.c.line_no, Text)
        + literal(": deviceKey: ", Text)
        + items.c.device_key
        + literal(" repeats line ", Text)
        + func.cast(ranked.c.first_line, Text)
        + literal(" of the file (the first row wins)", Text)
    )
    result = session.connection().execute(
        update(items)
        .where(and_(items.c.id == ranked.c.dup_id, ranked.c.rank > 1))
        .values(status=ItemStatus.INVALID, chunk_seq=None, error_message=message)
    )
    return int(result.rowcount or 0)


def plan_chunks(session: Session, job_id: str, only_from_seq: int = 0) -> int:
    """One chunk row per chunk_seq (from ``only_from_seq`` on) that has pending items."""
    items = ITEMS
    grouped = (
        select(
            items.c.job_id,
            items.c.chunk_seq.label("seq"),
            func.count().label("size"),
            literal(ChunkStatus.PENDING).label("status"),
            literal(0).label("attempts"),
            literal(0).label("fencing_token"),
            literal(0.0).label("next_attempt_at"),
            literal(False).label("needs_reconcile"),
        )
        .where(
            items.c.job_id == job_id,
            items.c.status == ItemStatus.PENDING,
            items.c.chunk_seq >= only_from_seq,
        )
        .group_by(items.c.job_id, items.c.chunk_seq)
    )
    columns = [
        "job_id", "seq", "size", "status", "attempts", "fencing_token", "next_attempt_at",
        "needs_reconcile",
    ]  # fmt: skip
    session.connection().execute(insert(CHUNKS).from_select(columns, grouped))
    # Not every driver reports the rowcount of INSERT … SELECT: count instead.
    count = select(func.count()).where(CHUNKS.c.job_id == job_id, CHUNKS.c.seq >= only_from_seq)
    return int(session.connection().execute(count).scalar_one())
