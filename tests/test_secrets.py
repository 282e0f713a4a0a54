"""Secrets never show in clear: a whole import with requireSecret, checked against the plaintext.

The simulator runs as a process in strict auth mode with faults (resets after commit, 503s), so
that retries, reconciliation and error paths log too. ``enos-import run --require-secret`` imports
two files (JSON logs, then console logs, both at DEBUG); then ``results`` (CSV and JSON Lines),
``status`` and a live ``validate`` run. None of what they print, nor any text the database holds
(except the ciphertext columns ``device_secret`` and ``session_key``), may contain the appSecret,
the access token or any deviceSecret: the simulator lists the plaintext secrets at
``/__sim/devices``, and the token service hands every caller the same unexpired token. The
explicit secrets export does contain them (so the scan can fail), and the database holds
ciphertext. Also: TLS verification is on by default, and ``--insecure`` says so in the log.
"""

from __future__ import annotations

import datetime
import hashlib
import http.server
import json
import sqlite3
import ssl
import threading
import time
from collections.abc import Iterator
from contextlib import closing
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from tests.e2e.services import TIMINGS, Simulator, job_id_from
from tests.harness.processes import BIN, Finished, base_env, free_port, run_cli, start, wait_until
from worker.enos import errors
from worker.runtime import make_client
from worker.settings import Settings
from worker.simulator.state import DEMO_APP_KEY, DEMO_APP_SECRET, DEMO_ORG

FAULTS = "reset_after_commit=0.2,http503=0.1,seed=3"
CLI_TIMEOUT_S = 90.0
# Columns that hold the ciphertexts exactly as EnOS returned them, by design.
CIPHERTEXT_COLUMNS = {"device_secret", "session_key"}


@dataclass
class Imported:
    """Everything the import printed and stored, and the secrets it must not show."""

    sim: Simulator
    workdir: Path
    env: dict[str, str]
    private_key: Path
    database: Path
    jobs: list[str]
    outputs: dict[str, str] = field(default_factory=dict)  # what each command printed

    def cli(self, label: str, *args: str, env: dict[str, str] | None = None) -> Finished:
        done = run_cli(args, env or self.env, self.workdir, CLI_TIMEOUT_S, watched=[self.sim.proc])
        self.outputs[f"{label} (stdout)"] = done.stdout
        self.outputs[f"{label} (stderr)"] = done.stderr
        return done


# ------------------------------------------------------------------------------------ the run
def _csv_file(path: Path) -> Path:
    rows = ["productKey,deviceKey,deviceName,timezone,attr.serial"]
    for i in range(120):
        key = f"secret-a-{i:04d}" if i % 2 else ""  # half derived keys, half the file's
        rows.append(f"pk-meter,{key},Meter {i},+08:00,{1000 + i}")
    rows.append("pk-meter,bad key,Invalid row,+08:00,1")  # invalid: never sent
    rows.append("pk-missing,secret-a-none,No such product,+08:00,1")  # EnOS refuses it
    path.write_text("\n".join(rows) + "\n")
    return path


def _jsonl_file(path: Path) -> Path:
    lines = [
        json.dumps(
            {
                "productKey": "pk-turbine",
                "deviceKey": f"secret-b-{i:04d}",
                "deviceName": {"defaultValue": f"Turbine {i}"},
                "timezone": "Asia/Shanghai",
            }
        )
        for i in range(60)
    ]
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture(scope="module")
def simulator(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Simulator, Path]]:
    """The simulator process: demo account, strict auth, faults on every path."""
    workdir = tmp_path_factory.mktemp("secrets")
    port = free_port()
    argv = [
        str(BIN / "enos-import"), "simulator", "--port", str(port), "--seed-demo",
        "--auth", "strict", "--private-key-out", str(workdir / "demo-private-key.pem"),
        "--faults", FAULTS,
    ]  # fmt: skip
    proc = start("simulator", argv, base_env(), workdir)
    sim = Simulator(f"http://127.0.0.1:{port}", proc)
    try:
        wait_until(sim.up, "the simulator to answer", 30, [proc])
        yield sim, workdir
    finally:
        proc.stop()


@pytest.fixture(scope="module")
def imported(simulator: tuple[Simulator, Path]) -> Imported:
    sim, workdir = simulator
    database = workdir / "enos-import.db"
    env = base_env()
    env.update(TIMINGS)
    env.update(
        ENOS_IMPORT_API_URL=sim.url,
        ENOS_IMPORT_ACCESS_KEY=DEMO_APP_KEY,
        ENOS_IMPORT_SECRET_KEY=DEMO_APP_SECRET,
        ENOS_IMPORT_DATABASE_URL=f"sqlite:///{database}",
        ENOS_IMPORT_LOG_LEVEL="DEBUG",
        ENOS_IMPORT_LOG_FORMAT="json",
        ENOS_IMPORT_BATCH_SIZE="25",
        ENOS_IMPORT_RECONCILE_DELAY_S="0.1",
    )
    run = Imported(sim, workdir, env, workdir / "demo-private-key.pem", database, [])
    for label, path, log_format in (
        ("run csv", _csv_file(workdir / "devices.csv"), "json"),
        ("run jsonl", _jsonl_file(workdir / "turbines.jsonl"), "console"),
    ):
        done = run.cli(
            label,
            "run", str(path), "--org", DEMO_ORG, "--require-secret",
            env={**env, "ENOS_IMPORT_LOG_FORMAT": log_format},
        )  # fmt: skip
        assert done.returncode in (0, 3), f"{label}: exit {done.returncode}\n{done.stderr}"
        run.jobs.append(job_id_from(done.stdout, done.stderr))
    for job_id in run.jobs:
        for fmt in ("csv", "jsonl"):
            done = run.cli(f"results {fmt} {job_id}", "results", job_id, "--format", fmt)
            assert done.returncode == 0, done.stderr
        run.cli(f"status {job_id}", "status", job_id)
    run.cli("status", "status")
    devices = str(workdir / "devices.csv")
    for label, extra in (("validate", ()), ("validate insecure", ("--insecure",))):
        done = run.cli(label, "validate", devices, "--org", DEMO_ORG, *extra)
        assert done.returncode == 3, done  # the invalid row
    return run


def _plaintext_secrets(sim: Simulator) -> dict[str, str]:
    """Every device's deviceSecret in clear, by deviceKey, as the simulator keeps it."""
    secrets = {key: str(device["deviceSecret"]) for key, device in sim.devices().items()}
    assert secrets and all(len(secret) >= 16 for secret in secrets.values()), secrets
    return secrets


def _access_token(sim: Simulator) -> str:
    """The token every caller gets while it is unexpired, fetched as EnOS documents it:
    ``encryption = sha256_hex(appKey + timestamp + appSecret)``."""
    timestamp = int(time.time() * 1000)
    encryption = hashlib.sha256(f"{DEMO_APP_KEY}{timestamp}{DEMO_APP_SECRET}".encode())
    body = {"appKey": DEMO_APP_KEY, "encryption": encryption.hexdigest(), "timestamp": timestamp}
    response = httpx.post(f"{sim.url}/apim-token-service/v2.0/token/get", json=body, timeout=10)
    response.raise_for_status()
    token = response.json()["data"]["accessToken"]
    assert isinstance(token, str) and len(token) >= 16, response.text
    return token


def _database_text(path: Path) -> dict[str, str]:
    """All the text of every table, by table, except the ciphertext columns."""
    texts: dict[str, str] = {}
    with closing(sqlite3.connect(path)) as conn:
        tables = [
            row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
        ]
        for table in tables:
            cursor = conn.execute(f'SELECT * FROM "{table}"')
            names = [column[0] for column in cursor.description]
            keep = [i for i, name in enumerate(names) if name not in CIPHERTEXT_COLUMNS]
            texts[f"table {table}"] = "\n".join(
                " ".join(str(row[i]) for i in keep) for row in cursor
            )
    return texts


# ---------------------------------------------------------------------------------- the tests
def test_no_secret_appears_in_logs_errors_exports_or_the_database(imported: Imported) -> None:
    device_secrets = _plaintext_secrets(imported.sim)
    secrets = {
        "the appSecret": DEMO_APP_SECRET,
        "the access token": _access_token(imported.sim),
        **{f"the deviceSecret of {key}": secret for key, secret in device_secrets.items()},
    }
    # Both runs logged at DEBUG, in both formats, and went through the fault paths.
    assert '"event": "chunk.sent"' in imported.outputs["run csv (stderr)"]
    assert "chunk.sent" in imported.outputs["run jsonl (stderr)"]
    assert (
        "chunk.retry"
        in imported.outputs["run csv (stderr)"] + imported.outputs["run jsonl (stderr)"]
    )
    places = {**imported.outputs, **_database_text(imported.database)}
    assert "secret-a-0001" in places["table import_items"]  # the scan sees the items
    leaks = [
        f"{what} in {where}"
        for where, content in places.items()
        for what, secret in secrets.items()
        if secret in content
    ]
    assert leaks == []


def test_the_explicit_export_decrypts_what_the_database_keeps_sealed(imported: Imported) -> None:
    plaintext = _plaintext_secrets(imported.sim)
    opened: dict[str, str] = {}
    for job_id in imported.jobs:
        done = run_cli(
            ["results", job_id, "--secrets", "--private-key", str(imported.private_key),
             "--format", "jsonl"],
            imported.env, imported.workdir, CLI_TIMEOUT_S, watched=[imported.sim.proc],
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        for line in done.stdout.splitlines():
            row = json.loads(line)
            if row["status"] == "created":
                opened[row["deviceKey"]] = row["deviceSecret"]
    # Every created device's secret comes out in clear, and it is EnOS's.
    assert len(opened) >= 100
    assert opened == {key: plaintext[key] for key in opened}

    with closing(sqlite3.connect(imported.database)) as conn:
        stored = conn.execute(
            "SELECT device_key, device_secret, session_key FROM import_items "
            "WHERE device_secret IS NOT NULL"
        ).fetchall()
    assert {key for key, _, _ in stored} >= set(opened)
    for key, sealed, session_key in stored:
        assert session_key, key
        assert sealed != plaintext[key]
        assert plaintext[key] not in sealed and plaintext[key] not in session_key


def test_insecure_logs_a_warning_and_the_default_does_not(imported: Imported) -> None:
    insecure = imported.outputs["validate insecure (stderr)"]
    assert '"event": "tls.verification_off"' in insecure, insecure
    assert "NOT verified" in insecure
    # The live checks ran (the warning comes with the client), and the default is quiet.
    assert "problems on EnOS" in insecure
    default = imported.outputs["validate (stderr)"]
    assert "problems on EnOS" in default
    assert "tls.verification_off" not in default, default


def test_a_configuration_error_does_not_print_the_secret(tmp_path: Path) -> None:
    env = {
        **base_env(),
        "ENOS_IMPORT_SECRET_KEY": DEMO_APP_SECRET,
        "ENOS_IMPORT_ACCESS_KEY": DEMO_APP_KEY,
        "ENOS_IMPORT_DATABASE_URL": f"sqlite:///{tmp_path / 'x.db'}",
        "ENOS_IMPORT_READ_TIMEOUT_S": "1000",  # longer than the lease: refused
    }
    done = run_cli(["status"], env, tmp_path, CLI_TIMEOUT_S)
    assert done.returncode == 2, done
    assert "timeouts must nest" in done.stderr
    # Not even its start (pydantic shows the input values, cut in the middle, by default).
    assert DEMO_APP_SECRET[:8] not in done.stdout + done.stderr, done.stderr


# ------------------------------------------------------------------------------------- TLS
class _Gateway(http.server.BaseHTTPRequestHandler):
    """Just enough EnOS for a token and a product."""

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self._answer({"status": 0, "data": {"accessToken": "t" * 32, "expire": 7200}})

    def do_GET(self) -> None:
        self._answer({"code": 0, "msg": "OK", "data": {"productKey": "pk-meter"}})

    def _answer(self, body: object) -> None:
        data = json.dumps(body).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: object) -> None:
        pass


def _self_signed(directory: Path) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / "cert.pem", directory / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


@pytest.fixture
def tls_gateway(tmp_path: Path) -> Iterator[str]:
    """An HTTPS gateway with a self-signed certificate that nothing trusts."""
    cert, key = _self_signed(tmp_path)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Gateway)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"https://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


def test_tls_verification_is_on_by_default(tls_gateway: str) -> None:
    settings = Settings(api_url=tls_gateway, access_key=DEMO_APP_KEY, secret_key=DEMO_APP_SECRET)
    assert settings.verify_tls is True
    with make_client(settings) as client, pytest.raises(errors.TransientError) as refused:
        client.get_product(DEMO_ORG, "pk-meter")
    assert "CERTIFICATE_VERIFY_FAILED" in str(refused.value.__cause__)
    # Turned off (what --insecure does), the same gateway answers.
    insecure = settings.model_copy(update={"verify_tls": False})
    with make_client(insecure) as client:
        product = client.get_product(DEMO_ORG, "pk-meter")
    assert product is not None and product.product_key == "pk-meter"
