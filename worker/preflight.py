"""Refusing to start with a placeholder password: ``change-me`` from ``.env.example`` must never
reach production. The migration (which every other process waits for in Compose and systemd),
the workers and beat check this at start-up."""

from __future__ import annotations

from urllib.parse import unquote, urlsplit

from worker.settings import Settings, SettingsError

PLACEHOLDERS = frozenset({"change-me", "changeme", "change_me", "password", "secret", "example"})


def _url_password(url: str) -> str | None:
    password = urlsplit(url).password
    return None if password is None else unquote(password)


def placeholder_problems(settings: Settings) -> list[str]:
    """The variables that hold a placeholder password, by name (never the value)."""
    problems = []
    for name in ("database_url", "broker_url", "redis_url"):
        password = _url_password(getattr(settings, name))
        if password is not None and password.lower() in PLACEHOLDERS:
            problems.append(f"ENOS_IMPORT_{name.upper()} holds a placeholder password")
    if settings.secret_key.get_secret_value().lower() in PLACEHOLDERS:
        problems.append("ENOS_IMPORT_SECRET_KEY is a placeholder")
    return problems


def refuse_placeholders(settings: Settings) -> None:
    problems = placeholder_problems(settings)
    if problems:
        raise SettingsError(
            f"configuration: {'; '.join(problems)}: set real values in deploy/.env "
            "(or /etc/enos-import/env)"
        )
