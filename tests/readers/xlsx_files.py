"""Workbooks for the tests, written with openpyxl as a program or Excel would."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

from openpyxl import Workbook


def typed(cell: str) -> Any:
    """A CSV cell as Excel would hold it once typed in: numbers and booleans are not text."""
    if cell in ("true", "false"):
        return cell == "true"
    for kind in (int, float):
        try:
            value = kind(cell)
        except ValueError:
            continue
        # A text that only looks like a number (leading zeros, '+', a key) stays text.
        return value if str(value) == cell else cell
    return cell or None


def workbook_from_csv(source: Path, target: Path) -> Path:
    book = Workbook()
    sheet = book.active
    assert sheet is not None
    with source.open(newline="", encoding="utf-8-sig") as handle:
        for number, row in enumerate(csv.reader(handle)):
            sheet.append(row if number == 0 else [typed(cell) for cell in row])
    book.save(target)
    return target
