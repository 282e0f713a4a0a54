"""Property tests (hypothesis) of bad input: otherwise valid files damaged with arbitrary bytes
and text never crash the reader, every problem and error names a line, and the rows the damage
did not touch still come out valid on their own lines. ``make test-fuzz`` runs these with fresh
examples and many more of them."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
from hypothesis import given
from hypothesis import strategies as st

from tests.readers.bad_input import (
    DAMAGE,
    OPTION,
    PROPERTY,
    CsvFile,
    csv_files,
    read,
    splice,
    write,
)
from worker.readers.sources import IntakeLimits


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
