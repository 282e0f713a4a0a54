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


class _CurrentStderr:
    """Whatever ``sys.stderr`` is at the time of writing: while rich shows a live progress bar,
    that is rich's proxy, which prints each line above the bar instead of through it."""

    def write(self, text: str) -> int:
        return sys.stderr.write(text)

    def flush(self) -> None:
        sys.stderr.flush()


# Lines about single chunks: at a terminal they would bury what an operator needs, so there
# they are DEBUG (``-v`` brings them back); a log collector gets them all.
PER_CHUNK_EVENTS = frozenset({"chunk.sent", "chunk.retry"})


def _drop_per_chunk(
    _: Any, method: str, event: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    if method == "info" and event.get("event") in PER_CHUNK_EVENTS:
        raise structlog.DropEvent
    return event


def configure(level: str = "INFO", fmt: str = "auto", verbose: bool = False) -> None:
    """Sends structured logs to stderr; ``fmt`` is ``console``, ``json`` or ``auto``.

    At a terminal, per-chunk lines are DEBUG: they show with ``verbose`` or at level DEBUG."""
    use_console = fmt == "console" or (fmt == "auto" and sys.stderr.isatty())
    quiet_chunks = sys.stderr.isatty() and not verbose and level.upper() != "DEBUG"
    renderer: Any = (
        structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty())
        if use_console
        else structlog.processors.JSONRenderer()
    )
    stream: Any = _CurrentStderr()
    logging.basicConfig(level=level.upper(), stream=stream, format="%(message)s", force=True)
    # Library loggers stay quiet: httpx would print request URLs, the others narrate routine.
    for noisy in ("httpx", "httpcore", "alembic", "celery", "kombu", "amqp"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, logging.getLevelName(level.upper())))
    structlog.configure(
        processors=[
            *([_drop_per_chunk] if quiet_chunks else []),
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            _drop_secrets,
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelName(level.upper())),
        logger_factory=structlog.PrintLoggerFactory(stream),
        cache_logger_on_first_use=True,
    )


def get_logger(name: str) -> structlog.typing.FilteringBoundLogger:
    logger: structlog.typing.FilteringBoundLogger = structlog.get_logger(name)
    return logger


def warn_always(event: str, **fields: Any) -> None:
    """A warning that shows whatever the log level (``--insecure``): an operator must not be
    able to silence it by accident."""
    config = structlog.get_config()
    logger = structlog.wrap_logger(
        config["logger_factory"](),
        processors=config["processors"],
        wrapper_class=structlog.BoundLogger,
    )
    logger.warning(event, **fields)
