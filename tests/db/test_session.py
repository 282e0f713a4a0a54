"""The unit of work: one transaction, committed at the end of its block or rolled back on an
error; what must follow a commit runs only after one."""

from __future__ import annotations

import pytest
from sqlalchemy import func, insert, select
from sqlalchemy.pool import QueuePool

from worker.db.models import BATCH_LIMITS
from worker.db.session import Database


def limits(db: Database) -> int:
    with db.read() as session:
        return int(session.execute(select(func.count()).select_from(BATCH_LIMITS)).scalar_one())


def test_a_block_that_ends_commits_and_then_runs_its_after_commit_callbacks(db: Database) -> None:
    seen: list[int] = []
    with db.begin() as session:
        session.execute(insert(BATCH_LIMITS).values(org_id="a", largest_ok=1))
        session.after_commit(lambda: seen.append(limits(db)))
        assert seen == []  # not before the commit
    assert seen == [1]  # after it: another connection already sees the row


def test_an_error_rolls_back_and_runs_no_callback(db: Database) -> None:
    seen: list[str] = []
    with pytest.raises(RuntimeError), db.begin() as session:
        session.execute(insert(BATCH_LIMITS).values(org_id="b", largest_ok=1))
        session.after_commit(lambda: seen.append("published"))
        raise RuntimeError("the unit of work failed")
    assert (limits(db), seen) == (0, [])


def test_the_connection_is_taken_at_the_first_statement(db: Database) -> None:
    pool = db.engine.pool
    assert isinstance(pool, QueuePool)
    with db.begin() as session:
        before = pool.checkedout()
        session.execute(select(1))
        assert pool.checkedout() == before + 1
    assert pool.checkedout() == before


def test_a_read_writes_nothing(db: Database) -> None:
    with db.read() as session:
        session.execute(insert(BATCH_LIMITS).values(org_id="c", largest_ok=1))
    assert limits(db) == 0
