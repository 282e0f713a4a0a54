"""Excel workbooks (xlsx): the first visible worksheet, read row by row as a stream.

The first row names the columns exactly as in CSV; "line" is the sheet's row number. Each cell
becomes the text a CSV file would hold, so the CSV rules give the CreateOption types: a number
``123``, a boolean ``true``, a date ``2024-05-01`` (``attr.`` columns then parse numbers and
booleans as JSON). A formula gives its cached value; one without (a workbook written by a
program that does not compute) is a problem of its row. Merged ranges are filled with their
first cell's value, as an operator reading the sheet sees it.
"""

from __future__ import annotations

import datetime as dt
import zipfile
from collections.abc import Iterator
from typing import Any

from openpyxl.utils.cell import column_index_from_string, coordinate_from_string, range_boundaries
from openpyxl.utils.datetime import from_excel

from worker.readers.base import SourceError, SourceRow, _FileSource
from worker.readers.columns import Column, HeaderError, RowShape, column_names, parse_header
from worker.readers.xlsx_book import (
    MAIN_NS,
    Book,
    XlsxError,
    check_archive,
    item_text,
    iterparse,
    open_book,
)

_ROW = f"{MAIN_NS}row"
_CELL = f"{MAIN_NS}c"
_VALUE = f"{MAIN_NS}v"
_FORMULA = f"{MAIN_NS}f"
_INLINE = f"{MAIN_NS}is"
_DIMENSION = f"{MAIN_NS}dimension"
_SHEET_DATA = f"{MAIN_NS}sheetData"


class FormulaWithoutValue(ValueError):
    """A formula cell that carries no cached value."""


class XlsxSource(_FileSource):
    format = "xlsx"

    def rows(self) -> Iterator[SourceRow]:
        yield from self._workbook_rows()
        self._check_unchanged()

    def _workbook_rows(self) -> Iterator[SourceRow]:
        try:
            # Through the one handle the file was opened, checked and hashed with.
            archive = zipfile.ZipFile(self._stream())
        except (zipfile.BadZipFile, OSError) as exc:
            self.error = SourceError(f"not an xlsx workbook: {exc}", 1)
            return
        with archive:
            try:
                check_archive(archive, self.limits.max_file_bytes)
                book = open_book(archive)
            except (XlsxError, zipfile.BadZipFile, KeyError, SyntaxError) as exc:
                self.error = SourceError(f"the workbook cannot be read: {exc}", 1)
                return
            try:
                yield from self._sheet_rows(archive, book)
            except (zipfile.BadZipFile, SyntaxError, XlsxError) as exc:
                self.error = SourceError(f"sheet {book.sheet_name!r}: {exc}")
            finally:
                book.strings.close()

    def _sheet_rows(self, archive: zipfile.ZipFile, book: Book) -> Iterator[SourceRow]:
        fill = _MergeFill(book.merges)
        columns: list[Column] | None = None
        count = 0
        with archive.open(book.sheet_path) as source:
            for number, cells, problems in self._raw_rows(source, book):
                cells = fill.apply(number, cells)
                if columns is None:
                    columns = self._header(number, cells)
                    if columns is None:
                        return
                    shape = RowShape(columns)
                    continue
                values = [cells.get(c.index + 1, "") for c in columns]
                if not any(v.strip() for v in values) and not problems:
                    continue  # blank rows (and Excel's formatted empty tail) are skipped
                if not self._check_rows(count, number):
                    return
                count += 1
                yield self._row(number, columns, shape, cells, problems)
        if columns is None:
            self.error = SourceError(f"sheet {book.sheet_name!r} is empty", 1)

    def _header(self, number: int, cells: dict[int, str]) -> list[Column] | None:
        width = max(cells) if cells else 0
        if width > self.limits.max_columns:
            self.error = SourceError(
                f"row {number} (header): {width} columns, over the limit of "
                f"{self.limits.max_columns} (ENOS_IMPORT_MAX_COLUMNS)",
                number,
            )
            return None
        try:
            columns = parse_header([cells.get(i, "") for i in range(1, width + 1)])
        except HeaderError as exc:
            self.error = SourceError(f"row {number} (header): {exc}", number)
            return None
        self._add_columns(column_names(columns))
        return columns

    def _row(
        self,
        number: int,
        columns: list[Column],
        shape: RowShape,
        cells: dict[int, str],
        problems: list[str],
    ) -> SourceRow:
        named = {c.index + 1 for c in columns}
        for index in sorted(set(cells) - named):
            if cells[index].strip():
                problems.append(f"line {number}: cell {_ref(index, number)} has a value but its "
                                "column has no name in the header row")  # fmt: skip
        values = [cells.get(i, "") for i in range(1, max(named) + 1)]
        if problems:
            kept = {c.name: values[c.index] for c in columns if values[c.index] != ""}
            return SourceRow(number, kept, None, problems)
        option, row_cells = shape.split(values)
        return SourceRow(number, row_cells, option)

    def _raw_rows(self, source: Any, book: Book) -> Iterator[tuple[int, dict[int, str], list[str]]]:
        """Each ``<row>``: its number, its cells as CSV text by column, its problems."""
        data: Any = None
        number = 0
        for event, element in iterparse(source, events=("start", "end")):
            tag = element.tag
            if event == "start":
                if tag == _SHEET_DATA:
                    data = element
                elif tag == _DIMENSION:
                    self._check_dimension(element.get("ref", ""))
                continue
            if tag != _ROW:
                continue
            number = int(element.get("r") or number + 1)
            cells: dict[int, str] = {}
            problems: list[str] = []
            column = 0
            for cell in element.iter(_CELL):
                ref = cell.get("r")
                column = (
                    column_index_from_string(coordinate_from_string(ref)[0]) if ref else column + 1
                )
                if column > self.limits.max_columns:
                    limit = self.limits.max_columns
                    problems.append(f"line {number}: a cell beyond column {limit} "
                                    "(ENOS_IMPORT_MAX_COLUMNS)")  # fmt: skip
                    break
                try:
                    text = _cell_text(cell, book)
                except FormulaWithoutValue:
                    problems.append(f"line {number}: cell {_ref(column, number)} is a formula "
                                    "without a computed value; open and save the workbook in "
                                    "Excel, or paste it as values")  # fmt: skip
                    continue
                except ValueError as exc:
                    problems.append(f"line {number}: cell {_ref(column, number)}: {exc}")
                    continue
                if len(text) > self.limits.max_field_chars:
                    problems.append(f"line {number}: cell {_ref(column, number)} is longer than "
                                    f"{self.limits.max_field_chars} characters "
                                    "(ENOS_IMPORT_MAX_FIELD_CHARS)")  # fmt: skip
                    continue
                if text != "":
                    cells[column] = text
            element.clear()
            if data is not None:
                data.remove(element)  # detached too: a cleared row left in the tree still costs
            yield number, cells, problems

    def _check_dimension(self, ref: str) -> None:
        """The sheet's declared extent, checked before any row is expanded."""
        try:
            _, min_row, max_col, max_row = range_boundaries(ref)
        except (TypeError, ValueError):
            return  # absent or odd: the per-row checks still bound the reading
        if max_col is not None and max_col > self.limits.max_columns:
            raise XlsxError(f"it declares {max_col} columns, over the limit of "
                            f"{self.limits.max_columns} (ENOS_IMPORT_MAX_COLUMNS)")  # fmt: skip
        rows = (max_row or 0) - (min_row or 1)
        # Excel may declare a formatted empty tail; the row limit is enforced while reading.
        if rows > 4 * self.limits.max_rows:
            raise XlsxError(f"it declares {rows} rows, over the limit of {self.limits.max_rows} "
                            "(ENOS_IMPORT_MAX_ROWS)")  # fmt: skip


def _cell_text(cell: Any, book: Book) -> str:
    """A cell as the text a CSV export would hold, so that the CSV rules apply to it."""
    kind = cell.get("t", "n")
    if kind == "inlineStr":
        inline = cell.find(_INLINE)
        return "" if inline is None else item_text(inline)
    value: str | None = cell.findtext(_VALUE)
    if value is None or (value == "" and kind != "str"):
        # Some writers (openpyxl among them) leave an empty <v/> behind a formula they did not
        # compute; only a text result can truly be empty.
        if cell.find(_FORMULA) is not None:
            raise FormulaWithoutValue
        return ""
    if kind == "s":
        return book.strings[int(value)]
    if kind in ("str", "d"):
        return value
    if kind == "b":
        return "true" if value.strip() in ("1", "true") else "false"
    if kind == "e":
        raise ValueError(f"Excel error {value}")
    style = int(cell.get("s") or 0)
    if style in book.date_styles:
        return _date_text(from_excel(float(value), book.epoch))
    return _number_text(value)


def _number_text(value: str) -> str:
    """Excel keeps every number as a double: ``5`` is written ``5``, sometimes ``5.0`` or
    ``5E+0``; integral values are given as integers, others in their shortest form."""
    number = float(value)
    if number.is_integer() and abs(number) < 2**53:
        return str(int(number))
    return repr(number)


def _date_text(value: Any) -> str:
    if isinstance(value, dt.datetime):
        if value.time() == dt.time(0):
            return value.date().isoformat()
        return value.isoformat()
    if isinstance(value, dt.time | dt.date):
        return value.isoformat()
    return str(value)


def _ref(column: int, row: int) -> str:
    from openpyxl.utils.cell import get_column_letter

    return f"{get_column_letter(column)}{row}"


class _MergeFill:
    """Fills each merged range with the value of its top-left cell, as the sheet shows it."""

    def __init__(self, merges: list[tuple[int, int, int, int]]) -> None:
        self._starting: dict[int, list[tuple[int, int, int, int]]] = {}
        for merge in merges:
            self._starting.setdefault(merge[1], []).append(merge)
        self._active: list[tuple[tuple[int, int, int, int], str]] = []

    def apply(self, number: int, cells: dict[int, str]) -> dict[int, str]:
        if not self._starting and not self._active:
            return cells
        self._active = [(m, v) for m, v in self._active if m[3] >= number]
        for merge in self._starting.pop(number, []):
            self._active.append((merge, cells.get(merge[0], "")))
        for (min_col, _, max_col, _), value in self._active:
            if value:
                for column in range(min_col, max_col + 1):
                    cells.setdefault(column, value)
        return cells
