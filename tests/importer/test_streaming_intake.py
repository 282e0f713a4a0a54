"""The intake commits as it reads: chunks are sendable (and published) while the rest of the file
is still being read, and everything the intake promises still holds: the first row of a key
wins even when it was already sent, derived keys are those of the whole file, a killed intake
resumes without a duplicate, and a cancel or a failure stops it."""

from __future__ import annotations

import copy
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import orjson
import pytest
from sqlalchemy import select, text, update

from tests.importer.support import device, fast_settings
from worker.db.models import CHUNKS, ITEMS, JOBS, ChunkStatus, ItemStatus, JobStatus
from worker.db.session import Database
from worker.importer import chunks, jobs
from worker.importer.cells import cells_by_name
from worker.importer.submit import COMMIT_ROWS, IntakeResult, create, job_options, run_intake
from worker.importer.sweeper import sweep
from worker.readers.sources import InlineSource, SourceError, SourceRow
from worker.settings import Settings

ORG = "o-stream"


class Watched(InlineSource):
    """Inline devices that call ``hooks[line]`` just before that line is read."""

    def __init__(self, devices: list[Any], hooks: dict[int, Callable[[], None]]) -> None:
        super().__init__(devices)
        self.hooks = hooks

    def rows(self) -> Iterator[SourceRow]:
        for row in super().rows():
            hook = self.hooks.get(row.line)
            if hook is not None:
                hook()
            yield row


class Killed(BaseException):
    """The intake's process dying mid-file (nothing in the intake catches it)."""


def kill() -> None:
    raise Killed


def expire_intake(db: Database, job_id: str) -> None:
    """The intake's lease runs out (its holder died)."""
    with db.begin() as session:
        session.execute(update(JOBS).where(JOBS.c.id == job_id).values(intake_lease_until=0.0))


def new_job(
    db: Database, settings: Settings, key_mode: str | None = None
) -> tuple[str, dict[str, Any]]:
    job_id = str(uuid.uuid4())
    options = job_options(settings, require_secret=False, intake="task", key_mode=key_mode)
    create(db, settings, job_id, ORG, "inline", options)
    return job_id, options


def intake(
    db: Database,
    settings: Settings,
    job_id: str,
    options: dict[str, Any],
    source: InlineSource,
    published: list[int] | None = None,
) -> IntakeResult:
    return run_intake(
        db,
        settings,
        job_id,
        ORG,
        source,
        options,
        publish=None if published is None else published.extend,
    )


def job_row(db: Database, job_id: str) -> Any:
    with db.read() as session:
        return session.execute(select(JOBS).where(JOBS.c.id == job_id)).one()


def item_rows(db: Database, job_id: str) -> list[Any]:
    with db.read() as session:
        return list(
            session.execute(select(ITEMS).where(ITEMS.c.job_id == job_id).order_by(ITEMS.c.line_no))
        )


def chunk_rows(db: Database, job_id: str) -> list[Any]:
    with db.read() as session:
        return list(
            session.execute(select(CHUNKS).where(CHUNKS.c.job_id == job_id).order_by(CHUNKS.c.seq))
        )


def test_chunks_are_published_while_the_file_is_still_read(db: Database) -> None:
    settings = fast_settings(batch_size=10)
    job_id, options = new_job(db, settings)
    devices = [device(f"s-{n:05d}") for n in range(3 * COMMIT_ROWS)]
    published: list[int] = []
    seen: dict[str, Any] = {}

    def midway() -> None:
        seen["published"] = list(published)
        seen["job"] = job_row(db, job_id)
        seen["chunks"] = chunk_rows(db, job_id)
        # Every chunk stored so far is done, yet the job must not finish while reading.
        with db.begin() as session:
            session.execute(update(CHUNKS).where(CHUNKS.c.job_id == job_id).values(status="done"))
            session.execute(
                update(ITEMS)
                .where(ITEMS.c.job_id == job_id, ITEMS.c.status == ItemStatus.PENDING)
                .values(status=ItemStatus.CREATED)
            )
            seen["finished"] = jobs.finish_if_done(session, job_id)

    result = intake(
        db, settings, job_id, options, Watched(devices, {2 * COMMIT_ROWS: midway}), published
    )
    # The first commit held one chunk: it was published before the second was read.
    assert seen["published"] and seen["published"][0] == seen["chunks"][0].id
    assert seen["job"].status == JobStatus.RUNNING
    assert seen["job"].intake_lease_until is not None
    assert seen["job"].started_at is not None
    assert COMMIT_ROWS <= seen["job"].total < 2 * COMMIT_ROWS
    assert seen["finished"] is None
    assert result.summary is not None and result.summary.rows == 3 * COMMIT_ROWS
    job = job_row(db, job_id)
    assert job.intake_lease_until is None
    assert job.intake_line == 3 * COMMIT_ROWS
    assert job.total == 3 * COMMIT_ROWS
    planned = chunk_rows(db, job_id)
    assert [c.seq for c in planned] == list(range(len(planned)))
    assert all(c.size == 10 for c in planned)


def test_a_repeat_of_a_key_already_sent_is_invalid(db: Database) -> None:
    settings = fast_settings(batch_size=2)
    job_id, options = new_job(db, settings)
    devices = [device(f"r-{n:05d}") for n in range(COMMIT_ROWS + 10)]
    devices.append(device("r-00000"))  # line COMMIT_ROWS + 11 repeats line 1
    devices.append(device("r-00007"))  # and this one line 8

    def send_the_first_chunks() -> None:
        with db.begin() as session:
            session.execute(
                update(ITEMS)
                .where(ITEMS.c.job_id == job_id, ITEMS.c.line_no <= 10)
                .values(status=ItemStatus.CREATED, asset_id="asset")
            )

    result = intake(
        db, settings, job_id, options, Watched(devices, {COMMIT_ROWS: send_the_first_chunks})
    )
    assert result.summary is not None
    assert result.summary.duplicates == 2
    rows = {row.line_no: row for row in item_rows(db, job_id)}
    first_repeat = rows[COMMIT_ROWS + 11]
    assert first_repeat.status == ItemStatus.INVALID
    assert first_repeat.chunk_seq is None and first_repeat.payload is None
    assert first_repeat.error_message == (
        f"line {COMMIT_ROWS + 11}: deviceKey: r-00000 repeats line 1 of the file "
        "(the first row wins)"
    )
    assert "repeats line 8 " in rows[COMMIT_ROWS + 12].error_message
    assert rows[1].status == ItemStatus.CREATED  # the first row keeps its outcome


def test_repeats_within_and_across_batches_are_found_in_line_order(db: Database) -> None:
    settings = fast_settings(batch_size=3)
    job_id, options = new_job(db, settings)
    keys = ["a", "b", "a", "c", "b", "d", "e", "a"] + [f"f-{n}" for n in range(COMMIT_ROWS)]
    keys += ["c", "e", "new"]
    devices = [device(f"key-{k}") for k in keys]
    result = intake(db, settings, job_id, options, InlineSource(devices))
    assert result.summary is not None
    rows = item_rows(db, job_id)
    firsts: dict[str, int] = {}
    for row in rows:
        key = row.device_key
        if key in firsts:
            assert row.status == ItemStatus.INVALID, row.line_no
            assert f"repeats line {firsts[key]} " in row.error_message
        else:
            firsts[key] = row.line_no
            assert row.status == ItemStatus.PENDING, row.line_no
    assert result.summary.duplicates == 5
    planned = chunk_rows(db, job_id)
    assert sum(c.size for c in planned) == len(firsts)


def test_a_killed_intake_resumes_without_a_duplicate(db: Database) -> None:
    settings = fast_settings(batch_size=7)
    job_id, options = new_job(db, settings, key_mode="derive")
    count = 3 * COMMIT_ROWS + 5
    devices: list[Any] = [device(None, name=f"Meter {n}") for n in range(count)]
    for n in range(0, count, 50):
        devices[n] = device(f"given-{n % 1000:05d}")  # repeats from 1,000 rows on
    devices[count - 3] = {"productKey": "pk-meter"}  # invalid (no deviceName)

    with pytest.raises(Killed):
        intake(
            db,
            settings,
            job_id,
            options,
            Watched(copy.deepcopy(devices), {2 * COMMIT_ROWS + 100: kill}),
        )
    stopped = job_row(db, job_id)
    assert stopped.status == JobStatus.RUNNING
    assert 0 < stopped.intake_line < 2 * COMMIT_ROWS + 100
    stored_before = len(item_rows(db, job_id))
    assert stored_before == stopped.intake_line == stopped.total
    # Its lease runs out; a new delivery takes the intake over and reads on.
    expire_intake(db, job_id)
    result = intake(db, settings, job_id, options, InlineSource(copy.deepcopy(devices)))
    assert result.summary is not None
    assert result.summary.rows == count
    rows = item_rows(db, job_id)
    assert [row.line_no for row in rows] == list(range(1, count + 1))

    # The same file read in one go by another job gives the same keys, states and chunking.
    other, other_options = new_job(db, settings, key_mode="derive")
    whole = intake(db, settings, other, other_options, InlineSource(devices))
    assert whole.summary is not None
    assert result.summary == whole.summary
    again = item_rows(db, other)
    assert [(r.device_key, r.status, r.error_message) for r in rows] == [
        (r.device_key, r.status, r.error_message) for r in again
    ]
    planned = chunk_rows(db, job_id)
    assert [c.seq for c in planned] == list(range(len(planned)))
    assert sum(c.size for c in planned) == whole.summary.valid
    members = {row.chunk_seq for row in rows if row.status == ItemStatus.PENDING}
    assert members == {c.seq for c in planned}
    job = job_row(db, job_id)
    assert (job.total, job.intake_lease_until, job.intake_attempts) == (count, None, 2)


def test_a_file_changed_before_its_intake_resumed_fails_the_job(db: Database) -> None:
    settings = fast_settings(batch_size=10)
    job_id, options = new_job(db, settings)
    devices = [device(f"c-{n:05d}") for n in range(2 * COMMIT_ROWS)]

    with pytest.raises(Killed):
        intake(db, settings, job_id, options, Watched(devices, {COMMIT_ROWS + 10: kill}))
    expire_intake(db, job_id)
    devices[-1] = device("c-changed")
    result = intake(db, settings, job_id, options, InlineSource(devices))
    assert result.summary is not None and "changed since its intake began" in str(
        result.summary.error
    )
    job = job_row(db, job_id)
    # Nothing was sent: every stored row ends failed with the reason, and the job with it.
    assert job.status == JobStatus.FAILED
    assert "changed since its intake began" in job.last_error
    assert {row.status for row in item_rows(db, job_id)} == {ItemStatus.FAILED}


@pytest.mark.parametrize("stop", ["cancel", "fail"])
def test_a_cancel_or_a_failure_stops_the_intake(db: Database, stop: str) -> None:
    settings = fast_settings(batch_size=10)
    job_id, options = new_job(db, settings)
    devices = [device(f"x-{n:05d}") for n in range(3 * COMMIT_ROWS)]
    in_flight: list[Any] = []

    def stop_it() -> None:
        with db.begin() as session:
            # One chunk is in flight when the job stops: its rows are left to it.
            claim = chunks.claim(session, chunk_rows(db, job_id)[0].id, "test:1", 30)
            in_flight.append(claim)
            if stop == "cancel":
                jobs.cancel_job(session, job_id)
            else:
                jobs.fail_job(session, job_id, "stopped by the test")

    result = intake(db, settings, job_id, options, Watched(devices, {COMMIT_ROWS + 1: stop_it}))
    assert result.summary is None  # the intake found the job no longer its own
    job = job_row(db, job_id)
    stored = item_rows(db, job_id)
    assert job.total == len(stored) < 2 * COMMIT_ROWS + 1
    assert job.intake_lease_until is None
    expected = JobStatus.CANCELLING if stop == "cancel" else JobStatus.RUNNING
    assert job.status == expected  # open until the chunk in flight has settled its rows
    open_ = [c for c in chunk_rows(db, job_id) if c.status in ("pending", "in_flight")]
    assert [c.seq for c in open_] == [0]
    # Its worker dies; the chunk is taken over and settles its rows; the job ends.
    with db.begin() as session:
        session.execute(
            update(CHUNKS)
            .where(CHUNKS.c.id == in_flight[0].chunk_id)
            .values(status=ChunkStatus.DONE)
        )
        session.execute(
            update(ITEMS)
            .where(ITEMS.c.job_id == job_id, ITEMS.c.chunk_seq == 0)
            .values(status=ItemStatus.CREATED)
        )
        final = jobs.finish_if_done(session, job_id)
    assert final == (JobStatus.CANCELLED if stop == "cancel" else JobStatus.FAILED)


def test_a_split_while_reading_takes_seqs_the_intake_never_reuses(db: Database) -> None:
    settings = fast_settings(batch_size=10)
    job_id, options = new_job(db, settings)
    devices = [device(f"p-{n:05d}") for n in range(2 * COMMIT_ROWS)]

    def split_first() -> None:
        with db.begin() as session:
            first = chunk_rows(db, job_id)[0]
            ids = [r.id for r in item_rows(db, job_id) if r.chunk_seq == first.seq]
            chunks.split(session, job_id, [ids[:5], ids[5:]])
            session.execute(
                update(CHUNKS).where(CHUNKS.c.id == first.id).values(status=ChunkStatus.DONE)
            )

    result = intake(db, settings, job_id, options, Watched(devices, {COMMIT_ROWS: split_first}))
    assert result.summary is not None
    planned = chunk_rows(db, job_id)
    assert len({c.seq for c in planned}) == len(planned)
    pending = [c for c in planned if c.status == ChunkStatus.PENDING]
    assert sum(c.size for c in pending) == 2 * COMMIT_ROWS
    with db.read() as session:
        stray = session.execute(
            text(
                "SELECT count(*) FROM import_items i WHERE i.job_id = :j AND NOT EXISTS "
                "(SELECT 1 FROM import_chunks c WHERE c.job_id = i.job_id AND c.seq = i.chunk_seq)"
            ),
            {"j": job_id},
        ).scalar_one()
    assert stray == 0


def test_the_sweeper_takes_over_a_running_jobs_stopped_intake(db: Database) -> None:
    settings = fast_settings(batch_size=10)
    job_id, options = new_job(db, settings)
    devices = [device(f"w-{n:05d}") for n in range(2 * COMMIT_ROWS)]

    with pytest.raises(Killed):
        intake(db, settings, job_id, options, Watched(devices, {COMMIT_ROWS + 10: kill}))
    restarted: list[str] = []

    def restart(job: str, *rest: Any) -> bool:
        restarted.append(job)
        return True

    report = sweep(db, settings, lambda ids: None, restart)
    assert restarted == [] and report.intakes_restarted == []  # its lease still runs
    expire_intake(db, job_id)
    report = sweep(db, settings, lambda ids: None, restart)
    assert restarted == [job_id] and report.intakes_restarted == [job_id]
    assert job_row(db, job_id).status == JobStatus.RUNNING  # not finished: its file is half read


def test_an_intake_renews_its_lease_with_every_batch(db: Database) -> None:
    settings = fast_settings(batch_size=10, lease_s=30)
    job_id, options = new_job(db, settings)
    devices = [device(f"l-{n:05d}") for n in range(3 * COMMIT_ROWS)]
    leases: list[float] = []

    def look() -> None:
        leases.append(float(job_row(db, job_id).intake_lease_until))

    hooks = dict.fromkeys((COMMIT_ROWS + 1, 2 * COMMIT_ROWS + 1, 3 * COMMIT_ROWS), look)
    expire_intake(db, job_id)  # the lease the intake starts with is already over
    intake(db, settings, job_id, options, Watched(devices, hooks))
    assert leases == sorted(leases) and len(set(leases)) == 3


def test_source_errors_after_stored_batches_fail_the_job_by_the_rule(db: Database) -> None:
    settings = fast_settings(batch_size=10)
    job_id, options = new_job(db, settings)
    devices = [device(f"e-{n:05d}") for n in range(2 * COMMIT_ROWS)]

    def replaced() -> None:
        raise SourceError("devices.csv: the file was replaced or removed while it was read")

    result = intake(db, settings, job_id, options, Watched(devices, {COMMIT_ROWS + 1: replaced}))
    assert result.summary is not None and "replaced" in str(result.summary.error)
    job = job_row(db, job_id)
    assert job.status == JobStatus.FAILED and "replaced" in job.last_error
    assert job.total == len(item_rows(db, job_id)) > 0


def test_rows_are_stored_as_the_database_reads_them(db: Database) -> None:
    """The bulk write keeps every column's own type: ``cells`` is a JSON array of the row's
    values in the order of the job's columns (not a JSON string holding one), the payload is
    the CreateOption's JSON text, keys and states as text."""
    settings = fast_settings(batch_size=10)
    job_id, options = new_job(db, settings)
    devices = [device(f"t-{n:03d}") for n in range(3)] + [{"deviceKey": "t-bad"}]
    intake(db, settings, job_id, options, InlineSource(devices))
    with db.read() as session:
        if db.engine.dialect.name == "postgresql":
            kinds = session.execute(
                text("SELECT DISTINCT json_typeof(cells) FROM import_items WHERE job_id = :j"),
                {"j": job_id},
            ).scalars()
            assert set(kinds) == {"array"}
        rows = session.execute(
            select(
                ITEMS.c.line_no, ITEMS.c.device_key, ITEMS.c.key_source, ITEMS.c.status,
                ITEMS.c.payload, ITEMS.c.cells, ITEMS.c.attempts, ITEMS.c.retryable,
            )
            .where(ITEMS.c.job_id == job_id)
            .order_by(ITEMS.c.line_no)
        ).all()  # fmt: skip
    columns = job_row(db, job_id).columns
    assert columns == ["productKey", "deviceKey", "deviceName", "timezone"]
    first = rows[0]
    assert (first.device_key, first.key_source, first.status) == ("t-000", "file", "pending")
    assert orjson.loads(first.payload) == devices[0]
    assert first.cells == ["pk-meter", "t-000", "Device t-000", "+08:00"]
    assert cells_by_name(first.cells, columns) == {
        "productKey": "pk-meter", "deviceName": "Device t-000", "timezone": "+08:00",
        "deviceKey": "t-000",
    }  # fmt: skip
    assert (first.attempts, first.retryable) == (0, False)
    bad = rows[-1]
    assert bad.status == ItemStatus.INVALID and bad.payload is None
    assert bad.cells == ["", "t-bad"]  # trailing blank cells are left out
    assert cells_by_name(bad.cells, columns) == {"deviceKey": "t-bad"}


def test_every_stored_batch_names_its_cells_while_the_file_is_read(db: Database) -> None:
    """A JSON file's columns grow as it is read: each batch stores the columns so far with its
    rows, so an export taken mid-intake, or of a job whose intake died, has every row's cells,
    and a column first met late does not move the values of earlier rows."""
    from worker.importer import results

    settings = fast_settings(batch_size=10)
    job_id, options = new_job(db, settings)
    early = [device(f"g-{n:03d}") for n in range(10)]
    late = [{**device(f"g-{n:03d}"), "deviceTags": {"site": f"s{n}"}} for n in range(10, 20)]
    seen: list[dict[str, str]] = []

    def export_now() -> None:
        with db.read() as session:
            seen.extend(
                {"key": r["deviceKey"], "name": r["deviceName"], "site": r.get("tag.site", "")}
                for r in results.rows(session, job_id)
            )

    # Line 11 is read after the first batch (one chunk of 10) was committed; the intake then
    # dies at line 15, holding rows 11-14 uncommitted.
    source = Watched(early + late, {11: export_now, 15: kill})
    with pytest.raises(Killed):
        intake(db, settings, job_id, options, source)
    assert seen == [
        {"key": f"g-{n:03d}", "name": f"Device g-{n:03d}", "site": ""} for n in range(10)
    ]
    assert "tag.site" not in job_row(db, job_id).columns
    expire_intake(db, job_id)
    intake(db, settings, job_id, options, InlineSource(early + late))
    assert job_row(db, job_id).columns[-1] == "tag.site"
    seen.clear()
    export_now()
    assert seen == [
        {"key": f"g-{n:03d}", "name": f"Device g-{n:03d}", "site": f"s{n}" if n >= 10 else ""}
        for n in range(20)
    ]


def test_cells_stored_by_name_are_still_read(db: Database) -> None:
    """Rows stored as a JSON object by column name (before the array form, or a row naming a
    column its job does not list) export as they are, beside array rows."""
    from worker.importer import results
    from worker.importer.cells import CellsEncoder

    settings = fast_settings(batch_size=10)
    job_id, options = new_job(db, settings)
    intake(db, settings, job_id, options, InlineSource([device("n-000")]))
    with db.begin() as session:
        session.execute(
            ITEMS.insert().values(
                job_id=job_id, line_no=2, device_key="n-001", key_source="file",
                cells={"productKey": "pk-meter", "deviceKey": "n-001", "deviceName": "Old"},
                status=ItemStatus.INVALID, attempts=0, retryable=False,
            )
        )  # fmt: skip
    with db.read() as session:
        exported = [(r["deviceKey"], r["deviceName"]) for r in results.rows(session, job_id)]
    assert exported == [("n-000", "Device n-000"), ("n-001", "Old")]
    columns = ["productKey", "deviceKey"]
    encoder = CellsEncoder(columns)
    assert orjson.loads(encoder.encode({"deviceKey": "k"})) == ["", "k"]
    assert orjson.loads(encoder.encode({"other": "x"})) == {"other": "x"}
    columns.append("other")  # the source met a new column: the encoder follows its list
    assert orjson.loads(encoder.encode({"other": "x"})) == ["", "", "x"]
    # A row holding one of many columns is stored by name, not as an array of blanks.
    columns.extend(f"attr.a{n}" for n in range(100))
    assert orjson.loads(encoder.encode({"attr.a99": "v"})) == {"attr.a99": "v"}
    assert orjson.loads(encoder.encode({"deviceKey": "k", "attr.a1": "v"})) == [
        "",
        "k",
        "",
        "",
        "v",
    ]


def test_an_outcome_writes_null_for_every_field_it_leaves_out(db: Database) -> None:
    """Outcomes travel sparse (a created row has no error): a field left out is written as
    NULL, so what an earlier attempt wrote (its error, say) does not survive the outcome."""
    from worker.db.bulk import update_outcomes

    settings = fast_settings(batch_size=10)
    job_id, options = new_job(db, settings)
    intake(db, settings, job_id, options, InlineSource([device("n-000"), device("n-001")]))
    with db.read() as session:
        first, second = session.execute(
            select(ITEMS.c.id).where(ITEMS.c.job_id == job_id).order_by(ITEMS.c.line_no)
        ).scalars()
    earlier = {
        "status": ItemStatus.PENDING, "asset_id": "stale", "error_code": 500,
        "error_message": "the answer was lost", "attempts": 1, "retryable": True,
        "device_secret": "s", "session_key": "k",
    }  # fmt: skip
    with db.begin() as session:
        update_outcomes(session, [{"item_id": i, **earlier} for i in (first, second)])
    with db.begin() as session:
        update_outcomes(
            session,
            [
                {"item_id": first, "status": ItemStatus.CREATED, "asset_id": "a1",
                 "attempts": 2, "retryable": False},
                {"item_id": second, "status": ItemStatus.PENDING, "attempts": 2,
                 "retryable": False, "error_message": "timed out"},
            ],
        )  # fmt: skip
    with db.read() as session:
        rows = session.execute(
            select(
                ITEMS.c.status, ITEMS.c.asset_id, ITEMS.c.error_code, ITEMS.c.error_message,
                ITEMS.c.attempts, ITEMS.c.retryable, ITEMS.c.device_secret, ITEMS.c.session_key,
            )
            .where(ITEMS.c.job_id == job_id)
            .order_by(ITEMS.c.line_no)
        ).all()  # fmt: skip
    assert tuple(rows[0]) == (ItemStatus.CREATED, "a1", None, None, 2, False, None, None)
    assert tuple(rows[1]) == (ItemStatus.PENDING, None, None, "timed out", 2, False, None, None)
