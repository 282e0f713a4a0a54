"""Device files read as a stream of rows: memory does not grow with the file.

Four formats: CSV as operators and Excel write it (UTF-8 with or without BOM, CRLF or LF,
comma, semicolon or tab, quoted fields with separators and newlines), JSON Lines (one
CreateOption a line), JSON (a batchCreate request body ``{"deviceList": [...]}``, or a bare
array) and Excel workbooks (xlsx, the first visible worksheet). A row that cannot be read
becomes a row with problems, never the end of the file; a problem that ends the file (a bad
header, a truncated JSON document) is reported with where it happened, and the rows before it
stay.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import orjson

from worker.readers.base import (
    BOM,
    FORMATS,
    LEADING_COLUMNS,
    IntakeLimits,
    Source,
    SourceError,
    SourceRow,
)
from worker.readers.csv_source import CsvSource
from worker.readers.excerpt import excerpt
from worker.readers.json_sources import JsonLinesSource, JsonSource, too_deep
from worker.readers.opening import OpenedFile, open_regular

# An xlsx workbook is a zip file; every zip starts with a local file header.
ZIP_MAGIC = b"PK\x03\x04"

__all__ = [
    "FORMATS",
    "READERS",
    "SUFFIX_FORMATS",
    "CsvSource",
    "InlineSource",
    "IntakeLimits",
    "JsonLinesSource",
    "JsonSource",
    "Source",
    "SourceError",
    "SourceRow",
    "detect_format",
    "open_source",
]


# The format registry: a file's suffix names its reader. The inbox takes exactly these
# suffixes, so a reader added here is a format the inbox accepts.
SUFFIX_FORMATS = {
    ".csv": "csv",
    ".txt": "csv",
    ".tsv": "csv",
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".json": "json",
    ".xlsx": "xlsx",
    ".xlsm": "xlsx",
}


def _xlsx(path: Path, limits: IntakeLimits, opened: OpenedFile) -> Source:
    # openpyxl (and numpy behind it) takes a third of a second to import: only when needed.
    from worker.readers.xlsx_source import XlsxSource

    return XlsxSource(path, limits, opened)


READERS: dict[str, Callable[[Path, IntakeLimits, OpenedFile], Source]] = {
    "csv": CsvSource,
    "jsonl": JsonLinesSource,
    "json": JsonSource,
    "xlsx": _xlsx,
}


def detect_format(path: Path, opened: OpenedFile | None = None) -> str:
    fmt = SUFFIX_FORMATS.get(path.suffix.lower())
    if fmt is not None:
        return fmt
    if opened is not None:
        head = opened.rewound().read(4096)
    else:
        with path.open("rb") as handle:
            head = handle.read(4096)
    if head.startswith(ZIP_MAGIC):
        return "xlsx"
    head = head.lstrip(BOM).lstrip()
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
    """The file's reader, holding the one handle it is hashed and read through."""
    limits = limits or IntakeLimits()
    if fmt is not None and fmt not in READERS:
        raise SourceError(f"unknown format {excerpt(fmt)}; use one of {', '.join(FORMATS)}")
    opened = open_regular(path, limits.max_file_bytes)
    try:
        return READERS[fmt or detect_format(path, opened)](path, limits, opened)
    except BaseException:
        opened.close()
        raise


class InlineSource(Source):
    """Devices handed over in a message (the ``enos_import.submit`` task's list): they keep
    the limits of a file (rows, depth, fields, columns)."""

    format = "inline"

    def __init__(self, devices: list[Any], limits: IntakeLimits | None = None) -> None:
        super().__init__()
        self.name = "inline"
        self.devices = devices
        self.limits = limits or IntakeLimits()
        self._sha256: str | None = None

    def sha256(self) -> str:
        # Taken once, before the rows are read: reading writes derived keys into the devices.
        if self._sha256 is None:
            dumped = orjson.dumps(self.devices, option=orjson.OPT_SORT_KEYS)
            self._sha256 = hashlib.sha256(dumped).hexdigest()
        return self._sha256

    def rows(self) -> Iterator[SourceRow]:
        self._add_columns(LEADING_COLUMNS)
        limits = self.limits
        for position, option in enumerate(self.devices, 1):
            if position > limits.max_rows:
                self.error = SourceError(
                    f"more than {limits.max_rows} devices (ENOS_IMPORT_MAX_ROWS): the devices "
                    f"from position {position} on are not read",
                    position,
                )
                return
            if too_deep(option, limits.max_json_depth):
                problem = f"line {position}: nested deeper than {limits.max_json_depth} levels"
                yield SourceRow(position, {}, None, [problem])
                continue
            yield self._json_row(position, option, limits)
