"""The deployment files in deploy/ run commands that exist, and keep the rules of deploy/README.md.

Every command that docker-compose.yml, the Dockerfile and the systemd units run is checked
against the real command line: ``enos-import …`` through the click group in-process, ``celery -A
worker.celery_app worker|beat …`` against its own ``--help`` in a subprocess. A misspelt option,
an unknown subcommand or a value outside an option's choices fails here, not on a server.
"""

from __future__ import annotations

import configparser
import functools
import json
import os
import re
import shlex
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click
import pytest
from click.testing import CliRunner

from worker.cli import cli
from worker.settings import Settings

ROOT = Path(__file__).resolve().parents[1]
DEPLOY = ROOT / "deploy"
COMPOSE = DEPLOY / "docker-compose.yml"
DOCKERFILE = DEPLOY / "Dockerfile"
ENV_EXAMPLE = DEPLOY / ".env.example"
UNITS = DEPLOY / "systemd"
CELERY = Path(sys.prefix) / "bin" / "celery"

VENV_BIN = "/opt/enos-import/.venv/bin/"
# The documented entry points, exactly: deploy files may add options after them, never change them.
CELERY_BASE = {
    "worker": ("celery", "-A", "worker.celery_app", "worker"),
    "beat": ("celery", "-A", "worker.celery_app", "beat"),
}
APP_SERVICES = ("migrate", "worker", "beat")


# --- A reader for the plain subset of YAML that docker-compose.yml keeps to -------------------


def read_yaml_subset(text: str) -> Any:
    """Block mappings, block lists of scalars, and scalars (plain, double-quoted, or a one-line
    flow list of double-quoted strings); anything else is an error rather than a guess."""
    lines: list[tuple[int, str, int]] = []
    for number, raw in enumerate(text.splitlines(), 1):
        content = _strip_comment(raw).rstrip()
        if content.strip():
            if "\t" in content[: len(content) - len(content.lstrip())]:
                raise ValueError(f"line {number}: tab in indentation")
            lines.append((len(content) - len(content.lstrip(" ")), content.strip(), number))
    value, end = _block(lines, 0, lines[0][0])
    if end != len(lines):
        raise ValueError(f"line {lines[end][2]}: unexpected indentation")
    return value


def _strip_comment(line: str) -> str:
    quote = ""
    for i, char in enumerate(line):
        if quote:
            quote = "" if char == quote else quote
        elif char in "\"'":
            quote = char
        elif char == "#" and (i == 0 or line[i - 1] in " \t"):
            return line[:i]
    return line


def _block(lines: list[tuple[int, str, int]], pos: int, indent: int) -> tuple[Any, int]:
    if lines[pos][1].startswith("- "):
        items = []
        while pos < len(lines) and lines[pos][0] == indent and lines[pos][1].startswith("- "):
            items.append(_scalar(lines[pos][1][2:].strip(), lines[pos][2]))
            pos += 1
        return items, pos
    mapping: dict[str, Any] = {}
    while pos < len(lines) and lines[pos][0] == indent:
        _, content, number = lines[pos]
        key, colon, rest = content.partition(":")
        if not colon or (rest and not rest.startswith(" ")) or not re.fullmatch(r"[\w.-]+", key):
            raise ValueError(f"line {number}: expected `key: value`, got {content!r}")
        if key in mapping:
            raise ValueError(f"line {number}: duplicate key {key!r}")
        pos += 1
        if rest.strip():
            mapping[key] = _scalar(rest.strip(), number)
        elif pos < len(lines) and lines[pos][0] > indent:
            mapping[key], pos = _block(lines, pos, lines[pos][0])
        else:
            mapping[key] = None
    return mapping, pos


def _scalar(text: str, number: int) -> Any:
    if text.startswith(("[", '"')):
        return json.loads(text)
    if text[0] in "'{&*!|>%@`" or text in ("yes", "no", "on", "off", "y", "n"):
        raise ValueError(f"line {number}: {text!r} is outside the subset (quote it)")
    if re.fullmatch(r"\d+(:\d+)+", text):
        raise ValueError(f"line {number}: {text!r} reads as a base-60 number in YAML 1.1")
    if text in ("true", "false"):
        return text == "true"
    if text in ("null", "~"):
        return None
    if re.fullmatch(r"-?\d+", text):
        return int(text)
    return text


# --- The deploy files -------------------------------------------------------------------------


def compose() -> dict[str, Any]:
    return read_yaml_subset(COMPOSE.read_text())  # type: ignore[no-any-return]


def services() -> dict[str, dict[str, Any]]:
    return compose()["services"]  # type: ignore[no-any-return]


def unit(name: str) -> configparser.ConfigParser:
    parser = configparser.ConfigParser(strict=False, interpolation=None)
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read_string((UNITS / name).read_text(), source=name)
    return parser


def unit_names() -> list[str]:
    return sorted(path.name for path in UNITS.glob("*.service"))


@dataclass(frozen=True)
class Command:
    where: str
    argv: tuple[str, ...]


def commands() -> list[Command]:
    """Every command line that the deploy files run."""
    found = []
    for name, service in services().items():
        for key in ("entrypoint", "command"):
            if key in service:
                value = service[key]
                assert isinstance(value, list), f"{name}.{key}: use the exec form (a list)"
                found.append(Command(f"docker-compose.yml:{name}.{key}", tuple(value)))
    for line in DOCKERFILE.read_text().splitlines():
        instruction, _, rest = line.partition(" ")
        if instruction in ("CMD", "ENTRYPOINT"):
            found.append(Command(f"Dockerfile:{instruction}", tuple(json.loads(rest))))
    for name in unit_names():
        for key, value in unit(name)["Service"].items():
            if key.startswith("Exec"):
                argv = shlex.split(value)
                program = argv[0].lstrip("-@:+!")
                assert program.startswith(VENV_BIN), f"{name}: {key} runs {program}"
                found.append(Command(f"{name}:{key}", (program.removeprefix(VENV_BIN), *argv[1:])))
    return found


def env_example() -> tuple[dict[str, str], dict[str, str]]:
    """The variables that .env.example sets, and those it shows commented out."""
    active: dict[str, str] = {}
    commented: dict[str, str] = {}
    previous = ""
    for number, line in enumerate(ENV_EXAMPLE.read_text().splitlines(), 1):
        match = re.fullmatch(r"(# )?([A-Z][A-Z0-9_]*)=(.*)", line)
        if match:
            target = commented if match[1] else active
            assert match[2] not in active and match[2] not in commented, f"line {number}: twice"
            assert previous.startswith("# ") and not re.match(r"# [A-Z][A-Z0-9_]*=", previous), (
                f".env.example line {number}: {match[2]} needs a one-line comment above it"
            )
            target[match[2]] = match[3]
        elif line and not line.startswith("#"):
            raise AssertionError(f".env.example line {number}: not KEY=value: {line!r}")
        previous = line
    return active, commented


def example_settings() -> Settings:
    """The settings that .env.example describes, commented-out defaults included."""
    active, commented = env_example()
    values = {
        key.removeprefix("ENOS_IMPORT_").lower(): value
        for key, value in {**commented, **active}.items()
        if key.startswith("ENOS_IMPORT_")
    }
    return Settings.model_validate(values)


def seconds(value: str | int) -> float:
    """A Compose or systemd duration: 330, "330s", "5m30s", "5min 30s"."""
    text = str(value).strip()
    if re.fullmatch(r"\d+(\.\d+)?", text):
        return float(text)
    unit_re = r"(\d+(?:\.\d+)?)\s*(ms|us|min|h|m|s)"
    assert re.fullmatch(rf"(?:{unit_re}\s*)+", text), f"not a duration: {value!r}"
    scale = {"h": 3600.0, "min": 60.0, "m": 60.0, "s": 1.0, "ms": 1e-3, "us": 1e-6}
    return sum(float(n) * scale[u] for n, u in re.findall(unit_re, text))


# --- Checking a command line against the real CLIs --------------------------------------------

_OPTION_LINE = re.compile(
    r"^\s+(?P<names>--?[\w-]+(?:(?:, | / )--?[\w-]+)*)(?: (?P<metavar>\S+(?: \S+)*?))?(?: {2,}|$)"
)


def help_options(text: str) -> dict[str, str | None]:
    """The options that a click help page lists, each with its metavar (None for a flag)."""
    found: dict[str, str | None] = {}
    for line in text.splitlines():
        match = _OPTION_LINE.match(line)
        if match:
            for name in re.split(r", | / ", match["names"]):
                found[name] = match["metavar"]
    return found


def option_problems(
    args: list[str], options: dict[str, str | None], *, positionals: bool
) -> list[str]:
    """Each option used is on the help page, takes a value if and only if it is given one, and
    that value is one of the option's choices when it has some."""
    problems = []
    i = 0
    while i < len(args):
        token = args[i]
        i += 1
        if not token.startswith("-"):
            if not positionals:
                problems.append(f"unexpected argument {token!r}")
            continue
        name, equals, inline = token.partition("=")
        if name not in options:
            problems.append(f"no option {name}")
            continue
        metavar = options[name]
        if metavar is None:
            if equals:
                problems.append(f"{name} is a flag and takes no value")
            continue
        if equals:
            value = inline
        elif i < len(args):
            value, i = args[i], i + 1
        else:
            problems.append(f"{name} needs a value ({metavar})")
            continue
        choices = re.fullmatch(r"\[([^\]]+\|[^\]]+)\]", metavar)
        if choices and value not in choices[1].split("|"):
            problems.append(f"{name} {value}: not one of {choices[1]}")
    return problems


def enos_import_problems(argv: tuple[str, ...]) -> list[str]:
    args = list(argv[1:])
    result = CliRunner().invoke(cli, [*args, "--help"], prog_name="enos-import")
    if result.exit_code != 0:
        return [f"`enos-import {' '.join(args)} --help` exited {result.exit_code}: {result.output}"]
    command: click.Command = cli
    path = ["enos-import"]
    while isinstance(command, click.Group) and args and not args[0].startswith("-"):
        name = args.pop(0)
        sub = command.get_command(click.Context(command), name)
        assert sub is not None  # --help above would have failed
        command, path = sub, [*path, name]
    problems = option_problems(args, help_options(result.output), positionals=True)
    try:  # click's own parser: types, choices, arity, extra arguments
        command.make_context(" ".join(path), list(args))
    except click.ClickException as exc:
        problems.append(exc.format_message())
    return problems


@functools.cache
def celery_help(subcommand: str) -> str:
    """``celery -A worker.celery_app <subcommand> --help``, run as a process (it loads the app)."""
    env = {**os.environ, "ENOS_IMPORT_BROKER_URL": "memory://"}
    proc = subprocess.run(
        [str(CELERY), *CELERY_BASE[subcommand][1:], "--help"],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, f"celery {subcommand} --help: {proc.stdout}{proc.stderr}"
    return proc.stdout


def celery_problems(argv: tuple[str, ...]) -> list[str]:
    subcommand = argv[3] if len(argv) > 3 else ""
    if subcommand not in CELERY_BASE or argv[:4] != CELERY_BASE[subcommand]:
        return [f"not one of the DESIGN's commands: {' '.join(argv[:4])}"]
    return option_problems(list(argv[4:]), help_options(celery_help(subcommand)), positionals=False)


def problems(argv: tuple[str, ...]) -> list[str]:
    checks = {"enos-import": enos_import_problems, "celery": celery_problems}
    return checks[argv[0]](argv)


CHECKED = [c for c in commands() if c.argv[0] in ("enos-import", "celery")]


# --- Tests ------------------------------------------------------------------------------------


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


def test_compose_reader_agrees_with_pyyaml() -> None:
    """PyYAML is no dependency of ours; where it happens to be installed, it must read the file
    exactly as the reader above does."""
    yaml = pytest.importorskip("yaml")
    assert read_yaml_subset(COMPOSE.read_text()) == yaml.safe_load(COMPOSE.read_text())


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
