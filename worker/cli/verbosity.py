"""``-v``: given to ``enos-import`` or to a command, it brings back the per-chunk log lines
that a terminal does not show by default. Kept apart so that ``--help`` stays light."""

from __future__ import annotations

import click

verbose = False


def _set_verbose(_: click.Context, __: click.Parameter, value: bool) -> None:
    global verbose
    verbose = verbose or bool(value)


VERBOSE_OPTION = click.option(
    "-v",
    "--verbose",
    is_flag=True,
    expose_value=False,
    is_eager=True,
    callback=_set_verbose,
    help="At a terminal, also log a line for every chunk.",
)
