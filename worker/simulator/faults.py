"""Fault injection for batchCreate and Delete Device calls: latency (batchCreate), gateway
errors, throttling, lost answers.

A profile is written as ``key=value`` pairs (``latency_ms=50,http503=0.02,seed=7``) or the same keys
as JSON. Each batchCreate call draws at most one call-level fault, in the order of
``CALL_FAULTS`` (one uniform draw against the cumulative rates, so the faults exclude each other);
``item11714`` is drawn per item and only hits items sent without a deviceKey.
"""

from __future__ import annotations

import random
from dataclasses import asdict, dataclass, field, fields
from typing import Any

CALL_FAULTS = (
    "http500",
    "http503",
    "http429",
    "timeout_after_commit",
    "reset_before_commit",
    "reset_after_commit",
)


class FaultSpecError(ValueError):
    """A fault profile that cannot be understood."""


@dataclass
class FaultProfile:
    latency_ms: float = 0.0
    per_device_us: float = 0.0
    http500: float = 0.0
    http503: float = 0.0
    http429: float = 0.0
    item11714: float = 0.0
    timeout_after_commit: float = 0.0
    reset_before_commit: float = 0.0
    reset_after_commit: float = 0.0
    retry_after_s: float = 1.0
    seed: int | None = None
    _rand: random.Random = field(default_factory=random.Random, repr=False, compare=False)

    def __post_init__(self) -> None:
        for name in (*CALL_FAULTS, "item11714"):
            rate = getattr(self, name)
            if not 0.0 <= rate <= 1.0:
                raise FaultSpecError(f"{name}={rate}: a rate is between 0 and 1")
        if sum(getattr(self, name) for name in CALL_FAULTS) > 1.0:
            raise FaultSpecError("the call-level fault rates add up to more than 1")
        if self.latency_ms < 0 or self.per_device_us < 0 or self.retry_after_s < 0:
            raise FaultSpecError("latency_ms, per_device_us and retry_after_s are not negative")
        self._rand = random.Random(self.seed)

    @classmethod
    def parse(cls, spec: str) -> FaultProfile:
        """From ``key=value,key=value`` (empty text is no faults)."""
        values: dict[str, Any] = {}
        for part in filter(None, (p.strip() for p in spec.split(","))):
            key, sep, value = part.partition("=")
            if not sep:
                raise FaultSpecError(f"{part!r}: expected key=value")
            values[key.strip()] = value.strip()
        return cls.from_mapping(values)

    @classmethod
    def from_mapping(cls, values: dict[str, Any]) -> FaultProfile:
        known = {f.name: f for f in fields(cls) if not f.name.startswith("_")}
        kwargs: dict[str, Any] = {}
        for key, value in values.items():
            if key not in known:
                raise FaultSpecError(f"unknown fault {key!r}; known: {', '.join(known)}")
            if key == "seed" and value is None:
                continue  # no seed, as as_dict() shows it
            try:
                kwargs[key] = int(value) if key == "seed" else float(value)
            except (TypeError, ValueError) as exc:
                raise FaultSpecError(f"{key}={value!r} is not a number") from exc
        return cls(**kwargs)

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data.pop("_rand")
        return data

    def delay_s(self, devices: int) -> float:
        return (self.latency_ms / 1000.0) + devices * self.per_device_us / 1_000_000.0

    def draw_call_fault(self) -> str | None:
        roll = self._rand.random()
        threshold = 0.0
        for name in CALL_FAULTS:
            threshold += getattr(self, name)
            if roll < threshold:
                return name
        return None

    def draw_item11714(self) -> bool:
        return self.item11714 > 0 and self._rand.random() < self.item11714
