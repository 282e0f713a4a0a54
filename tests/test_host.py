"""The process helpers of ``worker.host``."""

from __future__ import annotations

import gc
from collections.abc import Iterator
from typing import Any

import pytest

from worker.host import collector_paused


@pytest.fixture
def collections() -> Iterator[list[str]]:
    """The collector's runs while the test runs; afterwards, nothing stays frozen."""
    runs: list[str] = []

    def note(phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            runs.append(f"generation {info['generation']}")

    enabled = gc.isenabled()
    gc.callbacks.append(note)
    try:
        yield runs
    finally:
        gc.callbacks.remove(note)
        gc.unfreeze()
        if enabled:
            gc.enable()


def test_no_collection_runs_while_paused_and_what_was_made_is_frozen(
    collections: list[str],
) -> None:
    gc.enable()
    frozen_before = gc.get_freeze_count()
    with collector_paused():
        # Far more container objects than any generation's threshold.
        made = [[index] for index in range(200_000)]
        assert not gc.isenabled()
    assert collections == []
    assert gc.get_freeze_count() >= frozen_before + len(made)
    assert gc.isenabled()


def test_a_disabled_collector_stays_disabled(collections: list[str]) -> None:
    gc.disable()
    with collector_paused():
        pass
    assert not gc.isenabled()


def test_the_collector_comes_back_when_the_block_fails(collections: list[str]) -> None:
    gc.enable()
    with pytest.raises(RuntimeError), collector_paused():
        raise RuntimeError("start-up failed")
    assert gc.isenabled()
