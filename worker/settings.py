"""The one typed settings object: every knob of the service, read from ``ENOS_IMPORT_*``.

Nothing else in the project reads the environment. CLI flags fall back to these values.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


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
    connect_timeout_s: float = Field(default=5.0, gt=0)
    read_timeout_s: float = Field(default=60.0, gt=0, description="Longest wait for an answer.")
    verify_tls: bool = Field(default=True, description="Verify the gateway's TLS certificate.")

    # Logs.
    log_format: str = Field(default="auto", pattern="^(auto|console|json)$")
    log_level: str = Field(default="INFO")

    @model_validator(mode="after")
    def _check(self) -> Settings:
        self.api_url = self.api_url.rstrip("/")
        return self


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()
