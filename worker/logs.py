"""Structured logging, configured once at each entry point.

Events have stable dotted names (``chunk.sent``, ``chunk.retry``) and bound fields (``job_id``,
``chunk_id``, ``attempt``). Console rendering on a terminal, JSON lines elsewhere. Secrets never
reach a log line: values typed ``SecretStr`` render masked, and the processor below drops any
field whose name says it holds a secret.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import MutableMapping
from typing import Any

import structlog

_SECRET_FIELDS = frozenset(
    {
        "secret",
        "secret_key",
        "app_secret",
        "access_token",
        "token",
        "device_secret",
        "session_key",
        "authorization",
        "apim-accesstoken",
        "apim-signature",
        "encryption",
    }
)


def _drop_secrets(_: Any, __: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    for key in list(event):
        if key.lower() in _SECRET_FIELDS:
            event[key] = "***"
    return event


def configure(level: str = "INFO", fmt: str = "auto") -> None:
    """Sends structured logs to stderr; ``fmt`` is ``console``, ``json`` or ``auto``."""
    use_console = fmt == "console" or (fmt == "auto" and sys.stderr.isatty())
    renderer: Any = (
        structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty())
        if use_console
        else structlog.processors.JSONRenderer()
    )
    logging.basicConfig(level=level.upper(), stream=sys.stderr, format="%(message)s", force=True)
    # Library loggers stay quiet: httpx would print request URLs, the others narrate routine.
    for noisy in ("httpx", "httpcore", "alembic", "celery", "kombu", "amqp"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, logging.getLevelName(level.upper())))
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            _drop_secrets,
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelName(level.upper())),
        logger_factory=structlog.PrintLoggerFactory(sys.stderr),
        cache_logger_on_first_use=True,
    )


def get_logger(name: str) -> structlog.typing.FilteringBoundLogger:
    logger: structlog.typing.FilteringBoundLogger = structlog.get_logger(name)
    return logger
