"""What a worker process holds for its work (sending, intakes, sweeps, rollbacks): one of each,
created once per process (see :mod:`worker.runtime`)."""

from __future__ import annotations

from dataclasses import dataclass

from worker.db.session import Database
from worker.enos.client import EnosClient
from worker.importer.budget import RateBudget
from worker.settings import Settings


@dataclass
class WorkerContext:
    db: Database
    client: EnosClient
    settings: Settings
    budget: RateBudget
    owner: str
