"""The shared rate budget: how many batchCreate calls may be in flight, across all workers.

EnOS publishes no rate limit; its gateway answers HTTP 429 when a caller goes too fast. The budget
starts at ``max_concurrency`` calls in flight, halves on every 429 (and holds every caller back
for ``Retry-After``), and grows back by one call per round of successes (AIMD). With Redis it is
shared by every worker process of every host (state and time both taken from Redis, in Lua, so
that host clocks do not matter); the embedded runner keeps it in process.
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


class RateBudget(Protocol):
    def slot(self) -> Any:
        """A context manager holding one call slot; raises TransientError if none comes."""

    def throttled(self, retry_after: float | None) -> None: ...

    def succeeded(self) -> None: ...


class LocalBudget:
    """The budget of one process (embedded runner, tests)."""

    def __init__(self, capacity: int, max_wait_s: float = 60.0) -> None:
        self.capacity = capacity
        self.limit = float(capacity)
        self.max_wait_s = max_wait_s
        self._held = 0
        self._pause_until = 0.0
        self._cond = threading.Condition()

    @contextmanager
    def slot(self) -> Iterator[None]:
        deadline = time.monotonic() + self.max_wait_s
        with self._cond:
            while True:
                now = time.monotonic()
                if now < self._pause_until:
                    wait = self._pause_until - now
                elif self._held < int(self.limit):
                    break
                else:
                    wait = 0.5
                if now + min(wait, 0.5) > deadline:
                    raise TransientError("no call slot free in the rate budget", sent=False)
                self._cond.wait(min(wait, 0.5))
            self._held += 1
        try:
            yield
        finally:
            with self._cond:
                self._held -= 1
                self._cond.notify()

    def throttled(self, retry_after: float | None) -> None:
        with self._cond:
            self.limit = max(1.0, self.limit / 2)
            self._pause_until = max(self._pause_until, time.monotonic() + (retry_after or 1.0))

    def succeeded(self) -> None:
        with self._cond:
            self.limit = min(float(self.capacity), self.limit + 1.0 / max(self.limit, 1.0))
            self._cond.notify()


# KEYS: holders zset, state hash. ARGV: capacity, token, ttl. Returns 0 (granted), -1 (every slot
# is held: wait for one to be released), or the milliseconds of a 429 pause still to wait.
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
return -1
"""

# KEYS: state hash. ARGV: capacity, retry_after (or -1 on success).
_ADJUST = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1e6
local capacity = tonumber(ARGV[1])
local limit = tonumber(redis.call('HGET', KEYS[1], 'limit') or capacity)
local retry_after = tonumber(ARGV[2])
if retry_after >= 0 then
  limit = math.max(1, limit / 2)
  local pause = tonumber(redis.call('HGET', KEYS[1], 'pause_until') or 0)
  redis.call('HSET', KEYS[1], 'pause_until', math.max(pause, now + retry_after))
else
  limit = math.min(capacity, limit + 1 / math.max(limit, 1))
end
redis.call('HSET', KEYS[1], 'limit', limit)
redis.call('EXPIRE', KEYS[1], 86400)
return tostring(limit)
"""


# How long a caller waits for a released slot before it asks again (a release normally wakes it
# at once; this bounds the wait when a holder died and its slot expired instead).
RELEASE_POLL_S = 0.1


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
        self._holders = f"enos-import:budget:{name}:holders"
        self._state = f"enos-import:budget:{name}:state"
        # A token pushed here on every release wakes one caller waiting for a slot at once
        # (BLPOP); without it, the waiter asks again after RELEASE_POLL_S at the latest.
        self._released = f"enos-import:budget:{name}:released"
        self.capacity = capacity
        self.slot_ttl_s = slot_ttl_s
        self.max_wait_s = max_wait_s
        self._acquire = client.register_script(_ACQUIRE)
        self._adjust = client.register_script(_ADJUST)

    @contextmanager
    def slot(self) -> Iterator[None]:
        token = uuid.uuid4().hex
        deadline = time.monotonic() + self.max_wait_s
        try:
            while True:
                answer = int(
                    self._acquire(
                        keys=[self._holders, self._state],
                        args=[self.capacity, token, self.slot_ttl_s],
                    )
                )
                if answer == 0:
                    break
                wait = RELEASE_POLL_S if answer < 0 else min(answer / 1000.0, 1.0)
                if time.monotonic() + wait > deadline:
                    raise TransientError("no call slot free in the shared rate budget", sent=False)
                if answer < 0:
                    self._redis.blpop([self._released], timeout=wait)
                else:
                    time.sleep(wait)
        except redis.RedisError as exc:
            raise TransientError(f"the rate budget is unreachable: {exc}", sent=False) from exc
        try:
            yield
        finally:
            # On a Redis error the slot expires by itself after slot_ttl_s.
            with suppress(redis.RedisError):
                release = self._redis.pipeline(transaction=False)
                release.zrem(self._holders, token)
                release.lpush(self._released, 1)
                release.ltrim(self._released, 0, self.capacity - 1)
                release.expire(self._released, 60)
                release.execute()

    def throttled(self, retry_after: float | None) -> None:
        self._call_adjust(retry_after if retry_after is not None else 1.0)

    def succeeded(self) -> None:
        self._call_adjust(-1)

    def _call_adjust(self, retry_after: float) -> None:
        # Adapting the rate is best effort; the next call tries again.
        with suppress(redis.RedisError):
            self._adjust(keys=[self._state], args=[self.capacity, retry_after])
