"""Writing a device file and reading it back as a source, for the reader tests."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from worker.readers.sources import (
    IntakeLimits,
    Source,
    SourceRow,
    open_source,
)

HEADER = "productKey,deviceKey,deviceName,timezone"


def write(tmp_path: Path, name: str, data: str | bytes) -> Path:
    path = tmp_path / name
    path.write_bytes(data.encode() if isinstance(data, str) else data)
    return path


def read(
    tmp_path: Path, name: str, data: str | bytes, limits: IntakeLimits | None = None
) -> tuple[Source, list[SourceRow]]:
    source = open_source(write(tmp_path, name, data), limits=limits)
    return source, list(source.rows())


def meter(key: str, name: str, timezone: str = "+08:00") -> dict[str, Any]:
    return {
        "productKey": "pk-meter",
        "deviceKey": key,
        "deviceName": {"defaultValue": name},
        "timezone": timezone,
    }
