"""The ``enos-import`` command."""

from __future__ import annotations

import click

from worker.cli.db import db
from worker.cli.jobs import cancel, results, retry, status, submit
from worker.cli.run import run
from worker.cli.simulator import simulator
from worker.cli.validate import validate


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="enos-import")
def cli() -> None:
    """Bulk device import for EnOS: files of device definitions become EnOS devices."""


for command in (submit, validate, status, results, retry, cancel, run, simulator, db):
    cli.add_command(command)


def main() -> None:
    cli(prog_name="enos-import")
