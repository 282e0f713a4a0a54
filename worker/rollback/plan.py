"""What a rollback deletes, and the rollback job that does it.

A rollback is a job of its own (``source`` = ``rollback:<job id>``, ``options.kind`` =
``rollback``), with one item per device to delete and chunks like an import's, so that it is
claimed, leased, fenced, retried, swept and finished by the same machinery. Its items carry the
original row's line, keys and cells; their payload says which assetId to delete and which
original row to mark ``rolled_back``.

Only rows the job *created* are candidates: never ``adopted`` rows (the device existed before),
and never a device that another job's row created or adopted since (it would pull a device from
under that job). Each device's productKey and deviceKey are checked again on EnOS right before
it is deleted (:mod:`worker.rollback.delete`).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

import orjson
from sqlalchemy import func, select

from worker.db.models import FINAL_JOB_STATES, ITEMS, JOBS, ItemStatus, JobStatus
from worker.db.session import Session
from worker.importer import jobs
from worker.importer.intake import plan_chunks

KIND = "rollback"
SOURCE_PREFIX = "rollback:"
# Delete Device takes one device a call, each checked with Get Device first: small chunks keep
# a chunk's calls well inside its lease and spread the job over the window of workers.
CHUNK_SIZE = 50


class RollbackRefused(ValueError):
    """The job cannot be rolled back (now); the message says why."""


@dataclass(frozen=True, slots=True)
class Candidate:
    item_id: int
    line: int
    product_key: str
    device_key: str
    asset_id: str
    cells: Any


@dataclass(slots=True)
class RollbackPlan:
    job_id: str
    org_id: str
    delete: list[Candidate]
    kept: list[tuple[Candidate, str]]  # created here, but another job relies on the device


def is_rollback(options: Any) -> bool:
    return isinstance(options, dict) and options.get("kind") == KIND


def plan(session: Session, job_id: str) -> RollbackPlan:
    """The devices a rollback of ``job_id`` would delete, and those it keeps and why."""
    job = session.execute(
        select(JOBS.c.status, JOBS.c.org_id, JOBS.c.options).where(JOBS.c.id == job_id)
    ).first()
    if job is None:
        raise RollbackRefused(f"no job {job_id}")
    if is_rollback(job.options):
        raise RollbackRefused(f"job {job_id} is itself a rollback; deleted devices stay deleted")
    if job.status not in FINAL_JOB_STATES:
        raise RollbackRefused(
            f"job {job_id} is {job.status}; cancel it or let it end before rolling it back"
        )
    running = session.execute(
        select(JOBS.c.id).where(
            JOBS.c.source == SOURCE_PREFIX + job_id,
            JOBS.c.status.not_in(tuple(FINAL_JOB_STATES)),
        )
    ).first()
    if running is not None:
        raise RollbackRefused(f"rollback job {running.id} of job {job_id} is still running")
    users = _other_users(session, job_id)
    result = RollbackPlan(job_id, job.org_id, [], [])
    rows = session.execute(
        select(
            ITEMS.c.id,
            ITEMS.c.line_no,
            ITEMS.c.product_key,
            ITEMS.c.device_key,
            ITEMS.c.asset_id,
            ITEMS.c.cells,
        )
        .where(
            ITEMS.c.job_id == job_id,
            ITEMS.c.status == ItemStatus.CREATED,
            ITEMS.c.asset_id.is_not(None),
        )
        .order_by(ITEMS.c.line_no)
        .execution_options(yield_per=5000)
    )
    for row in rows:
        candidate = Candidate(*row)
        other = users.get(candidate.asset_id)
        if other is None:
            result.delete.append(candidate)
        else:
            result.kept.append((candidate, f"kept: job {other} also holds this device"))
    return result


def _other_users(session: Session, job_id: str) -> dict[str, str]:
    """assetId → another import job whose row created or adopted that device (of this job's
    created devices only)."""
    mine = select(ITEMS.c.asset_id).where(
        ITEMS.c.job_id == job_id, ITEMS.c.status == ItemStatus.CREATED
    )
    other = ITEMS.alias("other")
    rows = session.execute(
        select(other.c.asset_id, func.min(other.c.job_id))
        .join(JOBS, JOBS.c.id == other.c.job_id)
        .where(
            other.c.job_id != job_id,
            other.c.status.in_((ItemStatus.CREATED, ItemStatus.ADOPTED)),
            other.c.asset_id.in_(mine),
            ~JOBS.c.source.startswith(SOURCE_PREFIX),
        )
        .group_by(other.c.asset_id)
    )
    return {str(asset): str(job) for asset, job in rows}


def create(session: Session, rollback: RollbackPlan, chunk_size: int = CHUNK_SIZE) -> str:
    """Records the rollback job with its items and chunks, ``running``; returns its id. The
    caller publishes its chunks after the commit."""
    new_id = str(uuid.uuid4())
    columns = session.execute(
        select(JOBS.c.columns).where(JOBS.c.id == rollback.job_id)
    ).scalar_one()
    session.execute(
        JOBS.insert().values(
            id=new_id,
            status=JobStatus.RUNNING,
            org_id=rollback.org_id,
            source=SOURCE_PREFIX + rollback.job_id,
            options={"kind": KIND, "of": rollback.job_id},
            columns=columns,
            total=len(rollback.delete) + len(rollback.kept),
            intake_token=0,
            intake_attempts=0,
            started_at=func.now(),
        )
    )
    rows = _item_rows(new_id, rollback, chunk_size)
    for start in range(0, len(rows), 5000):
        session.execute(ITEMS.insert(), rows[start : start + 5000])
    plan_chunks(session, new_id)
    jobs.finish_if_done(session, new_id)  # nothing to delete: the job ends here
    return new_id


def _item_rows(new_id: str, rollback: RollbackPlan, chunk_size: int) -> list[dict[str, Any]]:
    """The rollback job's rows: one pending row per device to delete, in chunks, and one
    ``failed`` row per device kept (with the reason)."""
    rows: list[dict[str, Any]] = [
        {
            "job_id": new_id,
            "chunk_seq": index // chunk_size,
            "line_no": c.line,
            "product_key": c.product_key,
            "device_key": c.device_key,
            "key_source": "file",
            "payload": orjson.dumps({"assetId": c.asset_id, "of": c.item_id}).decode(),
            "cells": c.cells,
            "status": ItemStatus.PENDING,
            "asset_id": c.asset_id,
            "attempts": 0,
            "retryable": False,
        }
        for index, c in enumerate(rollback.delete)
    ]
    rows += [
        {
            "job_id": new_id,
            "chunk_seq": None,
            "line_no": c.line,
            "product_key": c.product_key,
            "device_key": c.device_key,
            "key_source": "file",
            "payload": None,
            "cells": c.cells,
            "status": ItemStatus.FAILED,
            "asset_id": c.asset_id,
            "error_message": reason,
            "attempts": 0,
            "retryable": False,
        }
        for c, reason in rollback.kept
    ]
    return rows
