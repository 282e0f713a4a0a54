"""deviceKeys given to rows that have none, before anything is sent.

A derived key depends only on the org, the file's content and the line, so importing the same
file again (after a crash, by a second operator, by a repeated message) finds its devices already
there and adopts them instead of creating them twice.
"""

from __future__ import annotations

import hashlib

DERIVED_PREFIX = "ei-"


def derive_device_key(org_id: str, content_sha256: str, line: int) -> str:
    digest = hashlib.sha256(f"{org_id}\n{content_sha256}\n{line}".encode()).hexdigest()
    return f"{DERIVED_PREFIX}{digest[:32]}"
