"""The fault suite, short run: part of ``make test`` (``make test-faults`` runs 100,000)."""

from __future__ import annotations

import os

import pytest

from tests.faults.scenario import run_scenario

DEVICES = int(os.environ.get("FAULTS_DEVICES", "20000"))


@pytest.mark.timeout(290)
def test_nothing_is_lost_or_created_twice_while_everything_breaks() -> None:
    report = run_scenario(DEVICES, timeout_s=260)

    for event in report.events:
        print(f"{event.name:20} {event.progress_s} s / {event.recovery_s} s  {event.detail}")
    assert report.problems == []
    assert report.status == "completed_with_errors"  # the file has a few invalid rows on purpose
    assert len(report.events) == 10
    assert all(event.progress_s is not None for event in report.events)
    assert all(event.recovery_s is not None for event in report.events)
    assert all(event.resent_s is not None for event in report.events)
    assert set(report.counts) <= {"created", "adopted", "invalid", "review"}
    assert sum(report.counts.values()) == DEVICES
    faults = report.simulator["faults"]
    assert isinstance(faults, dict)
    for fault in ("http500", "http503", "http429", "timeout_after_commit",
                  "reset_before_commit", "reset_after_commit"):  # fmt: skip
        assert faults.get(fault, 0) > 0, f"the simulator never injected {fault}"


@pytest.mark.timeout(290)
def test_products_over_their_room_leave_no_device_unaccounted_for() -> None:
    """30,000 rows over two products of 10,000 devices each, under every fault: EnOS holds
    exactly the created and adopted rows, and the rest failed with 11739."""
    report = run_scenario(30_000, timeout_s=260, capped=True)

    for event in report.events:
        print(f"{event.name:20} {event.progress_s} s / {event.recovery_s} s  {event.detail}")
    assert report.problems == []
    assert report.status == "completed_with_errors"
    assert set(report.counts) <= {"created", "adopted", "invalid", "review", "failed"}
    assert report.counts.get("failed", 0) > 9_000
    assert report.enos_devices == 20_000
