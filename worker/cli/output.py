"""Where an export goes: stdout, an ordinary file, or a private file that is never overwritten."""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

import click

STDOUT = Path("-")
# Owner read/write only: the secrets export holds decrypted device secrets.
PRIVATE_MODE = 0o600


def open_private(path: Path, binary: bool = False) -> IO[Any]:
    """Create ``path`` for writing with mode 0600, refusing one that exists (``O_EXCL``), so a
    secrets export never replaces a file or writes through a symlink someone left there."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0)
    try:
        fd = os.open(path, flags, PRIVATE_MODE)
    except FileExistsError:
        raise click.ClickException(f"{path} exists; the secrets export never overwrites") from None
    except OSError as exc:
        raise click.ClickException(f"cannot create {path}: {exc.strerror}") from exc
    # The umask can only take bits away; fchmod makes the mode exact whatever it is.
    os.fchmod(fd, PRIVATE_MODE)
    if binary:
        return open(fd, "wb")
    return open(fd, "w", encoding="utf-8", newline="")


@contextlib.contextmanager
def export_target(output: Path | None, *, private: bool, binary: bool = False) -> Iterator[IO[Any]]:
    """The stream an export writes to. A private export needs ``-o FILE`` or ``-o -``; a binary
    one (xlsx) is not written to a terminal."""
    if output is None and private:
        raise click.UsageError(
            "--secrets writes only to a file named with -o FILE (or to stdout with -o -)"
        )
    if output is None or output == STDOUT:
        if binary and sys.stdout.isatty():
            raise click.UsageError("an xlsx file is not for a terminal: use -o FILE")
        yield sys.stdout.buffer if binary else sys.stdout
        return
    if private:
        handle = open_private(output, binary)
    elif binary:
        handle = output.open("wb")
    else:
        handle = output.open("w", encoding="utf-8", newline="")
    with handle:
        yield handle
