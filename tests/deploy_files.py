"""The deploy files read (docker-compose.yml, the systemd units, .env.example) and the check of a
command line against the real command lines (click in-process, celery through its --help)."""

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
import yaml
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


# --- The deploy files -------------------------------------------------------------------------


def compose() -> dict[str, Any]:
    spec = yaml.safe_load(COMPOSE.read_text())
    assert isinstance(spec, dict)
    return spec


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
        return [f"not one of the documented commands: {' '.join(argv[:4])}"]
    return option_problems(list(argv[4:]), help_options(celery_help(subcommand)), positionals=False)


def problems(argv: tuple[str, ...]) -> list[str]:
    checks = {"enos-import": enos_import_problems, "celery": celery_problems}
    return checks[argv[0]](argv)


CHECKED = [c for c in commands() if c.argv[0] in ("enos-import", "celery")]
