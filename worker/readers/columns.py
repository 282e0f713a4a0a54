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


def option_and_cells(
    columns: list[Column], cells: list[str]
) -> tuple[dict[str, Any], dict[str, str]]:
    """The CreateOption of one CSV row, and the row's non-empty cells by column name, made in
    one pass; empty cells are absent fields."""
    option: dict[str, Any] = {}
    named: dict[str, str] = {}
    width = len(cells)
    name: dict[str, Any] | None = None
    attributes: dict[str, Any] | None = None
    tags: dict[str, Any] | None = None
    for column in columns:
        index = column.index
        if index >= width or not (value := cells[index]):
            continue
        named[column.name] = value
        kind = column.kind
        if kind == "field":
            if column.key != "deviceName":
                option[column.key] = value
                continue
            if name is None:
                name = option["deviceName"] = {}
            name["defaultValue"] = value
        elif kind == "name":
            if name is None:
                name = option["deviceName"] = {}
            name.setdefault("i18nValue", {})[column.key] = value
        elif kind == "attr":
            if attributes is None:
                attributes = option["deviceAttributes"] = {}
            attributes[column.key] = typed_attribute(value)
        else:
            if tags is None:
                tags = option["deviceTags"] = {}
            tags[column.key] = value
    return option, named


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
