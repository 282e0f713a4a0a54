"""The items of a JSON document, built from parser events with their depth and size checked
before they are built.

``ijson.items`` keeps a prefix path per nesting level, so a few KB of ``[[[[…`` cost gigabytes,
and it builds every item whatever its size. Here the parser's basic events are assembled by
hand: an item deeper than ``max_json_depth`` or larger than ``max_item_bytes`` is skipped while
it is parsed (only a depth counter is kept), and becomes a row with a problem. A single token
(one string or number) cannot grow past the limit either: the reader refuses to hand the parser
more than ``max_item_bytes`` without an event coming out.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import IO, Any

import ijson

from worker.intake.base import IntakeLimits

_BLOCK = 1 << 16


class ValueTooLong(ValueError):
    """One JSON token (a string or a number) is longer than an item may be."""


class _GuardedReader:
    """Counts the bytes handed to the parser since its last event; too many means one token
    is being accumulated, which is refused before it is held in memory."""

    def __init__(self, handle: IO[bytes], limit: int) -> None:
        self.handle = handle
        self.limit = limit
        self.quiet = 0

    def read(self, size: int = -1) -> bytes:
        if size == 0:  # ijson asks for nothing to learn whether the file gives bytes or text
            return b""
        data = self.handle.read(size if size > 0 else _BLOCK)
        self.quiet += len(data)
        if self.quiet > self.limit:
            raise ValueTooLong(f"a single JSON value is longer than {self.limit} bytes")
        return data


class _Item:
    """One item being assembled: a stack of open containers, or only a depth while skipped."""

    def __init__(self, limits: IntakeLimits) -> None:
        self.max_depth = limits.max_json_depth
        self.max_bytes = limits.max_item_bytes
        self.stack: list[Any] = []
        self.keys: list[str | None] = []
        self.depth = 0
        self.size = 0
        self.problem: str | None = None
        self.value: Any = None

    def event(self, kind: str, value: Any) -> bool:
        """Feeds one event; ``True`` once the item is complete."""
        if kind in ("start_map", "start_array"):
            self.depth += 1
            if self.problem is None and self.depth > self.max_depth:
                self._skip(f"nested deeper than {self.max_depth} levels")
            if self.problem is None:
                self._open({} if kind == "start_map" else [])
            return False
        if kind in ("end_map", "end_array"):
            self.depth -= 1
            if self.problem is None:
                self._close()
            return self.depth == 0
        self.size += 8 + (len(value) if isinstance(value, str) else 0)
        if self.problem is None and self.size > self.max_bytes:
            self._skip(f"larger than {self.max_bytes} bytes (16 x ENOS_IMPORT_MAX_FIELD_CHARS)")
        if self.problem is not None:
            return self.depth == 0
        if kind == "map_key":
            self.keys[-1] = value
            return False
        self._put(value)
        return self.depth == 0

    def _skip(self, problem: str) -> None:
        self.problem = problem
        self.stack.clear()
        self.keys.clear()

    def _open(self, container: Any) -> None:
        self.stack.append(container)
        self.keys.append(None)

    def _close(self) -> None:
        container = self.stack.pop()
        self.keys.pop()
        self._put(container)

    def _put(self, value: Any) -> None:
        if not self.stack:
            self.value = value
            return
        parent = self.stack[-1]
        if isinstance(parent, list):
            parent.append(value)
        else:
            parent[self.keys[-1]] = value


def json_items(handle: IO[bytes], limits: IntakeLimits) -> Iterator[tuple[Any, str | None]]:
    """Each item of a bare array, or of ``deviceList`` in a request body, as ``(value,
    None)``, or ``(None, problem)`` for one refused by the limits. Raises ``ijson.JSONError``
    or ``ValueError`` (:class:`ValueTooLong` among them) where the document breaks off."""
    guard = _GuardedReader(handle, limits.max_item_bytes + _BLOCK)
    events = ijson.basic_parse(guard, use_float=True, buf_size=_BLOCK)
    depth = 0  # of the document, outside items
    in_list_at: int | None = None  # the depth of the container whose values are items
    key: str | None = None
    item: _Item | None = None
    for kind, value in events:
        guard.quiet = 0
        if item is not None:
            if item.event(kind, value):
                yield (None, item.problem) if item.problem else (item.value, None)
                item = None
            continue
        if in_list_at is not None and depth == in_list_at and kind not in ("end_array",):
            item = _Item(limits)
            if item.event(kind, value):
                yield (None, item.problem) if item.problem else (item.value, None)
                item = None
            continue
        if kind in ("start_map", "start_array"):
            depth += 1
            top_array = depth == 1 and kind == "start_array"
            device_list = depth == 2 and kind == "start_array" and key == "deviceList"
            if top_array or device_list:
                in_list_at = depth
        elif kind in ("end_map", "end_array"):
            if in_list_at == depth:
                in_list_at = None
            depth -= 1
        elif kind == "map_key" and depth == 1:
            key = value
