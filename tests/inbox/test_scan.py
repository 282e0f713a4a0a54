"""The inbox's plain functions against the real database and the in-process simulator: what is
taken, when, once; and where files and results go. From real processes: tests/e2e/test_inbox.py."""

from __future__ import annotations

import csv
import os
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select, update

from tests.importer.support import drive, fast_settings
from worker.context import WorkerContext
from worker.db.models import INBOX_FILES, JOBS, SIGHTINGS
from worker.db.session import Database
from worker.enos.client import EnosClient
from worker.importer.budget import LocalBudget
from worker.inbox.filing import file_job
from worker.inbox.ingest import ingest_file
from worker.inbox.scan import scan
from worker.settings import Settings
from worker.simulator.state import Store

ORG = "o-demo"
CSV = "productKey,deviceKey,deviceName,timezone\n"


def rows_csv(*keys: str) -> str:
    return CSV + "".join(f"pk-meter,{key},Meter {key},+08:00\n" for key in keys)


@pytest.fixture
def inbox(tmp_path: Path) -> Path:
    (tmp_path / "inbox" / ORG).mkdir(parents=True)
    return tmp_path / "inbox"


def settings_for(inbox: Path, **more: Any) -> Settings:
    return fast_settings(**{"inbox_dir": inbox, "inbox_settle_s": 0, **more})


class Runner:
    """Scans, then runs every intake it queued and sends every chunk, then files the ends."""

    def __init__(self, db: Database, client: EnosClient, settings: Settings) -> None:
        self.ctx = WorkerContext(db, client, settings, LocalBudget(2), owner="test:1")
        self.started: list[str] = []

    def scan(self) -> Any:
        return scan(self.ctx.db, self.ctx.settings, self.started.append)

    def run(self) -> dict[str, str]:
        states = {}
        for job_id in self.started:
            result = ingest_file(self.ctx.db, self.ctx.settings, job_id)
            if result is not None and result.summary is not None:
                states[job_id] = drive(self.ctx, result)
            file_job(self.ctx.db, self.ctx.settings, job_id)
        self.started.clear()
        return states


def test_a_good_file_is_imported_once_and_filed_with_its_results(
    db: Database, client: EnosClient, sim_store: Store, inbox: Path
) -> None:
    (inbox / ORG / "devices.csv").write_text(rows_csv("m-0001", "m-0002"))
    runner = Runner(db, client, settings_for(inbox))
    report = runner.scan()
    assert len(report.taken) == 1
    job_id = report.taken[0]
    assert runner.run() == {job_id: "completed"}
    assert not (inbox / ORG / "devices.csv").exists()
    assert (inbox / ORG / "done" / "devices.csv").read_text() == rows_csv("m-0001", "m-0002")
    with (inbox / ORG / "done" / "devices.results.csv").open() as results:
        got = list(csv.DictReader(results))
    assert [(r["deviceKey"], r["status"]) for r in got] == [
        ("m-0001", "created"),
        ("m-0002", "created"),
    ]
    with db.read() as session:
        source = session.execute(select(JOBS.c.source).where(JOBS.c.id == job_id)).scalar()
    assert source == f"inbox:{ORG}/devices.csv"
    assert len(sim_store.assets) == 2
    # The same content under another name, later: not imported again, moved with a note.
    (inbox / ORG / "again.csv").write_text(rows_csv("m-0001", "m-0002"))
    report = runner.scan()
    assert (report.taken, len(report.duplicates)) == ([], 1)
    note = (inbox / ORG / "failed" / "again.error.txt").read_text()
    assert "same content was imported from devices.csv" in note and job_id in note
    assert (inbox / ORG / "failed" / "again.csv").exists()


def test_names_not_taken_and_files_refused(
    db: Database, client: EnosClient, sim_store: Store, inbox: Path, tmp_path: Path
) -> None:
    folder = inbox / ORG
    for name in (".hidden.csv", "big.csv.part", "big.csv.tmp", "notes.md"):
        (folder / name).write_text(rows_csv("m-0009"))
    (folder / "passwd.csv").symlink_to("/etc/passwd")
    os.mkfifo(folder / "pipe.csv")
    (inbox / "o-other").mkdir()
    (inbox / "o-other" / "d.csv").write_text(rows_csv("m-0003"))
    runner = Runner(db, client, settings_for(inbox, allowed_orgs=ORG))
    report = runner.scan()
    assert report.taken == []
    assert sorted(report.refused) == [f"{ORG}/passwd.csv", f"{ORG}/pipe.csv", "o-other/d.csv"]
    assert sorted(p.name for p in folder.iterdir() if p.is_file()) == [
        ".hidden.csv", "big.csv.part", "big.csv.tmp", "notes.md",
    ]  # fmt: skip
    assert (folder / "failed" / "passwd.csv").is_symlink()
    assert "not a regular file" in (folder / "failed" / "passwd.error.txt").read_text()
    assert "not allowed" in (inbox / "o-other" / "failed" / "d.error.txt").read_text()
    assert Path("/etc/passwd").exists()


def test_a_file_is_taken_once_it_settled(
    db: Database, client: EnosClient, sim_store: Store, inbox: Path
) -> None:
    path = inbox / ORG / "growing.csv"
    path.write_text(rows_csv("m-0001"))
    runner = Runner(db, client, settings_for(inbox, inbox_settle_s=60))
    assert runner.scan().waiting == [f"{ORG}/growing.csv"]
    with path.open("a") as more:
        more.write("pk-meter,m-0002,Meter,+08:00\n")
    with db.begin() as session:  # a minute passes, but the file changed meanwhile
        session.execute(update(SIGHTINGS).values(seen_at=SIGHTINGS.c.seen_at - 61))
    assert runner.scan().waiting == [f"{ORG}/growing.csv"]
    assert runner.scan().waiting == [f"{ORG}/growing.csv"]  # unchanged, but not a minute yet
    with db.begin() as session:
        session.execute(update(SIGHTINGS).values(seen_at=SIGHTINGS.c.seen_at - 61))
    assert len(runner.scan().taken) == 1
    assert list(runner.run().values()) == ["completed"]


def test_a_ready_marker_when_required(
    db: Database, client: EnosClient, sim_store: Store, inbox: Path
) -> None:
    (inbox / ORG / "d.csv").write_text(rows_csv("m-0001"))
    runner = Runner(db, client, settings_for(inbox, inbox_require_ready=True))
    assert runner.scan().taken == []
    (inbox / ORG / "d.ready").touch()
    assert len(runner.scan().taken) == 1
    assert (inbox / ORG / "d.ready").exists()  # the marker stays: nothing is deleted


def test_a_scan_while_the_job_runs_takes_nothing_and_names_are_never_reused(
    db: Database, client: EnosClient, sim_store: Store, inbox: Path
) -> None:
    done = inbox / ORG / "done"
    done.mkdir()
    (done / "d.csv").write_text("an earlier file of the same name")
    (inbox / ORG / "d.csv").write_text(rows_csv("m-0001"))
    runner = Runner(db, client, settings_for(inbox))
    first = runner.scan()
    assert len(first.taken) == 1
    assert runner.scan().taken == [] and runner.scan().duplicates == []
    runner.started = list(first.taken)
    runner.run()
    assert (done / "d.csv").read_text() == "an earlier file of the same name"
    assert (done / "d-2.csv").read_text() == rows_csv("m-0001")
    assert (done / "d-2.results.csv").exists()
    with db.read() as session:
        state = session.execute(select(INBOX_FILES.c.state)).scalar()
    assert state == "filed"


def test_an_unreadable_file_fails_its_job_and_is_filed_with_the_reason(
    db: Database, client: EnosClient, sim_store: Store, inbox: Path
) -> None:
    (inbox / ORG / "garbage.csv").write_bytes(bytes(range(256)) * 40)
    runner = Runner(db, client, settings_for(inbox))
    job_id = runner.scan().taken[0]
    runner.run()
    with db.read() as session:
        status = session.execute(select(JOBS.c.status).where(JOBS.c.id == job_id)).scalar()
    assert status == "failed"
    error = (inbox / ORG / "failed" / "garbage.error.txt").read_text()
    assert error.startswith(f"job {job_id} failed:")
    assert (inbox / ORG / "failed" / "garbage.results.csv").exists()


def test_per_org_options_apply_to_its_jobs_and_a_bad_file_holds_its_files(
    db: Database, client: EnosClient, sim_store: Store, inbox: Path
) -> None:
    folder = inbox / ORG
    (folder / ".enos-import.json").write_text('{"key_mode": "platform", "format": "csv"}')
    (folder / "d.csv").write_text(rows_csv("m-0001"))
    runner = Runner(db, client, settings_for(inbox))
    assert runner.scan().taken == []
    assert (folder / "d.csv").exists()  # held, not refused: the operator fixes the options
    (folder / ".enos-import.json").write_text('{"key_mode": "platform", "require_secret": true}')
    job_id = runner.scan().taken[0]
    with db.read() as session:
        options = session.execute(select(JOBS.c.options).where(JOBS.c.id == job_id)).scalar_one()
    assert (options["key_mode"], options["require_secret"]) == ("platform", True)


def test_a_file_not_readable_now_stays_and_is_taken_by_a_later_scan(
    db: Database,
    client: EnosClient,
    sim_store: Store,
    inbox: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from worker.inbox import scan as scan_module
    from worker.readers.opening import SourcePermissionError, open_regular

    def denied(path: Path, max_bytes: int | None = None) -> Any:
        raise SourcePermissionError(f"{path}: permission denied")

    (inbox / ORG / "d.csv").write_text(rows_csv("m-0001"))
    runner = Runner(db, client, settings_for(inbox))
    monkeypatch.setattr(scan_module, "open_regular", denied)  # tests run as root: no chmod
    report = runner.scan()
    assert (report.taken, report.left) == ([], [f"{ORG}/d.csv"])
    assert (inbox / ORG / "d.csv").exists()
    monkeypatch.setattr(scan_module, "open_regular", open_regular)
    assert len(runner.scan().taken) == 1
