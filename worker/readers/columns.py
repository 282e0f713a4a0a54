"""The CSV column vocabulary and its mapping to and from CreateOption.

Columns: ``productKey, deviceKey, deviceName, deviceName.<locale>, timezone, deviceDesc,
attr.<id>, tag.<key>`` (``deviceAttributes.<id>`` and ``deviceTags.<key>`` are aliases). The fixed
names match case-insensitively; locale, attribute id and tag key keep their case.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson

from worker.readers.excerpt import excerpt

FIXED = {
    name.lower(): name
    for name in ("productKey", "deviceKey", "deviceName", "timezone", "deviceDesc")
}
PREFIXES = {
    "devicename.": "name",
    "attr.": "attr",
    "deviceattributes.": "attr",
    "tag.": "tag",
    "devicetags.": "tag",
}
_JSON_START = frozenset("-0123456789[{tf")


class HeaderError(ValueError):
    """The header row cannot be used: the whole file is refused."""


@dataclass(frozen=True, slots=True)
class Column:
    index: int
    name: str  # as written in the file
    kind: str  # field | name | attr | tag
    key: str  # the CreateOption field, or the locale / attribute id / tag key


def parse_header(cells: list[str]) -> list[Column]:
    columns: list[Column] = []
    seen: dict[str, str] = {}
    for index, raw in enumerate(cells):
        name = raw.strip()
        if not name:
            continue  # Excel leaves unnamed trailing columns behind
        column = _column(index, name)
        ident = f"{column.kind}:{column.key}"
        if ident in seen:
            raise HeaderError(f"column {excerpt(name)} repeats column {excerpt(seen[ident])}")
        seen[ident] = name
        columns.append(column)
    if not any(c.kind == "field" and c.key == "productKey" for c in columns):
        raise HeaderError("the header has no productKey column (is this the header row?)")
    return columns


def _column(index: int, name: str) -> Column:
    lowered = name.lower()
    if lowered in FIXED:
        return Column(index, name, "field", FIXED[lowered])
    for prefix, kind in PREFIXES.items():
        if lowered.startswith(prefix) and len(name) > len(prefix):
            return Column(index, name, kind, name[len(prefix) :])
    raise HeaderError(
        f"unknown column {excerpt(name)}; the columns are productKey, deviceKey, deviceName, "
        "deviceName.<locale>, timezone, deviceDesc, attr.<id>, tag.<key>"
    )


def typed_attribute(value: str) -> Any:
    """An attribute cell that parses as a JSON number, boolean, array or object takes that type."""
    if value and value[0] in _JSON_START:
        try:
            parsed = orjson.loads(value)
        except orjson.JSONDecodeError:
            return value
        if parsed is not None:
            return parsed
    return value


def _listed(columns: list[Column]) -> list[tuple[int, str]]:
    """A tabular file's columns as its source lists them (``Source.columns``), each with the
    header position of its cell: the header's named columns in order, and ``deviceKey`` second
    when the header has none (-1: no cell; the export shows derived and platform keys there)."""
    listed = [(c.index, c.name) for c in columns]
    if not any(c.kind == "field" and c.key == "deviceKey" for c in columns):
        listed.insert(1, (-1, "deviceKey"))
    return listed


def column_names(columns: list[Column]) -> list[str]:
    """The names of a tabular file's columns as its source lists them (``Source.columns``)."""
    return [name for _, name in _listed(columns)]


class RowShape:
    """How a header's columns make a row's CreateOption and its cells: worked out once per file,
    so that each row is a few comprehensions (the intake's most frequent work after parsing)."""

    def __init__(self, columns: list[Column]) -> None:
        self.width = max((c.index for c in columns), default=-1) + 1
        # Where each of ``column_names`` takes its cell from (-1: an added deviceKey, no cell).
        self.order = order = [index for index, _ in _listed(columns)]
        self.in_order = order == list(range(len(order)))  # the cells are the list as they are
        self.fields = [
            (c.index, c.key) for c in columns if c.kind == "field" and c.key != "deviceName"
        ]
        self.default = next(
            (c.index for c in columns if c.kind == "field" and c.key == "deviceName"), None
        )
        self.locales = [(c.index, c.key) for c in columns if c.kind == "name"]
        self.attributes = [(c.index, c.key) for c in columns if c.kind == "attr"]
        self.tags = [(c.index, c.key) for c in columns if c.kind == "tag"]

    def split(self, cells: list[str]) -> tuple[dict[str, Any], list[str]]:
        """The CreateOption of one row (empty cells are absent fields), and its cells in the
        order of ``column_names``."""
        if len(cells) < self.width:
            cells = cells + [""] * (self.width - len(cells))
        if self.in_order:
            values = cells if len(cells) == len(self.order) else cells[: len(self.order)]
        else:
            values = [cells[index] if index >= 0 else "" for index in self.order]
        option: dict[str, Any] = {
            key: value for index, key in self.fields if (value := cells[index])
        }
        name: dict[str, Any] = {}
        if self.default is not None and (value := cells[self.default]):
            name["defaultValue"] = value
        if self.locales and (
            i18n := {key: value for index, key in self.locales if (value := cells[index])}
        ):
            name["i18nValue"] = i18n
        if name:
            option["deviceName"] = name
        if self.attributes and (
            attributes := {
                key: typed_attribute(value)
                for index, key in self.attributes
                if (value := cells[index])
            }
        ):
            option["deviceAttributes"] = attributes
        if self.tags and (
            tags := {key: value for index, key in self.tags if (value := cells[index])}
        ):
            option["deviceTags"] = tags
        return option, values


def cells_from_option(option: Any) -> dict[str, str]:
    """A JSON CreateOption flattened to the CSV column names (for the results export)."""
    if not isinstance(option, dict):
        return {}
    cells: dict[str, str] = {}
    for key, value in option.items():
        if key == "deviceName" and isinstance(value, dict):
            for sub, text in value.items():
                if sub == "defaultValue":
                    cells["deviceName"] = _text(text)
                elif sub == "i18nValue" and isinstance(text, dict):
                    for locale, local in text.items():
                        cells[f"deviceName.{locale}"] = _text(local)
                else:
                    cells[f"deviceName.{sub}"] = _text(text)
        elif key == "deviceAttributes" and isinstance(value, dict):
            for attr, attr_value in value.items():
                cells[f"attr.{attr}"] = _text(attr_value)
        elif key == "deviceTags" and isinstance(value, dict):
            for tag, tag_value in value.items():
                cells[f"tag.{tag}"] = _text(tag_value)
        else:
            cells[key] = _text(value)
    return cells


def _text(value: Any) -> str:
    if isinstance(value, str):
        return value
    return orjson.dumps(value).decode()
