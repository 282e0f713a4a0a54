"""Sealing of requireSecret secrets: what the simulator seals, the account's private key opens."""

from __future__ import annotations

import base64

import pytest
from cryptography.exceptions import InvalidTag

from worker.enos.secret_box import Opener, Sealer, generate_private_key_pem, public_key_pem


@pytest.fixture(scope="module")
def private_pem() -> bytes:
    return generate_private_key_pem()


@pytest.fixture(scope="module")
def other_private_pem() -> bytes:
    return generate_private_key_pem()


def test_private_key_is_pkcs8_pem(private_pem: bytes) -> None:
    assert private_pem.startswith(b"-----BEGIN PRIVATE KEY-----")


def test_seal_then_open_round_trip(private_pem: bytes) -> None:
    sealer = Sealer(public_key_pem(private_pem))
    device_secret, session_key = sealer.seal("s3cr3t-デバイス")
    assert "s3cr3t" not in device_secret
    base64.b64decode(device_secret, validate=True)
    base64.b64decode(session_key, validate=True)
    assert Opener(private_pem).open(device_secret, session_key) == "s3cr3t-デバイス"


def test_every_seal_uses_a_fresh_key(private_pem: bytes) -> None:
    sealer = Sealer(public_key_pem(private_pem))
    first, second = sealer.seal("same"), sealer.seal("same")
    assert first[0] != second[0] and first[1] != second[1]


def test_another_private_key_cannot_open(private_pem: bytes, other_private_pem: bytes) -> None:
    device_secret, session_key = Sealer(public_key_pem(private_pem)).seal("secret")
    with pytest.raises(ValueError):
        Opener(other_private_pem).open(device_secret, session_key)


def test_tampered_ciphertext_does_not_open(private_pem: bytes) -> None:
    device_secret, session_key = Sealer(public_key_pem(private_pem)).seal("secret")
    sealed = bytearray(base64.b64decode(device_secret))
    sealed[-1] ^= 0x01
    tampered = base64.b64encode(bytes(sealed)).decode()
    with pytest.raises(InvalidTag):
        Opener(private_pem).open(tampered, session_key)


def test_secret_and_session_key_belong_together(private_pem: bytes) -> None:
    sealer = Sealer(public_key_pem(private_pem))
    secret_a, _ = sealer.seal("a")
    _, session_b = sealer.seal("b")
    with pytest.raises(InvalidTag):
        Opener(private_pem).open(secret_a, session_b)
