"""Device files read as a stream of rows: memory does not grow with the file.

Four formats: CSV as operators and Excel write it (UTF-8 with or without BOM, CRLF or LF,
comma, semicolon or tab, quoted fields with separators and newlines), JSON Lines (one
CreateOption a line) and JSON (a batchCreate request body ``{"deviceList": [...]}``, or a bare
array), and Excel workbooks (xlsx, the first visible worksheet). A row that cannot be read
becomes a row with problems, never the end of the file; a problem that ends the file (a bad
header, a truncated JSON document) is reported with where it happened, and the rows before it
stay.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson

from worker.intake.base import (
    BOM,
    FORMATS,
    LEADING_COLUMNS,
    IntakeLimits,
    Source,
    SourceError,
    SourceRow,
)
from worker.intake.csv_source import CsvSource
from worker.intake.json_sources import JsonLinesSource, JsonSource
from worker.intake.xlsx_source import XlsxSource

# An xlsx workbook is a zip file; every zip starts with a local file header.
ZIP_MAGIC = b"PK\x03\x04"

__all__ = [
    "FORMATS",
    "CsvSource",
    "InlineSource",
    "IntakeLimits",
    "JsonLinesSource",
    "JsonSource",
    "Source",
    "SourceError",
    "SourceRow",
    "XlsxSource",
    "detect_format",
    "open_source",
]


def detect_format(path: Path) -> str:
    suffix = path.suffix.lower()
    if suffix in (".csv", ".txt", ".tsv"):
        return "csv"
    if suffix in (".jsonl", ".ndjson"):
        return "jsonl"
    if suffix == ".json":
        return "json"
    if suffix in (".xlsx", ".xlsm"):
        return "xlsx"
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
    if fmt == "xlsx":
        return XlsxSource(path, limits)
    raise SourceError(f"unknown format {fmt!r}; use one of {', '.join(FORMATS)}")


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
        self._add_columns(LEADING_COLUMNS)
        for position, option in enumerate(self.devices, 1):
            yield self._json_row(position, option)
