"""The APIM token service and the check of signed calls, as EnOS documents them.

``permissive`` (the default) also accepts calls that carry only an ``apim-accesstoken``, as the
official EnOS SDK (enos-poseidon) sends them: its token is an opaque blob the simulator cannot
open, so such a caller may use every organization. A call that does carry a signature is always
verified. ``strict`` requires a token issued here and a valid signature on every call.
"""

from __future__ import annotations

import hmac
import secrets
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Literal

from worker.enos.signing import request_signature, token_encryption
from worker.simulator.state import Account, Store

AuthMode = Literal["permissive", "strict"]

# The documented token service codes.
REPEATED_REQUEST = 1001
APP_KEY_UNKNOWN = 1002
ENCRYPTION_INVALID = 1003
INVALID_PARAMETER = 1004
PARAMETER_EMPTY = 1202
TOKEN_EXPIRED = 1203
REFRESH_FAILED = 1204


class AuthFailure(Exception):
    """The call is refused before it reaches the API (HTTP 401 from the gateway)."""


@dataclass
class TokenBook:
    """One live token per AccessKey: asking again returns the same unexpired token."""

    ttl_s: float = 7200.0
    tokens: dict[str, tuple[str, float]] = field(default_factory=dict)
    by_app: dict[str, str] = field(default_factory=dict)
    _recent: deque[str] = field(default_factory=lambda: deque(maxlen=10_000))
    _recent_set: set[str] = field(default_factory=set)

    def answer(self, store: Store, body: Any, *, refresh: bool) -> dict[str, Any]:
        """The token service's JSON answer to a get (or refresh) request body."""
        if not isinstance(body, dict):
            return _token_error(INVALID_PARAMETER, "invalid parameter: body must be a JSON object")
        app_key, encryption, timestamp = (
            body.get(k) for k in ("appKey", "encryption", "timestamp")
        )
        if not app_key or not encryption or timestamp in (None, ""):
            return _token_error(PARAMETER_EMPTY, "parameter empty: appKey, encryption, timestamp")
        account = store.accounts.get(str(app_key))
        if account is None:
            return _token_error(APP_KEY_UNKNOWN, "appKey does not exist")
        expected = token_encryption(account.app_key, _as_int(timestamp), account.app_secret)
        if not hmac.compare_digest(expected, str(encryption)):
            return _token_error(ENCRYPTION_INVALID, "encryption is not valid")
        if encryption in self._recent_set:
            return _token_error(REPEATED_REQUEST, "repeated request: duplicated encryption")
        self._remember(str(encryption))
        now = time.time()
        if refresh:
            token = str(body.get("accessToken") or "")
            entry = self.tokens.get(token)
            if entry is None or entry[0] != account.app_key or entry[1] <= now:
                return _token_error(REFRESH_FAILED, "failed to refresh access token")
            self.tokens[token] = (account.app_key, now + self.ttl_s)
            return _token_ok(token, self.ttl_s)
        live = self.by_app.get(account.app_key)
        if live is not None and self.tokens[live][1] > now:
            return _token_ok(live, self.tokens[live][1] - now)
        token = secrets.token_hex(16)
        self.tokens[token] = (account.app_key, now + self.ttl_s)
        self.by_app[account.app_key] = token
        return _token_ok(token, self.ttl_s)

    def _remember(self, encryption: str) -> None:
        if len(self._recent) == self._recent.maxlen:
            self._recent_set.discard(self._recent[0])
        self._recent.append(encryption)
        self._recent_set.add(encryption)

    def account_for(
        self,
        store: Store,
        mode: AuthMode,
        headers: dict[str, str],
        query: list[tuple[str, str]],
        body: bytes,
    ) -> Account | None:
        """The caller's account (``None``: an SDK caller in permissive mode), or AuthFailure."""
        token = headers.get("apim-accesstoken", "")
        if not token:
            raise AuthFailure("missing apim-accesstoken")
        signature = headers.get("apim-signature")
        if mode == "permissive" and not signature:
            entry = self.tokens.get(token)
            return store.accounts.get(entry[0]) if entry and entry[1] > time.time() else None
        entry = self.tokens.get(token)
        if entry is None:
            raise AuthFailure("invalid access token")
        if entry[1] <= time.time():
            raise AuthFailure("access token expired")
        timestamp = headers.get("apim-timestamp", "")
        if not signature or not timestamp:
            raise AuthFailure("missing apim-signature or apim-timestamp")
        account = store.accounts[entry[0]]
        expected = request_signature(token, query, body, timestamp, account.app_secret)
        if not hmac.compare_digest(expected, signature):
            raise AuthFailure("signature is not valid")
        return account


def _as_int(value: Any) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        return -1


def _token_ok(token: str, expire: float) -> dict[str, Any]:
    return {
        "status": 0,
        "msg": "SUCCESS",
        "business": "apim-token-service",
        "data": {"accessToken": token, "expire": int(expire)},
    }


def _token_error(status: int, msg: str) -> dict[str, Any]:
    return {"status": status, "msg": msg, "business": "apim-token-service", "data": None}
