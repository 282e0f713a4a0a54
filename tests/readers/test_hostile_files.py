"""Files that attack the reader: each is refused with a clear error, or becomes rows with
problems, in bounded memory. (The same inputs from a real worker: tests/e2e/test_hostile.py.)"""

from __future__ import annotations

import os
import tracemalloc
from pathlib import Path

import pytest

from worker.readers.sources import IntakeLimits, SourceError, open_source

HEADER = b"productKey,deviceKey,deviceName,timezone\n"
GOOD = b"pk-meter,meter-0001,Meter 1,+08:00\n"


def test_a_symlink_is_refused_before_a_byte_is_read(tmp_path: Path) -> None:
    link = tmp_path / "passwd.csv"
    link.symlink_to("/etc/passwd")
    with pytest.raises(SourceError, match="is a symbolic link"):
        open_source(link)


def test_a_fifo_is_refused_without_waiting_for_a_writer(tmp_path: Path) -> None:
    fifo = tmp_path / "devices.csv"
    os.mkfifo(fifo)
    with pytest.raises(SourceError, match=r"not a regular file \(a FIFO\)"):
        open_source(fifo)


def test_a_proc_file_fails_as_changed_while_read() -> None:
    source = open_source(Path("/proc/self/environ"), fmt="csv")
    with pytest.raises(SourceError, match="changed while it was read"):
        source.sha256()
    source.close()


def test_rows_and_hash_come_from_one_handle(tmp_path: Path) -> None:
    path = tmp_path / "d.csv"
    path.write_bytes(HEADER + GOOD)
    source = open_source(path)
    source.sha256()
    # Replaced by rename while held: the handle still reads the old file, and the end of the
    # read says the path names another file now.
    other = tmp_path / "other.csv"
    other.write_bytes(HEADER + GOOD.replace(b"0001", b"0002"))
    other.rename(path)
    with pytest.raises(SourceError, match="replaced or removed while it was read"):
        list(source.rows())
    source.close()


def test_a_file_growing_while_read_fails(tmp_path: Path) -> None:
    path = tmp_path / "d.csv"
    path.write_bytes(HEADER + GOOD)
    source = open_source(path)
    with path.open("ab") as more:
        more.write(GOOD.replace(b"0001", b"0002"))
    with pytest.raises(SourceError, match="changed while it was read"):
        source.sha256()
    source.close()


@pytest.mark.parametrize("size", [40_000, 200_000])
def test_deeply_nested_json_is_a_row_with_a_problem_in_little_memory(
    tmp_path: Path, size: int
) -> None:
    path = tmp_path / "deep.json"
    path.write_bytes(b"[" + b"[" * size + b"]" * size + b"]")
    tracemalloc.start()
    source = open_source(path)
    rows = list(source.rows())
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    source.close()
    assert [r.problems for r in rows] == [["line 1: nested deeper than 32 levels"]]
    assert peak < 20 * 1024**2


def test_one_huge_json_string_is_refused_while_it_is_read(tmp_path: Path) -> None:
    path = tmp_path / "long.json"
    with path.open("wb") as out:
        out.write(b'[{"productKey": "')
        block = b"x" * (1 << 20)
        for _ in range(20):
            out.write(block)
        out.write(b'"}]')
    tracemalloc.start()
    source = open_source(path)
    rows = list(source.rows())
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    source.close()
    assert rows == []
    assert source.error is not None
    assert "a single JSON value is longer than" in str(source.error)
    assert peak < 20 * 1024**2


def test_a_json_item_over_the_size_limit_is_skipped_while_parsed(tmp_path: Path) -> None:
    limits = IntakeLimits(max_field_chars=64)
    item = b'{"productKey": "pk", "deviceAttributes": {' + b",".join(
        b'"a%d": 1' % n for n in range(500)
    )
    path = tmp_path / "big.json"
    path.write_bytes(b"[" + item + b'}}, {"productKey": "pk"}]')
    source = open_source(path, limits=limits)
    rows = list(source.rows())
    assert rows[0].problems == ["line 1: larger than 1024 bytes (16 x ENOS_IMPORT_MAX_FIELD_CHARS)"]
    assert rows[1].option == {"productKey": "pk"}


def test_a_csv_record_over_quoted_newlines_has_bounded_cells(tmp_path: Path) -> None:
    path = tmp_path / "cells.csv"
    with path.open("wb") as out:
        out.write(HEADER)
        out.write(b'pk-meter,"')
        line = b'a",' + b"b," * 2000 + b'"\n'  # closes the quote, 2,000 cells, opens another
        for _ in range(2_000):  # 4 million cells in one record
            out.write(line)
        out.write(b'x",M,+08:00\n')
        out.write(GOOD)
    tracemalloc.start()
    source = open_source(path)
    rows = list(source.rows())
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    source.close()
    assert len(rows) == 2
    assert any("the record is longer than" in p for p in rows[0].problems), rows[0].problems
    assert rows[1].option is not None and rows[1].option["deviceKey"] == "meter-0001"
    assert peak < 40 * 1024**2
