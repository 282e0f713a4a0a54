"""The deployment files in deploy/ run commands that exist, and keep the rules of deploy/README.md.

Every command that docker-compose.yml, the Dockerfile and the systemd units run is checked
against the real command line: ``enos-import …`` through the click group in-process, ``celery -A
worker.celery_app worker|beat …`` against its own ``--help`` in a subprocess. A misspelt option,
an unknown subcommand or a value outside an option's choices fails here, not on a server.
"""

from __future__ import annotations

import re

import pytest

from tests.deploy_files import (
    APP_SERVICES,
    CELERY_BASE,
    CHECKED,
    COMPOSE,
    DOCKERFILE,
    Command,
    commands,
    compose,
    env_example,
    example_settings,
    problems,
    seconds,
    services,
    unit,
    unit_names,
)
from worker.settings import Settings


def test_deploy_files_run_only_known_programs() -> None:
    # redis-server's flags are checked in test_redis_is_durable; any new program needs a check.
    assert {c.argv[0] for c in commands()} <= {"enos-import", "celery", "redis-server"}
    assert len(CHECKED) >= 8


@pytest.mark.parametrize("command", CHECKED, ids=[c.where for c in CHECKED])
def test_command_exists_with_its_options(command: Command) -> None:
    assert problems(command.argv) == [], " ".join(command.argv)


@pytest.mark.parametrize(
    "argv",
    [
        ("enos-import", "db", "upgarde"),
        ("enos-import", "simulator", "--sede-demo"),
        ("enos-import", "simulator", "--auth", "lenient"),
        ("enos-import", "simulator", "--port", "http"),
        ("enos-import", "simulator", "--seed-demo=yes"),
        ("celery", "-A", "worker.celery_ap", "worker"),
        ("celery", "-A", "worker.celery_app", "worker", "--concurency", "8"),
        ("celery", "-A", "worker.celery_app", "worker", "--pool", "prefrok"),
        ("celery", "-A", "worker.celery_app", "worker", "--loglevel"),
        ("celery", "-A", "worker.celery_app", "worker", "--purge", "now"),
        ("celery", "-A", "worker.celery_app", "beat", "--concurrency", "8"),
    ],
)
def test_the_check_catches_mistakes(argv: tuple[str, ...]) -> None:
    assert problems(argv)


def test_compose_ports_read_as_written() -> None:
    """YAML 1.1 reads an unquoted ``80:80`` as a base-60 number: every port mapping is quoted."""
    for name, service in services().items():
        for port in service.get("ports", []):
            assert isinstance(port, str), f"{name}: port {port!r} is not a quoted string"


def test_compose_has_the_services_on_their_images() -> None:
    spec = compose()
    svc = spec["services"]
    assert set(svc) == {
        "postgres", "redis", "migrate", "worker", "beat", "simulator", "metrics", "prometheus",
        "grafana",
    }  # fmt: skip
    assert svc["postgres"]["image"] == "postgres:15"
    assert "pg_isready" in svc["postgres"]["healthcheck"]["test"]
    assert "pgdata:/var/lib/postgresql/data" in svc["postgres"]["volumes"]
    assert svc["redis"]["image"] == "redis:7"
    # The password reaches redis-cli through REDISCLI_AUTH, never on a command line.
    assert svc["redis"]["healthcheck"]["test"] == ["CMD-SHELL", "redis-cli ping | grep -q PONG"]
    assert svc["redis"]["environment"]["REDISCLI_AUTH"] == "${REDIS_PASSWORD}"
    assert "redisdata:/data" in svc["redis"]["volumes"]
    for name in (*APP_SERVICES, "simulator", "metrics"):
        assert svc[name]["build"] == {"context": "..", "dockerfile": "deploy/Dockerfile"}, name
    for name, service in svc.items():
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if not source.startswith((".", "/")):
                assert source in spec["volumes"], f"{name}: volume {source} is not declared"


def test_redis_is_durable() -> None:
    argv = services()["redis"]["command"]
    assert argv[0] == "redis-server" and len(argv) % 2 == 1
    flags = dict(zip(argv[1::2], argv[2::2], strict=True))
    assert flags["--appendonly"] == "yes"
    assert flags["--appendfsync"] == "everysec"
    assert flags["--maxmemory-policy"] == "noeviction"
    assert flags["--requirepass"] == "${REDIS_PASSWORD:?set REDIS_PASSWORD in deploy/.env}"


def test_migration_runs_once_before_workers_and_beat() -> None:
    svc = services()
    assert svc["migrate"]["command"] == ["enos-import", "db", "upgrade"]
    assert svc["migrate"]["restart"] == "no"
    assert svc["migrate"]["depends_on"]["postgres"]["condition"] == "service_healthy"
    for name in ("worker", "beat"):
        needs = svc[name]["depends_on"]
        assert needs["migrate"]["condition"] == "service_completed_successfully", name
        assert needs["redis"]["condition"] == "service_healthy", name


def test_app_services_use_the_compose_postgres_and_redis() -> None:
    svc = services()
    for name in APP_SERVICES:
        assert ".env" in svc[name]["env_file"], name
        env = svc[name]["environment"]
        assert re.fullmatch(
            r"postgresql\+psycopg://[^@/]+@postgres:5432/\S+", env["ENOS_IMPORT_DATABASE_URL"]
        ), name
        broker = env["ENOS_IMPORT_BROKER_URL"]
        assert re.fullmatch(r"redis://:\$\{REDIS_PASSWORD\}@redis:6379/\d+", broker), name
    assert svc["simulator"]["profiles"] == ["demo"]
    assert svc["simulator"]["command"][:2] == ["enos-import", "simulator"]


def test_worker_scales_and_stops_warm() -> None:
    worker = services()["worker"]
    assert tuple(worker["command"][:4]) == CELERY_BASE["worker"]
    # --scale worker=N needs containers without a fixed name or host port.
    assert "container_name" not in worker and "ports" not in worker
    assert worker.get("stop_signal", "SIGTERM") == "SIGTERM"
    assert seconds(worker["stop_grace_period"]) > example_settings().lease_s


def test_exactly_one_beat() -> None:
    svc = services()
    beats = [n for n, s in svc.items() if tuple(s.get("command", [])[:4]) == CELERY_BASE["beat"]]
    assert beats == ["beat"]
    assert svc["beat"]["deploy"]["replicas"] == 1
    assert svc["beat"].get("scale", 1) == 1
    assert svc["beat"]["container_name"], "a fixed name makes Docker refuse a second beat"
    beat_units = [c for c in commands() if c.where.endswith(".service:ExecStart")]
    beat_units = [c for c in beat_units if c.argv[:4] == CELERY_BASE["beat"]]
    assert [c.where for c in beat_units] == ["enos-import-beat.service:ExecStart"]


def test_env_example_documents_every_variable() -> None:
    active, commented = env_example()
    text = COMPOSE.read_text()
    referenced = {
        key
        for service in services().values()
        for key in service.get("environment", {})
        if key.startswith("ENOS_IMPORT_")
    } | set(re.findall(r"\$\{(ENOS_IMPORT_\w+)", text))
    assert referenced <= set(active), "referenced by docker-compose.yml, missing in .env.example"
    # Variables that compose interpolates without a default must be set in .env.
    for name, modifier in re.findall(r"\$\{(\w+)(:?[-?+][^}]*)?\}", text):
        if not modifier.lstrip(":").startswith("-"):
            assert name in active, f"docker-compose.yml needs {name} in .env.example"
    documented = {
        key.removeprefix("ENOS_IMPORT_").lower()
        for key in {**active, **commented}
        if key.startswith("ENOS_IMPORT_")
    }
    assert documented <= set(Settings.model_fields), "not a setting (a typo is silently ignored)"
    assert set(Settings.model_fields) <= documented, "a setting missing from .env.example"
    example_settings()  # every value shown is valid, and the timeouts nest


def test_env_example_holds_no_real_secret() -> None:
    active, _ = env_example()
    for key in (
        "ENOS_IMPORT_ACCESS_KEY", "ENOS_IMPORT_SECRET_KEY", "POSTGRES_PASSWORD", "REDIS_PASSWORD",
        "GRAFANA_ADMIN_PASSWORD",
    ):  # fmt: skip
        assert active[key] == "change-me", key
    assert ":change-me@" in active["ENOS_IMPORT_DATABASE_URL"]


def test_dockerfile_runs_the_project_as_a_non_root_user() -> None:
    text = DOCKERFILE.read_text()
    assert re.search(r"^FROM python:3\.11-slim$", text, re.M)
    assert "uv sync --frozen --no-dev" in text
    users = re.findall(r"^USER (\S+)$", text, re.M)
    assert users and users[-1] not in ("root", "0")
    # No ENTRYPOINT, so a compose `command:` runs exactly as written, found on the venv's PATH.
    assert not re.search(r"^ENTRYPOINT", text, re.M)
    assert re.search(r"^ENV PATH=/app/\.venv/bin:", text, re.M)


@pytest.mark.parametrize("name", ["worker", "beat", "migrate"])
def test_systemd_units(name: str) -> None:
    assert f"enos-import-{name}.service" in unit_names()
    parsed = unit(f"enos-import-{name}.service")
    service = parsed["Service"]
    assert service["EnvironmentFile"] == "/etc/enos-import/env"
    assert service["WorkingDirectory"] == "/opt/enos-import"
    assert service["User"] not in ("root", "0")
    argv = next(c.argv for c in commands() if c.where == f"enos-import-{name}.service:ExecStart")
    if name == "migrate":
        assert service["Type"] == "oneshot"
        assert service["RemainAfterExit"] == "yes"
        assert argv == ("enos-import", "db", "upgrade")
        return
    assert argv[:4] == CELERY_BASE[name]
    assert "enos-import-migrate.service" in parsed["Unit"]["Requires"].split()
    assert "enos-import-migrate.service" in parsed["Unit"]["After"].split()
    assert service["Restart"] == "always"
    # Warm shutdown: SIGTERM to Celery's main process only; prefork children die on their own.
    assert service["KillSignal"] == "SIGTERM"
    assert service["KillMode"] == "mixed"
    assert parsed["Install"]["WantedBy"] == "multi-user.target"
    if name == "worker":
        assert seconds(service["TimeoutStopSec"]) > example_settings().lease_s
