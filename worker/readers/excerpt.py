"""Untrusted input quoted in an error message: short and escaped."""

from __future__ import annotations

EXCERPT_CHARS = 40


def excerpt(value: object, limit: int = EXCERPT_CHARS) -> str:
    """At most ``limit`` characters of untrusted input, escaped (``repr``), for error messages:
    an error must never carry a file's content back (a secret, a whole line) nor a control
    character into a terminal or a log."""
    text = value if isinstance(value, str) else str(value)
    return repr(text[:limit]) + ("…" if len(text) > limit else "")
