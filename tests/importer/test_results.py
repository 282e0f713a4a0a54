"""The results export: the input's own columns with deviceKey filled in, then the outcome."""

from __future__ import annotations

import csv
import hashlib
import io
import uuid
from pathlib import Path
from typing import Any

import orjson
import pytest
from sqlalchemy import update

from worker.db.models import ITEMS
from worker.db.session import Database
from worker.importer import results
from worker.importer.keys import derive_device_key
from worker.importer.submit import create, job_options, run_intake
from worker.readers.sources import open_source
from worker.settings import Settings

ORG = "o-results"
TAIL = ["line", "status", "assetId", "errorCode", "errorMessage"]


@pytest.mark.parametrize(
    ("cell", "expected"),
    [
        ("=SUM(A1)", "'=SUM(A1)"),
        ("=1+1", "'=1+1"),
        ("@cmd", "'@cmd"),
        ("\tx", "'\tx"),
        ("\r=1+1", "'\r=1+1"),
        ("\n=1+1", "'\n=1+1"),
        ("\rplain", "'\rplain"),
        ("+1", "+1"),
        ("-5", "-5"),
        ("-1.25", "-1.25"),
        ("+.5", "+.5"),
        ("-2e3", "-2e3"),
        ("-05:00", "-05:00"),
        ("+08:00", "+08:00"),
        ("-x", "'-x"),
        ("+ab", "'+ab"),
        ("-", "'-"),
        ("+", "'+"),
        ("-1+2", "'-1+2"),
        ("+08:00 ", "'+08:00 "),
        ("-cmd|' /C calc'!A0", "'-cmd|' /C calc'!A0"),
        ("1e5", "1e5"),
        ("", ""),
        ("plain", "plain"),
        ("a=b", "a=b"),
        ("Asia/Shanghai", "Asia/Shanghai"),
    ],
)
def test_formula_guard(cell: str, expected: str) -> None:
    assert results.formula_guard(cell) == expected


@pytest.fixture
def settings() -> Settings:
    return Settings(batch_size=3, read_timeout_s=5, lease_s=30, visibility_timeout_s=60)


def import_file(db: Database, settings: Settings, path: Path) -> str:
    job_id = str(uuid.uuid4())
    options = job_options(settings, require_secret=False, intake="cli")
    assert create(db, settings, job_id, ORG, str(path), options)
    result = run_intake(db, settings, job_id, ORG, open_source(path), options)
    assert result.summary is not None
    return job_id


def set_outcome(db: Database, job_id: str, line: int, **values: Any) -> None:
    with db.begin() as session:
        session.execute(
            update(ITEMS).where(ITEMS.c.job_id == job_id, ITEMS.c.line_no == line).values(**values)
        )


def export(
    db: Database, job_id: str, statuses: list[str] | None = None
) -> tuple[list[str], list[dict[str, Any]]]:
    with db.read() as session:
        columns = [*results.export_columns(session, job_id), *results.TAIL]
        return columns, list(results.rows(session, job_id, statuses))


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


CSV_INPUT = (
    "productKey,deviceName,deviceKey,timezone,deviceDesc,attr.serial,tag.site\r\n"
    "pk-meter,Meter 1,meter-0001,+08:00,,100,north\r\n"  # 2 created
    "pk-meter,=SUM(A1),,-05:00,-x,-5,@cmd\r\n"  # 3 derived key, cells that look like formulas
    "pk-meter,,meter-0003,UTC,,,\r\n"  # 4 invalid: no name
    "pk-meter,Meter 4,meter-0004,UTC,,,\r\n"  # 5 failed on EnOS
)


@pytest.fixture
def csv_job(db: Database, settings: Settings, tmp_path: Path) -> tuple[str, Path]:
    path = tmp_path / "devices.csv"
    path.write_bytes(CSV_INPUT.encode())
    job_id = import_file(db, settings, path)
    set_outcome(db, job_id, 2, status="created", asset_id="Asset0001")
    set_outcome(
        db, job_id, 5, status="failed", error_code=11739, error_message="Exceed max device size"
    )
    return job_id, path


def test_csv_export_keeps_the_files_columns_then_the_outcome(
    db: Database, csv_job: tuple[str, Path]
) -> None:
    job_id, path = csv_job
    columns, rows = export(db, job_id)
    assert columns == [
        "productKey", "deviceName", "deviceKey", "timezone", "deviceDesc", "attr.serial",
        "tag.site", *TAIL,
    ]  # fmt: skip
    derived = derive_device_key(ORG, sha256(path), 3)
    assert [{name: row[name] for name in columns} for row in rows] == [
        {
            "productKey": "pk-meter", "deviceName": "Meter 1", "deviceKey": "meter-0001",
            "timezone": "+08:00", "deviceDesc": "", "attr.serial": "100", "tag.site": "north",
            "line": 2, "status": "created", "assetId": "Asset0001", "errorCode": "",
            "errorMessage": "",
        },
        {
            "productKey": "pk-meter", "deviceName": "=SUM(A1)", "deviceKey": derived,
            "timezone": "-05:00", "deviceDesc": "-x", "attr.serial": "-5", "tag.site": "@cmd",
            "line": 3, "status": "pending", "assetId": "", "errorCode": "", "errorMessage": "",
        },
        {
            "productKey": "pk-meter", "deviceName": "", "deviceKey": "meter-0003",
            "timezone": "UTC", "deviceDesc": "", "attr.serial": "", "tag.site": "",
            "line": 4, "status": "invalid", "assetId": "", "errorCode": "",
            "errorMessage": "line 4: deviceName: is mandatory",
        },
        {
            "productKey": "pk-meter", "deviceName": "Meter 4", "deviceKey": "meter-0004",
            "timezone": "UTC", "deviceDesc": "", "attr.serial": "", "tag.site": "",
            "line": 5, "status": "failed", "assetId": "", "errorCode": 11739,
            "errorMessage": "Exceed max device size",
        },
    ]  # fmt: skip


def test_a_file_without_a_devicekey_column_gets_one_filled_in(
    db: Database, settings: Settings, tmp_path: Path
) -> None:
    path = tmp_path / "nokey.csv"
    path.write_bytes(b"productKey,deviceName,timezone\r\npk-meter,Meter 1,UTC\r\n")
    job_id = import_file(db, settings, path)
    columns, rows = export(db, job_id)
    assert columns == ["productKey", "deviceKey", "deviceName", "timezone", *TAIL]
    assert rows[0]["deviceKey"] == derive_device_key(ORG, sha256(path), 2)


def test_a_devicekey_column_spelled_differently_is_the_one_filled_in(
    db: Database, settings: Settings, tmp_path: Path
) -> None:
    path = tmp_path / "case.csv"
    path.write_bytes(
        b"ProductKey,DeviceKey,DeviceName,TimeZone\r\n"
        b"pk-meter,meter-0001,Meter 1,UTC\r\n"
        b"pk-meter,,Meter 2,UTC\r\n"
    )
    job_id = import_file(db, settings, path)
    columns, rows = export(db, job_id)
    # The operator's own header, once: no second deviceKey column.
    assert columns == ["ProductKey", "DeviceKey", "DeviceName", "TimeZone", *TAIL]
    assert [row["DeviceKey"] for row in rows] == [
        "meter-0001",
        derive_device_key(ORG, sha256(path), 3),
    ]


def test_json_export_uses_the_flattened_csv_column_names(
    db: Database, settings: Settings, tmp_path: Path
) -> None:
    body = {
        "deviceList": [
            {
                "productKey": "pk-meter",
                "deviceName": {"defaultValue": "Meter 1", "i18nValue": {"zh_CN": "电表 1"}},
                "timezone": "+08:00",
                "deviceAttributes": {"rated": 1.5, "flags": [1, 2], "on": True},
                "deviceTags": {"site": "north"},
            },
            {
                "productKey": "pk-meter",
                "deviceKey": "meter-0002",
                "deviceName": {"defaultValue": "Meter 2"},
                "timezone": "UTC",
                "deviceDesc": "second",
            },
        ]
    }
    path = tmp_path / "body.json"
    path.write_bytes(orjson.dumps(body))
    job_id = import_file(db, settings, path)
    columns, rows = export(db, job_id)
    assert columns == [
        "productKey", "deviceKey", "deviceName", "deviceName.zh_CN", "timezone", "attr.rated",
        "attr.flags", "attr.on", "tag.site", "deviceDesc", *TAIL,
    ]  # fmt: skip
    assert {name: rows[0][name] for name in columns} == {
        "productKey": "pk-meter",
        "deviceKey": derive_device_key(ORG, sha256(path), 1),
        "deviceName": "Meter 1",
        "deviceName.zh_CN": "电表 1",
        "timezone": "+08:00",
        "attr.rated": "1.5",
        "attr.flags": "[1,2]",
        "attr.on": "true",
        "tag.site": "north",
        "deviceDesc": "",
        "line": 1,
        "status": "pending",
        "assetId": "",
        "errorCode": "",
        "errorMessage": "",
    }
    assert rows[1]["deviceKey"] == "meter-0002"
    assert rows[1]["deviceDesc"] == "second"
    assert rows[1]["attr.rated"] == ""


def test_write_csv_guards_formulas_and_parses_back(db: Database, csv_job: tuple[str, Path]) -> None:
    job_id, path = csv_job
    columns, rows = export(db, job_id)
    out = io.StringIO(newline="")
    assert results.write_csv(out, columns, iter(rows)) == 4
    text = out.getvalue()
    assert text.startswith(
        "productKey,deviceName,deviceKey,timezone,deviceDesc,attr.serial,tag.site,line,status,"
        "assetId,errorCode,errorMessage\r\n"
    )
    parsed = list(csv.reader(io.StringIO(text, newline="")))
    assert parsed[0] == columns
    derived = derive_device_key(ORG, sha256(path), 3)
    assert parsed[1] == [
        "pk-meter", "Meter 1", "meter-0001", "+08:00", "", "100", "north", "2", "created",
        "Asset0001", "", "",
    ]  # fmt: skip
    assert parsed[2] == [
        "pk-meter", "'=SUM(A1)", derived, "-05:00", "'-x", "-5", "'@cmd", "3", "pending", "",
        "", "",
    ]  # fmt: skip
    assert parsed[4][-3:] == ["", "11739", "Exceed max device size"]
    assert len(parsed) == 5


def test_write_jsonl_has_the_same_keys(db: Database, csv_job: tuple[str, Path]) -> None:
    job_id, _ = csv_job
    columns, rows = export(db, job_id)
    out = io.StringIO()
    assert results.write_jsonl(out, columns, iter(rows)) == 4
    lines = out.getvalue().splitlines()
    assert len(lines) == 4
    records = [orjson.loads(line) for line in lines]
    assert all(list(record) == columns for record in records)
    # JSON is not opened as a spreadsheet: values are kept as they are.
    assert records[1]["deviceName"] == "=SUM(A1)"
    assert records[1]["line"] == 3
    assert records[3]["errorCode"] == 11739
    assert records[0]["assetId"] == "Asset0001"


def test_the_status_filter(db: Database, csv_job: tuple[str, Path]) -> None:
    job_id, _ = csv_job
    assert [row["line"] for row in export(db, job_id, ["invalid"])[1]] == [4]
    assert [row["line"] for row in export(db, job_id, ["created", "failed"])[1]] == [2, 5]
    assert [row["line"] for row in export(db, job_id, ["review"])[1]] == []
    assert [row["line"] for row in export(db, job_id, None)[1]] == [2, 3, 4, 5]
