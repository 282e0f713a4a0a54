"""Every number an operator gives a command is checked by click before the command runs: a
negative ``--limit`` or an impossible ``--port`` gets a usage error, never a traceback."""

from __future__ import annotations

from collections.abc import Iterator

import click
import pytest
from click.testing import CliRunner

from worker.cli import cli


def _commands(
    command: click.Command, path: tuple[str, ...] = ()
) -> Iterator[tuple[tuple[str, ...], click.Command]]:
    yield path, command
    if isinstance(command, click.Group):  # the CLI loads its subcommands when asked for them
        context = click.Context(command)
        for name in command.list_commands(context):
            sub = command.get_command(context, name)
            assert sub is not None, name
            yield from _commands(sub, (*path, name))


NUMBER_OPTIONS = [
    (path, option)
    for path, command in _commands(cli)
    for option in command.params
    if isinstance(option, click.Option)
    and isinstance(option.type, click.types._NumberParamTypeBase)
]


def test_there_are_number_options_to_check() -> None:
    names = {(" ".join(path), option.name) for path, option in NUMBER_OPTIONS}
    assert ("status", "limit") in names
    assert ("inbox status", "limit") in names
    assert ("metrics serve", "port") in names


@pytest.mark.parametrize(
    ("path", "option"),
    NUMBER_OPTIONS,
    ids=[f"{' '.join(path)} --{option.name}" for path, option in NUMBER_OPTIONS],
)
def test_every_number_option_has_a_floor(path: tuple[str, ...], option: click.Option) -> None:
    assert isinstance(option.type, click.IntRange), option.type
    assert option.type.min is not None


@pytest.mark.parametrize(
    "argv",
    [
        ["status", "--limit", "-5"],
        ["inbox", "status", "--limit", "0"],
        ["metrics", "serve", "--port", "70000"],
        ["simulator", "--port", "-1"],
        ["run", "--concurrency", "0", "devices.csv"],
    ],
)
def test_an_impossible_number_is_a_usage_error(argv: list[str]) -> None:
    result = CliRunner().invoke(cli, argv)
    assert result.exit_code == 2, result.output
    assert "is not in the range" in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)
