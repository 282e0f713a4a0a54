"""Sealing of device secrets for an account's RSA key, as ``requireSecret`` returns them.

EnOS documents that ``deviceSecret`` and ``sessionKey`` come back encrypted for the service
account's RSA key and that ``sessionKey`` is needed to decrypt ``deviceSecret``, but not the
algorithms. This module is the one place that fixes them, as a sound hybrid scheme:

- ``sessionKey``   = base64(RSA-OAEP-SHA256(account public key, random 256-bit AES key))
- ``deviceSecret`` = base64(12-byte nonce ‖ AES-256-GCM(AES key, secret))

The simulator seals with it and the secrets export opens with it; if EnOS's real scheme differs,
only this module changes.
"""

from __future__ import annotations

import base64
import os

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

_OAEP = padding.OAEP(
    mgf=padding.MGF1(algorithm=hashes.SHA256()), algorithm=hashes.SHA256(), label=None
)


def generate_private_key_pem(key_size: int = 2048) -> bytes:
    """A new RSA private key as PKCS#8 PEM (``-----BEGIN PRIVATE KEY-----``, as EnOS hands out)."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=key_size)
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def public_key_pem(private_pem: bytes) -> bytes:
    key = serialization.load_pem_private_key(private_pem, password=None)
    return key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


class Sealer:
    """Seals secrets for one RSA public key (loaded once, reused for every device)."""

    def __init__(self, public_pem: bytes) -> None:
        key = serialization.load_pem_public_key(public_pem)
        if not isinstance(key, rsa.RSAPublicKey):
            raise ValueError("the account key must be an RSA public key")
        self._key = key

    def seal(self, secret: str) -> tuple[str, str]:
        """Returns ``(deviceSecret, sessionKey)``, both base64 text."""
        aes_key = AESGCM.generate_key(bit_length=256)
        nonce = os.urandom(12)
        sealed = nonce + AESGCM(aes_key).encrypt(nonce, secret.encode(), None)
        wrapped = self._key.encrypt(aes_key, _OAEP)
        return base64.b64encode(sealed).decode(), base64.b64encode(wrapped).decode()


class Opener:
    """Opens sealed secrets with the account's private key (only for an explicit secrets export)."""

    def __init__(self, private_pem: bytes) -> None:
        key = serialization.load_pem_private_key(private_pem, password=None)
        if not isinstance(key, rsa.RSAPrivateKey):
            raise ValueError("the private key must be an RSA key")
        self._key = key

    def open(self, device_secret: str, session_key: str) -> str:
        aes_key = self._key.decrypt(base64.b64decode(session_key), _OAEP)
        sealed = base64.b64decode(device_secret)
        return AESGCM(aes_key).decrypt(sealed[:12], sealed[12:], None).decode()
