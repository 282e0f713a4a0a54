"""How an input row's own cells are stored: a JSON array in the order of its job's columns.

Every row of a file has the same column names, so ``import_items.cells`` holds only the values,
in the order of ``import_jobs.columns`` (a blank cell is ``""``; trailing blanks are left out).
Stored by name, the names were two fifths of the JSON and made each row a fifth wider: at half
a page per row (the table's fillfactor, for outcomes written in place) five rows fit on a page
where four did, and the intake's COPY and the outcome UPDATE touch a fifth fewer pages.

The job's columns are written with every batch of the intake that stores rows, in the same
transaction, so they name every stored value at any moment; a JSON source's columns only grow
(a name is appended when a row first uses it), so earlier rows' positions never move. A row
whose cells name a column the list does not hold (none of today's readers make one), a row
holding few of many columns (its array would be mostly blanks), and rows stored before this
form are JSON objects by name, and are read as they are.
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
        self._index: dict[str, int] = {}

    def encode(self, cells: dict[str, str] | list[str]) -> bytes:
        """The row's cells as UTF-8 JSON: an array by column when the columns name them all
        (a list is one already, in the columns' order: ``SourceRow.cells``), unless the row
        holds few of many columns (a JSON file whose items each have their own attributes):
        by name, it is the shorter."""
        if isinstance(cells, list):
            values = cells
        else:
            columns, index = self._columns, self._index
            if len(columns) != len(index):
                index = self._index = {name: i for i, name in enumerate(columns)}
            if not cells.keys() <= index.keys():
                return orjson.dumps(cells)
            width = max(map(index.__getitem__, cells), default=-1) + 1
            if width > 2 * len(cells) + SPARSE_SLACK:
                return orjson.dumps(cells)
            values = [cells.get(name, "") for name in columns[:width]]
        end = len(values)
        while end and not values[end - 1]:
            end -= 1
        return orjson.dumps(values if end == len(values) else values[:end])


# An array may hold this many more blank places than twice the row's cells before the row is
# stored by name instead.
SPARSE_SLACK = 8


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
