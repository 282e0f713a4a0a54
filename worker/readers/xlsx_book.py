"""The parts of an xlsx workbook that the row reader needs, read with bounded memory.

An xlsx file is a zip of XML parts. Before anything is expanded, the zip's central directory is
checked against the limits (a zip bomb declares its size there, and :mod:`zipfile` never returns
more than an entry declares). XML entity tricks are refused: by expat itself from version 2.4.1
(amplification limits; ElementTree never loads external entities), else by :mod:`defusedxml`.
Shared strings, which Excel keeps in one table that rows refer to by position, are spilled to a
temporary file, so a workbook of a million distinct names does not sit in memory.
"""

from __future__ import annotations

import array
import datetime as dt
import os
import posixpath
import pyexpat
import re
import tempfile
import xml.etree.ElementTree as ElementTree
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import IO, Any

import defusedxml.ElementTree
from openpyxl.styles.numbers import BUILTIN_FORMATS, is_date_format
from openpyxl.utils.cell import range_boundaries
from openpyxl.utils.datetime import MAC_EPOCH, WINDOWS_EPOCH

MAIN_NS = "{http://schemas.openxmlformats.org/spreadsheetml/2006/main}"
REL_NS = "{http://schemas.openxmlformats.org/officeDocument/2006/relationships}"
PKG_REL_NS = "{http://schemas.openxmlformats.org/package/2006/relationships}"
# A workbook has a few dozen parts; thousands mean a crafted file.
MAX_ENTRIES = 10_000
# Merged ranges are kept in memory to fill them in; an operator's sheet has a handful.
MAX_MERGES = 100_000
_MERGE = re.compile(rb'<(?:\w+:)?mergeCell\s[^>]*?ref="([A-Z]+[0-9]+:[A-Z]+[0-9]+)"')


# Python's XML page: with expat 2.4.1 or later, ElementTree is safe from "billion laughs" and
# quadratic blow-up. defusedxml's parser is safe everywhere but runs its handlers in Python, at
# a third of the speed; it is the fallback for an older expat.
_SAFE_EXPAT = pyexpat.version_info >= (2, 4, 1)
iterparse: Any = ElementTree.iterparse if _SAFE_EXPAT else defusedxml.ElementTree.iterparse


class XlsxError(ValueError):
    """The workbook cannot be read; the message says why."""


@dataclass(slots=True)
class Book:
    """What the row reader needs: the sheet to read, how to read numbers, shared strings."""

    sheet_name: str
    sheet_path: str
    date_styles: frozenset[int]
    epoch: dt.datetime
    strings: SharedStrings
    merges: list[tuple[int, int, int, int]] = field(default_factory=list)


def check_archive(archive: zipfile.ZipFile, max_unpacked: int) -> None:
    """Refuse a workbook whose directory declares more than the limits, before expanding it."""
    entries = archive.infolist()
    if len(entries) > MAX_ENTRIES:
        raise XlsxError(f"{len(entries)} parts in the zip, over the limit of {MAX_ENTRIES}")
    unpacked = sum(entry.file_size for entry in entries)
    if unpacked > max_unpacked:
        raise XlsxError(
            f"it unpacks to {unpacked} bytes, over the limit of {max_unpacked} bytes "
            "(ENOS_IMPORT_MAX_FILE_BYTES); refused before expanding it"
        )


def open_book(archive: zipfile.ZipFile) -> Book:
    """The first visible worksheet of the workbook and everything needed to read its rows."""
    names = set(archive.namelist())
    if "xl/workbook.xml" not in names:
        raise XlsxError("not an xlsx workbook (no xl/workbook.xml)")
    sheet_name, rel_id, epoch = _first_visible_sheet(archive)
    targets = _relationships(archive, "xl/_rels/workbook.xml.rels")
    target = targets.get(rel_id)
    if target is None:
        raise XlsxError(f"sheet {sheet_name!r} has no part in the workbook")
    path = target.lstrip("/") if target.startswith("/") else posixpath.join("xl", target)
    path = posixpath.normpath(path)
    if path not in names:
        raise XlsxError(f"sheet {sheet_name!r}: part {path} is missing")
    strings = SharedStrings()
    try:
        if "xl/sharedStrings.xml" in names:
            strings.load(archive, "xl/sharedStrings.xml")
        date_styles = _date_styles(archive) if "xl/styles.xml" in names else frozenset()
        return Book(sheet_name, path, date_styles, epoch, strings, _merged_ranges(archive, path))
    except BaseException:
        strings.close()  # its temporary file
        raise


def _first_visible_sheet(archive: zipfile.ZipFile) -> tuple[str, str, dt.datetime]:
    epoch = WINDOWS_EPOCH
    with archive.open("xl/workbook.xml") as source:
        for _, element in iterparse(source):
            if element.tag == f"{MAIN_NS}workbookPr":
                if element.get("date1904", "").lower() in ("1", "true"):
                    epoch = MAC_EPOCH
            # A hidden sheet holds what its author set aside (notes, lookups): skipped.
            elif element.tag == f"{MAIN_NS}sheet" and element.get("state", "visible") == "visible":
                return element.get("name", ""), element.get(f"{REL_NS}id", ""), epoch
    raise XlsxError("the workbook has no visible worksheet")


def _relationships(archive: zipfile.ZipFile, part: str) -> dict[str, str]:
    with archive.open(part) as source:
        return {
            element.get("Id", ""): element.get("Target", "")
            for _, element in iterparse(source)
            if element.tag == f"{PKG_REL_NS}Relationship"
        }


def _date_styles(archive: zipfile.ZipFile) -> frozenset[int]:
    """Indexes of the cell styles whose number format shows a date or a time."""
    custom: dict[int, str] = {}
    styles: list[int] = []
    in_cell_xfs = False
    with archive.open("xl/styles.xml") as source:
        for event, element in iterparse(source, events=("start", "end")):
            tag = element.tag
            if tag == f"{MAIN_NS}cellXfs":
                in_cell_xfs = event == "start"
            elif event == "end" and tag == f"{MAIN_NS}numFmt":
                custom[int(element.get("numFmtId", "0"))] = element.get("formatCode", "")
            elif event == "end" and tag == f"{MAIN_NS}xf" and in_cell_xfs:
                styles.append(int(element.get("numFmtId", "0")))
    dates = set()
    for index, fmt_id in enumerate(styles):
        code = custom.get(fmt_id, BUILTIN_FORMATS.get(fmt_id))
        if code is not None and is_date_format(code):
            dates.add(index)
    return frozenset(dates)


def _merged_ranges(archive: zipfile.ZipFile, path: str) -> list[tuple[int, int, int, int]]:
    """The sheet's merged ranges as (min_col, min_row, max_col, max_row).

    Excel writes them after the rows, so a streaming reader would learn of them too late; one
    pass over the raw bytes (no XML parsing) finds them first, at the cost of a decompression.
    """
    merges: list[tuple[int, int, int, int]] = []
    tail = b""
    with archive.open(path) as source:
        while block := source.read(1 << 20):
            data = tail + block
            for match in _MERGE.finditer(data):
                bounds = range_boundaries(match.group(1).decode())
                merges.append(tuple(int(b or 0) for b in bounds))  # type: ignore[arg-type]
                if len(merges) > MAX_MERGES:
                    raise XlsxError(f"more than {MAX_MERGES} merged ranges")
            cut = data.rfind(b"<")
            tail = data[cut:] if cut >= 0 and len(data) - cut < 200 else b""
    return merges


class SharedStrings:
    """Excel's shared string table, kept in a temporary file: offsets in memory, text on disk.

    Read with ``pread`` rather than a memory map: mapped pages count as the process's resident
    memory, which is what the memory ceiling watches."""

    def __init__(self) -> None:
        self._offsets = array.array("q", [0])
        self._file: IO[bytes] | None = None

    def load(self, archive: zipfile.ZipFile, part: str) -> None:
        self._file = tempfile.TemporaryFile()  # noqa: SIM115 - lives as long as the table
        position = 0
        with archive.open(part) as source:
            for text in _string_items(source):
                data = text.encode("utf-8")
                self._file.write(data)
                position += len(data)
                self._offsets.append(position)
        self._file.flush()

    def __len__(self) -> int:
        return len(self._offsets) - 1

    def __getitem__(self, index: int) -> str:
        if not 0 <= index < len(self):
            raise IndexError(index)
        start, end = self._offsets[index], self._offsets[index + 1]
        if self._file is None or start == end:
            return ""
        return os.pread(self._file.fileno(), end - start, start).decode("utf-8")

    def close(self) -> None:
        if self._file is not None:
            self._file.close()


def _string_items(source: IO[bytes]) -> Iterator[str]:
    """Each ``<si>``'s text: its ``<t>``, or its rich-text runs joined (phonetic hints left out)."""
    root: Any = None
    for event, element in iterparse(source, events=("start", "end")):
        if event == "start":
            if root is None:
                root = element
            continue
        if element.tag != f"{MAIN_NS}si":
            continue
        yield item_text(element)
        root.remove(element)  # cleared and detached: memory stays flat over the table


def item_text(element: Any) -> str:
    """The text of a shared string or inline string element."""
    parts = []
    for child in element:
        if child.tag == f"{MAIN_NS}t":
            parts.append(child.text or "")
        elif child.tag == f"{MAIN_NS}r":
            parts.extend(t.text or "" for t in child.iter(f"{MAIN_NS}t"))
    return "".join(parts)
