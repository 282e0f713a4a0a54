"""Per-org options of the inbox: ``INBOX/<org_id>/.enos-import.json``.

A small JSON object beside the org's files, e.g. ``{"require_secret": true, "key_mode":
"platform"}``; its keys are the options of a queue message (checked by the same rules), except
``format``, which a file's suffix gives. The name is hidden, so the scan never takes it as a
device file. While it is invalid, the org's files stay where they are and every scan logs why.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson

from worker.importer import boundary
from worker.readers.base import SourceError
from worker.readers.opening import open_regular

OPTIONS_FILE = ".enos-import.json"
MAX_BYTES = 64 * 1024
ALLOWED = ("require_secret", "key_mode")


class OrgOptionsError(ValueError):
    """The org's options file cannot be used; the message names it and what is wrong."""


def read_org_options(folder: Path) -> dict[str, Any]:
    """The org's options (empty without a file); :class:`OrgOptionsError` when invalid."""
    path = folder / OPTIONS_FILE
    if not path.exists() and not path.is_symlink():
        return {}
    try:
        opened = open_regular(path, MAX_BYTES)
        try:
            data = orjson.loads(opened.rewound().read())
        finally:
            opened.close()
    except SourceError as exc:
        raise OrgOptionsError(str(exc)) from None
    except orjson.JSONDecodeError as exc:
        raise OrgOptionsError(f"{path}: not valid JSON ({exc.msg})") from None
    if not isinstance(data, dict):
        raise OrgOptionsError(f"{path}: must be a JSON object of options")
    problems = boundary.option_problems({k: v for k, v in data.items() if k != "format"})
    if "format" in data:
        problems.append("option format is given by each file's suffix, not here")
    problems = [p.replace("(known: format, ", "(known: ") for p in problems]
    if problems:
        raise OrgOptionsError(f"{path}: {'; '.join(problems)}")
    return {key: data[key] for key in ALLOWED if key in data}
