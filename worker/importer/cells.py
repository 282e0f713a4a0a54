"""How an input row's own cells are stored: a JSON array in the order of its job's columns.

Every row of a file has the same column names, so ``import_items.cells`` holds only the values,
in the order of ``import_jobs.columns`` (a blank cell is ``""``; trailing blanks are left out).
Stored by name, the names were two fifths of the JSON and made each row a fifth wider: at half
a page per row (the table's fillfactor, for outcomes written in place) five rows fit on a page
where four did, and the intake's COPY and the outcome UPDATE touch a fifth fewer pages.

The job's columns are written with every batch of the intake that stores rows, in the same
transaction, so they name every stored value at any moment; a JSON source's columns only grow
(a name is appended when a row first uses it), so earlier rows' positions never move. A row
whose cells name a column the list does not hold (none of today's readers make one) and rows
stored before this form are JSON objects by name, and are read as they are.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import orjson


class CellsEncoder:
    """Encodes the cells of one source's rows against its live column list (``Source.columns``,
    which a JSON source extends as it reads)."""

    def __init__(self, columns: list[str]) -> None:
        self._columns = columns
        self._names: frozenset[str] = frozenset()
        self._known = -1

    def encode(self, cells: dict[str, str] | list[str]) -> bytes:
        """The row's cells as UTF-8 JSON: an array by column when the columns name them all
        (a list is one already, in the columns' order: ``SourceRow.cells``)."""
        if isinstance(cells, list):
            values = cells
        else:
            columns = self._columns
            if len(columns) != self._known:
                self._names, self._known = frozenset(columns), len(columns)
            if not cells.keys() <= self._names:
                return orjson.dumps(cells)
            values = [cells.get(name, "") for name in columns]
        end = len(values)
        while end and not values[end - 1]:
            end -= 1
        return orjson.dumps(values if end == len(values) else values[:end])


def cells_by_name(stored: Any, columns: Sequence[Any] | None) -> dict[str, Any]:
    """A stored row's cells by column name (blank cells absent), from either form; ``columns``
    are its job's, as stored (``import_jobs.columns``)."""
    if isinstance(stored, (str, bytes, bytearray)):
        stored = orjson.loads(stored or "{}")
    if isinstance(stored, list):
        # Columns outnumber the values: trailing blanks are not stored, later columns are new.
        named = zip(columns or (), stored, strict=False)
        return {str(name): value for name, value in named if value != ""}
    return stored if isinstance(stored, dict) else {}
