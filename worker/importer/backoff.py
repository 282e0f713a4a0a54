"""Retry delays: exponential backoff with full jitter, never shorter than ``Retry-After``."""

from __future__ import annotations

import random

from worker.settings import Settings


def retry_delay(settings: Settings, attempt: int, retry_after: float | None) -> float:
    """The wait before attempt ``attempt + 1``: uniform in [0, min(max, base · 2^(attempt-1))]
    ("full jitter"), and at least what EnOS asked for."""
    ceiling = min(settings.backoff_max_s, settings.backoff_base_s * 2 ** max(0, attempt - 1))
    delay = random.uniform(0.0, ceiling)
    if retry_after is not None:
        delay = max(delay, retry_after)
    return delay
