"""What one process holds for the import: the database, the EnOS client, the rate budget and
the way it publishes messages. Built once per process (after a prefork worker forks)."""

from __future__ import annotations

import functools
import os
import socket
import ssl
import threading
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

import httpx
import redis

from worker.context import WorkerContext
from worker.db.session import Database, database_url, make_engine
from worker.enos.client import EnosClient
from worker.importer.budget import LocalBudget, RateBudget, RedisBudget
from worker.logs import get_logger, warn_always
from worker.metrics import MeteredEnosClient
from worker.settings import Settings, get_settings

log = get_logger(__name__)

_lock = threading.Lock()
_context: tuple[int, WorkerContext] | None = None


def lease_owner() -> str:
    """Who holds a lease: host and process, so that a dead holder can be recognised."""
    return f"{socket.gethostname()}:{os.getpid()}"


LOOPBACK_HOSTS = frozenset({"localhost", "127.0.0.1", "::1"})


def transport_warnings(settings: Settings) -> None:
    """Says at start-up when the way to EnOS is not protected: every process that may talk to
    EnOS calls this (workers, beat, the CLI)."""
    if not settings.verify_tls:
        warn_always(
            "tls.verification_off",
            api_url=settings.api_url,
            warning="TLS certificates of the EnOS gateway are NOT verified (--insecure)",
        )
    parts = urlsplit(settings.api_url)
    if parts.scheme == "http" and (parts.hostname or "") not in LOOPBACK_HOSTS:
        log.warning(
            "tls.plain_http",
            api_url=settings.api_url,
            warning="the EnOS API URL is plain http:// to another host: credentials and "
            "device secrets cross the network unencrypted",
        )


def make_client(settings: Settings, **kwargs: Any) -> EnosClient:
    transport_warnings(settings)
    return MeteredEnosClient(
        settings.api_url,
        settings.access_key,
        settings.secret_key,
        connect_timeout=settings.connect_timeout_s,
        read_timeout=settings.read_timeout_s,
        max_connections=max(16, settings.max_concurrency * 2),
        verify=tls_verification(settings),
        **kwargs,
    )


def tls_verification(settings: Settings) -> bool | ssl.SSLContext:
    """Off (``--insecure``), the system's CAs, or the private CA of ``ENOS_IMPORT_CA_BUNDLE``."""
    if not settings.verify_tls:
        return False
    return _tls_context(None if settings.ca_bundle is None else str(settings.ca_bundle))


@functools.lru_cache(maxsize=4)
def _tls_context(ca_bundle: str | None) -> ssl.SSLContext:
    """One verifying context per process and CA file, made once: loading the CA file is most
    of a client's making (tens of ms), and a prefork child inherits the parent's context."""
    if ca_bundle is None:
        return httpx.create_ssl_context()  # certifi's CAs, or SSL_CERT_FILE / SSL_CERT_DIR
    return ssl.create_default_context(cafile=ca_bundle)


def prepare(settings: Settings) -> None:
    """Does in a prefork worker's parent what every child would otherwise do on its first task:
    load the database dialect (a throwaway engine, never connected) and the TLS context."""
    make_engine(database_url(settings.database_url)).dispose()
    tls_verification(settings)


def make_budget(settings: Settings, shared: bool) -> RateBudget:
    if not shared:
        return LocalBudget(settings.max_concurrency, max_wait_s=settings.lease_s / 4)
    url = settings.redis_url or settings.broker_url
    client = redis.Redis.from_url(url, socket_timeout=5, socket_connect_timeout=5)
    return RedisBudget(
        client,
        name=f"{settings.api_url}|{settings.access_key}",
        capacity=settings.max_concurrency,
        slot_ttl_s=settings.read_timeout_s + 30,
        max_wait_s=settings.lease_s / 4,
    )


def send_context(
    factory: Callable[[], WorkerContext] | None = None,
) -> WorkerContext:
    """This process's context, built on first use (and again in a forked child)."""
    global _context
    with _lock:
        if _context is None or _context[0] != os.getpid():
            _context = (os.getpid(), (factory or _default_context)())
        return _context[1]


def install_context(context: WorkerContext) -> None:
    """Used by the embedded runner and tests to choose the process's context."""
    global _context
    with _lock:
        _context = (os.getpid(), context)


def _default_context() -> WorkerContext:
    settings = get_settings()
    return WorkerContext(
        db=Database(database_url(settings.database_url)),
        client=make_client(settings),
        settings=settings,
        budget=make_budget(settings, shared=not settings.broker_url.startswith("memory")),
        owner=lease_owner(),
    )
