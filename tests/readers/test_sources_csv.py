"""CSV device files read as streams of rows, as Excel and operators write them."""

from __future__ import annotations

import tracemalloc
from pathlib import Path
from typing import Any

import pytest

from tests.readers.source_files import HEADER, meter, read, write
from worker.importer.cells import cells_by_name
from worker.readers.sources import (
    IntakeLimits,
    SourceError,
    open_source,
)


# ----------------------------------------------------------------------------------------- CSV
@pytest.mark.parametrize("bom", [b"", b"\xef\xbb\xbf"], ids=["no-bom", "bom"])
@pytest.mark.parametrize("newline", ["\n", "\r\n"], ids=["lf", "crlf"])
@pytest.mark.parametrize("sep", [",", ";", "\t"], ids=["comma", "semicolon", "tab"])
def test_csv_encodings_line_ends_and_separators(
    tmp_path: Path, bom: bytes, newline: str, sep: str
) -> None:
    text = newline.join(
        [
            sep.join(["productKey", "deviceKey", "deviceName", "timezone"]),
            sep.join(["pk-meter", "meter-0001", "Meter 1", "+08:00"]),
            sep.join(["pk-meter", "meter-0002", "Meter 2", "Asia/Shanghai"]),
        ]
    )
    source, rows = read(tmp_path, "devices.csv", bom + (text + newline).encode())
    assert source.format == "csv"
    assert source.error is None
    assert source.columns == ["productKey", "deviceKey", "deviceName", "timezone"]
    assert [(r.line, r.option, r.problems) for r in rows] == [
        (2, meter("meter-0001", "Meter 1"), []),
        (3, meter("meter-0002", "Meter 2", "Asia/Shanghai"), []),
    ]
    assert rows[0].cells == ["pk-meter", "meter-0001", "Meter 1", "+08:00"]
    assert cells_by_name(rows[0].cells, source.columns) == {
        "productKey": "pk-meter",
        "deviceKey": "meter-0001",
        "deviceName": "Meter 1",
        "timezone": "+08:00",
    }


def test_csv_without_a_final_line_end(tmp_path: Path) -> None:
    _, rows = read(tmp_path, "d.csv", f"{HEADER}\r\npk-meter,meter-0001,Meter 1,+08:00")
    assert [(r.line, r.option) for r in rows] == [(2, meter("meter-0001", "Meter 1"))]


@pytest.mark.parametrize("newline", ["\n", "\r\n"], ids=["lf", "crlf"])
def test_quoted_fields_hold_separators_quotes_and_newlines(tmp_path: Path, newline: str) -> None:
    text = newline.join(
        [
            "productKey,deviceKey,deviceName,deviceDesc,timezone",
            'pk-meter,meter-0001,"Meter, north","first line' + newline + 'second ""line""",+08:00',
            'pk-meter,meter-0002,Meter 2,"three' + newline + newline + 'lines",UTC',
            "pk-meter,meter-0003,Meter 3,,+08:00",
            "",
        ]
    )
    source, rows = read(tmp_path, "d.csv", text)
    assert source.error is None
    # ``line`` is where the record starts; the header is line 1.
    assert [r.line for r in rows] == [2, 4, 7]
    assert rows[0].option == {
        **meter("meter-0001", "Meter, north"),
        "deviceDesc": "first line" + newline + 'second "line"',
    }
    assert rows[1].option["deviceDesc"] == "three" + newline + newline + "lines"
    assert "deviceDesc" not in rows[2].option


def test_blank_rows_are_skipped_and_lines_stay_physical(tmp_path: Path) -> None:
    text = (
        f"{HEADER}\r\n"
        "\r\n"
        "pk-meter,meter-0001,Meter 1,+08:00\r\n"
        ",,,\r\n"
        "  ,  ,,\r\n"
        "\r\n"
        "pk-meter,meter-0002,Meter 2,+08:00\r\n"
        "\r\n"
    )
    _, rows = read(tmp_path, "d.csv", text)
    assert [(r.line, r.option["deviceKey"]) for r in rows] == [(3, "meter-0001"), (7, "meter-0002")]


def test_alias_columns_and_case_insensitive_fixed_names(tmp_path: Path) -> None:
    text = (
        "PRODUCTKEY,DeviceKey,devicename,DeviceName.zh_CN,deviceName.en_US,TimeZone,DEVICEDESC,"
        "attr.Serial,deviceAttributes.rated_kW,tag.Site,deviceTags.area/zone\n"
        "pk-meter,meter-0001,Meter 1,电表 1,Meter one,+08:00,a meter,S-1,12.5,North,A/1\n"
    )
    source, rows = read(tmp_path, "d.csv", text)
    assert source.error is None
    # Column names are kept as written: the results export repeats the operator's header.
    assert source.columns == [
        "PRODUCTKEY", "DeviceKey", "devicename", "DeviceName.zh_CN", "deviceName.en_US",
        "TimeZone", "DEVICEDESC", "attr.Serial", "deviceAttributes.rated_kW", "tag.Site",
        "deviceTags.area/zone",
    ]  # fmt: skip
    assert rows[0].option == {
        "productKey": "pk-meter",
        "deviceKey": "meter-0001",
        "deviceName": {
            "defaultValue": "Meter 1",
            "i18nValue": {"zh_CN": "电表 1", "en_US": "Meter one"},
        },
        "timezone": "+08:00",
        "deviceDesc": "a meter",
        # Attribute ids and tag keys keep their case.
        "deviceAttributes": {"Serial": "S-1", "rated_kW": 12.5},
        "deviceTags": {"Site": "North", "area/zone": "A/1"},
    }


@pytest.mark.parametrize(
    ("cell", "expected"),
    [
        ("123", 123),
        ("1.5", 1.5),
        ("-7", -7),
        ("1e3", 1000.0),
        ("true", True),
        ("false", False),
        ("[1,2]", [1, 2]),
        ('{"a":1}', {"a": 1}),
        ('["x", {"y": null}]', ["x", {"y": None}]),
        ("007", "007"),
        ("-05:00", "-05:00"),
        ("+08:00", "+08:00"),
        ("null", "null"),
        ("True", "True"),
        ("[1,2", "[1,2"),
        ("12 apples", "12 apples"),
        ("S-1", "S-1"),
    ],
)
def test_attribute_cells_take_their_json_type(tmp_path: Path, cell: str, expected: Any) -> None:
    quoted = '"' + cell.replace('"', '""') + '"'
    source, rows = read(
        tmp_path, "d.csv", f"{HEADER},attr.a,tag.t\npk-meter,k-001,M,UTC,{quoted},{quoted}\n"
    )
    value = rows[0].option["deviceAttributes"]["a"]
    assert value == expected
    assert type(value) is type(expected)
    # Tags are always strings.
    assert rows[0].option["deviceTags"] == {"t": cell}
    # The row's own cells stay as written.
    assert cells_by_name(rows[0].cells, source.columns)["attr.a"] == cell


def test_empty_cells_are_absent_fields(tmp_path: Path) -> None:
    text = (
        "productKey,deviceKey,deviceName,deviceName.zh_CN,timezone,deviceDesc,attr.a,tag.t\n"
        "pk-meter,,Meter 1,,+08:00,,,\n"
        "pk-meter,meter-0002,,名字,,,,\n"
        "pk-meter\n"
    )
    source, rows = read(tmp_path, "d.csv", text)
    assert [r.option for r in rows] == [
        {"productKey": "pk-meter", "deviceName": {"defaultValue": "Meter 1"}, "timezone": "+08:00"},
        {
            "productKey": "pk-meter",
            "deviceKey": "meter-0002",
            "deviceName": {"i18nValue": {"zh_CN": "名字"}},
        },
        {"productKey": "pk-meter"},
    ]
    assert cells_by_name(rows[0].cells, source.columns) == {
        "productKey": "pk-meter",
        "deviceName": "Meter 1",
        "timezone": "+08:00",
    }
    assert all(r.problems == [] for r in rows)


def test_a_file_without_a_devicekey_column_gets_one_in_its_columns(tmp_path: Path) -> None:
    source, rows = read(tmp_path, "d.csv", "productKey,deviceName,timezone\npk-meter,M,UTC\n")
    assert source.columns == ["productKey", "deviceKey", "deviceName", "timezone"]
    assert rows[0].option == {
        "productKey": "pk-meter",
        "deviceName": {"defaultValue": "M"},
        "timezone": "UTC",
    }
    # The row's cells in the order of its columns: the added deviceKey has none.
    assert rows[0].cells == ["pk-meter", "", "M", "UTC"]


def test_cells_follow_the_named_columns_only(tmp_path: Path) -> None:
    # A column with no name in the header holds nothing the import keeps.
    source, rows = read(tmp_path, "d.csv", "productKey,,deviceKey,deviceName,\npk,x,k-1,M,y\n")
    assert source.columns == ["productKey", "deviceKey", "deviceName"]
    assert rows[0].cells == ["pk", "k-1", "M"]
    assert rows[0].option == {
        "productKey": "pk",
        "deviceKey": "k-1",
        "deviceName": {"defaultValue": "M"},
    }


def test_an_unknown_header_column_refuses_the_file_at_line_1(tmp_path: Path) -> None:
    source, rows = read(tmp_path, "d.csv", "productKey,deviceName,colour,timezone\npk,M,red,UTC\n")
    assert rows == []
    assert isinstance(source.error, SourceError)
    assert source.error.line == 1
    assert "line 1" in str(source.error)
    assert "'colour'" in str(source.error)


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("deviceName,timezone", "no productKey column"),
        ("productKey,deviceName,DEVICENAME", "column 'DEVICENAME' repeats column 'deviceName'"),
        ("productKey,attr.a,deviceAttributes.a", "repeats column 'attr.a'"),
    ],
)
def test_unusable_headers(tmp_path: Path, header: str, expected: str) -> None:
    source, rows = read(tmp_path, "d.csv", f"{header}\nx,y,z\n")
    assert rows == []
    assert source.error is not None
    assert source.error.line == 1
    assert expected in str(source.error)


def test_an_empty_csv_file(tmp_path: Path) -> None:
    source, rows = read(tmp_path, "d.csv", b"")
    assert rows == []
    assert source.error is not None
    assert str(source.error) == "the file is empty"


def test_a_row_with_more_cells_than_the_header(tmp_path: Path) -> None:
    text = (
        f"{HEADER}\n"
        "pk-meter,meter-0001,Meter 1,+08:00\n"
        "pk-meter,meter-0002,Meter 2,+08:00,surplus\n"
        "pk-meter,meter-0003,Meter 3,+08:00\n"
    )
    source, rows = read(tmp_path, "d.csv", text)
    assert source.error is None
    assert [r.line for r in rows] == [2, 3, 4]
    assert rows[1].option is None
    assert rows[1].problems == ["line 3: has 5 cells, the header has 4 columns"]
    assert rows[0].problems == rows[2].problems == []
    assert rows[2].option == meter("meter-0003", "Meter 3")


def test_trailing_unnamed_header_columns_are_ignored(tmp_path: Path) -> None:
    # Excel leaves empty columns at the end of every row it once touched.
    _, rows = read(tmp_path, "d.csv", f"{HEADER},,\npk-meter,meter-0001,M,UTC,,\n")
    assert rows[0].problems == []
    assert rows[0].option == meter("meter-0001", "M", "UTC")


def test_invalid_utf8_and_nul_bytes_spoil_only_their_row(tmp_path: Path) -> None:
    data = (
        HEADER.encode() + b"\r\n"
        b"pk-meter,meter-0001,Meter 1,+08:00\r\n"
        b"pk-meter,meter-0002,Caf\xe9,+08:00\r\n"
        b"pk-meter,meter-0003,Me\x00ter,+08:00\r\n"
        b'pk-meter,meter-0004,"two\r\nli\xffnes",+08:00\r\n'
        b"pk-meter,meter-0005,Meter 5,+08:00\r\n"
    )
    source, rows = read(tmp_path, "d.csv", data)
    assert source.error is None
    assert [(r.line, r.problems) for r in rows] == [
        (2, []),
        (3, ["line 3: not valid UTF-8 (byte 0xe9 at byte 24 of the line)"]),
        (4, ["line 4: contains a NUL byte"]),
        (5, ["line 6: not valid UTF-8 (byte 0xff at byte 3 of the line)"]),
        (7, []),
    ]
    assert [r.option is None for r in rows] == [False, True, True, True, False]
    assert rows[4].option == meter("meter-0005", "Meter 5")


def test_a_field_over_the_limit_spoils_only_its_row(tmp_path: Path) -> None:
    limits = IntakeLimits(max_field_chars=50)
    text = f"{HEADER}\npk-meter,meter-0001,{'x' * 60},UTC\npk-meter,meter-0002,M,UTC\n"
    _, rows = read(tmp_path, "d.csv", text, limits)
    assert [r.line for r in rows] == [2, 3]
    assert rows[0].option is None
    assert len(rows[0].problems) == 1
    assert rows[0].problems[0].startswith("line 2: ")
    assert rows[1].option == meter("meter-0002", "M", "UTC")


def test_lines_stay_right_past_the_read_buffer_with_a_small_field_limit(tmp_path: Path) -> None:
    # Far more data than one read block (64 KiB): every row keeps its own physical line.
    count = 5000
    body = "".join(f"pk-meter,meter-{i:05d},Meter {i},+08:00\r\n" for i in range(count))
    limits = IntakeLimits(max_field_chars=20)
    source, rows = read(tmp_path, "d.csv", f"{HEADER}\r\n{body}", limits)
    assert source.error is None
    assert len(rows) == count
    assert all(r.problems == [] for r in rows)
    assert [r.line for r in rows] == list(range(2, count + 2))
    assert rows[-1].option == meter(f"meter-{count - 1:05d}", f"Meter {count - 1}")


def test_a_runaway_line_is_a_problem_of_its_row_and_the_next_rows_read(tmp_path: Path) -> None:
    limits = IntakeLimits(max_field_chars=100)
    before = "".join(f"pk-meter,meter-{i:05d},Meter {i},+08:00\n" for i in range(3000))
    runaway = "pk-meter,meter-runaway," + "y" * 300_000 + ",+08:00\n"
    text = f"{HEADER}\n{before}{runaway}pk-meter,meter-after,After,UTC\n"
    source, rows = read(tmp_path, "d.csv", text, limits)
    assert source.error is None
    assert len(rows) == 3002
    bad = rows[3000]
    assert bad.line == 3002
    assert bad.option is None
    assert bad.problems[0].startswith("line 3002: ")
    assert rows[3001].line == 3003
    assert rows[3001].option == meter("meter-after", "After", "UTC")


def test_max_rows_stops_the_file_with_an_error(tmp_path: Path) -> None:
    text = f"{HEADER}\n" + "".join(f"pk-meter,meter-000{i},M,UTC\n" for i in range(1, 5))
    source, rows = read(tmp_path, "d.csv", text, IntakeLimits(max_rows=2))
    assert [r.line for r in rows] == [2, 3]
    assert source.error is not None
    assert source.error.line == 4
    assert str(source.error) == (
        "more than 2 rows (ENOS_IMPORT_MAX_ROWS): the rows from line 4 on are not read"
    )


def test_max_columns(tmp_path: Path) -> None:
    header = "productKey," + ",".join(f"attr.a{i}" for i in range(5))
    source, rows = read(tmp_path, "d.csv", f"{header}\n", IntakeLimits(max_columns=4))
    assert rows == []
    assert source.error is not None
    assert source.error.line == 1
    assert "6 columns, over the limit of 4" in str(source.error)


def test_the_content_hash_is_of_the_bytes(tmp_path: Path) -> None:
    a = open_source(write(tmp_path, "a.csv", f"{HEADER}\npk,k-0001,M,UTC\n"))
    b = open_source(write(tmp_path, "b.csv", f"{HEADER}\npk,k-0001,M,UTC\n"))
    c = open_source(write(tmp_path, "c.csv", f"{HEADER}\npk,k-0002,M,UTC\n"))
    assert a.sha256() == b.sha256() != c.sha256()
    assert len(a.sha256()) == 64


def test_memory_does_not_grow_with_the_file(tmp_path: Path) -> None:
    path = tmp_path / "big.csv"
    count = 200_000
    with path.open("w", encoding="utf-8", newline="") as handle:
        handle.write("productKey,deviceKey,deviceName,timezone,attr.serial,tag.site\r\n")
        for i in range(count):
            handle.write(f'pk-meter,meter-{i:07d},"Meter, {i}",+08:00,{i},north\r\n')
    assert path.stat().st_size > 10_000_000
    tracemalloc.start()
    try:
        seen = 0
        last = 0
        for row in open_source(path).rows():
            seen += 1
            last = row.line
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert seen == count
    assert last == count + 1
    assert peak < 20 * 1024 * 1024
