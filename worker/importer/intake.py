"""Intake: a device file becomes items and planned chunks of a job, a batch at a time.

Every row is checked by the shared CreateOption rules; a bad row becomes an ``invalid`` item whose
message names the line, the field and the rule, and the valid rows go on. Every valid row gets
its deviceKey here (the operator's, or a derived one), a repeated deviceKey makes the later rows
``invalid``, and the valid rows are grouped into chunks of at most the batch size.

The rows are read once, in order, and written in batches (:func:`store_batch`), each with its
chunks, so that the first chunks are sent while the rest of the file is still being read.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import orjson
from sqlalchemy import func, insert, literal, select

from worker.db.bulk import insert_items
from worker.db.models import CHUNKS, ITEMS, ChunkStatus, ItemStatus, KeySource
from worker.db.session import Session
from worker.enos.validation import check_create_option
from worker.importer import chunks
from worker.importer.cells import CellsEncoder
from worker.importer.keys import derive_device_key
from worker.readers.sources import SourceRow

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


@dataclass(slots=True)  # not frozen: one is made per row, and a frozen one costs twice as much
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


class KeyIndex:
    """The deviceKeys of the file's valid rows stored so far, as 64-bit hashes: a few tens of
    MB at a million rows. A key whose hash was seen is only a suspect, confirmed (and its first
    line found) against the stored rows when its batch is written."""

    def __init__(self) -> None:
        self._hashes: set[int] = set()

    def load(self, session: Session, job_id: str) -> None:
        """The keys of rows an earlier intake of the job stored (a resumed intake)."""
        rows = session.connection().execute(
            select(ITEMS.c.device_key).where(
                ITEMS.c.job_id == job_id,
                ITEMS.c.device_key.is_not(None),
                ITEMS.c.status != ItemStatus.INVALID,
            )
        )
        self._hashes.update(hash(key) for (key,) in rows)

    def seen(self, key: str) -> bool:
        return hash(key) in self._hashes

    def add(self, key: str) -> None:
        self._hashes.add(hash(key))


@dataclass
class Batch:
    """Rows read since the last commit, as item tuples in ``ITEM_COLUMNS`` order. Valid rows
    get their chunk when the batch is written; a repeat of a key of this batch is marked at
    once, a repeat of an earlier batch's key when it is written."""

    rows: list[list[Any]] = field(default_factory=list)
    valid: int = 0  # rows that will be sent (suspects not counted)
    duplicates: int = 0
    invalid: int = 0
    last_line: int = 0
    first_line: dict[str, int] = field(default_factory=dict)  # key -> its line in this batch
    suspects: list[int] = field(default_factory=list)  # indexes into rows

    def add(
        self,
        job_id: str,
        row: SourceRow,
        prepared: Prepared,
        keys: KeyIndex,
        encoder: CellsEncoder,
    ) -> None:
        self.last_line = row.line
        # Copied into a bytearray of its own size: orjson's bytes hold a 4 KB buffer each.
        cells = bytearray(encoder.encode(row.cells))
        key = prepared.device_key
        if prepared.problems is not None:
            self.invalid += 1
            self.rows.append(_item(job_id, prepared, cells, ItemStatus.INVALID, prepared.problems))
            return
        assert prepared.payload is not None
        if key is not None and key in self.first_line:
            self.rows.append(
                _item(
                    job_id,
                    prepared,
                    cells,
                    ItemStatus.INVALID,
                    _repeat(row.line, key, self.first_line[key]),
                )
            )
            self.duplicates += 1
            return
        self.rows.append(_item(job_id, prepared, cells, ItemStatus.PENDING, None))
        if key is not None and keys.seen(key):
            self.suspects.append(len(self.rows) - 1)
            return
        if key is not None:
            keys.add(key)
            self.first_line[key] = row.line
        self.valid += 1

    def resolve(self, session: Session, job_id: str, keys: KeyIndex) -> None:
        """Suspects that repeat a stored row's key become ``invalid``; a mere hash collision
        stays valid (checked in line order, so the first row of a key still wins)."""
        if not self.suspects:
            return
        wanted = sorted({self.rows[i][DEVICE_KEY] for i in self.suspects})
        earlier: dict[str, int] = {}
        for start in range(0, len(wanted), 1000):
            earlier.update(
                session.connection()
                .execute(
                    select(ITEMS.c.device_key, func.min(ITEMS.c.line_no))
                    .where(
                        ITEMS.c.job_id == job_id,
                        ITEMS.c.device_key.in_(wanted[start : start + 1000]),
                        ITEMS.c.status != ItemStatus.INVALID,
                    )
                    .group_by(ITEMS.c.device_key)
                )
                .all()
            )
        for index in self.suspects:
            row = self.rows[index]
            key, line = row[DEVICE_KEY], row[LINE]
            first = earlier.get(key, self.first_line.get(key))
            if first is not None and first < line:
                row[STATUS], row[ERROR], row[PAYLOAD] = (
                    ItemStatus.INVALID, _repeat(line, key, first), None,
                )  # fmt: skip
                self.duplicates += 1
            else:
                keys.add(key)
                self.first_line.setdefault(key, line)
                self.valid += 1
        self.suspects.clear()

    def assign_chunks(self, first_seq: int, batch_size: int) -> list[tuple[int, int]]:
        """Gives the valid rows, in line order, chunks from ``first_seq``; their (seq, size)."""
        sizes: dict[int, int] = {}
        position = 0
        for row in self.rows:
            if row[STATUS] == ItemStatus.PENDING:
                seq = first_seq + position // batch_size
                row[CHUNK_SEQ] = seq
                sizes[seq] = sizes.get(seq, 0) + 1
                position += 1
        return sorted(sizes.items())


# Positions in an item tuple (``worker.db.bulk.ITEM_COLUMNS``).
CHUNK_SEQ, LINE, DEVICE_KEY, PAYLOAD, STATUS, ERROR = 1, 2, 4, 6, 8, 10


def _item(
    job_id: str, prepared: Prepared, cells: bytearray, status: str, error: str | None
) -> list[Any]:
    """An item row for ``insert_items``: its JSON as UTF-8 (see there)."""
    payload = (
        bytearray(prepared.payload) if status == ItemStatus.PENDING and prepared.payload else None
    )
    return [
        job_id, None, prepared.line, prepared.product_key, prepared.device_key,
        prepared.key_source, payload, cells, status, None, error, 0, False,
    ]  # fmt: skip


REPEAT_MARK = " of the file (the first row wins)"


def _repeat(line: int, key: str, first: int) -> str:
    return f"line {line}: deviceKey: {key} repeats line {first}{REPEAT_MARK}"


def store_batch(session: Session, job_id: str, batch: Batch, batch_size: int) -> int:
    """Writes the batch's rows and one chunk row per chunk of its valid rows; flushes, never
    commits. Returns the number of chunks planned. The caller holds the job's row lock, so
    the chunk seqs taken here never meet those of a chunk split at the same moment."""
    planned = batch.assign_chunks(chunks.next_seq(session, job_id), batch_size)
    insert_items(session, batch.rows)
    if planned:
        fresh = {
            "job_id": job_id, "status": ChunkStatus.PENDING, "attempts": 0, "fencing_token": 0,
            "next_attempt_at": 0.0, "needs_reconcile": False,
        }  # fmt: skip
        session.connection().execute(
            insert(CHUNKS), [{**fresh, "seq": seq, "size": size} for seq, size in planned]
        )
    return len(planned)


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
