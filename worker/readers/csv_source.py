"""CSV as operators and Excel write it: UTF-8 with or without BOM, CRLF or LF, comma, semicolon
or tab, quoted fields with separators and newlines; streamed line by line."""

from __future__ import annotations

import csv
from collections.abc import Iterator
from typing import IO, Any

from worker.readers.base import BOM, SourceError, SourceRow, _FileSource
from worker.readers.columns import Column, HeaderError, RowShape, column_names, parse_header

UTF16_BOMS = (b"\xff\xfe", b"\xfe\xff")


class CsvSource(_FileSource):
    format = "csv"

    def rows(self) -> Iterator[SourceRow]:
        yield from self._rows()
        self._check_unchanged()

    def _rows(self) -> Iterator[SourceRow]:
        handle = self._stream()
        if handle.read(2) in UTF16_BOMS:  # Excel's "Unicode Text": every line would be garbled
            self.error = SourceError(
                'line 1: the file is UTF-16 text (as Excel saves "Unicode Text"), not UTF-8: '
                'save it as "CSV UTF-8"',
                1,
            )
            return
        handle.seek(0)
        lines = _DecodedLines(handle, self.limits.max_field_chars, self.limits.max_item_bytes)
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
        self._add_columns(column_names(columns))
        yield from self._records(reader, lines, columns, len(header))

    def _records(
        self,
        reader: Any,
        lines: _DecodedLines,
        columns: list[Column],
        width: int,
    ) -> Iterator[SourceRow]:
        count = 0
        max_rows = self.limits.max_rows
        last_line = reader.line_num
        new_record, problems_of = lines.new_record, lines.problems
        split = RowShape(columns).split
        while True:
            start = last_line + 1
            new_record()
            try:
                cells = next(reader)
            except StopIteration:
                return
            except csv.Error as exc:
                last_line = reader.line_num
                lines.forget(last_line)
                # An unreadable record is a row too: MAX_ROWS bounds every row a file yields.
                if count >= max_rows and not self._check_rows(count, start):
                    return
                count += 1
                problem = _record_error(exc, start, last_line, self.limits.max_field_chars)
                yield SourceRow(start, {}, None, [problem])
                continue
            last_line = reader.line_num
            if not "".join(cells).strip():  # no cells, or only blank ones
                lines.forget(last_line)
                continue
            if count >= max_rows and not self._check_rows(count, start):
                return
            count += 1
            problems = problems_of(start, last_line)
            if len(cells) > width:
                problems.append(
                    f"line {start}: has {len(cells)} cells, the header has {width} columns"
                )
            if problems:
                yield SourceRow(start, _cells(columns, cells), None, problems)
                continue
            option, values = split(cells)
            yield SourceRow(start, values, option)


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

    def __init__(self, handle: IO[bytes], max_line: int, max_record: int) -> None:
        self._handle = handle
        self._max = max_line
        self._max_record = max_record
        self._record_bytes = 0
        self._skipping = False  # inside an overlong record: its lines are not passed on
        self._line = 0
        self._bad: dict[int, str] = {}
        self._peeked: list[bytes] = []
        self._first = True

    def peek_text(self, size: int) -> str:
        data = self._handle.read(size)
        self._peeked.append(data)
        return data.lstrip(BOM).decode("utf-8", "replace")

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

    def new_record(self) -> None:
        """The reader starts a record: the record size counts from here."""
        self._record_bytes = 0

    def _bounded(self, raw: bytes) -> bytes:
        """The line, or a stand-in once its record (a quoted field running over line ends)
        passed ``max_record`` bytes: the reader then sees empty lines, which keep the line
        numbers, and a closing quote where the record ends, so the cells it holds stay bounded.
        The end is found by the parity of quotes (a doubled quote counts twice)."""
        if self._skipping:
            if raw.count(b'"') % 2:
                self._skipping = False
                return b'"\n'
            return b""
        self._record_bytes += len(raw)
        if self._record_bytes <= self._max_record or self._record_bytes == len(raw):
            return raw
        # The reader asked for another line of the same record: it is inside a quoted field.
        self._bad[self._line] = (
            f"line {self._line}: the record is longer than {self._max_record} bytes across "
            "quoted line ends (16 x ENOS_IMPORT_MAX_FIELD_CHARS); its lines are skipped"
        )
        self._skipping = True
        return self._bounded(raw)

    def __iter__(self) -> Iterator[str]:
        for whole, cut in self._raw_lines():
            self._line += 1
            raw = self._bounded(whole)
            if self._first:
                raw = raw.removeprefix(BOM)
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
        if not self._bad:
            return []  # the common case: no line of the file had a problem so far
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
