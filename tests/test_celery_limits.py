"""The Celery application's limits and schedule, as the settings make them."""

from __future__ import annotations

from pathlib import Path

import pytest
from celery.schedules import crontab

from worker.celery_app import create_celery
from worker.settings import SettingsError, load_settings


def test_every_task_has_time_limits_that_end_before_a_redelivery() -> None:
    settings = load_settings(lease_s=300, visibility_timeout_s=3600, task_time_limit_s=1800)
    conf = create_celery(settings).conf
    names = ("send_chunk", "submit", "scan_inbox", "ingest_inbox_file", "inbox_job_done", "sweep")
    for name in names:
        limits = conf.task_annotations[f"enos_import.{name}"]
        assert 0 < limits["soft_time_limit"] < limits["time_limit"], name
    chunk = conf.task_annotations["enos_import.send_chunk"]
    assert chunk["soft_time_limit"] == 3 * settings.lease_s  # look-ups, a slot, then one call
    assert chunk["time_limit"] < settings.visibility_timeout_s
    assert conf.task_annotations["enos_import.submit"]["soft_time_limit"] == 1800
    assert conf.worker_max_memory_per_child == 1024 * 1024


def test_the_inbox_scan_is_on_beat_only_with_an_inbox(tmp_path: Path) -> None:
    assert "enos_import.scan_inbox" not in create_celery(load_settings()).conf.beat_schedule
    settings = load_settings(
        inbox_dir=tmp_path, inbox_schedule="30 1 * * 1-5", inbox_timezone="Asia/Shanghai"
    )
    conf = create_celery(settings).conf
    entry = conf.beat_schedule["enos_import.scan_inbox"]
    assert entry["schedule"] == crontab("30", "1", "*", "*", "1-5")
    assert conf.timezone == "Asia/Shanghai"
    fast = create_celery(load_settings(inbox_dir=tmp_path, inbox_scan_interval_s=5)).conf
    assert fast.beat_schedule["enos_import.scan_inbox"]["schedule"] == 5


@pytest.mark.parametrize("bad", [{"inbox_schedule": "nightly"}, {"inbox_timezone": "Mars/Base"}])
def test_a_bad_schedule_or_time_zone_is_refused_at_start_up(bad: dict[str, str]) -> None:
    with pytest.raises(SettingsError, match="INBOX_"):
        load_settings(**bad)
