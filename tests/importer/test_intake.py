"""Intake on both databases: rows checked, keyed, deduplicated and planned in chunks."""

from __future__ import annotations

import hashlib
import uuid
from pathlib import Path
from typing import Any

import orjson
import pytest
from sqlalchemy import text

from worker.db.session import Database
from worker.enos.validation import is_valid_device_key
from worker.importer.cells import cells_by_name
from worker.importer.keys import derive_device_key
from worker.importer.submit import IntakeResult, create, job_options, run_intake
from worker.readers.sources import open_source
from worker.settings import Settings

ORG = "o-intake"

MIXED = (
    "productKey,deviceKey,deviceName,timezone,attr.serial\r\n"  # 1
    "pk-meter,meter-0001,Meter 1,+08:00,100\r\n"  # 2 valid
    "pk-meter,,Meter 2,+08:00,\r\n"  # 3 valid, derived key
    "pk-meter,meter-0003,,+08:00,\r\n"  # 4 no name
    "pk-meter,meter-0001,Meter 1 again,+08:00,\r\n"  # 5 repeats line 2
    "pk-meter,bad key!,Meter 6,Mars/Base,\r\n"  # 6 two broken rules
    ",meter-0007,Meter 7,UTC,\r\n"  # 7 no productKey
    'pk-meter,meter-0008,"Meter, 8",UTC,\r\n'  # 8 valid
    "pk-meter,,Meter 9,Asia/Shanghai,\r\n"  # 9 valid, derived key
    "pk-meter,meter-0010,Meter 10,UTC,x,surplus\r\n"  # 10 more cells than the header
    "pk-meter,meter-0011,Meter 11,UTC,\r\n"  # 11 valid
    "pk-meter,meter-0001,Meter 1 thrice,UTC,\r\n"  # 12 repeats line 2
)

REPEATS_2 = "repeats line 2 of the file (the first row wins)"
EXPECTED_OUTCOMES = [
    (2, "pending", "meter-0001", None),
    (3, "pending", "<derived>", None),
    (4, "invalid", "meter-0003", "line 4: deviceName: is mandatory"),
    (5, "invalid", "meter-0001", f"line 5: deviceKey: meter-0001 {REPEATS_2}"),
    (
        6,
        "invalid",
        "bad key!",
        "line 6: timezone: 'Mars/Base' is neither a UTC offset like +08:00 nor an IANA zone "
        "name like Asia/Shanghai; line 6: deviceKey: 'bad key!' must be 4-64 characters of "
        "letters, digits, '-', '_' and '.'",
    ),
    (7, "invalid", "meter-0007", "line 7: productKey: is mandatory"),
    (8, "pending", "meter-0008", None),
    (9, "pending", "<derived>", None),
    (10, "invalid", None, "line 10: has 6 cells, the header has 5 columns"),
    (11, "pending", "meter-0011", None),
    (12, "invalid", "meter-0001", f"line 12: deviceKey: meter-0001 {REPEATS_2}"),
]  # fmt: skip


@pytest.fixture
def settings() -> Settings:
    return Settings(batch_size=3, read_timeout_s=5, lease_s=30, visibility_timeout_s=60)


def write(tmp_path: Path, name: str, data: str | bytes) -> Path:
    path = tmp_path / name
    path.write_bytes(data.encode() if isinstance(data, str) else data)
    return path


def start(
    db: Database,
    settings: Settings,
    path: Path,
    org: str = ORG,
    key_mode: str | None = None,
) -> tuple[str, IntakeResult]:
    job_id = str(uuid.uuid4())
    options = job_options(settings, require_secret=False, intake="cli", key_mode=key_mode)
    assert create(db, settings, job_id, org, str(path), options)
    result = run_intake(db, settings, job_id, org, open_source(path), options)
    return job_id, result


def query(db: Database, sql: str, **params: Any) -> list[Any]:
    with db.read() as session:
        return list(session.execute(text(sql), params))


def outcomes(db: Database, job_id: str) -> list[Any]:
    return query(
        db,
        "SELECT line_no, status, device_key, error_message, product_key, asset_id, error_code, "
        "attempts FROM import_device_outcome WHERE job_id = :job ORDER BY line_no",
        job=job_id,
    )


def items(db: Database, job_id: str) -> dict[int, Any]:
    rows = query(
        db,
        "SELECT line_no, chunk_seq, key_source, payload, device_key, status FROM import_items "
        "WHERE job_id = :job ORDER BY line_no",
        job=job_id,
    )
    return {row.line_no: row for row in rows}


def job_status(db: Database, job_id: str) -> Any:
    rows = query(db, "SELECT * FROM import_job_status WHERE job_id = :job", job=job_id)
    assert len(rows) == 1
    return rows[0]


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_rows_become_items_with_status_and_messages(
    db: Database, settings: Settings, tmp_path: Path
) -> None:
    path = write(tmp_path, "devices.csv", MIXED)
    job_id, result = start(db, settings, path)
    summary = result.summary
    assert summary is not None
    assert (summary.rows, summary.valid, summary.invalid, summary.duplicates) == (11, 5, 6, 2)
    assert summary.chunks == 2
    assert summary.error is None

    derived = {line: derive_device_key(ORG, sha256(path), line) for line in (3, 9)}
    got = [(r.line_no, r.status, r.device_key, r.error_message) for r in outcomes(db, job_id)]
    expected = [
        (line, status, derived[line] if key == "<derived>" else key, message)
        for line, status, key, message in EXPECTED_OUTCOMES
    ]
    assert got == expected
    for row in outcomes(db, job_id):
        assert row.asset_id is None
        assert row.error_code is None
        assert row.attempts == 0
    product_keys = {r.line_no: r.product_key for r in outcomes(db, job_id)}
    assert product_keys[2] == "pk-meter"
    assert product_keys[7] is None


def test_the_job_runs_with_total_equal_to_the_rows_read(
    db: Database, settings: Settings, tmp_path: Path
) -> None:
    job_id, result = start(db, settings, write(tmp_path, "devices.csv", MIXED))
    assert result.summary is not None
    job = job_status(db, job_id)
    assert job.status == "running"
    assert job.org_id == ORG
    assert job.source == str(tmp_path / "devices.csv")
    assert (job.total, job.pending, job.invalid) == (11, 5, 6)
    assert (job.created, job.adopted, job.failed, job.conflict, job.review, job.cancelled) == (
        0, 0, 0, 0, 0, 0,
    )  # fmt: skip
    assert job.started_at is not None
    assert job.finished_at is None
    assert job.last_error is None
    columns = query(db, "SELECT columns, source_sha256 FROM import_jobs WHERE id = :j", j=job_id)
    stored = columns[0][0]
    stored = orjson.loads(stored) if isinstance(stored, str) else stored
    assert stored == ["productKey", "deviceKey", "deviceName", "timezone", "attr.serial"]
    assert columns[0][1] == sha256(tmp_path / "devices.csv")


def test_chunks_hold_exactly_the_pending_items_within_the_batch_size(
    db: Database, settings: Settings, tmp_path: Path
) -> None:
    job_id, result = start(db, settings, write(tmp_path, "devices.csv", MIXED))
    chunk_rows = query(
        db,
        "SELECT id, seq, size, status, attempts FROM import_chunks WHERE job_id = :job "
        "ORDER BY seq",
        job=job_id,
    )
    # Line 5 repeats line 2: it is never planned, and the chunks are full.
    assert [(c.seq, c.size, c.status, c.attempts) for c in chunk_rows] == [
        (0, 3, "pending", 0),
        (1, 2, "pending", 0),
    ]
    assert all(c.size <= settings.batch_size for c in chunk_rows)
    by_line = items(db, job_id)
    members = {
        seq: sorted(line for line, item in by_line.items() if item.chunk_seq == seq)
        for seq in (0, 1)
    }
    assert members == {0: [2, 3, 8], 1: [9, 11]}
    pending = sorted(line for line, item in by_line.items() if item.status == "pending")
    assert sorted(members[0] + members[1]) == pending
    assert all(item.chunk_seq is None for item in by_line.values() if item.status == "invalid")
    # Both chunks are published at once (the window is larger than the plan).
    assert sorted(result.publish) == sorted(c.id for c in chunk_rows)


def test_payloads_carry_the_device_key(db: Database, settings: Settings, tmp_path: Path) -> None:
    path = write(tmp_path, "devices.csv", MIXED)
    job_id, _ = start(db, settings, path)
    by_line = items(db, job_id)
    derived = derive_device_key(ORG, sha256(path), 3)
    assert orjson.loads(by_line[2].payload) == {
        "productKey": "pk-meter",
        "deviceKey": "meter-0001",
        "deviceName": {"defaultValue": "Meter 1"},
        "timezone": "+08:00",
        "deviceAttributes": {"serial": 100},
    }
    assert orjson.loads(by_line[3].payload) == {
        "productKey": "pk-meter",
        "deviceKey": derived,
        "deviceName": {"defaultValue": "Meter 2"},
        "timezone": "+08:00",
    }
    assert orjson.loads(by_line[8].payload)["deviceName"] == {"defaultValue": "Meter, 8"}
    assert {
        line: item.key_source for line, item in by_line.items() if item.status == "pending"
    } == {
        2: "file",
        3: "derived",
        8: "file",
        9: "derived",
        11: "file",
    }
    # Invalid rows are never sent: they carry no payload to send.
    assert by_line[4].payload is None
    assert by_line[10].payload is None


def test_non_ascii_payloads_and_cells_are_stored_as_read(
    db: Database, settings: Settings, tmp_path: Path
) -> None:
    # PostgreSQL gets the rows' JSON through binary COPY as UTF-8 bytes: each character must
    # come back as it was, in the payload sent and in the operator's own cells.
    name = 'Zähler Nº 1 東京 \U0001f32c\ufe0f "quoted" \\ back'
    path = write(
        tmp_path,
        "devices.csv",
        "productKey,deviceKey,deviceName,deviceName.zh_CN,timezone,tag.site\r\n"
        f'pk-wind,turbine-0001,"{name.replace(chr(34), chr(34) * 2)}",风机一号,+08:00,Ålesund\r\n',
    )
    job_id, _ = start(db, settings, path)
    assert [o.error_message for o in outcomes(db, job_id)] == [None]
    payload = orjson.loads(items(db, job_id)[2].payload)
    assert payload["deviceName"] == {"defaultValue": name, "i18nValue": {"zh_CN": "风机一号"}}
    assert payload["deviceTags"] == {"site": "Ålesund"}
    ((cells, columns),) = query(
        db,
        "SELECT i.cells, j.columns FROM import_items i JOIN import_jobs j ON j.id = i.job_id "
        "WHERE i.job_id = :job",
        job=job_id,
    )
    stored = cells_by_name(cells, columns if isinstance(columns, list) else orjson.loads(columns))
    assert stored == {
        "productKey": "pk-wind",
        "deviceKey": "turbine-0001",
        "deviceName": name,
        "deviceName.zh_CN": "风机一号",
        "timezone": "+08:00",
        "tag.site": "Ålesund",
    }


def test_derived_keys_are_stable_and_depend_on_org_content_and_line(
    db: Database, settings: Settings, tmp_path: Path
) -> None:
    path = write(tmp_path, "devices.csv", MIXED)
    first, _ = start(db, settings, path)
    again, _ = start(db, settings, path)
    copy, _ = start(db, settings, write(tmp_path, "copy.csv", MIXED))
    other_org, _ = start(db, settings, path, org="o-other")
    changed, _ = start(db, settings, write(tmp_path, "changed.csv", MIXED + "pk-meter,,X,UTC,\r\n"))

    def keys(job_id: str) -> dict[int, str]:
        return {line: items(db, job_id)[line].device_key for line in (3, 9)}

    assert keys(first) == keys(again) == keys(copy)
    assert keys(first)[3] != keys(first)[9]
    assert set(keys(first).values()).isdisjoint(keys(other_org).values())
    assert set(keys(first).values()).isdisjoint(keys(changed).values())
    for key in keys(first).values():
        assert key.startswith("ei-")
        assert is_valid_device_key(key)


def test_derive_device_key_values() -> None:
    key = derive_device_key("o-1", "a" * 64, 2)
    assert key == derive_device_key("o-1", "a" * 64, 2)
    assert len(key) == 35
    assert is_valid_device_key(key)
    others = {
        derive_device_key("o-2", "a" * 64, 2),
        derive_device_key("o-1", "b" * 64, 2),
        derive_device_key("o-1", "a" * 64, 3),
        derive_device_key("o-12", "a" * 64, 2),
        derive_device_key("o-1", "a" * 64, 22),
    }
    assert len(others) == 5
    assert key not in others


def test_platform_key_mode_leaves_rows_keyless(
    db: Database, settings: Settings, tmp_path: Path
) -> None:
    job_id, result = start(db, settings, write(tmp_path, "devices.csv", MIXED), key_mode="platform")
    assert result.summary is not None
    by_line = items(db, job_id)
    for line in (3, 9):
        assert by_line[line].status == "pending"
        assert by_line[line].device_key is None
        assert by_line[line].key_source == "platform"
        assert "deviceKey" not in orjson.loads(by_line[line].payload)
    assert by_line[2].device_key == "meter-0001"
    assert by_line[2].key_source == "file"
    # Keyless rows are never taken for repeats of each other.
    assert by_line[5].status == "invalid"
    assert [line for line, item in by_line.items() if item.status == "pending"] == [2, 3, 8, 9, 11]


def test_a_second_intake_of_the_same_job_does_nothing(
    db: Database, settings: Settings, tmp_path: Path
) -> None:
    path = write(tmp_path, "devices.csv", MIXED)
    job_id, first = start(db, settings, path)
    assert first.summary is not None
    options = job_options(settings, require_secret=False, intake="cli")
    second = run_intake(db, settings, job_id, ORG, open_source(path), options)
    assert second.summary is None
    assert second.publish == []
    assert query(db, "SELECT count(*) FROM import_items WHERE job_id = :j", j=job_id)[0][0] == 11
    assert query(db, "SELECT count(*) FROM import_chunks WHERE job_id = :j", j=job_id)[0][0] == 2
    assert job_status(db, job_id).status == "running"


def test_creating_the_same_job_twice_is_refused(
    db: Database, settings: Settings, tmp_path: Path
) -> None:
    # A second delivery of the same submit (same job id) must find the job there.
    path = write(tmp_path, "devices.csv", MIXED)
    job_id = str(uuid.uuid4())
    options = job_options(settings, require_secret=False, intake="cli")
    assert create(db, settings, job_id, ORG, str(path), options) is True
    assert create(db, settings, job_id, ORG, str(path), options) is False
    assert query(db, "SELECT count(*) FROM import_jobs WHERE id = :j", j=job_id)[0][0] == 1


def test_an_empty_file_fails_the_job(db: Database, settings: Settings, tmp_path: Path) -> None:
    path = write(tmp_path, "empty.csv", b"")
    job_id, result = start(db, settings, path)
    assert result.summary is not None
    assert result.summary.rows == 0
    job = job_status(db, job_id)
    assert job.status == "failed"
    assert job.total == 0
    assert job.last_error == f"{path}: the file is empty"
    assert job.finished_at is not None
    assert query(db, "SELECT count(*) FROM import_chunks WHERE job_id = :j", j=job_id)[0][0] == 0


def test_a_header_without_rows_fails_the_job(
    db: Database, settings: Settings, tmp_path: Path
) -> None:
    job_id, _ = start(db, settings, write(tmp_path, "h.csv", "productKey,deviceName,timezone\r\n"))
    job = job_status(db, job_id)
    assert (job.status, job.total, job.last_error) == ("failed", 0, "the file has no devices")


def test_an_unknown_column_fails_the_job_naming_it(
    db: Database, settings: Settings, tmp_path: Path
) -> None:
    path = write(tmp_path, "c.csv", "productKey,deviceName,colour,timezone\r\npk,M,red,UTC\r\n")
    job_id, _ = start(db, settings, path)
    job = job_status(db, job_id)
    assert job.status == "failed"
    assert job.last_error.startswith(f"{path}: line 1 (header): unknown column 'colour'")


def test_only_invalid_rows_end_the_job_at_once(
    db: Database, settings: Settings, tmp_path: Path
) -> None:
    data = "productKey,deviceName,timezone\r\npk,,UTC\r\n,M,UTC\r\n"
    job_id, result = start(db, settings, write(tmp_path, "bad.csv", data))
    assert result.summary is not None
    assert result.summary.chunks == 0
    job = job_status(db, job_id)
    assert (job.status, job.total, job.invalid, job.pending) == ("completed_with_errors", 2, 2, 0)
    assert job.finished_at is not None


def test_a_truncated_json_body_keeps_its_items_and_records_the_break(
    db: Database, settings: Settings, tmp_path: Path
) -> None:
    data = (
        '{"deviceList": ['
        '{"productKey": "pk-meter", "deviceName": {"defaultValue": "A"}, "timezone": "UTC"}, '
        '{"productKey": "pk-meter", "deviceKey": "meter-b", "deviceName": {"defaultValue": "B"}, '
        '"timezone": "UTC"}, {"productKey": "pk-me'
    )
    path = write(tmp_path, "body.json", data)
    job_id, result = start(db, settings, path)
    assert result.summary is not None
    job = job_status(db, job_id)
    assert (job.status, job.total, job.pending) == ("running", 2, 2)
    assert job.last_error.startswith(
        f"{path}: the JSON document breaks off after item 2 of deviceList"
    )
    by_line = items(db, job_id)
    assert by_line[1].device_key == derive_device_key(ORG, sha256(path), 1)
    assert by_line[2].device_key == "meter-b"


def test_jsonl_bad_line_is_an_invalid_item(
    db: Database, settings: Settings, tmp_path: Path
) -> None:
    good = '{"productKey": "pk-meter", "deviceName": {"defaultValue": "A"}, "timezone": "UTC"}'
    path = write(tmp_path, "d.jsonl", f'{good}\n{{"productKey": \n{good}\n["not", "an object"]\n')
    job_id, _ = start(db, settings, path)
    got = {r.line_no: (r.status, r.error_message) for r in outcomes(db, job_id)}
    assert got[1] == ("pending", None)
    assert got[3] == ("pending", None)
    assert got[2][0] == "invalid"
    assert got[2][1].startswith("line 2: not valid JSON")
    assert got[4] == ("invalid", "line 4: device: must be an object, got array")
