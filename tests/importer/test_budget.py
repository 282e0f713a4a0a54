"""The rate budget: calls in flight bounded across processes, halved on 429, and one per org."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
import redis

from worker.enos.errors import TransientError
from worker.importer.budget import LocalBudget, RateBudget, RedisBudget


@pytest.fixture(params=["redis", "local"])
def budgets(request: pytest.FixtureRequest) -> Iterator[tuple[RateBudget, RateBudget]]:
    """Two handles on one budget: two worker processes (Redis), or one process (local)."""
    if request.param == "local":
        local = LocalBudget(2, max_wait_s=0.3)
        yield local, local
        return
    url = request.getfixturevalue("redis_url")
    clients = [redis.Redis.from_url(url), redis.Redis.from_url(url)]
    name = f"test-{time.monotonic_ns()}"
    yield tuple(  # type: ignore[misc]
        RedisBudget(c, name, capacity=2, slot_ttl_s=30, max_wait_s=0.3) for c in clients
    )
    for client in clients:
        client.close()


def test_calls_in_flight_are_bounded_across_processes(
    budgets: tuple[RateBudget, RateBudget],
) -> None:
    first, second = budgets
    with first.slot("o-1"), second.slot("o-1"), pytest.raises(TransientError), first.slot("o-1"):
        pass
    with first.slot("o-1"):  # released slots can be had again
        pass


def test_each_org_has_a_budget_of_its_own(budgets: tuple[RateBudget, RateBudget]) -> None:
    first, second = budgets
    first.throttled(5.0, "o-busy")  # a 429 for one org: it waits out Retry-After
    with pytest.raises(TransientError), second.slot("o-busy"):
        pass
    with first.slot("o-other"), second.slot("o-other"):  # another org is not slowed
        pass


def test_a_429_halves_the_org_budget_and_successes_grow_it_back(
    budgets: tuple[RateBudget, RateBudget],
) -> None:
    first, second = budgets
    first.throttled(0.0, "o-1")
    with first.slot("o-1"), pytest.raises(TransientError), second.slot("o-1"):
        pass  # 2 halved to 1 call in flight
    for _ in range(3):
        with second.slot("o-1") as held:
            held.succeeded()
    with first.slot("o-1"), second.slot("o-1"):
        pass


def test_a_released_slot_wakes_a_waiter_at_once() -> None:
    budget = LocalBudget(1, max_wait_s=5)
    waited: list[float] = []

    def waiter() -> None:
        started = time.monotonic()
        with budget.slot("o-1"):
            waited.append(time.monotonic() - started)

    with budget.slot("o-1"):
        thread = threading.Thread(target=waiter)
        thread.start()
        time.sleep(0.2)
    thread.join(5)
    assert waited and waited[0] < 1.0


def test_a_waiter_is_not_woken_by_releases_whose_slots_were_taken_since(
    redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from worker.importer import budget as budget_module

    monkeypatch.setattr(budget_module, "RELEASE_POLL_S", 5.0)  # only a release wakes the waiter
    client = redis.Redis.from_url(url := redis_url)
    budget = RedisBudget(client, f"test-{time.monotonic_ns()}", capacity=2, slot_ttl_s=30)
    for _ in range(3):  # releases with nobody waiting: each leaves a token behind
        with budget.slot("o-1"):
            pass
    asked: list[int] = []
    acquire = budget._acquire

    def counted(*args: Any, **kwargs: Any) -> Any:
        asked.append(1)
        return acquire(*args, **kwargs)

    monkeypatch.setattr(budget, "_acquire", counted)
    waited: list[float] = []

    def waiter() -> None:
        other = RedisBudget(redis.Redis.from_url(url), budget._name, capacity=2, slot_ttl_s=30)
        monkeypatch.setattr(other, "_acquire", counted)
        started = time.monotonic()
        with other.slot("o-1"):
            waited.append(time.monotonic() - started)

    with budget.slot("o-1"), budget.slot("o-1"):
        asked.clear()
        thread = threading.Thread(target=waiter)
        thread.start()
        time.sleep(0.3)
    thread.join(10)
    client.close()
    assert waited and waited[0] < 2.0  # woken by the release, not by its 5 s poll
    assert len(asked) == 2  # every slot held, then the released one: no round for a stale token


def test_a_call_marked_a_success_grows_the_budget_back_as_its_slot_is_released(
    budgets: tuple[RateBudget, RateBudget],
) -> None:
    first, second = budgets
    first.throttled(0.0, "o-1")  # 2 halved to 1
    for _ in range(2):
        with first.slot("o-1") as held:
            held.succeeded()
    with first.slot("o-1"), second.slot("o-1"):  # grown back to 2 by the two successes
        pass
    first.throttled(0.0, "o-2")
    for _ in range(2):
        with first.slot("o-2"):  # held without a success: the limit stays halved
            pass
    with first.slot("o-2"), pytest.raises(TransientError), second.slot("o-2"):
        pass
