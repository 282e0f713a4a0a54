"""The one typed settings object: every knob of the service, read from ``ENOS_IMPORT_*``.

Nothing else in the project reads the environment. CLI flags fall back to these values.
"""

from __future__ import annotations

import os
import zoneinfo
from collections.abc import Iterator
from functools import lru_cache
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from pydantic import Field, SecretStr, ValidationError, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from worker.readers.sources import IntakeLimits


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="ENOS_IMPORT_", extra="ignore")

    # Where things are.
    database_url: str = Field(
        default="",
        description="SQLAlchemy URL; empty means a local SQLite file (enos-import.db).",
    )
    broker_url: str = Field(default="redis://127.0.0.1:6379/0", description="Celery broker URL.")
    api_url: str = Field(default="http://127.0.0.1:8765", description="EnOS API gateway URL.")

    # Who we are on EnOS.
    access_key: str = Field(default="", description="Service account AccessKey (appKey).")
    secret_key: SecretStr = Field(default=SecretStr(""), description="Service account SecretKey.")
    org_id: str = Field(default="", description="Default organization (OU) id.")
    private_key_file: Path | None = Field(
        default=None, description="PEM private key of the account, only for secrets export."
    )

    # How we talk to EnOS.
    batch_size: int = Field(default=1000, ge=1, le=1000, description="Devices per batchCreate.")
    max_concurrency: int = Field(default=8, ge=1, description="batchCreate calls in flight.")
    connect_timeout_s: float = Field(default=5.0, gt=0, description="Longest wait to connect.")
    read_timeout_s: float = Field(default=25.0, gt=0, description="Longest wait for an answer.")
    verify_tls: bool = Field(default=True, description="Verify the gateway's TLS certificate.")
    ca_bundle: Path | None = Field(
        default=None, description="PEM file of a private CA that signed the gateway's certificate."
    )

    # Sending: leases, retries and the schedule they keep in the database.
    lease_s: float = Field(
        default=40.0,
        gt=0,
        description="How long a claimed chunk is ours; renewed before a call the claim's lease "
        "no longer covers (> connect + read timeout). A dead worker's chunks are sent again "
        "about this long after it died.",
    )
    visibility_timeout_s: float = Field(
        default=3600.0, gt=0, description="Redis redelivers an unacked message after this."
    )
    max_attempts: int = Field(
        default=10, ge=1, description="Attempts of a chunk before its rows fail."
    )
    max_age_s: float = Field(
        default=6 * 3600.0, gt=0, description="Age of a chunk after which its rows fail."
    )
    backoff_base_s: float = Field(default=1.0, gt=0, description="First retry delay (doubles).")
    backoff_max_s: float = Field(default=120.0, gt=0, description="Longest retry delay.")
    reconcile_delay_s: float = Field(
        default=2.0,
        ge=0,
        description="Wait before looking up devices after a lost answer (EnOS reads lag ~2 s).",
    )
    republish_after_s: float = Field(
        default=60.0, gt=0, description="A published chunk not taken by then is published again."
    )
    sweep_interval_s: float = Field(default=5.0, gt=0, description="Sweeper period (Celery beat).")
    window: int = Field(
        default=0, ge=0, description="Chunks of one job published at once (0: 2 x concurrency)."
    )
    key_mode: str = Field(
        default="derive",
        pattern="^(derive|platform)$",
        description="Rows without deviceKey: derive a stable key, or leave it to EnOS.",
    )
    redis_url: str = Field(
        default="", description="Redis for the shared rate budget (default: the broker)."
    )

    # Intake limits.
    max_file_bytes: int = Field(default=4 * 1024**3, gt=0, description="Largest input file.")
    max_field_chars: int = Field(
        default=64 * 1024,
        gt=0,
        description="Longest cell or JSON value; a CSV line may be 4x, a JSON Lines line 16x.",
    )
    max_rows: int = Field(default=5_000_000, gt=0, description="Most rows read from a file.")
    max_columns: int = Field(
        default=1_000, gt=0, description="Most columns (CSV header, or flattened JSON fields)."
    )

    # The trust boundary of the queue and the inbox (worker/importer/boundary.py).
    source_roots: str = Field(
        default="",
        description="Comma-separated folders a queued source path may be in (the inbox always).",
    )
    allowed_orgs: str = Field(
        default="", description="Comma-separated orgs messages may import into (empty: any)."
    )
    max_intake_attempts: int = Field(
        default=3, ge=1, description="Intakes of one job started before it fails."
    )
    task_time_limit_s: float = Field(
        default=3600.0, gt=0, description="Soft time limit of an intake or an inbox scan."
    )
    worker_max_memory_mb: int = Field(
        default=1024, ge=64, description="A worker child above this after a task is replaced."
    )

    # Nightly imports (worker/inbox/).
    inbox_dir: Path | None = Field(
        default=None, description="Folder of <org_id>/ folders whose files are imported."
    )
    inbox_schedule: str = Field(
        default="0 2 * * *", description="Crontab of the inbox scan (Celery beat)."
    )
    inbox_timezone: str = Field(default="UTC", description="Time zone of INBOX_SCHEDULE.")
    inbox_scan_interval_s: float = Field(
        default=0.0, ge=0, description="Scan every N seconds instead of INBOX_SCHEDULE (0: off)."
    )
    inbox_settle_s: float = Field(
        default=60.0, ge=0, description="A file must keep its size and mtime this long."
    )
    inbox_require_ready: bool = Field(
        default=False, description="Take a file only beside its <name>.ready marker."
    )

    # Completion events (worker/importer/events.py).
    on_finish_task: str = Field(
        default="", description="Celery task published when a job ends (empty: none)."
    )
    on_finish_queue: str = Field(
        default="enos_import_events", description="Queue of ON_FINISH_TASK."
    )

    # Operations.
    metrics_port: int = Field(
        default=0, ge=0, le=65535, description="Workers serve Prometheus /metrics here (0: off)."
    )
    metrics_dir: str = Field(
        default="",
        description="Where prefork children keep their metric files (default: a temporary one).",
    )

    # Logs.
    log_format: str = Field(
        default="auto", pattern="^(auto|console|json)$", description="auto: console on a terminal."
    )
    log_level: str = Field(default="INFO", description="DEBUG, INFO, WARNING or ERROR.")

    @model_validator(mode="after")
    def _check(self) -> Settings:
        self.api_url = self.api_url.rstrip("/")
        # The timeouts nest, so that a chunk is always recovered by the database lease and
        # never by a broker redelivery racing a live attempt. A call starts right after its
        # lease was renewed, so connecting and reading must end within the lease.
        call_s = self.connect_timeout_s + self.read_timeout_s
        if not call_s < self.lease_s < self.visibility_timeout_s:
            raise ValueError(
                "timeouts must nest: CONNECT_TIMEOUT_S + READ_TIMEOUT_S < LEASE_S < "
                f"VISIBILITY_TIMEOUT_S (now {self.connect_timeout_s} + {self.read_timeout_s} / "
                f"{self.lease_s} / {self.visibility_timeout_s})"
            )
        if len(self.inbox_schedule.split()) != 5:
            raise ValueError("INBOX_SCHEDULE must be a crontab of five fields, e.g. '0 2 * * *'")
        try:
            zoneinfo.ZoneInfo(self.inbox_timezone)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError):
            raise ValueError("INBOX_TIMEZONE must be an IANA time zone such as UTC") from None
        return self

    @property
    def source_root_paths(self) -> list[Path]:
        """The folders a queued source may be in, resolved; the inbox is always one."""
        roots = [Path(p.strip()) for p in self.source_roots.split(",") if p.strip()]
        if self.inbox_dir is not None:
            roots.append(self.inbox_dir)
        return [Path(os.path.realpath(root)) for root in roots]

    @property
    def allowed_org_ids(self) -> frozenset[str] | None:
        """The orgs messages may import into; ``None``: any (the default org always)."""
        orgs = {o.strip() for o in self.allowed_orgs.split(",") if o.strip()}
        if not orgs:
            return None
        return frozenset(orgs | ({self.org_id} if self.org_id else set()))

    def __repr_args__(self) -> Iterator[tuple[str | None, Any]]:
        # A URL may hold a password (postgresql://user:pw@…, redis://:pw@…): never show it.
        for name, value in super().__repr_args__():
            yield name, mask_url(value) if name in URL_FIELDS and isinstance(value, str) else value

    def intake_limits(self) -> IntakeLimits:
        return IntakeLimits(
            max_file_bytes=self.max_file_bytes,
            max_field_chars=self.max_field_chars,
            max_rows=self.max_rows,
            max_columns=self.max_columns,
        )

    @property
    def publish_window(self) -> int:
        return self.window or 2 * self.max_concurrency


URL_FIELDS = frozenset({"database_url", "broker_url", "redis_url", "api_url"})


def mask_url(url: str) -> str:
    """``url`` with its password (if any) replaced by ``***``."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    user = f"{parts.username}:" if parts.username else ":"
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit(parts._replace(netloc=f"{user}***@{host}"))


class SettingsError(ValueError):
    """The configuration is wrong; the message names each variable, never its value."""


def load_settings(**overrides: Any) -> Settings:
    try:
        return Settings(**overrides)
    except ValidationError as exc:
        # pydantic's own message shows every input (the secret key too) when a check across
        # fields fails: say what is wrong without the values.
        problems = "; ".join(
            f"{'ENOS_IMPORT_' + '.'.join(map(str, e['loc'])).upper() if e['loc'] else 'settings'}"
            f": {e['msg']}"
            for e in exc.errors(include_input=False, include_url=False)
        )
        raise SettingsError(f"configuration: {problems}") from None


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return load_settings()
