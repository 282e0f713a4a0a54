"""JSON Lines and JSON device files read as streams of rows; formats by extension and by
content; the file limits."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.readers.source_files import HEADER, meter, read, write
from worker.importer.cells import cells_by_name
from worker.readers.sources import (
    IntakeLimits,
    SourceError,
    detect_format,
    open_source,
)


# ---------------------------------------------------------------------------------- JSON Lines
def test_jsonl_rows_and_a_bad_line(tmp_path: Path) -> None:
    data = (
        b'\xef\xbb\xbf{"productKey": "pk-meter", "deviceKey": "meter-0001", '
        b'"deviceName": {"defaultValue": "Meter 1"}, "timezone": "+08:00"}\r\n'
        b"\r\n"
        b'{"productKey": "pk-meter", "deviceName": \n'
        b'{"productKey": "pk-meter", "deviceName": {"defaultValue": "M", "i18nValue": '
        b'{"zh_CN": "\xe7\x94\xb5"}}, "timezone": "UTC", "deviceAttributes": {"n": 1}, '
        b'"deviceTags": {"t": "v"}}\n'
    )
    source, rows = read(tmp_path, "d.jsonl", data)
    assert source.format == "jsonl"
    assert source.error is None
    assert [r.line for r in rows] == [1, 3, 4]
    assert rows[0].option == meter("meter-0001", "Meter 1")
    assert rows[1].option is None
    assert len(rows[1].problems) == 1
    assert rows[1].problems[0].startswith("line 3: not valid JSON")
    assert rows[2].option["deviceName"]["i18nValue"] == {"zh_CN": "电"}
    # Flattened to the CSV column names, in order of first appearance.
    assert rows[2].cells == {
        "productKey": "pk-meter",
        "deviceName": "M",
        "deviceName.zh_CN": "电",
        "timezone": "UTC",
        "attr.n": "1",
        "tag.t": "v",
    }
    assert source.columns == [
        "productKey", "deviceKey", "deviceName", "timezone", "deviceName.zh_CN", "attr.n", "tag.t",
    ]  # fmt: skip


def test_jsonl_max_rows(tmp_path: Path) -> None:
    line = '{"productKey": "pk"}\n'
    source, rows = read(tmp_path, "d.jsonl", line * 3, IntakeLimits(max_rows=2))
    assert [r.line for r in rows] == [1, 2]
    assert source.error is not None
    assert source.error.line == 3


# ---------------------------------------------------------------------------------------- JSON
def test_json_batch_create_body(tmp_path: Path) -> None:
    data = (
        '\ufeff\n  {"deviceList": [\n'
        '  {"productKey": "pk-meter", "deviceKey": "meter-0001", '
        '"deviceName": {"defaultValue": "Meter 1"}, "timezone": "+08:00", '
        '"deviceAttributes": {"rated": 1.5, "n": 3}},\n'
        '  {"productKey": "pk-meter", "deviceKey": "meter-0002", '
        '"deviceName": {"defaultValue": "Meter 2"}, "timezone": "+08:00"}\n'
        "]}\n"
    ).encode()
    source, rows = read(tmp_path, "body.json", data)
    assert source.format == "json"
    assert source.error is None
    assert [r.line for r in rows] == [1, 2]
    assert rows[0].option == {
        **meter("meter-0001", "Meter 1"),
        "deviceAttributes": {"rated": 1.5, "n": 3},
    }
    assert type(rows[0].option["deviceAttributes"]["rated"]) is float
    assert type(rows[0].option["deviceAttributes"]["n"]) is int
    assert rows[1].option == meter("meter-0002", "Meter 2")
    assert cells_by_name(rows[0].cells, source.columns)["attr.rated"] == "1.5"


def test_json_bare_array(tmp_path: Path) -> None:
    data = (
        '[{"productKey": "pk-meter", "deviceKey": "meter-0001", '
        '"deviceName": {"defaultValue": "Meter 1"}, "timezone": "+08:00"}]'
    )
    source, rows = read(tmp_path, "list.json", data)
    assert source.error is None
    assert [(r.line, r.option) for r in rows] == [(1, meter("meter-0001", "Meter 1"))]


def test_json_columns_lead_with_product_and_device_key(tmp_path: Path) -> None:
    # As in a CSV file, whichever row first has a deviceKey.
    data = (
        '[{"deviceName": {"defaultValue": "A"}, "productKey": "pk", "deviceTags": {"t": "v"}},'
        ' {"deviceKey": "meter-0002", "deviceDesc": "d"}]'
    )
    source, rows = read(tmp_path, "list.json", data)
    assert len(rows) == 2
    assert source.columns == ["productKey", "deviceKey", "deviceName", "tag.t", "deviceDesc"]
    assert rows[1].cells == {"deviceKey": "meter-0002", "deviceDesc": "d"}


def test_truncated_json_keeps_the_items_before_the_break(tmp_path: Path) -> None:
    data = (
        '{"deviceList": [{"productKey": "pk-meter", "deviceKey": "meter-0001"}, '
        '{"productKey": "pk-meter", "deviceKey": "meter-0002"}, {"productKey": "pk-me'
    )
    source, rows = read(tmp_path, "body.json", data)
    assert [(r.line, r.option["deviceKey"]) for r in rows] == [(1, "meter-0001"), (2, "meter-0002")]
    assert source.error is not None
    assert source.error.line == 3
    assert str(source.error).startswith("the JSON document breaks off after item 2 of deviceList")


def test_json_without_devices(tmp_path: Path) -> None:
    source, rows = read(tmp_path, "body.json", '{"devices": []}')
    assert rows == []
    assert source.error is not None
    assert "no devices found" in str(source.error)


def test_json_max_rows(tmp_path: Path) -> None:
    source, rows = read(tmp_path, "list.json", "[{}, {}, {}]", IntakeLimits(max_rows=2))
    assert [r.line for r in rows] == [1, 2]
    assert source.error is not None
    assert source.error.line == 3


# ------------------------------------------------------------------------------------- formats
@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("d.csv", "csv"),
        ("D.CSV", "csv"),
        ("d.tsv", "csv"),
        ("d.txt", "csv"),
        ("d.jsonl", "jsonl"),
        ("d.ndjson", "jsonl"),
        ("d.json", "json"),
    ],
)
def test_format_by_extension(tmp_path: Path, name: str, expected: str) -> None:
    # The extension decides, whatever the content.
    assert detect_format(write(tmp_path, name, "[]")) == expected


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        ("productKey,deviceName,timezone\npk,M,UTC\n", "csv"),
        ('\ufeff[{"productKey": "pk"}]', "json"),
        ('  [\n  {"productKey": "pk"}\n]\n', "json"),
        ('{"productKey": "pk"}\n{"productKey": "pk2"}\n', "jsonl"),
        ('{\n  "deviceList": [\n    {"productKey": "pk"}\n  ]\n}\n', "json"),
        ('{"deviceList": [{"productKey": "pk"}]}', "json"),
        ('{"deviceList": [{"productKey": "pk"}]}\n', "json"),
    ],
    ids=["csv", "array-bom", "array", "jsonl", "body-pretty", "body-one-line", "body-one-line-lf"],
)
def test_format_by_content(tmp_path: Path, content: str, expected: str) -> None:
    path = write(tmp_path, "upload.dat", content)
    assert detect_format(path) == expected
    # And the detected reader reads it.
    source = open_source(path)
    rows = list(source.rows())
    assert source.error is None
    assert rows
    assert rows[0].option["productKey"] == "pk"


def test_missing_file_and_unknown_format(tmp_path: Path) -> None:
    with pytest.raises(SourceError, match="no such file"):
        open_source(tmp_path / "nope.csv")
    with pytest.raises(SourceError, match="unknown format 'xml'"):
        open_source(write(tmp_path, "d.xml", "<x/>"), fmt="xml")


def test_max_file_bytes(tmp_path: Path) -> None:
    path = write(tmp_path, "d.csv", f"{HEADER}\npk,k-0001,M,UTC\n")
    with pytest.raises(SourceError, match="over the limit of 10 bytes"):
        open_source(path, limits=IntakeLimits(max_file_bytes=10))
