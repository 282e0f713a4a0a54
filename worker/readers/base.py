"""What every device source shares: rows, limits, errors, and the base classes."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO

from worker.readers.columns import cells_from_option
from worker.readers.excerpt import excerpt

if TYPE_CHECKING:
    from worker.readers.opening import OpenedFile

FORMATS = ("csv", "jsonl", "json", "xlsx")
BOM = b"\xef\xbb\xbf"
# JSON input is flattened to CSV columns; these lead, as in a CSV file, whichever row has them.
LEADING_COLUMNS = ("productKey", "deviceKey")


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
    # A CreateOption nests four levels (item, deviceName, i18nValue, a value); an attribute
    # value may be an object or an array. Deeper input is refused while it is parsed, before
    # it is built: nesting is what made a few KB of JSON cost gigabytes.
    max_json_depth: int = 32

    @property
    def max_item_bytes(self) -> int:
        """Largest JSON item or JSON Lines line, and largest CSV record across quoted newlines:
        the cells of a record are bounded by it, whatever its line ends."""
        return self.max_field_chars * 16


@dataclass(slots=True)
class SourceRow:
    """One device of the input. ``line`` is the file line where the row starts (for JSON, the
    position in ``deviceList``); ``problems`` are reading problems, before any validation.
    ``cells`` are the row's own, by column name, or for a tabular file's valid row its cells
    in the order of the source's ``columns`` (no dict to build: it is stored as that list)."""

    line: int
    cells: dict[str, str] | list[str]
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

    def close(self) -> None:
        """Releases the file handle, if any."""

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
                        f"line {line}: {_field_name(name)}: longer than {limits.max_field_chars} "
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


class _FileSource(Source):
    """A file read through one handle (see :mod:`worker.readers.opening`): hashed and read from
    the same descriptor, and refused if it changed in between."""

    def __init__(self, path: Path, limits: IntakeLimits, opened: OpenedFile | None = None) -> None:
        super().__init__()
        self.path = path
        self.name = str(path)
        self.limits = limits
        self._opened = opened

    @property
    def opened(self) -> OpenedFile:
        if self._opened is None:
            from worker.readers.opening import open_regular

            self._opened = open_regular(self.path, self.limits.max_file_bytes)
        return self._opened

    def _stream(self) -> BinaryIO:
        return self.opened.rewound()

    def sha256(self) -> str:
        return self.opened.sha256()

    def _check_unchanged(self) -> None:
        """Called once every row was read: raises :class:`SourceError` if the file changed."""
        self.opened.check_unchanged()

    def close(self) -> None:
        if self._opened is not None:
            self._opened.close()

    def _check_rows(self, count: int, line: int) -> bool:
        if count >= self.limits.max_rows:
            self.error = SourceError(
                f"more than {self.limits.max_rows} rows (ENOS_IMPORT_MAX_ROWS): "
                f"the rows from line {line} on are not read",
                line,
            )
            return False
        return True


def _field_name(name: str) -> str:
    """A field name as a message shows it: as is when short and printable, else an excerpt."""
    return name if len(name) <= 40 and name.isprintable() else excerpt(name)
