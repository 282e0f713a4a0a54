"""Intakes are bounded: a job whose intake keeps stopping fails with the last error instead of
being restarted by the sweeper forever."""

from __future__ import annotations

import uuid

from sqlalchemy import select, update

from tests.importer.support import fast_settings
from worker.db.models import JOBS
from worker.db.session import Database
from worker.importer.submit import create, job_options
from worker.importer.sweeper import sweep


def test_the_sweeper_restarts_an_intake_a_bounded_number_of_times(db: Database) -> None:
    settings = fast_settings(max_intake_attempts=3)
    job_id = str(uuid.uuid4())
    options = job_options(settings, require_secret=False, intake="task")
    options["source_kind"] = "path"
    create(db, settings, job_id, "o-demo", "/in/gone.csv", options)
    restarted: list[str] = []

    def restart(job: str, source: str, org_id: str, opts: dict[str, object]) -> bool:
        restarted.append(job)
        return True

    for attempts in (1, 2, 3):
        with db.begin() as session:
            session.execute(
                update(JOBS)
                .where(JOBS.c.id == job_id)
                .values(
                    status="validating", intake_attempts=attempts, intake_lease_until=0,
                    last_error="gone.csv: no such file" if attempts == 3 else None,
                )
            )  # fmt: skip
        sweep(db, settings, lambda ids: None, restart)
    assert restarted == [job_id, job_id]
    with db.read() as session:
        job = session.execute(select(JOBS.c.status, JOBS.c.last_error)).one()
    assert job.status == "failed"
    assert job.last_error == (
        "the intake was started 3 times and never ended (ENOS_IMPORT_MAX_INTAKE_ATTEMPTS); "
        "last error: gone.csv: no such file"
    )
