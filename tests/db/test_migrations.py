"""The schema: migrations apply on both databases, agree with the models, and keep the views."""

from __future__ import annotations

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import create_engine, inspect, text

from worker.db.models import Base
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
        differences = compare_metadata(context, Base.metadata)
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
