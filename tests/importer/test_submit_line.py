"""``enos-import submit``'s line after the intake: what was read, without counting the rows."""

from __future__ import annotations

from pathlib import Path
from unittest import mock

import pytest
from click.testing import CliRunner

from worker.cli import cli
from worker.cli import common as cli_common
from worker.cli import jobs as jobs_cli
from worker.db.session import Database
from worker.importer import jobs
from worker.settings import Settings

ROWS = (
    "productKey,deviceKey,deviceName,timezone\n"
    "pk-meter,meter-0001,Meter 1,UTC\n"
    "pk-meter,meter-0002,Meter 2,Mars/Olympus\n"  # not a time zone
    "pk-meter,meter-0001,Meter 1 again,UTC\n"  # repeats line 2
    "pk-meter,meter-0003,Meter 3,+08:00\n"
)


def submit(url: str, path: Path) -> tuple[int, str]:
    """``submit FILE`` in this process, its databases closed after it."""
    opened: list[Database] = []
    real = cli_common.open_database

    def tracking(settings: Settings) -> Database:
        opened.append(real(settings))
        return opened[-1]

    env = {
        "ENOS_IMPORT_DATABASE_URL": url,
        "ENOS_IMPORT_BROKER_URL": "memory://",
        "ENOS_IMPORT_ORG_ID": "o-line",
    }
    with mock.patch.object(jobs_cli, "open_database", tracking):
        result = CliRunner().invoke(cli, ["submit", str(path)], env=env)
    for database in opened:
        database.dispose()
    return result.exit_code, result.stderr


@pytest.mark.parametrize("backend", ["pg_url", "sqlite_url"])
def test_submit_says_what_it_read_without_counting_the_rows(
    backend: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    url = request.getfixturevalue(backend)
    path = tmp_path / "devices.csv"
    path.write_text(ROWS, encoding="utf-8")

    def refuse(*_: object) -> None:
        raise AssertionError("the job's rows were counted")

    # Counting is a pass over every row of the job: the running job's line is the intake's.
    with mock.patch.object(jobs, "item_counts", refuse):
        code, err = submit(url, path)
    assert code == 0, err
    said = " ".join(err.split())  # the console wraps long lines
    assert "running: 4 rows read, 2 to send in 1 chunks, 2 invalid (1 repeated deviceKeys)" in said
