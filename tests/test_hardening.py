"""Hardened settings: passwords in URLs never shown, a private CA by name, and warnings for an
unprotected way to EnOS that no log level silences."""

from __future__ import annotations

import datetime as dt
import ssl
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from worker.logs import configure
from worker.runtime import tls_verification, transport_warnings
from worker.settings import load_settings, mask_url


def test_urls_are_masked_in_repr_and_str() -> None:
    settings = load_settings(
        database_url="postgresql+psycopg://enos:db-pass-1@db:5432/enos_import",
        broker_url="redis://:redis-pass-2@redis:6379/0",
        redis_url="redis://default:redis-pass-3@redis:6379/1",
    )
    for shown in (repr(settings), str(settings)):
        for secret in ("db-pass-1", "redis-pass-2", "redis-pass-3"):
            assert secret not in shown
    assert "postgresql+psycopg://enos:***@db:5432/enos_import" in repr(settings)
    assert "redis://:***@redis:6379/0" in repr(settings)
    # The values themselves stay usable.
    assert settings.database_url.endswith("enos:db-pass-1@db:5432/enos_import")


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("redis://127.0.0.1:6379/0", "redis://127.0.0.1:6379/0"),
        ("redis://u@h/0", "redis://u@h/0"),
        ("postgresql://u:p%40ss@h:5/d", "postgresql://u:***@h:5/d"),
        ("", ""),
    ],
)
def test_mask_url(url: str, shown: str) -> None:
    assert mask_url(url) == shown


def _private_ca(path: Path) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "enos-import test CA")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))


def test_ca_bundle_names_a_private_ca(tmp_path: Path) -> None:
    bundle = tmp_path / "ca.pem"
    _private_ca(bundle)
    verify = tls_verification(load_settings(ca_bundle=bundle))
    assert isinstance(verify, ssl.SSLContext)
    subjects = [dict(x[0] for x in ca["subject"]) for ca in verify.get_ca_certs()]  # type: ignore[misc]
    assert {"commonName": "enos-import test CA"} in subjects
    default = tls_verification(load_settings())
    assert isinstance(default, ssl.SSLContext) and default.verify_mode == ssl.CERT_REQUIRED
    assert default.check_hostname and default.cert_store_stats()["x509_ca"] > 0
    # Made once per process (a prefork child inherits it): loading CAs is a client's main cost.
    assert tls_verification(load_settings()) is default
    assert tls_verification(load_settings(ca_bundle=bundle, verify_tls=False)) is False


def test_insecure_warns_whatever_the_log_level(capsys: pytest.CaptureFixture[str]) -> None:
    configure("ERROR", "json")
    transport_warnings(load_settings(verify_tls=False, api_url="https://gw.example.com"))
    err = capsys.readouterr().err
    assert '"event": "tls.verification_off"' in err
    assert '"level": "warning"' in err


@pytest.mark.parametrize(
    ("api_url", "warned"),
    [
        ("http://gw.example.com", True),
        ("http://10.0.0.5:8080", True),
        ("http://127.0.0.1:8765", False),
        ("http://localhost:8765", False),
        ("https://gw.example.com", False),
    ],
)
def test_plain_http_to_another_host_warns(
    api_url: str, warned: bool, capsys: pytest.CaptureFixture[str]
) -> None:
    configure("INFO", "json")
    transport_warnings(load_settings(api_url=api_url))
    assert ("tls.plain_http" in capsys.readouterr().err) is warned
