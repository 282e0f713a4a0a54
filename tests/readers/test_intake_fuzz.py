"""A fuzz run: valid samples mutated at random are imported into both databases; no exception
escapes and the counts add up."""

from __future__ import annotations

import csv
import io
import random
import time
import uuid
from pathlib import Path
from typing import Any

import orjson
from sqlalchemy import text

from tests.importer.support import fast_settings
from tests.readers.bad_input import (
    CSV_COLUMNS,
    EMPTY,
    GOOD,
    LINE,
    NASTY,
    NO_DEVICES,
    ORG,
    TOKENS,
    assert_names_line,
    read,
    write,
)
from worker.db.session import Database
from worker.importer.submit import create, job_options, run_intake
from worker.readers.sources import IntakeLimits, open_source

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
