"""Excel input: the first visible worksheet, streamed; cells read as a CSV file would hold them."""

from __future__ import annotations

import datetime as dt
import time
import zipfile
from pathlib import Path

import pytest
from openpyxl import Workbook

from tests.readers.xlsx_files import workbook_from_csv
from worker.readers.sources import IntakeLimits, SourceRow, open_source

EXAMPLE = Path(__file__).parents[2] / "examples" / "devices.csv"
HEADER = ["productKey", "deviceKey", "deviceName", "timezone", "attr.rated", "tag.site"]


def read(path: Path, limits: IntakeLimits | None = None) -> tuple[list[SourceRow], object]:
    source = open_source(path, limits=limits)
    rows = list(source.rows())
    return rows, source


def test_a_workbook_of_the_demo_rows_reads_as_the_csv(tmp_path: Path) -> None:
    book = workbook_from_csv(EXAMPLE, tmp_path / "devices.xlsx")
    xlsx = open_source(book)
    assert xlsx.format == "xlsx"
    from_xlsx = list(xlsx.rows())
    csv_source = open_source(EXAMPLE)
    from_csv = list(csv_source.rows())
    assert xlsx.error is None
    assert xlsx.columns == csv_source.columns
    assert len(from_xlsx) == len(from_csv) == 3000
    for got, expected in zip(from_xlsx, from_csv, strict=True):
        assert (got.line, got.cells, got.option, got.problems) == (
            expected.line, expected.cells, expected.option, expected.problems,
        )  # fmt: skip


def test_cells_take_the_csv_types_and_line_is_the_sheet_row(tmp_path: Path) -> None:
    book = Workbook()
    sheet = book.active
    assert sheet is not None
    sheet.append(HEADER)
    sheet.append(["pk-meter", "meter-0001", "Meter 1", "+08:00", 1.5, 42])
    sheet.append([None] * 6)  # a blank row: skipped, and the next keeps its own number
    sheet.append(["pk-meter", 12345, "Meter 3", "UTC", True, dt.date(2024, 5, 1)])
    sheet["A10"].number_format = "0.00"  # a formatted empty tail, as Excel leaves one
    path = tmp_path / "typed.xlsx"
    book.save(path)
    rows, _ = read(path)
    assert [row.line for row in rows] == [2, 4]
    assert rows[0].option["deviceAttributes"] == {"rated": 1.5}
    assert rows[0].option["deviceTags"] == {"site": "42"}
    assert rows[1].option["deviceKey"] == "12345"
    assert rows[1].option["deviceAttributes"] == {"rated": True}
    assert rows[1].option["deviceTags"] == {"site": "2024-05-01"}


def test_formulas_give_their_cached_value_or_a_clear_problem(tmp_path: Path) -> None:
    path = tmp_path / "formulas.xlsx"
    book = Workbook()
    sheet = book.active
    assert sheet is not None
    sheet.append(HEADER)
    sheet.append(["pk-meter", "meter-0001", '=CONCAT("Meter ", 1)', "UTC"])
    book.save(path)
    # openpyxl writes formulas without a cached value; Excel adds one when it saves.
    rows, _ = read(path)
    assert rows[0].option is None
    assert rows[0].problems == [
        "line 2: cell C2 is a formula without a computed value; open and save the workbook in "
        "Excel, or paste it as values"
    ]
    cached = tmp_path / "cached.xlsx"
    _rewrite_sheet(path, cached, b"<v />", b"<v>Meter 1</v>", b't="str"')
    rows, _ = read(cached)
    assert rows[0].problems == []
    assert rows[0].option["deviceName"] == {"defaultValue": "Meter 1"}


def _rewrite_sheet(source: Path, target: Path, old: bytes, new: bytes, cell_type: bytes) -> None:
    with zipfile.ZipFile(source) as zin, zipfile.ZipFile(target, "w") as zout:
        for item in zin.infolist():
            data = zin.read(item.filename)
            if item.filename == "xl/worksheets/sheet1.xml":
                assert old in data
                data = data.replace(old, new).replace(b'<c r="C2"', b'<c r="C2" ' + cell_type)
            zout.writestr(item, data)


def test_the_first_visible_sheet_is_read_and_merged_cells_fill_their_range(
    tmp_path: Path,
) -> None:
    book = Workbook()
    notes = book.active
    assert notes is not None
    notes.title = "notes"
    notes.append(["this sheet is hidden"])
    notes.sheet_state = "hidden"
    devices = book.create_sheet("devices")
    devices.append(HEADER)
    devices.append(["pk-meter", "meter-0001", "Meter 1", "UTC"])
    devices.append([None, "meter-0002", "Meter 2", "UTC"])
    devices.append([None, "meter-0003", "Meter 3", "UTC"])
    devices.merge_cells("A2:A4")  # one productKey for three rows, as operators lay it out
    path = tmp_path / "merged.xlsx"
    book.save(path)
    rows, _ = read(path)
    assert [row.problems for row in rows] == [[], [], []]
    assert [row.option["productKey"] for row in rows] == ["pk-meter"] * 3
    assert [row.line for row in rows] == [2, 3, 4]


def test_a_bad_header_names_the_row_and_a_stray_value_its_cell(tmp_path: Path) -> None:
    book = Workbook()
    sheet = book.active
    assert sheet is not None
    sheet.append(["productKey", "deviceName", "timezone"])
    sheet.append(["pk-meter", "Meter 1", "UTC", None, "stray"])
    path = tmp_path / "stray.xlsx"
    book.save(path)
    rows, _ = read(path)
    assert rows[0].problems == [
        "line 2: cell E2 has a value but its column has no name in the header row"
    ]
    sheet["D1"] = "colour"
    book.save(path)
    rows, source = read(path)
    assert rows == []
    assert "row 1 (header): unknown column 'colour'" in str(source.error)  # type: ignore[attr-defined]


def test_a_zip_bomb_is_refused_before_it_is_expanded(tmp_path: Path) -> None:
    path = tmp_path / "bomb.xlsx"
    book = Workbook()
    sheet = book.active
    assert sheet is not None
    sheet.append(HEADER)
    book.save(path)
    # 256 MiB of one byte repeated: about 250 KB compressed, a ratio of a thousand.
    with (
        zipfile.ZipFile(path, "a", compression=zipfile.ZIP_DEFLATED, compresslevel=9) as bomb,
        bomb.open("xl/media/padding.bin", "w") as padding,
    ):
        block = b"\0" * (1 << 20)
        for _ in range(256):
            padding.write(block)
    assert path.stat().st_size < 2_000_000
    started = time.monotonic()
    rows, source = read(path, IntakeLimits(max_file_bytes=64 * 1024**2))
    assert time.monotonic() - started < 2.0
    assert rows == []
    message = str(source.error)  # type: ignore[attr-defined]
    assert "unpacks to" in message and "refused before expanding it" in message


def test_a_sheet_declaring_more_columns_than_the_limit_is_refused(tmp_path: Path) -> None:
    book = Workbook()
    sheet = book.active
    assert sheet is not None
    sheet.append(HEADER)
    sheet.cell(row=5, column=2000, value="far away")
    path = tmp_path / "wide.xlsx"
    book.save(path)
    rows, source = read(path)
    assert rows == []
    assert "2000 columns, over the limit of 1000" in str(source.error)  # type: ignore[attr-defined]


@pytest.mark.parametrize("content", [b"PK\x03\x04not really a zip", b"PK\x05\x06"])
def test_a_broken_workbook_is_refused_clearly(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "broken.xlsx"
    path.write_bytes(content)
    rows, source = read(path)
    assert rows == []
    assert "xlsx" in str(source.error) or "workbook" in str(source.error)  # type: ignore[attr-defined]


def test_entity_expansion_in_a_part_is_refused(tmp_path: Path) -> None:
    source = tmp_path / "plain.xlsx"
    book = Workbook()
    sheet = book.active
    assert sheet is not None
    sheet.append(HEADER)
    sheet.append(["pk-meter", "meter-0001", "Meter 1", "UTC"])
    book.save(source)
    # "Billion laughs": eleven levels of ten references each, 10^11 copies of "lol".
    laughs = ['<!ENTITY a0 "lol">'] + [
        f'<!ENTITY a{n} "{f"&a{n - 1};" * 10}">' for n in range(1, 12)
    ]
    bomb = (
        '<?xml version="1.0"?><!DOCTYPE sst [' + "".join(laughs) + "]>"
        '<sst xmlns="http://schemas.openxmlformats.org/spreadsheetml/2006/main">'
        "<si><t>&a11;</t></si></sst>"
    ).encode()
    path = tmp_path / "laughs.xlsx"
    with zipfile.ZipFile(source) as zin, zipfile.ZipFile(path, "w") as zout:
        for item in zin.infolist():
            zout.writestr(item, zin.read(item.filename))
        zout.writestr("xl/sharedStrings.xml", bomb)
    started = time.monotonic()
    rows, source_ = read(path)
    assert time.monotonic() - started < 5.0
    assert rows == []
    assert "the workbook cannot be read" in str(source_.error)  # type: ignore[attr-defined]
