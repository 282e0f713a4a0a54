"""The ``enos-import`` command.

Subcommands are imported when used, so that ``enos-import simulator`` or ``--help`` do not pay
for Celery and SQLAlchemy.
"""

from __future__ import annotations

import importlib
from typing import Any

import click

from worker.cli.verbosity import VERBOSE_OPTION
from worker.host import collector_paused

COMMANDS = {
    "submit": "worker.cli.jobs:submit",
    "validate": "worker.cli.validate:validate",
    "status": "worker.cli.jobs:status",
    "results": "worker.cli.jobs:results",
    "retry": "worker.cli.jobs:retry",
    "cancel": "worker.cli.jobs:cancel",
    "rollback": "worker.cli.rollback:rollback_command",
    "run": "worker.cli.run:run",
    "simulator": "worker.cli.simulator:simulator",
    "db": "worker.cli.db:db",
    "inbox": "worker.cli.inbox:inbox",
    "health": "worker.cli.ops:health",
    "metrics": "worker.cli.ops:metrics",
}


class LazyGroup(click.Group):
    """A group whose subcommands live in modules imported on first use (click's recipe)."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return list(COMMANDS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        target = COMMANDS.get(cmd_name)
        if target is None:
            return None
        module, _, attribute = target.partition(":")
        with collector_paused():
            command: Any = getattr(importlib.import_module(module), attribute)
        assert isinstance(command, click.Command)
        return command


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="enos-import")
@VERBOSE_OPTION
def cli() -> None:
    """Bulk device import for EnOS: files of device definitions become EnOS devices.

    Exit status: 0 success (job completed), 1 error, 2 usage, 3 completed with errors,
    4 failed, 5 cancelled. Every option falls back to its ENOS_IMPORT_* variable.
    """


def main() -> None:
    cli(prog_name="enos-import")
