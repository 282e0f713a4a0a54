"""The queue is a trust boundary: what a message may ask for is checked here, before a byte of
any file is read.

A message is parsed strictly (types, known option keys, a path or a list as source), its org
must be allowed (``ENOS_IMPORT_ALLOWED_ORGS``), and a path must resolve, symlinks followed,
inside ``ENOS_IMPORT_SOURCE_ROOTS`` (the inbox is always one). The CLI reads the file its
operator names and does not pass through here.
"""

from __future__ import annotations

import os
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from worker.readers.excerpt import excerpt
from worker.readers.sources import FORMATS
from worker.settings import Settings

# The options a message may carry, and the type each must have.
OPTION_TYPES: dict[str, tuple[type, ...]] = {
    "require_secret": (bool,),
    "key_mode": (str, type(None)),
    "format": (str, type(None)),
}
KEY_MODES = ("derive", "platform")
MAX_ORG_ID = 128  # the width of import_jobs.org_id


class Refused(ValueError):
    """The message cannot be done as it is; the text says why (no file content in it)."""


@dataclass(frozen=True)
class SubmitMessage:
    source: str | list[Any]
    org_id: str
    options: dict[str, Any]
    job_id: str | None


def job_id_of(value: Any) -> str | None:
    """The message's job id in canonical form, or ``None`` when it has none or a bad one."""
    if not isinstance(value, str):
        return None
    try:
        return str(uuid.UUID(value))
    except ValueError:
        return None


def parse_submit(
    source: Any, org_id: Any, options: Any, job_id: Any, unknown: dict[str, Any]
) -> SubmitMessage:
    """The message of ``enos_import.submit``, checked; :class:`Refused` names every problem."""
    problems: list[str] = []
    if unknown:
        problems.append(f"unknown arguments {', '.join(excerpt(k) for k in sorted(unknown))}")
    if job_id is not None and job_id_of(job_id) is None:
        problems.append("job_id must be a UUID string")
    if not isinstance(source, str | list) or (isinstance(source, str) and not source):
        problems.append(
            "source must be a path (a string) or a list of CreateOption objects, "
            f"not {type(source).__name__}"
        )
    if not isinstance(org_id, str) or not 0 < len(org_id) <= MAX_ORG_ID:
        problems.append(f"org_id must be a string of 1-{MAX_ORG_ID} characters")
    problems.extend(option_problems(options))
    if problems:
        raise Refused("malformed message: " + "; ".join(problems))
    return SubmitMessage(source, org_id, dict(options or {}), job_id_of(job_id))


def option_problems(options: Any) -> list[str]:
    """What is wrong with a message's ``options`` (also used for the inbox's per-org file)."""
    if options is None:
        return []
    if not isinstance(options, dict):
        return [f"options must be an object, not {type(options).__name__}"]
    problems = []
    for key, value in options.items():
        types = OPTION_TYPES.get(key)
        if types is None:
            problems.append(
                f"unknown option {excerpt(key)} (known: {', '.join(sorted(OPTION_TYPES))})"
            )
        elif not isinstance(value, types):
            problems.append(f"option {key} must be {' or '.join(_type_name(t) for t in types)}")
    if options.get("key_mode") not in (None, *KEY_MODES):
        problems.append(f"option key_mode must be one of {', '.join(KEY_MODES)}")
    if options.get("format") not in (None, *FORMATS):
        problems.append(f"option format must be one of {', '.join(FORMATS)}")
    return problems


def _type_name(kind: type) -> str:
    return {bool: "true or false", str: "a string", type(None): "null"}.get(kind, kind.__name__)


def check_org(settings: Settings, org_id: str) -> None:
    allowed = settings.allowed_org_ids
    if allowed is not None and org_id not in allowed:
        raise Refused(
            f"org {excerpt(org_id)} is not allowed (ENOS_IMPORT_ALLOWED_ORGS lists the orgs "
            "this service imports into)"
        )


def check_source_path(settings: Settings, source: str) -> Path:
    """The path to open for a queued source: refused unless it resolves, symlinks followed,
    inside a source root, and unless its last component is a file of its own (not a link).
    The resolved path is returned, so what is opened is what was checked."""
    roots = settings.source_root_paths
    resolved = Path(os.path.realpath(source))
    if not any(resolved.is_relative_to(root) for root in roots):
        where = ", ".join(str(r) for r in roots) or "none is set: ENOS_IMPORT_SOURCE_ROOTS"
        raise Refused(
            f"source is outside the allowed folders: {excerpt(source, 200)} (allowed: {where})"
        )
    if Path(source).is_symlink():
        raise Refused(f"{excerpt(source, 200)}: is a symbolic link; name the file itself")
    return resolved
