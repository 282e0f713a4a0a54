"""Bad input: malformed CSV, JSON Lines and JSON never crash the intake.

Property tests (hypothesis) damage otherwise valid files with arbitrary bytes and text: the
reader never raises, every problem and error names a line, and the rows the damage did not touch
still come out valid on their own lines. Explicit cases cover what an operator's file really
does wrong (invalid UTF-8, NUL bytes, huge fields, a million columns, wrong JSON types, an
unbalanced quote, a truncated file, an empty file, a header alone). A fuzz run mutates valid
samples and imports them into both databases: no exception escapes and the counts add up.
"""

from __future__ import annotations

import csv
import io
import random
import re
import subprocess
import time
import tracemalloc
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import text

from tests.importer.support import fast_settings
from worker.db.session import Database
from worker.importer.intake import Prepared, prepare_row
from worker.importer.submit import create, job_options, run_intake
from worker.intake.sources import IntakeLimits, Source, SourceRow, open_source

ORG = "o-demo"
SHA = "0" * 64
BIN = Path(__file__).resolve().parents[2] / ".venv" / "bin"
LINE = re.compile(r"line (\d+)")
# The only file-level errors that name no line: there is no line to name. (The second comes
# from the job, when a file holds no rows at all: a header alone, or an empty JSON Lines file.)
EMPTY = "the file is empty"
NO_DEVICES = "the file has no devices"

PROPERTY = settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


# ------------------------------------------------------------------------------------- helpers
@dataclass
class Read:
    source: Source
    rows: list[tuple[SourceRow, Prepared]]

    @property
    def valid(self) -> dict[int, bytes | None]:
        """The payload of each valid row, by line."""
        return {row.line: p.payload for row, p in self.rows if p.problems is None}

    @property
    def error(self) -> str | None:
        return None if self.source.error is None else str(self.source.error)


def read(path: Path, limits: IntakeLimits | None = None) -> Read:
    """Reads and checks every row as the intake does; asserts what holds for any input."""
    source = open_source(path, limits=limits)
    rows = [(row, prepare_row(row, ORG, SHA, "derive")) for row in source.rows()]
    lines = [row.line for row, _ in rows]
    assert lines == sorted(set(lines)), f"lines out of order: {lines}"
    for row, prepared in rows:
        assert row.line >= 1
        if prepared.problems is None:
            assert prepared.payload is not None
        else:
            assert_names_line(prepared.problems, row.line)
    if source.error is not None:
        assert source.error.line is not None and source.error.line >= 1
        message = str(source.error)
        assert message == EMPTY or LINE.search(message), message
    return Read(source, rows)


def assert_names_line(message: str, first_line: int) -> None:
    """``message`` starts with "line N", N at or after the row's first line."""
    match = LINE.match(message)
    assert match is not None, f"does not start with its line: {message!r}"
    assert int(match.group(1)) >= first_line, (first_line, message)


def write(directory: Path, name: str, data: bytes) -> Path:
    path = directory / name
    path.write_bytes(data)
    return path


def splice(segments: list[bytes], index: int, offset: int, damage: bytes) -> bytes:
    """The file with ``damage`` inserted ``offset`` bytes into segment ``index``."""
    target = segments[index]
    offset = min(offset, max(len(target) - 1, 0))
    damaged = [*segments]
    damaged[index] = target[:offset] + damage + target[offset:]
    return b"".join(damaged)


@pytest.fixture(scope="module")
def scratch(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A directory for the property tests' files (hypothesis wants no function-scoped fixture)."""
    return tmp_path_factory.mktemp("bad-input")


# ---------------------------------------------------------------------------------- strategies
TEXT = st.text(
    st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), max_size=12
)
NAME = st.text(
    st.characters(blacklist_categories=("Cs", "Cc")) | st.sampled_from([",", ";", "\t", '"', "\n"]),
    min_size=1,
    max_size=15,
)
TIMEZONE = st.sampled_from(["+08:00", "UTC", "Asia/Shanghai", "-05:00", "GMT+8", ""])
KEY = st.from_regex(r"[A-Za-z0-9._-]{4,20}", fullmatch=True)
SCALAR = (
    st.none()
    | st.booleans()
    # yajl (ijson's parser) holds -(2**63 - 1) .. 2**63 - 1; see the test of a bigger one.
    | st.integers(-(2**63) + 1, 2**63 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | TEXT
)
JSON_VALUE = st.recursive(
    SCALAR, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(TEXT, inner, max_size=3),
    max_leaves=8,
)  # fmt: skip
GOOD_OPTION = st.fixed_dictionaries(
    {
        "productKey": st.sampled_from(["pk-meter", "pk-turbine"]),
        "deviceName": st.fixed_dictionaries({"defaultValue": NAME}),
        "timezone": TIMEZONE,
    },
    optional={
        "deviceKey": KEY,
        "deviceDesc": TEXT,
        "deviceAttributes": st.dictionaries(st.from_regex(r"[a-z]{1,8}", fullmatch=True),
                                            JSON_VALUE, max_size=3),
        "deviceTags": st.dictionaries(st.from_regex(r"[a-z]{1,8}", fullmatch=True), TEXT,
                                      max_size=2),
    },
)  # fmt: skip
FIELDS = ["productKey", "deviceKey", "deviceName", "timezone", "deviceAttributes", "deviceTags"]
# Wrong types: any JSON value as a device, or one field replaced by any JSON value.
OPTION = st.one_of(
    GOOD_OPTION,
    GOOD_OPTION,
    JSON_VALUE,
    st.builds(lambda o, f, v: {**o, f: v}, GOOD_OPTION, st.sampled_from(FIELDS), JSON_VALUE),
)
# What breaks files: quotes, NUL, bytes that are not UTF-8, line ends, JSON punctuation and
# escapes (NUL, an unpaired surrogate), a number no parser holds, nesting deeper than JSON
# can be written again, a long run of one character.
TOKENS = [
    *(b'"', b"\x00", b"\xff", b"\n", b"\r", b"\r\n", b",", b";", b"\t", b"{", b"}", b"[", b"]"),
    *(b":", b"\\", b"\\u0000", b"\\udc00", b"1e999", b"null", b"\xed\xa0\x80", b"\xef\xbb\xbf"),
]
NASTY = [*TOKENS, b"[" * 300 + b"]" * 300, b"x" * 200]
# Damage: arbitrary bytes, arbitrary text (any code point a file can hold) as UTF-8, or
# a few of the tokens above.
DAMAGE = (
    st.binary(min_size=1, max_size=40)
    | st.text(st.characters(blacklist_categories=("Cs",)), min_size=1, max_size=20).map(
        lambda s: s.encode()
    )
    | st.lists(st.sampled_from(NASTY), min_size=1, max_size=3).map(b"".join)
)

CSV_COLUMNS = ["productKey", "deviceKey", "deviceName", "timezone", "attr.n", "tag.site"]
CSV_ROW = st.tuples(
    st.sampled_from(["pk-meter", "pk-turbine", ""]),
    st.one_of(st.just(""), KEY),
    NAME,
    TIMEZONE,
    st.one_of(st.just(""), st.integers(-1000, 1000).map(str), TEXT.filter(lambda s: "\r" not in s)),
    st.one_of(st.just(""), st.from_regex(r"[a-z]{1,8}", fullmatch=True)),
)


@dataclass
class CsvFile:
    segments: list[bytes]  # header, then one segment per record
    starts: list[int]  # the line where each segment starts

    @property
    def data(self) -> bytes:
        return b"".join(self.segments)


@st.composite
def csv_files(draw: st.DrawFn) -> CsvFile:
    delimiter = draw(st.sampled_from([",", ";", "\t"]))
    newline = draw(st.sampled_from(["\n", "\r\n"]))
    quoting = draw(st.sampled_from([csv.QUOTE_MINIMAL, csv.QUOTE_ALL]))
    bom = draw(st.sampled_from([b"", b"\xef\xbb\xbf"]))
    records = [CSV_COLUMNS, *draw(st.lists(CSV_ROW, min_size=1, max_size=10))]
    segments: list[bytes] = []
    starts: list[int] = []
    line = 1
    for record in records:
        out = io.StringIO()
        csv.writer(out, delimiter=delimiter, lineterminator=newline, quoting=quoting).writerow(
            record
        )
        segment = out.getvalue().encode()
        segments.append(segment)
        starts.append(line)
        line += segment.count(b"\n")
    segments[0] = bom + segments[0]
    return CsvFile(segments, starts)


# ------------------------------------------------------------------------------ property: CSV
@PROPERTY
@given(file=csv_files(), damage=DAMAGE, where=st.data())
def test_csv_damage_stays_in_its_row(
    scratch: Path, file: CsvFile, damage: bytes, where: Any
) -> None:
    row = where.draw(st.integers(1, len(file.segments) - 1), label="damaged record")
    offset = where.draw(st.integers(0, len(file.segments[row])), label="offset")
    baseline = read(write(scratch, "base.csv", file.data))
    assert baseline.error is None
    damaged = read(write(scratch, "damaged.csv", splice(file.segments, row, offset, damage)))

    first = file.starts[row]
    end = file.starts[row + 1] if row + 1 < len(file.starts) else 1 << 30
    # Whatever the damage, the rows before the line it hit are read as before.
    assert {k: v for k, v in damaged.valid.items() if k < first} == {
        k: v for k, v in baseline.valid.items() if k < first
    }
    # Damage that neither adds a line nor touches quoting (no quote, CR or LF) in a one-line
    # record spoils that record alone: every other row is read as before, on its own line.
    if end - first == 1 and not set(damage) & set(b'"\r\n'):
        outside = {k: v for k, v in damaged.valid.items() if not first <= k < end}
        assert outside == {k: v for k, v in baseline.valid.items() if not first <= k < end}
        assert damaged.error is None


@PROPERTY
@given(file=csv_files(), damage=DAMAGE, offset=st.integers(0, 200))
def test_csv_damaged_header_never_crashes(
    scratch: Path, file: CsvFile, damage: bytes, offset: int
) -> None:
    result = read(write(scratch, "header.csv", splice(file.segments, 0, offset, damage)))
    if result.error is not None and result.source.error is not None:
        assert result.rows == []


@PROPERTY
@given(
    file=csv_files(),
    limits=st.builds(
        IntakeLimits,
        max_field_chars=st.integers(1, 40),
        max_rows=st.integers(1, 12),
        max_columns=st.integers(1, 8),
    ),
)
def test_csv_limits_never_crash_and_name_lines(
    scratch: Path, file: CsvFile, limits: IntakeLimits
) -> None:
    result = read(write(scratch, "limits.csv", file.data), limits)
    assert len(result.rows) <= limits.max_rows


# ---------------------------------------------------------------------------- property: JSONL
@PROPERTY
@given(options=st.lists(OPTION, min_size=1, max_size=10), damage=DAMAGE, where=st.data())
def test_jsonl_damage_stays_in_its_line(
    scratch: Path, options: list[Any], damage: bytes, where: Any
) -> None:
    segments = [orjson.dumps(o) + b"\n" for o in options]
    row = where.draw(st.integers(0, len(segments) - 1), label="damaged line")
    offset = where.draw(st.integers(0, len(segments[row])), label="offset")
    baseline = read(write(scratch, "base.jsonl", b"".join(segments)))
    assert baseline.error is None
    assert sorted(line for line, _ in ((r.line, r) for r, _ in baseline.rows)) == list(
        range(1, len(options) + 1)
    )
    damaged = read(write(scratch, "damaged.jsonl", splice(segments, row, offset, damage)))

    line = row + 1
    before = {k: v for k, v in baseline.valid.items() if k < line}
    assert {k: v for k, v in damaged.valid.items() if k < line} == before
    if b"\n" not in damage:
        # One line, one device: the others come out as before.
        others = {k: v for k, v in baseline.valid.items() if k != line}
        assert {k: v for k, v in damaged.valid.items() if k != line} == others


# ----------------------------------------------------------------------------- property: JSON
@PROPERTY
@given(
    options=st.lists(OPTION, min_size=1, max_size=10),
    body=st.booleans(),
    damage=DAMAGE,
    where=st.data(),
)
def test_json_damage_keeps_the_items_before_it(
    scratch: Path, options: list[Any], body: bool, damage: bytes, where: Any
) -> None:
    items = [orjson.dumps(o) for o in options]
    head, tail = (b'{"deviceList": [', b"]}") if body else (b"[", b"]")
    segments = [head, *(item + b", " for item in items[:-1]), items[-1], tail]
    baseline = read(write(scratch, "base.json", b"".join(segments)))
    assert baseline.error is None
    assert [r.line for r, _ in baseline.rows] == list(range(1, len(options) + 1))

    position = where.draw(st.integers(1, len(items)), label="damaged item")
    offset = where.draw(st.integers(0, len(segments[position])), label="offset")
    damaged = read(write(scratch, "damaged.json", splice(segments, position, offset, damage)))
    before = {k: v for k, v in baseline.valid.items() if k < position}
    assert {k: v for k, v in damaged.valid.items() if k < position} == before


@PROPERTY
@given(options=st.lists(OPTION, min_size=1, max_size=12), body=st.booleans())
def test_json_wrong_types_are_rows_with_problems(
    scratch: Path, options: list[Any], body: bool
) -> None:
    document: Any = {"deviceList": options} if body else options
    jsonl = read(write(scratch, "types.jsonl", b"\n".join(orjson.dumps(o) for o in options)))
    json = read(write(scratch, "types.json", orjson.dumps(document)))
    for result in (jsonl, json):
        assert result.error is None
        assert [r.line for r, _ in result.rows] == list(range(1, len(options) + 1))
    # Both forms judge each device alike; a device that is not an object is never valid.
    assert jsonl.valid == json.valid
    for line, option in enumerate(options, 1):
        if not isinstance(option, dict):
            assert line not in json.valid


# ---------------------------------------------------------------------- property: any content
@PROPERTY
@given(
    data=st.binary(max_size=300)
    | st.text(max_size=200).map(lambda s: s.encode("utf-8", "surrogatepass")),
    suffix=st.sampled_from([".csv", ".jsonl", ".json"]),
)
def test_any_bytes_never_crash(scratch: Path, data: bytes, suffix: str) -> None:
    read(write(scratch, f"any{suffix}", data))


# -------------------------------------------------------------------------- explicit: CSV cases
HEADER = b"productKey,deviceKey,deviceName,timezone\n"


def meter(n: int) -> bytes:
    return b"pk-meter,meter-%04d,Meter %d,+08:00\n" % (n, n)


def problems(result: Read) -> dict[int, str | None]:
    return {row.line: prepared.problems for row, prepared in result.rows}


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
GOOD = {"productKey": "pk-meter", "deviceName": {"defaultValue": "A"}, "timezone": "UTC"}


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
@pytest.mark.parametrize(
    ("name", "data", "message"),
    [
        ("wide.csv", b"productKey" + b",attr.x" * 200_000 + b"\n",
         "line 1 (header): at least"),
        ("cut.json", b'{"deviceList": [{"productKey": "pk-meter"}, {"prod', "line 2: parse error"),
        ("bytes.csv", HEADER + b"\xff\x00\"\n" + meter(3), "line 2: not valid UTF-8"),
    ],
    ids=["wide-header", "truncated-json", "bad-bytes"],
)  # fmt: skip
def test_validate_reports_bad_files_without_a_traceback(
    tmp_path: Path, name: str, data: bytes, message: str
) -> None:
    path = write(tmp_path, name, data)
    done = subprocess.run(
        [str(BIN / "enos-import"), "validate", str(path), "--org", ORG, "--offline"],
        capture_output=True, text=True, timeout=60, check=False, cwd=tmp_path,
    )  # fmt: skip
    assert done.returncode == 3, done
    assert "Traceback" not in done.stderr, done.stderr
    assert message in done.stdout, done.stdout


# ----------------------------------------------------------------------------- the fuzz run
FUZZ_FILES = 300
FUZZ_SEED = 20240611


def _csv_sample() -> bytes:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow([*CSV_COLUMNS, "deviceName.zh_CN"])
    for i in range(24):
        name = f"Meter {i}" if i % 5 else f'Meter "{i}",\nsecond line'
        key = f"fuzz-{i:04d}" if i % 3 else ""
        writer.writerow(["pk-meter", key, name, "+08:00" if i % 2 else "UTC", str(i), "north",
                         "电表"])  # fmt: skip
    return b"\xef\xbb\xbf" + out.getvalue().encode()


def _options_sample() -> list[dict[str, Any]]:
    return [
        {
            **GOOD,
            "deviceName": {"defaultValue": f"Device {i}", "i18nValue": {"zh_CN": "设备"}},
            **({"deviceKey": f"fuzz-{i:04d}"} if i % 3 else {}),
            "deviceAttributes": {"n": i, "on": i % 2 == 0, "list": [1, 2.5, "x"]},
            "deviceTags": {"site": "north"},
        }
        for i in range(24)
    ]


SAMPLES = {
    ".csv": _csv_sample(),
    ".jsonl": b"\n".join(orjson.dumps(o) for o in _options_sample()) + b"\n",
    ".json": orjson.dumps({"deviceList": _options_sample()}, option=orjson.OPT_INDENT_2),
}
SAMPLES_ARRAY = orjson.dumps(_options_sample())


def mutate(data: bytes, rng: random.Random) -> bytes:
    buffer = bytearray(data)
    for _ in range(rng.randint(1, 4)):
        at = rng.randrange(len(buffer) + 1)
        op = rng.randrange(10)
        if op == 0 and buffer:
            buffer[min(at, len(buffer) - 1)] ^= 1 << rng.randrange(8)
        elif op == 1:
            buffer[at:at] = rng.randbytes(rng.randint(1, 8))
        elif op == 2:
            del buffer[at : at + rng.randint(1, 24)]
        elif op in (3, 4):
            buffer[at:at] = rng.choice(TOKENS)
        elif op == 5:
            del buffer[at:]
        elif op == 6 and buffer:
            start = rng.randrange(len(buffer))
            buffer[at:at] = buffer[start : start + rng.randint(1, 64)]
        else:
            # Into a string (or a quoted cell): right after a quote.
            quotes = [i for i, byte in enumerate(buffer) if byte == ord('"')]
            at = rng.choice(quotes) + 1 if quotes else at
            buffer[at:at] = rng.choice(NASTY)
    return bytes(buffer)


def test_fuzz_the_whole_intake(db: Database, tmp_path: Path) -> None:
    rng = random.Random(FUZZ_SEED)
    config = fast_settings()
    started = time.monotonic()
    for n in range(FUZZ_FILES):
        suffix = rng.choice(list(SAMPLES))
        sample = SAMPLES_ARRAY if suffix == ".json" and rng.random() < 0.3 else SAMPLES[suffix]
        path = write(tmp_path, f"fuzz-{n:03d}{suffix}", mutate(sample, rng))
        limits = (
            IntakeLimits(max_field_chars=rng.choice([16, 64]), max_rows=rng.choice([5, 20]),
                         max_columns=rng.choice([4, 9]))
            if rng.random() < 0.2 else IntakeLimits()
        )  # fmt: skip
        try:
            expected = len(read(path, limits).rows)
            job_id = str(uuid.uuid4())
            options = job_options(config, require_secret=False, intake="cli")
            create(db, config, job_id, ORG, str(path), options)
            result = run_intake(db, config, job_id, ORG, open_source(path, limits=limits), options)
            check_job(db, job_id, expected, result.summary is not None and result.summary.rows)
        except BaseException as exc:
            raise AssertionError(f"fuzz file {n} ({path}, {limits}) failed: {exc!r}") from exc
    assert time.monotonic() - started < 60


def check_job(db: Database, job_id: str, expected_rows: int, summary_rows: int | bool) -> None:
    with db.read() as session:
        job = session.execute(
            text("SELECT status, total, last_error FROM import_jobs WHERE id = :j"), {"j": job_id}
        ).one()
        items = session.execute(
            text(
                "SELECT line_no, status, device_key, error_message FROM import_items "
                "WHERE job_id = :j ORDER BY line_no"
            ),
            {"j": job_id},
        ).all()
    assert job.status in ("running", "completed_with_errors", "failed"), job
    assert len(items) == job.total == expected_rows == summary_rows, (job, len(items))
    if job.last_error is not None:
        assert LINE.search(job.last_error) or job.last_error.endswith((EMPTY, NO_DEVICES)), job
    if job.status == "failed":
        assert job.total == 0 and job.last_error
    for item in items:
        if item.status == "invalid":
            assert item.error_message, item
            assert_names_line(item.error_message, item.line_no)
        else:
            assert item.status == "pending", item
            assert item.error_message is None and item.device_key, item
