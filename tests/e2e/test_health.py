"""``enos-import health``: exit 0 with everything up, and 1, naming the dependency, with each
one down in turn (an unreachable port, an unmigrated database, a broker no worker listens to,
an old sweep, refused EnOS credentials). The shared services are never stopped."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import insert

from tests.e2e.conftest import Cluster
from tests.e2e.services import Simulator, process_env
from tests.harness.processes import free_port, run_cli
from tests.harness.services import empty_database
from worker.db.models import SERVICE_BEATS
from worker.db.session import Database

CHECKS = ["database", "broker", "worker", "sweep"]


def health(env: dict[str, str], cwd: Path, *args: str) -> tuple[int, dict[str, Any]]:
    done = run_cli(["health", "--json", *args], env, cwd, timeout_s=60)
    report = json.loads(done.stdout)
    assert report["ok"] is (done.returncode == 0), done
    return done.returncode, {check["name"]: check for check in report["checks"]}


def failing(checks: dict[str, Any]) -> list[str]:
    return [name for name, check in checks.items() if not check["ok"]]


def test_all_up_then_each_dependency_down(cluster: Cluster) -> None:
    code, checks = health(cluster.env, cluster.workdir, "--enos")
    assert code == 0, checks
    assert list(checks) == [*CHECKS, "enos"]
    assert "consume enos_import" in checks["worker"]["detail"]

    # The database is away: its check fails, and so does the sweep's (read from it).
    away = {**cluster.env, "ENOS_IMPORT_DATABASE_URL": _pg_url(free_port(), "nowhere")}
    code, checks = health(away, cluster.workdir)
    assert (code, failing(checks)) == (1, ["database", "sweep"]), checks

    # The broker is away: no worker can answer either.
    away = {**cluster.env, "ENOS_IMPORT_BROKER_URL": f"redis://127.0.0.1:{free_port()}/0"}
    code, checks = health(away, cluster.workdir)
    assert (code, failing(checks)) == (1, ["broker", "worker"]), checks

    # EnOS refuses the account.
    refused = {**cluster.env, "ENOS_IMPORT_SECRET_KEY": "not-the-secret"}
    code, checks = health(refused, cluster.workdir, "--enos")
    assert (code, failing(checks)) == (1, ["enos"]), checks


@pytest.fixture
def unmigrated(worker_tag: str, pg_admin_url: str) -> Iterator[str]:
    with empty_database(pg_admin_url, f"enos_import_test_{worker_tag}_unmigrated") as url:
        yield url


def _pg_url(port: int, name: str) -> str:
    return f"postgresql+psycopg://postgres@127.0.0.1:{port}/{name}"


def test_no_worker_old_sweep_and_unmigrated_database(
    simulator: Simulator, pg_db: Database, redis_url: str, unmigrated: str, workdir: Path
) -> None:
    # The tests' own Redis database: no worker listens there (none was started).
    env = process_env(simulator.url, pg_db.url, redis_url)
    with pg_db.begin() as session:
        session.execute(insert(SERVICE_BEATS).values(name="sweeper", last_run_at=0.0))  # 1970
    code, checks = health(env, workdir)
    assert (code, failing(checks)) == (1, ["worker", "sweep"]), checks
    assert checks["worker"]["detail"] == "no worker answered a ping"
    assert "is beat running?" in checks["sweep"]["detail"]

    code, checks = health({**env, "ENOS_IMPORT_DATABASE_URL": unmigrated}, workdir)
    assert code == 1
    assert "enos-import db upgrade" in checks["database"]["detail"], checks


def test_text_output_names_each_check(
    simulator: Simulator, pg_db: Database, redis_url: str, workdir: Path
) -> None:
    env = process_env(simulator.url, pg_db.url, redis_url)
    done = run_cli(["health"], env, workdir, timeout_s=60)
    assert done.returncode == 1
    lines = done.stderr.splitlines()
    assert [line.split()[1] for line in lines] == CHECKS, done.stderr
    assert lines[0].startswith("ok") and lines[2].startswith("FAIL"), done.stderr
