"""Device files read as a stream of rows: memory does not grow with the file.

Three formats: CSV as operators and Excel write it (UTF-8 with or without BOM, CRLF or LF,
comma, semicolon or tab, quoted fields with separators and newlines), JSON Lines (one
CreateOption a line) and JSON (a batchCreate request body ``{"deviceList": [...]}``, or a bare
array). A row that cannot be read becomes a row with problems, never the end of the file; a
problem that ends the file (a bad header, a truncated JSON document) is reported with where it
happened, and the rows before it stay.
"""

from __future__ import annotations

import csv
import hashlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import ijson
import orjson

from worker.intake.columns import (
    Column,
    HeaderError,
    cells_from_option,
    option_from_cells,
    parse_header,
)

FORMATS = ("csv", "jsonl", "json")
_BOM = b"\xef\xbb\xbf"
# JSON input is flattened to CSV columns; these lead, as in a CSV file, whichever row has them.
_LEADING = ("productKey", "deviceKey")


class SourceError(ValueError):
    """The file (not one row) cannot be read from here on; ``line`` says where."""

    def __init__(self, message: str, line: int | None = None) -> None:
        super().__init__(message)
        self.line = line


@dataclass(frozen=True, slots=True)
class IntakeLimits:
    max_file_bytes: int = 4 * 1024**3
    max_field_chars: int = 64 * 1024
    max_rows: int = 5_000_000
    max_columns: int = 1_000


@dataclass(slots=True)
class SourceRow:
    """One device of the input. ``line`` is the file line where the row starts (for JSON, the
    position in ``deviceList``); ``problems`` are reading problems, before any validation."""

    line: int
    cells: dict[str, str]
    option: Any
    problems: list[str] = field(default_factory=list)


class Source:
    """A device file; ``rows()`` streams it, ``columns`` are its column names once read."""

    format: str
    name: str

    def __init__(self) -> None:
        self.columns: list[str] = []
        self.error: SourceError | None = None
        self._known: set[str] = set()

    def rows(self) -> Iterator[SourceRow]:
        raise NotImplementedError

    def sha256(self) -> str:
        raise NotImplementedError

    def _json_row(self, line: int, option: Any, limits: IntakeLimits | None = None) -> SourceRow:
        """A JSON CreateOption flattened to the CSV columns; one that cannot be, or that breaks
        the limits (cell length, columns), is a row with a problem."""
        try:
            cells = cells_from_option(option)
        except TypeError as exc:  # orjson encodes at most 254 levels of nesting
            return SourceRow(line, {}, None, [f"line {line}: cannot be stored as JSON ({exc})"])
        if limits is not None:
            new = [name for name in cells if name not in self._known]
            if len(self.columns) + len(new) > limits.max_columns:
                problem = (
                    f"line {line}: its fields make {len(self.columns) + len(new)} columns, over "
                    f"the limit of {limits.max_columns} (ENOS_IMPORT_MAX_COLUMNS)"
                )
                return SourceRow(line, {}, None, [problem])
            for name, value in cells.items():
                if len(value) > limits.max_field_chars or len(name) > limits.max_field_chars:
                    problem = (
                        f"line {line}: {name[:100]}: longer than {limits.max_field_chars} "
                        "characters (ENOS_IMPORT_MAX_FIELD_CHARS)"
                    )
                    return SourceRow(line, {}, None, [problem])
        self._add_columns(cells)
        return SourceRow(line, cells, option)

    def _add_columns(self, names: Iterable[str]) -> None:
        for name in names:
            if name not in self._known:
                self._known.add(name)
                self.columns.append(name)


def detect_format(path: Path) -> str:
    suffix = path.suffix.lower()
    if suffix in (".csv", ".txt", ".tsv"):
        return "csv"
    if suffix in (".jsonl", ".ndjson"):
        return "jsonl"
    if suffix == ".json":
        return "json"
    with path.open("rb") as handle:
        head = handle.read(4096).lstrip(_BOM).lstrip()
    if head.startswith(b"["):
        return "json"
    if head.startswith(b"{"):
        first = head.split(b"\n", 1)[0]
        try:
            parsed = orjson.loads(first)
        except orjson.JSONDecodeError:
            return "json"
        # A request body written on one line is one JSON document, not JSON Lines.
        return "json" if isinstance(parsed, dict) and "deviceList" in parsed else "jsonl"
    return "csv"


def open_source(path: Path, fmt: str | None = None, limits: IntakeLimits | None = None) -> Source:
    limits = limits or IntakeLimits()
    if not path.is_file():
        raise SourceError(f"{path}: no such file")
    size = path.stat().st_size
    if size > limits.max_file_bytes:
        raise SourceError(
            f"{path}: {size} bytes is over the limit of {limits.max_file_bytes} bytes "
            "(ENOS_IMPORT_MAX_FILE_BYTES)"
        )
    fmt = fmt or detect_format(path)
    if fmt == "csv":
        return CsvSource(path, limits)
    if fmt == "jsonl":
        return JsonLinesSource(path, limits)
    if fmt == "json":
        return JsonSource(path, limits)
    raise SourceError(f"unknown format {fmt!r}; use one of {', '.join(FORMATS)}")


class _FileSource(Source):
    def __init__(self, path: Path, limits: IntakeLimits) -> None:
        super().__init__()
        self.path = path
        self.name = str(path)
        self.limits = limits

    def sha256(self) -> str:
        digest = hashlib.sha256()
        with self.path.open("rb") as handle:
            while block := handle.read(1 << 20):
                digest.update(block)
        return digest.hexdigest()

    def _check_rows(self, count: int, line: int) -> bool:
        if count >= self.limits.max_rows:
            self.error = SourceError(
                f"more than {self.limits.max_rows} rows (ENOS_IMPORT_MAX_ROWS): "
                f"the rows from line {line} on are not read",
                line,
            )
            return False
        return True


class CsvSource(_FileSource):
    format = "csv"

    def rows(self) -> Iterator[SourceRow]:
        with self.path.open("rb") as handle:
            lines = _DecodedLines(handle, self.limits.max_field_chars)
            sample = lines.peek_text(64 * 1024)
            dialect = _sniff(sample)
            csv.field_size_limit(self.limits.max_field_chars)
            reader = csv.reader(lines, dialect)
            try:
                header = next(reader)
            except StopIteration:
                self.error = SourceError("the file is empty", 1)
                return
            except csv.Error as exc:
                self.error = SourceError(f"line 1 (header): cannot be read: {exc}", 1)
                return
            unreadable = lines.problems(1, reader.line_num)
            if len(header) > self.limits.max_columns:
                # A header cut at the line limit has at least the columns counted so far.
                self.error = SourceError(
                    f"line 1 (header): {'at least ' if unreadable else ''}{len(header)} "
                    f"columns, over the limit of {self.limits.max_columns} "
                    "(ENOS_IMPORT_MAX_COLUMNS)",
                    1,
                )
                return
            if unreadable:
                text = "; ".join(p.partition(": ")[2] for p in unreadable)
                self.error = SourceError(f"line 1 (header): {text}", 1)
                return
            try:
                columns = parse_header(header)
            except HeaderError as exc:
                self.error = SourceError(f"line 1 (header): {exc}", 1)
                return
            names = [c.name for c in columns]
            if not any(c.kind == "field" and c.key == "deviceKey" for c in columns):
                names.insert(1, "deviceKey")
            self._add_columns(names)
            yield from self._records(reader, lines, columns, len(header))

    def _records(
        self,
        reader: Any,
        lines: _DecodedLines,
        columns: list[Column],
        width: int,
    ) -> Iterator[SourceRow]:
        count = 0
        last_line = reader.line_num
        while True:
            start = last_line + 1
            try:
                cells = next(reader)
            except StopIteration:
                return
            except csv.Error as exc:
                last_line = reader.line_num
                lines.forget(last_line)
                problem = _record_error(exc, start, last_line, self.limits.max_field_chars)
                yield SourceRow(start, {}, None, [problem])
                continue
            last_line = reader.line_num
            if not cells or all(not c.strip() for c in cells):
                lines.forget(last_line)
                continue
            if not self._check_rows(count, start):
                return
            count += 1
            problems = lines.problems(start, last_line)
            if len(cells) > width:
                problems.append(
                    f"line {start}: has {len(cells)} cells, the header has {width} columns"
                )
            if problems:
                yield SourceRow(start, _cells(columns, cells), None, problems)
                continue
            yield SourceRow(start, _cells(columns, cells), option_from_cells(columns, cells))


def _record_error(exc: csv.Error, start: int, end: int, max_field: int) -> str:
    if "unexpected end of data" in str(exc):
        return (
            f"line {start}: a quoted field opens here and is never closed, so lines "
            f"{start}-{end} cannot be read (unbalanced quote)"
        )
    if "field larger than field limit" in str(exc):
        return (
            f"line {start}: a field is longer than {max_field} characters "
            "(ENOS_IMPORT_MAX_FIELD_CHARS)"
        )
    return f"line {start}: malformed CSV ({exc})"


def _cells(columns: list[Column], cells: list[str]) -> dict[str, str]:
    width = len(cells)
    return {c.name: cells[c.index] for c in columns if c.index < width and cells[c.index] != ""}


def _sniff(sample: str) -> type[csv.Dialect] | csv.Dialect:
    header = sample.split("\n", 1)[0]
    # The header decides: the separator that splits it into the most known columns wins.
    best, best_count = ",", 0
    for delimiter in (",", ";", "\t"):
        count = header.count(delimiter)
        if count > best_count:
            best, best_count = delimiter, count

    class Dialect(csv.excel):
        delimiter = best
        # Strict: a malformed quote fails its own record (the reader goes on with the next
        # one) instead of silently swallowing the lines after it into one field.
        strict = True

    return Dialect


class _DecodedLines:
    """Physical lines of a binary file, decoded as UTF-8 (BOM dropped); a line that is not UTF-8,
    holds a NUL byte or is too long is passed on repaired and remembered as a problem."""

    def __init__(self, handle: IO[bytes], max_line: int) -> None:
        self._handle = handle
        self._max = max_line
        self._line = 0
        self._bad: dict[int, str] = {}
        self._peeked: list[bytes] = []
        self._first = True

    def peek_text(self, size: int) -> str:
        data = self._handle.read(size)
        self._peeked.append(data)
        return data.lstrip(_BOM).decode("utf-8", "replace")

    def _raw_lines(self) -> Iterator[tuple[bytes, bool]]:
        """Each physical line with its line end, and whether it was cut: a line longer than the
        limit is passed on cut there and the rest of it skipped, so memory stays bounded.

        A cut line keeps the quoting state of the whole line (a quote is added when its skipped
        rest holds an odd number of them): a quoted field that closes in the skipped rest must
        not swallow the lines after it."""
        limit = self._max * 4 + 4
        buffer = b"".join(self._peeked)
        self._peeked.clear()
        start = 0
        cut: bytes | None = None  # the start of a cut line whose rest is being skipped
        quotes = 0  # quotes in that rest
        while True:
            newline = buffer.find(b"\n", start)
            if newline >= 0:
                if cut is not None:
                    yield _closed(cut, quotes + buffer.count(b'"', start, newline)), True
                    cut = None
                elif newline + 1 - start > limit:
                    rest_quotes = buffer.count(b'"', start + limit, newline)
                    yield _closed(buffer[start : start + limit], rest_quotes), True
                else:
                    yield buffer[start : newline + 1], False
                start = newline + 1
                continue
            if cut is not None:
                quotes += buffer.count(b'"', start)
                buffer, start = b"", 0
            elif len(buffer) - start > limit:
                # A runaway line: keep its start, skip the rest up to its line end.
                cut, quotes = buffer[start : start + limit], buffer.count(b'"', start + limit)
                buffer, start = b"", 0
            block = self._handle.read(1 << 16)
            if not block:
                if cut is not None:
                    yield _closed(cut, quotes), True
                elif len(buffer) - start > limit:
                    yield (
                        _closed(buffer[start : start + limit], buffer.count(b'"', start + limit)),
                        True,
                    )
                elif len(buffer) > start:
                    yield buffer[start:], False
                return
            # Only the unfinished line is kept: no copying of the whole buffer per line.
            buffer = buffer[start:] + block
            start = 0

    def __iter__(self) -> Iterator[str]:
        for raw, cut in self._raw_lines():
            self._line += 1
            if self._first:
                raw = raw.removeprefix(_BOM)
                self._first = False
            if cut:
                self._bad[self._line] = (
                    f"line {self._line}: longer than {self._max * 4 + 4} bytes "
                    "(ENOS_IMPORT_MAX_FIELD_CHARS)"
                )
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                self._bad.setdefault(
                    self._line,
                    f"line {self._line}: not valid UTF-8 (byte 0x{raw[exc.start]:02x} at "
                    f"byte {exc.start + 1} of the line)",
                )
                text = raw.decode("utf-8", "replace")
            if "\x00" in text:
                self._bad.setdefault(self._line, f"line {self._line}: contains a NUL byte")
                text = text.replace("\x00", "")
            yield text

    def problems(self, first: int, last: int) -> list[str]:
        found = [self._bad.pop(n) for n in range(first, last + 1) if n in self._bad]
        self.forget(last)
        return found

    def forget(self, upto: int) -> None:
        if self._bad:
            for n in [n for n in self._bad if n <= upto]:
                del self._bad[n]


def _closed(cut: bytes, rest_quotes: int) -> bytes:
    """The start of a cut line, ending quoted or not as the whole line does."""
    return cut + b'"' if rest_quotes % 2 else cut


class JsonLinesSource(_FileSource):
    format = "jsonl"

    def rows(self) -> Iterator[SourceRow]:
        self._add_columns(_LEADING)
        count = 0
        limit = self.limits.max_field_chars * 16
        with self.path.open("rb") as handle:
            for line_no, raw in enumerate(_bounded_lines(handle, limit), 1):
                if line_no == 1 and raw is not None:
                    raw = raw.removeprefix(_BOM)
                if raw is not None and not raw.strip():
                    continue
                if not self._check_rows(count, line_no):
                    return
                count += 1
                if raw is None:
                    problem = (
                        f"line {line_no}: longer than {limit} bytes "
                        "(16 x ENOS_IMPORT_MAX_FIELD_CHARS)"
                    )
                    yield SourceRow(line_no, {}, None, [problem])
                    continue
                try:
                    option = orjson.loads(raw)
                except orjson.JSONDecodeError as exc:
                    problem = f"line {line_no}: not valid JSON ({exc.msg} at column {exc.colno})"
                    yield SourceRow(line_no, {}, None, [problem])
                    continue
                yield self._json_row(line_no, option, self.limits)


def _bounded_lines(handle: IO[bytes], limit: int) -> Iterator[bytes | None]:
    """Each line of ``handle``; ``None`` for a line longer than ``limit`` bytes, which is skipped
    without ever being held whole."""
    while raw := handle.readline(limit + 1):
        if len(raw) <= limit:
            yield raw
            continue
        while raw and not raw.endswith(b"\n"):
            raw = handle.readline(1 << 16)
        yield None


class JsonSource(_FileSource):
    format = "json"

    def rows(self) -> Iterator[SourceRow]:
        self._add_columns(_LEADING)
        with self.path.open("rb") as handle:
            head = handle.read(4096)
            body = head.removeprefix(_BOM).lstrip()
            handle.seek(len(head) - len(body))  # ijson wants neither a BOM nor leading space
            prefix = "item" if body.startswith(b"[") else "deviceList.item"
            count = 0
            try:
                for count, option in enumerate(ijson.items(handle, prefix, use_float=True), 1):
                    if not self._check_rows(count - 1, count):
                        return
                    yield self._json_row(count, option, self.limits)
            except (ijson.JSONError, ValueError) as exc:
                # ValueError: yajl2_c decodes an unpaired surrogate escape with a UnicodeError.
                self.error = SourceError(
                    f"the JSON document breaks off after item {count} of "
                    f"{'the array' if prefix == 'item' else 'deviceList'}: line {count + 1}: "
                    f"{_json_error(exc)}",
                    count + 1,
                )
                return
            if count == 0:
                self.error = SourceError(
                    'line 1: no devices found: expected {"deviceList": [...]} or an array of '
                    "devices",
                    1,
                )


def _json_error(exc: Exception) -> str:
    """The parser's message on one line (ijson's goes on to quote the input around the error)."""
    if isinstance(exc, UnicodeError):
        return "a string is not valid Unicode (an unpaired surrogate)"
    detail: Any = exc.args[0] if exc.args else exc
    if isinstance(detail, bytes):
        detail = detail.decode("utf-8", "replace")
    first = str(detail).strip().split("\n", 1)[0].replace("\x00", "")
    return first or type(exc).__name__


class InlineSource(Source):
    """Devices handed over in a message (the ``enos_import.submit`` task's list)."""

    format = "inline"

    def __init__(self, devices: list[Any]) -> None:
        super().__init__()
        self.name = "inline"
        self.devices = devices

    def sha256(self) -> str:
        return hashlib.sha256(orjson.dumps(self.devices, option=orjson.OPT_SORT_KEYS)).hexdigest()

    def rows(self) -> Iterator[SourceRow]:
        self._add_columns(_LEADING)
        for position, option in enumerate(self.devices, 1):
            yield self._json_row(position, option)
