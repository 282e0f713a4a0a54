"""The inbox on disk: which names may be taken, and where a file and its results go.

``INBOX/<org_id>/<name>.<suffix>`` is imported into ``<org_id>``; when its job ends it moves to
``done/``, ``errors/`` or ``failed/`` under its org, with ``<name>.results.csv`` or
``<name>.error.txt`` beside it. Nothing is ever deleted or overwritten: every file lands under
a name that did not exist (a link, which fails if the name is taken), with ``-2``, ``-3`` … when
the plain name is taken.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TextIO

from worker.db.models import JobStatus
from worker.readers.sources import SUFFIX_FORMATS

DONE, ERRORS, FAILED = "done", "errors", "failed"
OUTCOME_FOLDERS = {
    JobStatus.COMPLETED: DONE,
    JobStatus.COMPLETED_WITH_ERRORS: ERRORS,
    JobStatus.FAILED: FAILED,
    JobStatus.CANCELLED: FAILED,
}
# Names another system writes before the file is complete (write, then rename).
UNFINISHED_SUFFIXES = (".part", ".tmp")
READY_SUFFIX = ".ready"
RESULTS_SUFFIX = ".results.csv"
ERROR_SUFFIX = ".error.txt"
MAX_NAME_TRIES = 1000


def org_folders(inbox: Path) -> Iterator[Path]:
    """The org folders of the inbox (hidden names are not orgs)."""
    if not inbox.is_dir():
        return
    for entry in sorted(os.scandir(inbox), key=lambda e: e.name):
        if not entry.name.startswith(".") and entry.is_dir(follow_symlinks=False):
            yield Path(entry.path)


def accepted_suffixes() -> tuple[str, ...]:
    """The suffixes of the intake's readers: a reader added there is a format taken here."""
    return tuple(SUFFIX_FORMATS)


def candidates(org_folder: Path) -> Iterator[os.DirEntry[str]]:
    """Entries of an org folder that name a device file: not hidden, not unfinished
    (``.part``, ``.tmp``), not a marker or our own output, with a suffix a reader takes.
    Folders (``done/`` …) are not candidates; symlinks and other non-files are, so that they
    are refused visibly instead of silently ignored."""
    suffixes = accepted_suffixes()
    for entry in sorted(os.scandir(org_folder), key=lambda e: e.name):
        name = entry.name
        lowered = name.lower()
        if name.startswith(".") or lowered.endswith(UNFINISHED_SUFFIXES):
            continue
        if lowered.endswith((READY_SUFFIX, RESULTS_SUFFIX, ERROR_SUFFIX)):
            continue
        if entry.is_dir(follow_symlinks=False) or not lowered.endswith(suffixes):
            continue
        yield entry


def stem_of(name: str) -> str:
    """``devices`` for ``devices.csv``: the ``<name>`` of the markers and results."""
    return name.rsplit(".", 1)[0] if "." in name else name


def ready_marker(path: Path) -> Path:
    return path.with_name(stem_of(path.name) + READY_SUFFIX)


def placement(folder: Path, name: str) -> Path:
    """A path in ``folder`` for ``name`` whose own name and result names are all free."""
    stem, dot, suffix = name.rpartition(".")
    if not dot:
        stem, suffix = name, ""
    for n in range(1, MAX_NAME_TRIES + 1):
        candidate_stem = stem if n == 1 else f"{stem}-{n}"
        target = folder / (f"{candidate_stem}.{suffix}" if dot else candidate_stem)
        siblings = (
            target,
            *(folder / (candidate_stem + s) for s in (RESULTS_SUFFIX, ERROR_SUFFIX)),
        )
        if not any(os.path.lexists(p) for p in siblings):
            return target
    raise FileExistsError(f"{folder}: {MAX_NAME_TRIES} names like {name} are taken")


def beside(target: Path, suffix: str) -> Path:
    return target.with_name(stem_of(target.name) + suffix)


def write_new(path: Path, fill: Callable[[TextIO], object]) -> bool:
    """Writes a file that did not exist, whole or not at all (a hidden temporary file, filled
    by ``fill``, then linked to its name); ``False`` if the name was taken."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(temporary, "w", encoding="utf-8", newline="") as out:
        fill(out)
        out.flush()
        os.fsync(out.fileno())
    try:
        os.link(temporary, path)
    except FileExistsError:
        return False
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)
    return True


def move_new(source: Path, target: Path) -> bool:
    """Moves ``source`` (a file, a symlink or a FIFO, not followed) to ``target`` without
    overwriting: a link under the new name, then the old name dropped. ``False`` if the
    source was gone already (moved by an earlier attempt)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(source, target, follow_symlinks=False)
    except FileNotFoundError:
        return False
    os.unlink(source)
    return True
