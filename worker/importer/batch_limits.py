"""What EnOS has shown about an org's batch limit (99400 for a batch that is too large).

The largest batch that passed and the smallest refused are remembered per org, so that later
chunks are cut to a size known to pass before they are sent, instead of being refused first.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import func, update

from worker.db.clock import greatest, least
from worker.db.models import BATCH_LIMITS
from worker.db.session import Session
from worker.db.upsert import upsert


def record(session: Session, org_id: str, ok_size: int | None, refused_size: int | None) -> None:
    """Remembers a batch size that passed, or one refused with 99400."""
    table = BATCH_LIMITS
    current = table.c

    def merged(excluded: Any) -> dict[str, Any]:
        return {
            "largest_ok": greatest(current.largest_ok, excluded.largest_ok),
            "smallest_refused": func.coalesce(
                least(current.smallest_refused, excluded.smallest_refused),
                current.smallest_refused,
                excluded.smallest_refused,
            ),
        }

    values = {"org_id": org_id, "largest_ok": ok_size or 0, "smallest_refused": refused_size}
    upsert(session, table, values, ["org_id"], merged)
    # A batch at least as large as a refused one passed: that refusal was not about size.
    session.execute(
        update(table)
        .where(
            current.org_id == org_id,
            current.smallest_refused.is_not(None),
            current.smallest_refused <= current.largest_ok,
        )
        .values(smallest_refused=None)
    )
