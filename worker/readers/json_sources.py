"""JSON Lines (one CreateOption a line) and JSON (a batchCreate request body, or an array)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import IO, Any

import ijson
import orjson

from worker.readers.base import BOM, LEADING_COLUMNS, SourceError, SourceRow, _FileSource
from worker.readers.json_items import json_items


class JsonLinesSource(_FileSource):
    format = "jsonl"

    def rows(self) -> Iterator[SourceRow]:
        yield from self._rows()
        self._check_unchanged()

    def _rows(self) -> Iterator[SourceRow]:
        self._add_columns(LEADING_COLUMNS)
        count = 0
        limit = self.limits.max_item_bytes
        handle = self._stream()
        for line_no, raw in enumerate(_bounded_lines(handle, limit), 1):
            if line_no == 1 and raw is not None:
                raw = raw.removeprefix(BOM)
            if raw is not None and not raw.strip():
                continue
            if not self._check_rows(count, line_no):
                return
            count += 1
            if raw is None:
                problem = (
                    f"line {line_no}: longer than {limit} bytes (16 x ENOS_IMPORT_MAX_FIELD_CHARS)"
                )
                yield SourceRow(line_no, {}, None, [problem])
                continue
            try:
                option = orjson.loads(raw)
            except orjson.JSONDecodeError as exc:
                problem = f"line {line_no}: not valid JSON ({exc.msg} at column {exc.colno})"
                yield SourceRow(line_no, {}, None, [problem])
                continue
            if too_deep(option, self.limits.max_json_depth):
                problem = f"line {line_no}: nested deeper than {self.limits.max_json_depth} levels"
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
        yield from self._rows()
        self._check_unchanged()

    def _rows(self) -> Iterator[SourceRow]:
        self._add_columns(LEADING_COLUMNS)
        handle = self._stream()
        head = handle.read(4096)
        body = head.removeprefix(BOM).lstrip()
        handle.seek(len(head) - len(body))  # ijson wants neither a BOM nor leading space
        prefix = "item" if body.startswith(b"[") else "deviceList.item"
        count = 0
        try:
            for count, (option, problem) in enumerate(json_items(handle, self.limits), 1):
                if not self._check_rows(count - 1, count):
                    return
                if problem is not None:
                    yield SourceRow(count, {}, None, [f"line {count}: {problem}"])
                    continue
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
                'line 1: no devices found: expected {"deviceList": [...]} or an array of devices',
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


def too_deep(value: Any, max_depth: int) -> bool:
    """Whether ``value`` (already parsed) nests containers deeper than ``max_depth``."""
    level = [value]
    for _ in range(max_depth):
        level = [
            child
            for node in level
            if isinstance(node, dict | list)
            for child in (node.values() if isinstance(node, dict) else node)
        ]
        if not any(isinstance(node, dict | list) for node in level):
            return False
    return any(isinstance(node, dict | list) for node in level)
