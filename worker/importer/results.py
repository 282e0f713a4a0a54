"""The results export: per device, the input row's own columns, then its outcome.

Columns: the input's own (for JSON input, flattened to the CSV column names) with ``deviceKey``
filled in, then ``line, status, assetId, errorCode, errorMessage``. In CSV, a cell that a
spreadsheet would run as a formula is prefixed with ``'``.
"""

from __future__ import annotations

import csv
import re
from collections.abc import Iterator
from typing import IO, TYPE_CHECKING, Any, TextIO

import orjson
from sqlalchemy import select

from worker.db.models import ITEMS, JOBS, ItemStatus
from worker.db.session import Session
from worker.importer.cells import cells_by_name

if TYPE_CHECKING:  # the key's code is loaded only by an export of secrets
    from worker.enos.secret_box import Opener

TAIL = ("line", "status", "assetId", "errorCode", "errorMessage")
SECRET_COLUMNS = ("deviceSecret", "secretError")
SECRET_STATUSES = frozenset({ItemStatus.CREATED, ItemStatus.ADOPTED})
NO_SECRET = "EnOS returned no secret for this device (a job without --require-secret gets none)"
NOT_OURS = (
    "the secret cannot be opened with this private key: EnOS sealed it for another account's "
    "key (the device belongs to another service account), or returned an error in its place"
)
_NUMBER = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?")
_UTC_OFFSET = re.compile(r"[+-]\d{2}:\d{2}")
# A leading CR or LF is dropped by some spreadsheets on import, exposing what follows it.
_FORMULA_STARTS = "=@\t\r\n"


def formula_guard(cell: str) -> str:
    """``'`` before a cell that starts like a formula (``=``, ``@``, tab, ``\\r``, ``\\n``, or
    ``+``/``-`` that is neither a number nor a UTC offset such as ``-05:00``).

    Header cells go through it too: a JSON key is a column name, and a spreadsheet runs it alike.
    """
    if not cell:
        return cell
    first = cell[0]
    if first in _FORMULA_STARTS:
        return "'" + cell
    if first in "+-" and not (_NUMBER.fullmatch(cell) or _UTC_OFFSET.fullmatch(cell)):
        return "'" + cell
    return cell


def export_columns(session: Session, job_id: str) -> list[str]:
    return _export_names(_stored_columns(session, job_id))


def _stored_columns(session: Session, job_id: str) -> list[Any]:
    """The job's columns as stored: they name the values of its rows' cells."""
    columns = session.execute(select(JOBS.c.columns).where(JOBS.c.id == job_id)).scalar_one()
    return list(columns or [])


def _export_names(stored: list[Any]) -> list[str]:
    """The export's own columns: the job's, with ``deviceKey`` after ``productKey`` if absent."""
    names = [str(c) for c in stored]
    if _named(names, "deviceKey") is None:
        product = _named(names, "productKey")
        names.insert(0 if product is None else names.index(product) + 1, "deviceKey")
    return names


def _named(names: list[str], field: str) -> str | None:
    """The column of a fixed field as the file spells it (CSV fixed names ignore case)."""
    if field in names:
        return field
    return next((name for name in names if name.lower() == field.lower()), None)


def rows(
    session: Session,
    job_id: str,
    statuses: list[str] | None = None,
    opener: Opener | None = None,
) -> Iterator[dict[str, Any]]:
    """Each device's export row, in line order, streamed from the database."""
    stored_columns = _stored_columns(session, job_id)
    columns = _export_names(stored_columns)
    key_column = _named(columns, "deviceKey") or "deviceKey"
    query = (
        select(
            ITEMS.c.line_no,
            ITEMS.c.cells,
            ITEMS.c.device_key,
            ITEMS.c.status,
            ITEMS.c.asset_id,
            ITEMS.c.error_code,
            ITEMS.c.error_message,
            ITEMS.c.device_secret,
            ITEMS.c.session_key,
        )
        .where(ITEMS.c.job_id == job_id)
        .order_by(ITEMS.c.line_no)
        .execution_options(yield_per=2000)
    )
    if statuses:
        query = query.where(ITEMS.c.status.in_(statuses))
    for line, cells, key, status, asset, code, message, secret, session_key in session.execute(
        query
    ):
        cells = cells_by_name(cells, stored_columns)
        row: dict[str, Any] = {name: cells.get(name, "") for name in columns}
        row[key_column] = cells.get(key_column) or key or ""
        row.update(
            line=line,
            status=status,
            assetId=asset or "",
            errorCode="" if code is None else code,
            errorMessage=message or "",
        )
        if opener is not None:
            row["deviceSecret"], row["secretError"] = open_secret(
                opener, status, secret, session_key
            )
        yield row


def open_secret(
    opener: Opener, status: str, secret: str | None, session_key: str | None
) -> tuple[str, str]:
    """``(deviceSecret, secretError)`` of one row: the secret in clear, or why there is none.

    Only rows with a device on EnOS (created, adopted) have a secret to miss. The reason never
    quotes the ciphertext."""
    from cryptography.exceptions import InvalidTag  # loaded by an export of secrets only

    if status not in SECRET_STATUSES:
        return "", ""
    if not (secret and session_key):
        return "", NO_SECRET
    try:
        return opener.open(secret, session_key), ""
    except (ValueError, TypeError, InvalidTag):
        return "", NOT_OURS


def write_csv(out: TextIO, columns: list[str], records: Iterator[dict[str, Any]]) -> int:
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow([formula_guard(name) for name in columns])
    count = 0
    for record in records:
        writer.writerow([formula_guard(str(record.get(name, ""))) for name in columns])
        count += 1
    return count


def write_xlsx(out: IO[bytes], columns: list[str], records: Iterator[dict[str, Any]]) -> int:
    """The export as an Excel workbook, written as a stream (openpyxl's write-only mode). Every
    cell is text, guarded like the CSV's: nothing in it is run as a formula or retyped."""
    # openpyxl takes a third of a second to import: only when a workbook is written.
    from openpyxl import Workbook
    from openpyxl.cell import WriteOnlyCell
    from openpyxl.cell.cell import ILLEGAL_CHARACTERS_RE

    def text_cell(value: str) -> Any:
        cell = WriteOnlyCell(sheet, value=ILLEGAL_CHARACTERS_RE.sub("", value))
        cell.data_type = "s"  # text, even when it starts with '=' or looks like a number
        return cell

    book = Workbook(write_only=True)
    sheet = book.create_sheet("results")
    sheet.append([text_cell(formula_guard(name)) for name in columns])
    count = 0
    for record in records:
        sheet.append([text_cell(formula_guard(str(record.get(n, "")))) for n in columns])
        count += 1
    book.save(out)
    return count


def write_jsonl(out: TextIO, columns: list[str], records: Iterator[dict[str, Any]]) -> int:
    count = 0
    for record in records:
        out.write(orjson.dumps({name: record.get(name, "") for name in columns}).decode())
        out.write("\n")
        count += 1
    return count
