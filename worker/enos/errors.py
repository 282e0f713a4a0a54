"""The one error tree of the EnOS boundary.

Every failure of a call to EnOS becomes exactly one of these classes, at the edge (the client),
and everything above the client decides by class alone::

    EnosError
    ├── TransientError        safe to send again later (HTTP 5xx, connection refused)
    │   └── RateLimitedError  HTTP 429, gateway throttling; carries Retry-After
    ├── AmbiguousError        the request left, its answer was lost: EnOS may have done the work
    ├── PermanentError        EnOS refused the request as a whole (99403, 99404, other 4xx)
    │   └── InvalidArgumentsError  99400 for the whole request (e.g. over the batch limit)
    └── ConfigurationError    the account or platform is set up wrongly (11858: no RSA key)
        └── AuthError         credentials refused, no token to be had (HTTP 401, 1002, 1203)
"""

from __future__ import annotations


class EnosError(Exception):
    """A call to EnOS did not succeed."""

    def __init__(
        self,
        message: str,
        *,
        code: int | None = None,
        http_status: int | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.code = code
        self.http_status = http_status
        self.retry_after = retry_after

    def __str__(self) -> str:
        parts = [self.message]
        if self.code is not None:
            parts.append(f"(EnOS code {self.code})")
        elif self.http_status is not None and f"HTTP {self.http_status}" not in self.message:
            parts.append(f"(HTTP {self.http_status})")
        return " ".join(parts)


class TransientError(EnosError):
    """Safe to send again later: EnOS did nothing, or said so.

    ``sent`` tells whether the request reached a server at all (a 5xx answer) or never left
    (connection refused); callers that cannot reconcile by deviceKey treat ``sent`` as ambiguous.
    """

    def __init__(
        self,
        message: str,
        *,
        sent: bool = True,
        code: int | None = None,
        http_status: int | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message, code=code, http_status=http_status, retry_after=retry_after)
        self.sent = sent


class RateLimitedError(TransientError):
    """The gateway throttled the call (HTTP 429); wait at least ``retry_after`` seconds."""


class AmbiguousError(EnosError):
    """The request was sent but its answer was lost; EnOS may have created the devices."""


class PermanentError(EnosError):
    """EnOS refused the whole request; sending it again will not help."""


class InvalidArgumentsError(PermanentError):
    """99400 for the whole request: for a batch of several devices, a smaller batch may pass."""


class ConfigurationError(EnosError):
    """The service account or platform is not set up for this call; an operator must act."""


class AuthError(ConfigurationError):
    """EnOS refused the credentials, even after a fresh token."""
