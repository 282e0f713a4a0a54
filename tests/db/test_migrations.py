"""The schema: migrations apply on both databases, agree with the models, and keep the views."""

from __future__ import annotations

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import create_engine, inspect, text

from worker.db.models import METADATA
from worker.db.views import DEVICE_OUTCOME_COLUMNS, JOB_STATUS_COLUMNS

DESIGN_JOB_STATUS = (
    "job_id, status, org_id, source, total, pending, created, adopted, invalid, failed, "
    "conflict, review, cancelled, created_at, started_at, finished_at, last_error"
)
DESIGN_DEVICE_OUTCOME = (
    "job_id, line_no, product_key, device_key, asset_id, status, error_code, error_message, "
    "attempts, updated_at"
)


@pytest.fixture(params=["pg_url", "sqlite_url"])
def url(request: pytest.FixtureRequest) -> str:
    return str(request.getfixturevalue(request.param))


def test_the_models_and_the_migrations_agree(url: str) -> None:
    engine = create_engine(url)
    with engine.connect() as conn:
        context = MigrationContext.configure(conn, opts={"compare_type": True})
        differences = compare_metadata(context, METADATA)
    engine.dispose()
    assert differences == []


def test_the_views_have_exactly_the_contract_columns(url: str) -> None:
    engine = create_engine(url)
    with engine.connect() as conn:
        job_cols = list(conn.execute(text("SELECT * FROM import_job_status")).keys())
        item_cols = list(conn.execute(text("SELECT * FROM import_device_outcome")).keys())
        views = set(inspect(conn).get_view_names())
    engine.dispose()
    assert {"import_job_status", "import_device_outcome"} <= views
    assert job_cols == DESIGN_JOB_STATUS.split(", ")
    assert item_cols == DESIGN_DEVICE_OUTCOME.split(", ")
    assert tuple(job_cols) == JOB_STATUS_COLUMNS
    assert tuple(item_cols) == DEVICE_OUTCOME_COLUMNS


def test_downgrade_and_upgrade_again(tmp_path) -> None:
    from alembic import command

    from worker.db.migrate import alembic_config, upgrade

    url = f"sqlite:///{tmp_path / 'round-trip.db'}"
    upgrade(url)
    command.downgrade(alembic_config(url), "base")
    engine = create_engine(url)
    assert "import_jobs" not in inspect(engine).get_table_names()
    engine.dispose()
    upgrade(url)
    engine = create_engine(url)
    assert "import_items" in inspect(engine).get_table_names()
    engine.dispose()


JOB = (
    "INSERT INTO import_jobs (id, status, org_id, source, options, total, intake_token, "
    "intake_attempts) VALUES (:id, 'running', 'o1', 'f.csv', '{}', 2, 0, 0)"
)
ITEM = (
    "INSERT INTO import_items (job_id, line_no, key_source, cells, status, attempts, retryable) "
    "VALUES (:job, :line, 'file', '{}', 'pending', 0, false)"
)


def _job_with_items(conn, job_id: str, lines: int) -> None:
    conn.execute(text(JOB), {"id": job_id})
    conn.execute(text(ITEM), [{"job": job_id, "line": n} for n in range(2, 2 + lines)])


def _items(conn, job_id: str) -> int:
    return int(
        conn.execute(
            text("SELECT count(*) FROM import_items WHERE job_id = :id"), {"id": job_id}
        ).scalar_one()
    )


def test_deleting_a_job_deletes_its_items_and_no_other(db) -> None:
    """The rows go with their job (a trigger, not a foreign key: see migration 0006)."""
    with db.engine.begin() as conn:
        _job_with_items(conn, "job-gone", 3)
        _job_with_items(conn, "job-kept", 2)
    with db.engine.begin() as conn:
        conn.execute(text("DELETE FROM import_jobs WHERE id = 'job-gone'"))
    with db.engine.connect() as conn:
        assert _items(conn, "job-gone") == 0
        assert _items(conn, "job-kept") == 2


@pytest.fixture(params=["postgresql", "sqlite"])
def fresh_url(request: pytest.FixtureRequest, tmp_path, pg_admin_url: str, worker_tag: str):
    """An empty database of its own, for migrations run step by step."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'steps.db'}"
        return
    from tests.harness.services import empty_database

    with empty_database(pg_admin_url, f"enos_import_steps_{worker_tag}") as url:
        yield url


def test_upgrading_to_the_deletion_trigger_keeps_the_rows_and_the_views(fresh_url: str) -> None:
    from alembic import command

    from worker.db.migrate import alembic_config, upgrade

    upgrade(fresh_url, "0005")
    engine = create_engine(fresh_url)
    with engine.begin() as conn:
        _job_with_items(conn, "job-before", 4)
    engine.dispose()
    upgrade(fresh_url)
    engine = create_engine(fresh_url)
    with engine.begin() as conn:
        assert _items(conn, "job-before") == 4
        total = conn.execute(
            text("SELECT count(*) FROM import_device_outcome WHERE job_id = 'job-before'")
        ).scalar_one()
        assert total == 4
        pending = conn.execute(
            text("SELECT pending FROM import_job_status WHERE job_id = 'job-before'")
        ).scalar_one()
        assert pending == 4
        conn.execute(text("DELETE FROM import_jobs WHERE id = 'job-before'"))
        assert _items(conn, "job-before") == 0
    engine.dispose()
    # And back: the foreign key again, which also deletes a job's rows.
    command.downgrade(alembic_config(fresh_url), "0005")
    engine = create_engine(fresh_url)
    with engine.begin() as conn:
        if conn.dialect.name == "sqlite":
            conn.execute(text("PRAGMA foreign_keys = ON"))
        _job_with_items(conn, "job-after", 2)
        conn.execute(text("DELETE FROM import_jobs WHERE id = 'job-after'"))
        assert _items(conn, "job-after") == 0
        assert conn.execute(text("SELECT count(*) FROM import_device_outcome")).scalar_one() == 0
    engine.dispose()
