"""A job named on the command line: its whole id, or a unique prefix of at least 6 characters;
anything else is a clean error that says what was wrong."""

from __future__ import annotations

import click
import pytest

from worker.cli.common import resolve_job_id
from worker.db.session import Database
from worker.importer.jobs import create_job

IDS = [
    "29409691-0000-4000-8000-000000000001",
    "29409691-0000-4000-8000-000000000002",
    "7f3c2a10-0000-4000-8000-000000000003",
]


@pytest.fixture
def known(db: Database) -> Database:
    with db.begin() as session:
        for job_id in IDS:
            assert create_job(session, job_id, "o-demo", "inline", {})
    return db


@pytest.mark.parametrize(
    ("given", "found"),
    [
        (IDS[2], IDS[2]),
        ("7f3c2a", IDS[2]),
        ("  7F3C2A10-0000 ", IDS[2]),
        (IDS[0], IDS[0]),  # whole, though it is also a prefix of nothing else
    ],
)
def test_a_whole_id_or_a_unique_prefix_names_its_job(
    known: Database, given: str, found: str
) -> None:
    assert resolve_job_id(known, given) == found


@pytest.mark.parametrize(
    ("given", "message"),
    [
        ("", "no job id given"),
        ("   ", "no job id given"),
        ("7f3c", "no job 7f3c (a job id prefix needs at least 6 characters)"),
        ("29409691", "job id prefix 29409691 is ambiguous: it matches"),
        ("7f3c2a_%", "no job 7f3c2a_%"),  # LIKE's wildcards are literal characters here
        ("ffffffff", "no job ffffffff"),
    ],
)
def test_anything_else_is_a_clean_error(known: Database, given: str, message: str) -> None:
    with pytest.raises(click.ClickException) as raised:
        resolve_job_id(known, given)
    assert raised.value.message.startswith(message), raised.value.message
