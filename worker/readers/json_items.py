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

from worker.readers.base import IntakeLimits

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


def _item(
    kind: str,
    value: Any,
    events: Iterator[tuple[str, Any]],
    guard: _GuardedReader,
    limits: IntakeLimits,
) -> tuple[Any, str | None]:
    """Assembles the item that starts with event ``(kind, value)`` from the following events
    (one loop, no call per event: this is the hot path of JSON intake). Past the depth or size
    limit, the containers built so far are dropped and only the depth is followed to the item's
    end."""
    if kind == "start_map":
        stack: list[Any] = [{}]
    elif kind == "start_array":
        stack = [[]]
    else:
        return value, None  # a scalar item: the row's checks say what is wrong with it
    max_depth, max_bytes = limits.max_json_depth, limits.max_item_bytes
    keys: list[Any] = [None]
    depth, size = 1, 0
    problem: str | None = None
    for kind, value in events:
        guard.quiet = 0
        if kind == "map_key":
            size += 8 + len(value)
            keys[-1] = value
        elif kind == "start_map" or kind == "start_array":
            depth += 1
            size += 8
            stack.append({} if kind == "start_map" else [])
            keys.append(None)
        elif kind == "end_map" or kind == "end_array":
            depth -= 1
            done = stack.pop()
            keys.pop()
            if depth == 0:
                return (None, problem) if problem else (done, None)
            parent = stack[-1]
            if type(parent) is list:
                parent.append(done)
            else:
                parent[keys[-1]] = done
            continue
        else:
            size += 8 + len(value) if type(value) is str else 8
            parent = stack[-1]
            if type(parent) is list:
                parent.append(value)
            else:
                parent[keys[-1]] = value
        if problem is None and (depth > max_depth or size > max_bytes):
            problem = (
                f"nested deeper than {max_depth} levels"
                if depth > max_depth
                else f"larger than {max_bytes} bytes (16 x ENOS_IMPORT_MAX_FIELD_CHARS)"
            )
        if problem is not None:
            return None, _skip(depth, events, guard, problem)
    return None, problem  # the document ended inside the item: the parser raises first


def _skip(
    depth: int, events: Iterator[tuple[str, Any]], guard: _GuardedReader, problem: str
) -> str:
    """Follows the rest of a refused item by its depth alone, building nothing."""
    for kind, _ in events:
        guard.quiet = 0
        if kind == "start_map" or kind == "start_array":
            depth += 1
        elif kind == "end_map" or kind == "end_array":
            depth -= 1
            if depth == 0:
                break
    return problem


def json_items(handle: IO[bytes], limits: IntakeLimits) -> Iterator[tuple[Any, str | None]]:
    """Each item of a bare array, or of ``deviceList`` in a request body, as ``(value,
    None)``, or ``(None, problem)`` for one refused by the limits. Raises ``ijson.JSONError``
    or ``ValueError`` (:class:`ValueTooLong` among them) where the document breaks off."""
    guard = _GuardedReader(handle, limits.max_item_bytes + _BLOCK)
    events = ijson.basic_parse(guard, use_float=True, buf_size=_BLOCK)
    depth = 0  # of the document, outside items
    in_list_at: int | None = None  # the depth of the container whose values are items
    key: str | None = None
    for kind, value in events:
        guard.quiet = 0
        if in_list_at is not None and depth == in_list_at and kind != "end_array":
            yield _item(kind, value, events, guard, limits)
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
