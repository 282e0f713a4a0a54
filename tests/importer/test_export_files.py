"""Export files: the header row guarded; the secrets export private and never overwriting."""

from __future__ import annotations

import csv
import io
import os
import stat
import uuid
from pathlib import Path
from unittest import mock

import pytest
from click.testing import CliRunner, Result
from openpyxl import load_workbook
from sqlalchemy import update

from worker.cli import cli
from worker.cli import common as cli_common
from worker.cli import jobs as jobs_cli
from worker.db.models import ITEMS
from worker.db.session import Database
from worker.enos.secret_box import Sealer, generate_private_key_pem, public_key_pem
from worker.importer import results
from worker.importer.submit import create, job_options, run_intake
from worker.readers.sources import open_source
from worker.settings import Settings

ORG = "o-export"
DEVICES = (
    b'[{"productKey": "pk-meter", "deviceKey": "meter-0001", "deviceName": {"defaultValue": "M"},'
    b' "timezone": "UTC"}]'
)


def test_the_header_row_is_guarded_like_every_cell() -> None:
    columns = ["productKey", '=HYPERLINK("http://x")', "@x", "\ncmd", "\r=1", "-cmd"]
    out = io.StringIO(newline="")
    results.write_csv(out, columns, iter([dict.fromkeys(columns, "v")]))
    header = next(csv.reader(io.StringIO(out.getvalue(), newline="")))
    assert header == ["productKey", '\'=HYPERLINK("http://x")', "'@x", "'\ncmd", "'\r=1", "'-cmd"]


@pytest.fixture
def job(tmp_path: Path, sqlite_url: str) -> tuple[str, str, Path]:
    """A job on SQLite with one created row whose secret is sealed; the private key's path."""
    database = Database(sqlite_url)
    settings = Settings(database_url=sqlite_url)
    source = tmp_path / "devices.json"
    source.write_bytes(DEVICES)
    job_id = str(uuid.uuid4())
    options = job_options(settings, require_secret=True, intake="cli")
    assert create(database, settings, job_id, ORG, str(source), options)
    run_intake(database, settings, job_id, ORG, open_source(source), options)
    private_pem = generate_private_key_pem()
    sealed, session_key = Sealer(public_key_pem(private_pem)).seal("the-device-secret")
    with database.begin() as session:
        session.execute(
            update(ITEMS)
            .where(ITEMS.c.job_id == job_id)
            .values(status="created", asset_id="A1", device_secret=sealed, session_key=session_key)
        )
    database.dispose()
    key_file = tmp_path / "private.pem"
    key_file.write_bytes(private_pem)
    return sqlite_url, job_id, key_file


def invoke(url: str, *args: str) -> Result:
    """The command in this process; the databases it opened are closed after it."""
    opened: list[Database] = []
    real = cli_common.open_database

    def tracking(settings: Settings) -> Database:
        opened.append(real(settings))
        return opened[-1]

    with mock.patch.object(jobs_cli, "open_database", tracking):
        result = CliRunner().invoke(cli, list(args), env={"ENOS_IMPORT_DATABASE_URL": url})
    for database in opened:
        database.dispose()
    return result


def test_the_secrets_export_needs_a_named_output(job: tuple[str, str, Path]) -> None:
    url, job_id, key = job
    done = invoke(url, "results", job_id, "--secrets", "--private-key", str(key))
    assert done.exit_code == 2
    assert "-o" in done.output
    assert "the-device-secret" not in done.output


def test_the_secrets_export_goes_to_stdout_only_when_asked(job: tuple[str, str, Path]) -> None:
    url, job_id, key = job
    done = invoke(url, "results", job_id, "--secrets", "--private-key", str(key), "-o", "-")
    assert done.exit_code == 0, done.output
    rows = list(csv.DictReader(io.StringIO(done.stdout, newline="")))
    assert [row["deviceSecret"] for row in rows] == ["the-device-secret"]


def test_the_secrets_file_is_private_and_never_overwritten(
    job: tuple[str, str, Path], tmp_path: Path
) -> None:
    url, job_id, key = job
    target = tmp_path / "secrets.csv"
    old_umask = os.umask(0o000)  # the mode must not depend on a permissive umask
    try:
        done = invoke(url, "results", job_id, "--secrets", "--private-key", str(key), "-o",
                      str(target))  # fmt: skip
    finally:
        os.umask(old_umask)
    assert done.exit_code == 0, done.output
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
    written = target.read_bytes()
    assert b"the-device-secret" in written

    again = invoke(url, "results", job_id, "--secrets", "--private-key", str(key), "-o",
                   str(target))  # fmt: skip
    assert again.exit_code == 1
    assert "never overwrites" in again.output
    assert target.read_bytes() == written


def test_the_secrets_file_refuses_a_symlink_left_in_its_place(
    job: tuple[str, str, Path], tmp_path: Path
) -> None:
    url, job_id, key = job
    elsewhere = tmp_path / "elsewhere.txt"
    elsewhere.write_text("keep me")
    target = tmp_path / "secrets.csv"
    target.symlink_to(elsewhere)
    done = invoke(url, "results", job_id, "--secrets", "--private-key", str(key), "-o",
                  str(target))  # fmt: skip
    assert done.exit_code == 1
    assert elsewhere.read_text() == "keep me"


def test_a_row_without_its_secret_says_why_in_a_column_of_its_own(
    job: tuple[str, str, Path], tmp_path: Path
) -> None:
    url, job_id, key = job
    other_key = generate_private_key_pem()  # another account's key sealed this one
    sealed, session_key = Sealer(public_key_pem(other_key)).seal("not-ours")
    database = Database(url)
    with database.begin() as session:
        session.execute(
            update(ITEMS)
            .where(ITEMS.c.job_id == job_id)
            .values(status="adopted", device_secret=sealed, session_key=session_key)
        )
    done = invoke(url, "results", job_id, "--secrets", "--private-key", str(key), "-o", "-")
    assert done.exit_code == 0, done.output
    row = next(csv.DictReader(io.StringIO(done.stdout, newline="")))
    assert (row["deviceSecret"], row["secretError"]) == ("", results.NOT_OURS)
    assert sealed not in done.stdout

    with database.begin() as session:
        session.execute(update(ITEMS).where(ITEMS.c.job_id == job_id).values(device_secret=None))
    database.dispose()
    done = invoke(url, "results", job_id, "--secrets", "--private-key", str(key), "-o", "-")
    row = next(csv.DictReader(io.StringIO(done.stdout, newline="")))
    assert (row["deviceSecret"], row["secretError"]) == ("", results.NO_SECRET)


def test_the_xlsx_export_holds_text_cells_guarded_like_the_csv(
    job: tuple[str, str, Path], tmp_path: Path
) -> None:
    url, job_id, key = job
    database = Database(url)
    with database.begin() as session:
        session.execute(
            update(ITEMS)
            .where(ITEMS.c.job_id == job_id)
            .values(
                cells={"productKey": "pk-meter", "deviceName": '=HYPERLINK("x")'},
                error_message="\n=1+1",
            )
        )
    database.dispose()
    target = tmp_path / "results.xlsx"
    done = invoke(url, "results", job_id, "--format", "xlsx", "-o", str(target))
    assert done.exit_code == 0, done.output
    sheet = load_workbook(target).active
    assert sheet is not None
    header, row = ([c.value for c in r] for r in sheet.iter_rows(max_row=2))
    assert header[:3] == ["productKey", "deviceKey", "deviceName"]
    record = dict(zip(header, row, strict=True))
    assert record["deviceName"] == '\'=HYPERLINK("x")'
    assert record["errorMessage"] == "'\n=1+1"
    assert record["line"] == "1"  # text, as the CSV has it
    assert all(c.data_type == "s" for r in sheet.iter_rows() for c in r if c.value is not None)

    secrets = tmp_path / "secrets.xlsx"
    done = invoke(url, "results", job_id, "--format", "xlsx", "--secrets", "--private-key",
                  str(key), "-o", str(secrets))  # fmt: skip
    assert done.exit_code == 0, done.output
    assert stat.S_IMODE(secrets.stat().st_mode) == 0o600
