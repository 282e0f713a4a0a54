"""EnOS APIM token and request signatures (the documented "apim-signature" scheme).

Token request: ``encryption = sha256_hex(appKey + timestamp + appSecret)``.
Signed call: ``apim-signature = sha256_hex(accessToken + paramsData + timestamp + appSecret)``
where ``paramsData`` is every query parameter sorted by key, concatenated as
``key1value1key2value2``, followed by the raw request body, byte for byte as sent.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable


def token_encryption(app_key: str, timestamp_ms: int, app_secret: str) -> str:
    data = f"{app_key}{timestamp_ms}{app_secret}".encode()
    return hashlib.sha256(data).hexdigest()


def request_signature(
    access_token: str,
    query: Iterable[tuple[str, str]],
    body: bytes,
    timestamp_ms: int | str,
    app_secret: str,
) -> str:
    params = "".join(f"{key}{value}" for key, value in sorted(query, key=lambda kv: kv[0]))
    digest = hashlib.sha256()
    digest.update(f"{access_token}{params}".encode())
    digest.update(body)
    digest.update(f"{timestamp_ms}{app_secret}".encode())
    return digest.hexdigest()
