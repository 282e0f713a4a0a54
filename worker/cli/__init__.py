"""The ``enos-import`` command."""

from __future__ import annotations

import click

from worker.cli.simulator import simulator


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="enos-import")
def cli() -> None:
    """Bulk device import for EnOS: files of device definitions become EnOS devices."""


cli.add_command(simulator)


def main() -> None:
    cli(prog_name="enos-import")
