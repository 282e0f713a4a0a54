"""What a queue message may ask for: strict types, allowed orgs, sources inside the roots."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import pytest

from worker.importer.boundary import Refused, check_org, check_source_path, parse_submit
from worker.settings import load_settings

JOB = str(uuid.uuid4())


def test_a_good_message_is_parsed() -> None:
    message = parse_submit("/in/d.csv", "o-1", {"require_secret": True}, JOB.upper(), {})
    assert (message.source, message.org_id, message.job_id) == ("/in/d.csv", "o-1", JOB)
    assert message.options == {"require_secret": True}


@pytest.mark.parametrize(
    ("source", "org_id", "options", "job_id", "unknown", "problem"),
    [
        ({"path": "/etc/passwd"}, "o", None, JOB, {}, "source must be a path"),
        (42, "o", None, JOB, {}, "not int"),
        ("d.csv", 7, None, JOB, {}, "org_id must be a string"),
        ("d.csv", "o", {"require_secret": "yes"}, JOB, {}, "require_secret must be true or false"),
        ("d.csv", "o", {"sneaky": 1}, JOB, {}, "unknown option 'sneaky'"),
        ("d.csv", "o", {"format": "xml"}, JOB, {}, "format must be one of csv, jsonl, json"),
        ("d.csv", "o", [], JOB, {}, "options must be an object"),
        ("d.csv", "o", None, "not-a-uuid", {}, "job_id must be a UUID"),
        ("d.csv", "o", None, JOB, {"extra": 1}, "unknown arguments 'extra'"),
    ],
)
def test_a_malformed_message_is_refused_naming_the_problem(
    source: Any, org_id: Any, options: Any, job_id: Any, unknown: dict[str, Any], problem: str
) -> None:
    with pytest.raises(Refused, match="malformed message") as caught:
        parse_submit(source, org_id, options, job_id, unknown)
    assert problem in str(caught.value)


def test_only_allowed_orgs_and_the_default_org() -> None:
    settings = load_settings(allowed_orgs="o-a, o-b", org_id="o-default")
    for org in ("o-a", "o-b", "o-default"):
        check_org(settings, org)
    with pytest.raises(Refused, match="org 'o-c' is not allowed"):
        check_org(settings, "o-c")
    check_org(load_settings(), "any-org")  # not set: any org


def test_a_source_must_resolve_inside_a_root(tmp_path: Path) -> None:
    root, inbox, other = tmp_path / "root", tmp_path / "inbox", tmp_path / "other"
    for folder in (root, inbox, other):
        folder.mkdir()
    settings = load_settings(source_roots=str(root), inbox_dir=inbox)
    (root / "d.csv").write_text("x")
    assert check_source_path(settings, str(root / "d.csv")) == (root / "d.csv").resolve()
    assert check_source_path(settings, str(inbox / "x.csv")) == (inbox / "x.csv").resolve()
    for outside in (str(other / "d.csv"), "/etc/passwd", "/proc/self/environ", f"{root}/../x"):
        with pytest.raises(Refused, match="source is outside the allowed folders"):
            check_source_path(settings, outside)
    (root / "passwd.csv").symlink_to("/etc/passwd")
    with pytest.raises(Refused, match="outside the allowed folders"):
        check_source_path(settings, str(root / "passwd.csv"))
    (root / "inside.csv").symlink_to(root / "d.csv")
    with pytest.raises(Refused, match="is a symbolic link"):
        check_source_path(settings, str(root / "inside.csv"))
    with pytest.raises(Refused, match="none is set"):
        check_source_path(load_settings(), str(root / "d.csv"))
