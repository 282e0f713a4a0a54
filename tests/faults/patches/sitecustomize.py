"""Test-only patches for the fault suite (never on a real deployment's path).

``FAULTS_PATCH=no-sweeper`` makes the sweeper do nothing; ``FAULTS_PATCH=no-claim`` lets every
delivery take a chunk whatever its state (no lease, no fencing). The fault suite must fail under
either: it is the sweeper and the claim that recover the work, not luck.
"""

from __future__ import annotations

import os

_PATCH = os.environ.get("FAULTS_PATCH")

if _PATCH == "no-sweeper":
    from worker.importer import sweeper

    def _no_sweep(*args: object, **kwargs: object) -> sweeper.SweepReport:
        return sweeper.SweepReport()

    sweeper.sweep = _no_sweep

elif _PATCH == "no-claim":
    from sqlalchemy import func, update

    from worker.db.clock import db_epoch
    from worker.db.models import CHUNKS, ChunkStatus
    from worker.importer import chunks

    def _take_anyway(session, chunk_id, owner, lease_s):
        now = db_epoch()
        row = (
            session.connection()
            .execute(
                update(CHUNKS)
                .where(CHUNKS.c.id == chunk_id, CHUNKS.c.status != ChunkStatus.DONE)
                .values(
                    status=ChunkStatus.IN_FLIGHT,
                    attempts=CHUNKS.c.attempts + 1,
                    lease_expires_at=now + lease_s,
                    lease_owner=owner,
                    first_attempt_at=func.coalesce(CHUNKS.c.first_attempt_at, now),
                )
                .returning(
                    CHUNKS.c.job_id,
                    CHUNKS.c.seq,
                    CHUNKS.c.fencing_token,
                    CHUNKS.c.attempts,
                    CHUNKS.c.needs_reconcile,
                    CHUNKS.c.first_attempt_at,
                    now,
                )
            )
            .first()
        )
        if row is None:
            return None
        return chunks.Claim(chunk_id, row[0], row[1], row[2], row[3], False, row[5], row[6])

    chunks.claim = _take_anyway
