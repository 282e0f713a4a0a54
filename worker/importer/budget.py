"""The shared rate budget: how many batchCreate calls may be in flight, across all workers.

EnOS publishes no rate limit; its gateway answers HTTP 429 when a caller goes too fast. The budget
starts at ``max_concurrency`` calls in flight, halves on every 429 (and holds every caller back
for ``Retry-After``), and grows back by one call per round of successes (AIMD). With Redis it is
shared by every worker process of every host (state and time both taken from Redis, in Lua, so
that host clocks do not matter); the embedded runner keeps it in process.

Each org has a budget of its own (``max_concurrency`` calls in flight each): one org's 429s do
not slow another's imports.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from typing import Any, Protocol

import redis

from worker.enos.errors import TransientError


class Held:
    """A call slot while it is held. ``succeeded()`` says the call went through; the budget
    learns it as the slot is released (with Redis, in the same round trip)."""

    __slots__ = ("success",)

    def __init__(self) -> None:
        self.success = False

    def succeeded(self) -> None:
        self.success = True


class RateBudget(Protocol):
    def slot(self, org_id: str = "") -> Any:
        """A context manager holding one call slot of the org's budget (it gives a ``Held``);
        raises TransientError if none comes."""

    def throttled(self, retry_after: float | None, org_id: str = "") -> None: ...


class _Gauge:
    """One org's slots in one process."""

    def __init__(self, capacity: int) -> None:
        self.limit = float(capacity)
        self.held = 0
        self.pause_until = 0.0


class LocalBudget:
    """The budget of one process (embedded runner, tests)."""

    def __init__(self, capacity: int, max_wait_s: float = 60.0) -> None:
        self.capacity = capacity
        self.max_wait_s = max_wait_s
        self._orgs: dict[str, _Gauge] = {}
        self._cond = threading.Condition()

    def _gauge(self, org_id: str) -> _Gauge:
        gauge = self._orgs.get(org_id)
        if gauge is None:
            gauge = self._orgs[org_id] = _Gauge(self.capacity)
        return gauge

    @contextmanager
    def slot(self, org_id: str = "") -> Iterator[Held]:
        deadline = time.monotonic() + self.max_wait_s
        with self._cond:
            gauge = self._gauge(org_id)
            while True:
                now = time.monotonic()
                if now < gauge.pause_until:
                    wait = gauge.pause_until - now
                elif gauge.held < int(gauge.limit):
                    break
                else:
                    wait = 0.5
                if now + min(wait, 0.5) > deadline:
                    raise TransientError("no call slot free in the rate budget", sent=False)
                self._cond.wait(min(wait, 0.5))
            gauge.held += 1
        held = Held()
        try:
            yield held
        finally:
            with self._cond:
                gauge.held -= 1
                if held.success:
                    self._grow(gauge)
                self._cond.notify_all()

    def throttled(self, retry_after: float | None, org_id: str = "") -> None:
        with self._cond:
            gauge = self._gauge(org_id)
            gauge.limit = max(1.0, gauge.limit / 2)
            pause = 1.0 if retry_after is None else retry_after
            gauge.pause_until = max(gauge.pause_until, time.monotonic() + pause)

    def _grow(self, gauge: _Gauge) -> None:
        gauge.limit = min(float(self.capacity), gauge.limit + 1.0 / max(gauge.limit, 1.0))

    def limit(self, org_id: str = "") -> float:
        with self._cond:
            return self._gauge(org_id).limit


# KEYS: holders zset, state hash, released list. ARGV: capacity, token, ttl. Returns 0 (granted),
# -1 (every slot is held: wait for one to be released), or the milliseconds of a 429 pause still
# to wait. When every slot is held, the released list's tokens tell of releases whose slots have
# been taken since: they are dropped, so that a caller about to wait is woken by the next
# release, not by a stale token (one more round of asking, per token, for nothing).
_ACQUIRE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1e6
local capacity = tonumber(ARGV[1])
local limit = tonumber(redis.call('HGET', KEYS[2], 'limit') or capacity)
local pause = tonumber(redis.call('HGET', KEYS[2], 'pause_until') or 0)
if now < pause then return math.max(1, math.floor((pause - now) * 1000)) end
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
if redis.call('ZCARD', KEYS[1]) < math.floor(limit) then
  redis.call('ZADD', KEYS[1], now + tonumber(ARGV[3]), ARGV[2])
  redis.call('EXPIRE', KEYS[1], math.ceil(tonumber(ARGV[3])) + 60)
  return 0
end
redis.call('DEL', KEYS[3])
return -1
"""

# KEYS: holders zset, released list, state hash. ARGV: token, capacity, 1 when the call
# succeeded. The slot is freed and a token pushed that wakes one waiter; a success grows the
# limit back (AIMD), written only while it is below capacity.
_RELEASE = """
local capacity = tonumber(ARGV[2])
redis.call('ZREM', KEYS[1], ARGV[1])
redis.call('LPUSH', KEYS[2], 1)
redis.call('LTRIM', KEYS[2], 0, capacity - 1)
redis.call('EXPIRE', KEYS[2], 60)
if ARGV[3] == '1' then
  local limit = tonumber(redis.call('HGET', KEYS[3], 'limit') or capacity)
  if limit < capacity then
    redis.call('HSET', KEYS[3], 'limit', math.min(capacity, limit + 1 / math.max(limit, 1)))
    redis.call('EXPIRE', KEYS[3], 86400)
  end
end
return 0
"""

# KEYS: state hash. ARGV: capacity, retry_after. A 429: the limit halves and every caller
# waits out Retry-After (successes grow it back as their slots are released, see _RELEASE).
_THROTTLE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1e6
local capacity = tonumber(ARGV[1])
local limit = math.max(1, tonumber(redis.call('HGET', KEYS[1], 'limit') or capacity) / 2)
local pause = tonumber(redis.call('HGET', KEYS[1], 'pause_until') or 0)
redis.call('HSET', KEYS[1], 'pause_until', math.max(pause, now + tonumber(ARGV[2])))
redis.call('HSET', KEYS[1], 'limit', limit)
redis.call('EXPIRE', KEYS[1], 86400)
return tostring(limit)
"""


# How long a caller waits for a released slot before it asks again. A release wakes it at once;
# this only bounds the wait when no release comes (a holder died and its slot expired, or the
# limit grew back), so it can be long: every round of asking costs each waiting process a
# script call, and there are waiters all the time while an import keeps every slot busy.
RELEASE_POLL_S = 1.0


class RedisBudget:
    """The budget shared through Redis by every worker calling one EnOS account."""

    def __init__(
        self,
        client: redis.Redis,
        name: str,
        capacity: int,
        slot_ttl_s: float,
        max_wait_s: float = 60.0,
    ) -> None:
        self._redis = client
        self._name = name
        self.capacity = capacity
        self.slot_ttl_s = slot_ttl_s
        self.max_wait_s = max_wait_s
        self._acquire = client.register_script(_ACQUIRE)
        self._throttle = client.register_script(_THROTTLE)
        self._release = client.register_script(_RELEASE)

    def _keys(self, org_id: str) -> tuple[str, str, str]:
        """The org's holders (zset), state (hash), and released list: a token pushed there on
        every release wakes one caller waiting for a slot at once (BLPOP); without it, the
        waiter asks again after RELEASE_POLL_S at the latest."""
        prefix = f"enos-import:budget:{self._name}|{org_id}"
        return f"{prefix}:holders", f"{prefix}:state", f"{prefix}:released"

    @contextmanager
    def slot(self, org_id: str = "") -> Iterator[Held]:
        holders, state, released = self._keys(org_id)
        token = uuid.uuid4().hex
        deadline = time.monotonic() + self.max_wait_s
        try:
            while True:
                answer = int(
                    self._acquire(
                        keys=[holders, state, released],
                        args=[self.capacity, token, self.slot_ttl_s],
                    )
                )
                if answer == 0:
                    break
                left = deadline - time.monotonic()
                if left < 0.01 or (answer > 0 and answer / 1000.0 > left):
                    raise TransientError("no call slot free in the shared rate budget", sent=False)
                if answer < 0:
                    self._redis.blpop([released], timeout=min(RELEASE_POLL_S, left))
                else:
                    time.sleep(min(answer / 1000.0, 1.0, left))
        except redis.RedisError as exc:
            raise TransientError(f"the rate budget is unreachable: {exc}", sent=False) from exc
        held = Held()
        try:
            yield held
        finally:
            # On a Redis error the slot expires by itself after slot_ttl_s.
            with suppress(redis.RedisError):
                self._release(
                    keys=[holders, released, state],
                    args=[token, self.capacity, 1 if held.success else 0],
                )

    def throttled(self, retry_after: float | None, org_id: str = "") -> None:
        pause = retry_after if retry_after is not None else 1.0
        # Adapting the rate is best effort; the next 429 tries again.
        with suppress(redis.RedisError):
            self._throttle(keys=[self._keys(org_id)[1]], args=[self.capacity, pause])
