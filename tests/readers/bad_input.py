"""What the bad-input tests share: reading a file as the intake does (asserting what holds for
any input), writing and damaging files, and the hypothesis strategies of good and bad devices."""

from __future__ import annotations

import csv
import io
import re
import sys
from dataclasses import dataclass
from pathlib import Path

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

from worker.importer.intake import Prepared, prepare_row
from worker.readers.sources import IntakeLimits, Source, SourceRow, open_source

ORG = "o-demo"
SHA = "0" * 64
BIN = Path(sys.executable).parent
LINE = re.compile(r"line (\d+)")
# The only file-level errors that name no line: there is no line to name. (The second comes
# from the job, when a file holds no rows at all: a header alone, or an empty JSON Lines file.)
EMPTY = "the file is empty"
NO_DEVICES = "the file has no devices"

# How many examples, and whether they are fresh, comes from the profile (tests/conftest.py).
PROPERTY = settings(
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


# ---------------------------------------------------------------------------------- strategies
TEXT = st.text(st.characters(blacklist_categories=["Cs"], blacklist_characters="\x00"), max_size=12)
NAME = st.text(
    st.characters(blacklist_categories=["Cs", "Cc"]) | st.sampled_from([",", ";", "\t", '"', "\n"]),
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
    | st.text(st.characters(blacklist_categories=["Cs"]), min_size=1, max_size=20).map(
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
    quoting = csv.QUOTE_ALL if draw(st.booleans()) else csv.QUOTE_MINIMAL
    bom = draw(st.sampled_from([b"", b"\xef\xbb\xbf"]))
    records = [CSV_COLUMNS, *draw(st.lists(CSV_ROW, min_size=1, max_size=10))]
    segments: list[bytes] = []
    starts: list[int] = []
    line = 1
    for record in records:
        out = io.StringIO()
        # The stubs type csv.QUOTE_* as int where writer() asks for their literal values.
        writer = csv.writer(out, delimiter=delimiter, lineterminator=newline, quoting=quoting)  # type: ignore[arg-type]
        writer.writerow(record)
        segment = out.getvalue().encode()
        segments.append(segment)
        starts.append(line)
        line += segment.count(b"\n")
    segments[0] = bom + segments[0]
    return CsvFile(segments, starts)


# ------------------------------------------------------------------------------ explicit files
HEADER = b"productKey,deviceKey,deviceName,timezone\n"


def meter(n: int) -> bytes:
    return b"pk-meter,meter-%04d,Meter %d,+08:00\n" % (n, n)


def problems(result: Read) -> dict[int, str | None]:
    return {row.line: prepared.problems for row, prepared in result.rows}


GOOD = {"productKey": "pk-meter", "deviceName": {"defaultValue": "A"}, "timezone": "UTC"}
