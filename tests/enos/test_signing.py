"""The documented APIM signing rules (reference §5.2-§5.3), pinned by the doc's own test vectors."""

from __future__ import annotations

import hashlib

import httpx
import pytest

from worker.enos.signing import request_signature, token_encryption

# The worked example of "Invoke API with access token": URL …/m/v1/b?k3=v3&k1=v1&k2=v2.
QUERY = httpx.URL("https://apigw.example/m/v1/b?k3=v3&k1=v1&k2=v2").params.multi_items()
ACCESS_TOKEN = "xxxxaaaxxxx"
APP_SECRET = "xxxappSecretxxx"
TIMESTAMP = 1572574909697


def doc_body(desc: str) -> bytes:
    return f'{{\n  "count": 20,\n  "page": 1,\n  "desc": "{desc}"\n}}'.encode()


@pytest.mark.parametrize(
    ("desc", "expected"),
    [
        ("描述", "59828328f6c1f9771015dc74e4929ae30f518a35a3d2353972c2ea46556fc981"),
        ("description", "ad6dc6fc97f4290f3724e94eab38168d8613c41c3a4569b4b8b0efbce96a816c"),
    ],
)
def test_request_signature_matches_the_documented_example(desc: str, expected: str) -> None:
    assert QUERY == [("k3", "v3"), ("k1", "v1"), ("k2", "v2")]
    assert request_signature(ACCESS_TOKEN, QUERY, doc_body(desc), TIMESTAMP, APP_SECRET) == expected


def test_request_signature_accepts_the_timestamp_as_header_text() -> None:
    body = doc_body("描述")
    assert request_signature(
        ACCESS_TOKEN, QUERY, body, str(TIMESTAMP), APP_SECRET
    ) == request_signature(ACCESS_TOKEN, QUERY, body, TIMESTAMP, APP_SECRET)


def test_request_signature_covers_every_input() -> None:
    base = request_signature(ACCESS_TOKEN, QUERY, doc_body("描述"), TIMESTAMP, APP_SECRET)
    variants = [
        request_signature("other-token", QUERY, doc_body("描述"), TIMESTAMP, APP_SECRET),
        request_signature(ACCESS_TOKEN, [("k1", "v2")], doc_body("描述"), TIMESTAMP, APP_SECRET),
        request_signature(ACCESS_TOKEN, QUERY, doc_body("描述 "), TIMESTAMP, APP_SECRET),
        request_signature(ACCESS_TOKEN, QUERY, doc_body("描述"), TIMESTAMP + 1, APP_SECRET),
        request_signature(ACCESS_TOKEN, QUERY, doc_body("描述"), TIMESTAMP, "other-secret"),
    ]
    assert base not in variants


def test_request_signature_without_query_or_body() -> None:
    expected = hashlib.sha256(f"{ACCESS_TOKEN}{TIMESTAMP}{APP_SECRET}".encode()).hexdigest()
    assert request_signature(ACCESS_TOKEN, [], b"", TIMESTAMP, APP_SECRET) == expected


def test_token_encryption_is_the_documented_sha256() -> None:
    app_key = "5acb82e7-a11e-4300-9164-c8b20b638e8b"
    app_secret = "8e7d6c5b-4a39-4281-9f0e-d1c2b3a4f5e6"
    expected = hashlib.sha256(f"{app_key}{TIMESTAMP}{app_secret}".encode()).hexdigest()
    encryption = token_encryption(app_key, TIMESTAMP, app_secret)
    assert encryption == expected
    assert encryption == encryption.lower() and len(encryption) == 64
    assert token_encryption(app_key, TIMESTAMP + 1, app_secret) != expected
