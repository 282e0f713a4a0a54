"""Bad input as an operator's file really has it: invalid UTF-8, NUL bytes, huge fields, a
million columns, wrong JSON types, an unbalanced quote, a truncated file, an empty file, a header
alone; and the command line reporting bad files without a traceback."""

from __future__ import annotations

import subprocess
import time
import tracemalloc
from pathlib import Path
from typing import Any

import orjson
import pytest

from tests.readers.bad_input import (
    BIN,
    EMPTY,
    GOOD,
    HEADER,
    ORG,
    meter,
    problems,
    read,
    write,
)
from worker.readers.sources import IntakeLimits


def test_invalid_utf8_spoils_its_row_only(tmp_path: Path) -> None:
    data = HEADER + meter(1) + b"pk-meter,meter-0002,Caf\xe9 \xff,+08:00\n" + meter(3)
    result = read(write(tmp_path, "d.csv", data))
    assert problems(result) == {
        2: None,
        3: "line 3: not valid UTF-8 (byte 0xe9 at byte 24 of the line)",
        4: None,
    }
    jsonl = b'{"productKey": "pk-meter", "deviceName": {"defaultValue": "Caf\xe9"}}\n'
    good = b'{"productKey": "pk-meter", "deviceName": {"defaultValue": "A"}, "timezone": "UTC"}\n'
    result = read(write(tmp_path, "d.jsonl", good + jsonl + good))
    assert sorted(result.valid) == [1, 3]
    assert str(problems(result)[2]).startswith("line 2: not valid JSON")


def test_a_nul_byte_spoils_its_row_only(tmp_path: Path) -> None:
    data = HEADER + meter(1) + b"pk-meter,meter-0002,Me\x00ter,+08:00\n" + meter(3)
    result = read(write(tmp_path, "d.csv", data))
    assert problems(result) == {2: None, 3: "line 3: contains a NUL byte", 4: None}


def test_a_nul_escape_in_json_keys_is_refused_and_storable(tmp_path: Path) -> None:
    # JSON may spell NUL as \u0000; PostgreSQL text cannot hold it: the row must not carry it.
    bad = b'{"productKey": "pk\\u0000x", "deviceKey": "ab\\u0000cd", "deviceName": ' \
          b'{"defaultValue": "A"}, "timezone": "UTC", "deviceTags": {"t\\u0000": "v"}}'  # fmt: skip
    good = b'{"productKey": "pk-meter", "deviceName": {"defaultValue": "A"}, "timezone": "UTC"}'
    for name, data in (("d.jsonl", b"\n".join([good, bad, good])),
                       ("d.json", b"[" + b",".join([good, bad, good]) + b"]")):  # fmt: skip
        result = read(write(tmp_path, name, data))
        assert sorted(result.valid) == [1, 3]
        _, prepared = result.rows[1]
        assert prepared.problems is not None
        assert "\x00" not in prepared.problems
        assert "productKey: must be at most 128 characters, without NUL" in prepared.problems
        assert (prepared.product_key, prepared.device_key) == (None, None)


def test_a_field_over_the_limit_names_its_line_and_the_limit(tmp_path: Path) -> None:
    limits = IntakeLimits(max_field_chars=50)
    data = HEADER + meter(1) + b"pk-meter,meter-0002," + b"x" * 60 + b",+08:00\n" + meter(3)
    result = read(write(tmp_path, "d.csv", data), limits)
    assert problems(result) == {
        2: None,
        3: "line 3: a field is longer than 50 characters (ENOS_IMPORT_MAX_FIELD_CHARS)",
        4: None,
    }
    # JSON: a cell over the limit, and a JSON line over 16 times the limit.
    good = b'{"productKey": "pk-meter", "deviceName": {"defaultValue": "A"}, "timezone": "UTC"}'
    long_name = good.replace(b'"A"', b'"' + b"y" * 60 + b'"')
    result = read(
        write(tmp_path, "d.json", b"[" + b",".join([good, long_name, good]) + b"]"), limits
    )
    assert problems(result) == {
        1: None,
        2: "line 2: deviceName: longer than 50 characters (ENOS_IMPORT_MAX_FIELD_CHARS)",
        3: None,
    }
    huge = good.replace(b'"A"', b'"' + b"z" * 5000 + b'"')
    result = read(write(tmp_path, "d.jsonl", b"\n".join([good, huge, good])), limits)
    assert problems(result) == {
        1: None,
        2: "line 2: longer than 800 bytes (16 x ENOS_IMPORT_MAX_FIELD_CHARS)",
        3: None,
    }


def test_max_rows_counts_the_unreadable_rows_too(tmp_path: Path) -> None:
    # Found by the limits property: a fourth row over the field limit came out after three
    # good ones although the file may yield at most three rows.
    limits = IntakeLimits(max_rows=3, max_field_chars=14)
    data = HEADER + meter(1) + meter(2) + meter(3) + b"pk-meter,m4," + b"x" * 20 + b",UTC\n"
    result = read(write(tmp_path, "d.csv", data), limits)
    assert [row.line for row, _ in result.rows] == [2, 3, 4]
    assert result.error == (
        "more than 3 rows (ENOS_IMPORT_MAX_ROWS): the rows from line 5 on are not read"
    )


def test_a_huge_quoted_line_does_not_swallow_the_rows_after_it(tmp_path: Path) -> None:
    # Many quoted cells, each under the field limit, make a line over the line limit: the line
    # is cut inside a quoted cell, and the rows after it must still be read.
    limits = IntakeLimits(max_field_chars=100)
    cell = b'"' + b"x" * 90 + b'"'
    data = HEADER + meter(1) + b"pk-meter,meter-0002," + b",".join([cell] * 10) + b"\n"
    result = read(write(tmp_path, "d.csv", data + meter(3) + meter(4)), limits)
    assert sorted(result.valid) == [2, 4, 5]
    assert str(problems(result)[3]).startswith("line 3: longer than 404 bytes")


def test_a_header_with_a_million_columns_fails_fast_and_small(tmp_path: Path) -> None:
    path = tmp_path / "wide.csv"
    with path.open("wb") as handle:
        handle.write(b"productKey")
        for start in range(0, 1_000_000, 10_000):
            handle.write(b"".join(b",attr.a%d" % i for i in range(start, start + 10_000)))
        handle.write(b"\n" + meter(1))
    assert path.stat().st_size > 10_000_000
    started = time.monotonic()
    tracemalloc.start()
    try:
        result = read(path)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert time.monotonic() - started < 10
    assert peak < 32 * 1024 * 1024
    assert result.rows == []
    assert result.error is not None
    assert result.error.startswith("line 1 (header): at least ")
    assert result.error.endswith("columns, over the limit of 1000 (ENOS_IMPORT_MAX_COLUMNS)")


def test_a_data_row_with_a_million_cells_spoils_its_row_only(tmp_path: Path) -> None:
    data = HEADER + meter(1) + b"pk-meter," * 1_000_000 + b"\n" + meter(3)
    tracemalloc.start()
    try:
        result = read(write(tmp_path, "d.csv", data))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 32 * 1024 * 1024
    assert sorted(result.valid) == [2, 4]
    assert str(problems(result)[3]).startswith(
        "line 3: longer than 262148 bytes (ENOS_IMPORT_MAX_FIELD_CHARS)"
    )


def test_an_unbalanced_quote_keeps_the_rows_before_its_line(tmp_path: Path) -> None:
    data = HEADER + meter(1) + meter(2) + b'pk-meter,"meter-0003,Meter 3,+08:00\n'
    result = read(write(tmp_path, "d.csv", data + meter(4) + meter(5)))
    assert result.error is None
    assert problems(result) == {
        2: None,
        3: None,
        4: "line 4: a quoted field opens here and is never closed, so lines 4-6 cannot be read "
        "(unbalanced quote)",
    }


def test_a_truncated_csv_keeps_the_rows_before_the_cut(tmp_path: Path) -> None:
    result = read(write(tmp_path, "d.csv", HEADER + meter(1) + meter(2) + b"pk-meter,meter-00"))
    assert problems(result) == {
        2: None,
        3: None,
        4: "line 4: deviceName: is mandatory; line 4: timezone: is mandatory",
    }
    cut_in_quotes = HEADER + meter(1) + b'pk-meter,meter-0002,"Meter'
    result = read(write(tmp_path, "q.csv", cut_in_quotes))
    assert sorted(result.valid) == [2]
    assert str(problems(result)[3]).startswith("line 3: a quoted field opens here")


def test_an_empty_file(tmp_path: Path) -> None:
    assert read(write(tmp_path, "d.csv", b"")).error == EMPTY
    json = read(write(tmp_path, "d.json", b""))
    assert json.error is not None and json.error.startswith("the JSON document breaks off")
    assert json.source.error is not None and json.source.error.line == 1
    assert read(write(tmp_path, "d.jsonl", b"")).rows == []


def test_a_file_with_only_a_header(tmp_path: Path) -> None:
    result = read(write(tmp_path, "d.csv", HEADER))
    assert (result.rows, result.error) == ([], None)  # the job fails: "the file has no devices"


# ------------------------------------------------------------------------- explicit: JSON cases


@pytest.mark.parametrize(
    ("document", "error"),
    [
        ({"deviceList": {"productKey": "pk-meter"}}, "line 1: no devices found"),
        ({"deviceList": 5}, "line 1: no devices found"),
        ({"deviceList": "devices"}, "line 1: no devices found"),
        (5, "line 1: no devices found"),
        ({"devices": [GOOD]}, "line 1: no devices found"),
    ],
    ids=["object", "number", "string", "scalar", "other-key"],
)
def test_device_list_not_a_list(tmp_path: Path, document: Any, error: str) -> None:
    result = read(write(tmp_path, "d.json", orjson.dumps(document)))
    assert result.rows == []
    assert result.error is not None and result.error.startswith(error)


def test_wrong_json_types_are_invalid_rows_naming_their_line(tmp_path: Path) -> None:
    devices: list[Any] = [
        GOOD,
        7,
        {**GOOD, "deviceName": ["A"]},
        {**GOOD, "deviceAttributes": "hot"},
        {**GOOD, "deviceTags": [1]},
        {**GOOD, "timezone": 8},
        {**GOOD, "deviceAttributes": {"nested": [[[[[[[[[[1]]]]]]]]]]}},
    ]
    # Line 8 nests deeper than JSON can be written again (orjson stops at 254 levels).
    deep = b"[" * 300 + b"1" + b"]" * 300
    lines = [
        *map(orjson.dumps, devices),
        orjson.dumps(GOOD)[:-1] + b', "deviceAttributes": {"deep": ' + deep + b"}}",
        orjson.dumps(GOOD),
    ]
    for name, data in (
        ("d.json", b'{"deviceList": [' + b",".join(lines) + b"]}"),
        ("d.jsonl", b"\n".join(lines)),
    ):
        result = read(write(tmp_path, name, data))
        got = problems(result)
        assert result.error is None
        assert sorted(result.valid) == [1, 7, 9]
        assert got[2] == "line 2: device: must be an object, got number"
        assert got[3] == "line 3: deviceName: must be an object with defaultValue"
        assert got[4] == "line 4: deviceAttributes: must be an object of attribute id to value"
        assert got[5] == "line 5: deviceTags: must be an object of tag key to string value"
        assert str(got[6]).startswith("line 6: timezone: 8 is neither a UTC offset")
        assert got[8] == "line 8: nested deeper than 32 levels"


def test_json_with_too_many_columns(tmp_path: Path) -> None:
    wide = {**GOOD, "deviceAttributes": {f"a{i}": i for i in range(1200)}}
    result = read(write(tmp_path, "d.json", orjson.dumps([GOOD, wide, GOOD])))
    assert sorted(result.valid) == [1, 3]
    assert problems(result)[2] == (
        "line 2: its fields make 1204 columns, over the limit of 1000 (ENOS_IMPORT_MAX_COLUMNS)"
    )
    assert len(result.source.columns) < 10


def test_a_truncated_json_document_keeps_the_items_before_the_cut(tmp_path: Path) -> None:
    data = orjson.dumps({"deviceList": [GOOD, GOOD, GOOD]})
    result = read(write(tmp_path, "d.json", data[: data.rindex(b"{") + 20]))
    assert sorted(result.valid) == [1, 2]
    assert result.error == (
        "the JSON document breaks off after item 2 of deviceList: line 3: parse error: "
        "premature EOF"
    )


def test_an_unpaired_surrogate_in_json_breaks_the_document_there(tmp_path: Path) -> None:
    # yajl2_c raises UnicodeDecodeError (not a JSON error) for an unpaired low surrogate.
    bad = b'{"productKey": "pk-meter", "deviceName": {"defaultValue": "\\udc00"}}'
    data = b"[" + b",".join([orjson.dumps(GOOD), bad, orjson.dumps(GOOD)]) + b"]"
    result = read(write(tmp_path, "d.json", data))
    assert sorted(result.valid) == [1]
    assert result.error == (
        "the JSON document breaks off after item 1 of the array: line 2: a string is not "
        "valid Unicode (an unpaired surrogate)"
    )


def test_an_integer_beyond_64_bits_ends_a_json_document_at_its_item(tmp_path: Path) -> None:
    # Valid JSON, but yajl (ijson's parser) cannot hold it: the document breaks off there, the
    # items before it stay. JSON Lines (orjson) reads it as a float.
    big = orjson.dumps(GOOD)[:-1] + b', "deviceAttributes": {"n": 9223372036854775808}}'
    data = b"[" + b",".join([orjson.dumps(GOOD), big, orjson.dumps(GOOD)]) + b"]"
    result = read(write(tmp_path, "d.json", data))
    assert sorted(result.valid) == [1]
    assert result.error == (
        "the JSON document breaks off after item 1 of the array: line 2: parse error: "
        "integer overflow"
    )
    result = read(write(tmp_path, "d.jsonl", data[1:-1].replace(b"},{", b"}\n{")))
    assert sorted(result.valid) == [1, 2, 3]


# --------------------------------------------------------------------- the command, bad files
def validate_offline(path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(BIN / "enos-import"), "validate", str(path), "--org", ORG, "--offline"],
        capture_output=True, text=True, timeout=60, check=False, cwd=path.parent,
    )  # fmt: skip


@pytest.mark.parametrize(
    ("name", "data", "message"),
    [
        ("wide.csv", b"productKey" + b",attr.x" * 200_000 + b"\n",
         "line 1 (header): at least"),
        ("cut.json", b'{"deviceList": [{"productKey": "pk-meter"}, {"prod', "line 2: parse error"),
        ("bytes.csv", HEADER + b"\xff\x00\"\n" + meter(3), "line 2: not valid UTF-8"),
        ("utf16.csv", (HEADER + meter(1)).decode().encode("utf-16"),
         'line 1: the file is UTF-16 text (as Excel saves "Unicode Text"), not UTF-8'),
    ],
    ids=["wide-header", "truncated-json", "bad-bytes", "utf-16"],
)  # fmt: skip
def test_validate_reports_bad_files_without_a_traceback(
    tmp_path: Path, name: str, data: bytes, message: str
) -> None:
    path = write(tmp_path, name, data)
    done = validate_offline(path)
    assert done.returncode == 3, done
    assert "Traceback" not in done.stderr, done.stderr
    assert message in done.stdout, done.stdout


GOOD_JSON = b'{"productKey": "pk-meter", "deviceName": {"defaultValue": "A"}, "timezone": "UTC"}'


@pytest.mark.parametrize(
    ("name", "data", "summary"),
    [
        ("empty.csv", b"", "0 rows, 0 valid, 0 invalid; the file itself has a problem"),
        ("cut.json", b'{"deviceList": [' + GOOD_JSON + b', 5, {"prod',
         "2 rows, 1 valid, 1 invalid; the file itself has a problem"),
        ("header.csv", HEADER, "0 rows, 0 valid, 0 invalid; the file itself has a problem"),
    ],
    ids=["empty", "truncated-json", "header-only"],
)  # fmt: skip
def test_validate_counts_a_files_own_problem_apart_from_its_rows(
    tmp_path: Path, name: str, data: bytes, summary: str
) -> None:
    path = write(tmp_path, name, data)
    done = validate_offline(path)
    assert f"{path}: {summary}" in " ".join(done.stderr.split()), done.stderr
    assert done.returncode == 3, done
