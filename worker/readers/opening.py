"""One handle per input file: opened once, checked, hashed and read through that same handle.

Opening a path three times (type check, hash, rows) lets a file replaced or still being written
give rows and a content hash from different bytes, and lets a symlink or a FIFO in at the last
moment. So a file is opened once without following a symlink at its last component, ``fstat``
must show a regular file, and every later read goes through that descriptor; at the end its size
and modification time must be what they were when it was opened, and the path must still name it.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import stat
import weakref
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from worker.readers.base import SourceError
from worker.readers.excerpt import excerpt

# O_NONBLOCK: opening a FIFO without a writer would otherwise wait forever; the fstat check
# refuses it right after. O_NOFOLLOW: a symlink at the last component fails with ELOOP.
_FLAGS = os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)


class SourcePermissionError(SourceError):
    """The file may not be read by this process (yet): a condition to retry, not a verdict."""


@dataclass
class OpenedFile:
    """A regular file held by one descriptor, with the ``fstat`` taken when it was opened."""

    path: Path
    handle: BinaryIO
    opened: os.stat_result

    def __post_init__(self) -> None:
        self._sha256: str | None = None
        # A reader dropped without close() (a test, an error path) releases its descriptor
        # when collected, quietly: holding it open between hashing and reading is the point.
        weakref.finalize(self, self.handle.close)

    def rewound(self) -> BinaryIO:
        self.handle.seek(0)
        return self.handle

    def check_unchanged(self, bytes_read: int | None = None) -> None:
        """Refuses the file if it grew, shrank or was written since it was opened, if a whole
        read gave another size than ``fstat`` (a file of /proc says 0 bytes), or if its path now
        names another file: its rows and hash might come from different bytes."""
        now = os.fstat(self.handle.fileno())
        if (now.st_size, now.st_mtime_ns) != (self.opened.st_size, self.opened.st_mtime_ns) or (
            bytes_read is not None and bytes_read != now.st_size
        ):
            raise SourceError(
                f"{excerpt(str(self.path), 200)}: the file changed while it was read "
                f"({self.opened.st_size} bytes when opened, {now.st_size} now, "
                f"{bytes_read if bytes_read is not None else now.st_size} read); "
                "drop files complete (write, then rename) and submit again"
            )
        try:
            named = os.stat(self.path, follow_symlinks=False)
        except OSError:
            named = None
        if named is None or (named.st_dev, named.st_ino) != (now.st_dev, now.st_ino):
            raise SourceError(
                f"{excerpt(str(self.path), 200)}: the file was replaced or removed while it was "
                "read; submit again"
            )

    def sha256(self) -> str:
        """The content hash, read through this handle once (the runner that finds a job to
        resume by it and the intake both ask); refused if the file changed. Reading the rows
        checks again that the file did not change since."""
        if self._sha256 is not None:
            return self._sha256
        digest = hashlib.sha256()
        handle, size = self.rewound(), 0
        while block := handle.read(1 << 20):
            digest.update(block)
            size += len(block)
        self.check_unchanged(size)
        self._sha256 = digest.hexdigest()
        return self._sha256

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.handle.close()


def open_regular(path: Path, max_bytes: int | None = None) -> OpenedFile:
    """Opens ``path`` once: no symlink at the last component, a regular file, within
    ``max_bytes``; a clear :class:`SourceError` otherwise, before a byte is read."""
    shown = excerpt(str(path), 200)
    try:
        fd = os.open(path, _FLAGS)
    except FileNotFoundError:
        raise SourceError(f"{shown}: no such file") from None
    except PermissionError:
        raise SourcePermissionError(f"{shown}: permission denied") from None
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise SourceError(f"{shown}: is a symbolic link; name the file itself") from None
        raise SourceError(f"{shown}: cannot be opened ({exc.strerror})") from None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise SourceError(f"{shown}: not a regular file ({_kind(info.st_mode)})")
        if max_bytes is not None and info.st_size > max_bytes:
            raise SourceError(
                f"{shown}: {info.st_size} bytes is over the limit of {max_bytes} bytes "
                "(ENOS_IMPORT_MAX_FILE_BYTES)"
            )
        os.set_blocking(fd, True)
        handle = os.fdopen(fd, "rb", buffering=1 << 16)
    except BaseException:
        os.close(fd)
        raise
    return OpenedFile(path, handle, info)


def _kind(mode: int) -> str:
    if stat.S_ISDIR(mode):
        return "a folder"
    if stat.S_ISFIFO(mode):
        return "a FIFO"
    if stat.S_ISSOCK(mode):
        return "a socket"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    return "not a plain file"
