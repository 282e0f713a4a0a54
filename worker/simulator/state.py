"""What the simulated EnOS knows: organizations, products, service accounts and devices.

Everything lives in memory, indexed for the lookups the API needs; with a state file every change
is also written through to SQLite before the answer is sent, so a restart keeps every device.
"""

from __future__ import annotations

import random
import sqlite3
import string
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from worker.enos.secret_box import Sealer, generate_private_key_pem, public_key_pem

DEMO_ORG = "o-demo"
DEMO_FORBIDDEN_ORG = "o-forbidden"
DEMO_APP_KEY = "3f0c2a9e-7b1d-4c5e-9a6f-1d2e3f4a5b6c"
DEMO_APP_SECRET = "8e7d6c5b-4a39-4281-9f0e-d1c2b3a4f5e6"
DEMO_PRODUCTS = ("yourProductKey", "yourProductKey2", "pk-meter", "pk-inverter", "pk-turbine")

_ASSET_ALPHABET = string.ascii_letters + string.digits
_KEY_ALPHABET = string.ascii_letters + string.digits
_RANDOM_CHUNK = 1 << 16


class _RandomText:
    """Uniformly random text over an ASCII alphabet, cut from a large buffer drawn at once.

    One ``randbytes`` call and a ``bytes.translate`` per buffer cost far less per id than
    ``random.choices`` per id. Each byte maps to ``alphabet[byte % len(alphabet)]``; the bytes
    at and above the largest multiple of the alphabet's length are dropped, so every character
    stays equally likely.
    """

    def __init__(self, alphabet: str, rand: random.Random) -> None:
        size = len(alphabet)
        self._table = bytes(ord(alphabet[byte % size]) for byte in range(256))
        self._biased = bytes(range(256 - 256 % size, 256))
        self._rand = rand
        self._text = ""
        self._at = 0

    def take(self, length: int) -> str:
        start, end = self._at, self._at + length
        if end > len(self._text):
            raw = self._rand.randbytes(_RANDOM_CHUNK)
            self._text = raw.translate(self._table, self._biased).decode("ascii")
            start, end = 0, length
        self._at = end
        return self._text[start:end]


@dataclass(slots=True)
class Limits:
    """EnOS's documented defaults; raise them for big runs."""

    batch_max: int = 1000
    product_cap: int = 10_000
    ou_cap: int = 100_000


@dataclass(slots=True)
class Account:
    app_key: str
    app_secret: str
    orgs: set[str]
    private_pem: bytes | None = None
    _sealer: Sealer | None = field(default=None, repr=False)

    @property
    def sealer(self) -> Sealer | None:
        if self._sealer is None and self.private_pem is not None:
            self._sealer = Sealer(public_key_pem(self.private_pem))
        return self._sealer


@dataclass(slots=True)
class Product:
    org_id: str
    product_key: str
    name: str
    model_id: str
    created: int


@dataclass(slots=True)
class StoredDevice:
    org_id: str
    asset_id: str
    product_key: str
    device_key: str
    name: dict[str, Any]
    timezone: str
    desc: str | None
    attributes: dict[str, Any]
    tags: dict[str, str]
    secret: str
    create_time: int
    seq: int

    def body(self) -> dict[str, Any]:
        return {
            "deviceName": self.name,
            "timezone": self.timezone,
            "deviceDesc": self.desc,
            "deviceAttributes": self.attributes,
            "deviceTags": self.tags,
        }


@dataclass(slots=True)
class Org:
    org_id: str
    products: dict[str, Product] = field(default_factory=dict)
    by_key: dict[str, StoredDevice] = field(default_factory=dict)
    by_asset: dict[str, StoredDevice] = field(default_factory=dict)
    per_product: Counter[str] = field(default_factory=Counter)


_SCHEMA = """
CREATE TABLE IF NOT EXISTS orgs (org_id TEXT PRIMARY KEY);
CREATE TABLE IF NOT EXISTS accounts (
    app_key TEXT PRIMARY KEY, app_secret TEXT NOT NULL, orgs TEXT NOT NULL, private_pem BLOB);
CREATE TABLE IF NOT EXISTS products (
    org_id TEXT NOT NULL, product_key TEXT NOT NULL, name TEXT NOT NULL, model_id TEXT NOT NULL,
    created INTEGER NOT NULL, PRIMARY KEY (org_id, product_key));
-- Keyed by seq (the rowid), so inserts append: an index on the random asset ids would cost a
-- write to most of its pages per batch once it is large. The asset ids are unique in memory.
CREATE TABLE IF NOT EXISTS devices (
    asset_id TEXT NOT NULL, org_id TEXT NOT NULL, product_key TEXT NOT NULL,
    device_key TEXT NOT NULL, body BLOB NOT NULL, secret TEXT NOT NULL,
    create_time INTEGER NOT NULL, seq INTEGER PRIMARY KEY);
"""


class Store:
    """The simulated platform's data; every method is called from the event loop thread."""

    def __init__(self, path: Path | None = None, limits: Limits | None = None) -> None:
        self.limits = limits or Limits()
        self.orgs: dict[str, Org] = {}
        self.accounts: dict[str, Account] = {}
        self.assets: dict[str, StoredDevice] = {}
        self.created_total = 0
        self._seq = 0
        self._rand = random.Random()
        self._asset_text = _RandomText(_ASSET_ALPHABET, self._rand)
        self._key_text = _RandomText(_KEY_ALPHABET, self._rand)
        self._lock = threading.Lock()
        self._db: sqlite3.Connection | None = None
        if path is not None:
            self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.executescript(_SCHEMA)
            self._load()

    # ----------------------------------------------------------------------------- loading
    def _load(self) -> None:
        assert self._db is not None
        for (org_id,) in self._db.execute("SELECT org_id FROM orgs"):
            self.orgs[org_id] = Org(org_id)
        for app_key, secret, orgs, pem in self._db.execute("SELECT * FROM accounts"):
            self.accounts[app_key] = Account(app_key, secret, set(orgs_from(orgs)), pem)
        for org_id, key, name, model_id, created in self._db.execute("SELECT * FROM products"):
            self.orgs[org_id].products[key] = Product(org_id, key, name, model_id, created)
        rows = self._db.execute("SELECT * FROM devices ORDER BY seq")
        for asset_id, org_id, product_key, device_key, body, secret, create_time, seq in rows:
            data = orjson.loads(body)
            device = StoredDevice(
                org_id,
                asset_id,
                product_key,
                device_key,
                data["deviceName"],
                data["timezone"],
                data.get("deviceDesc"),
                data.get("deviceAttributes") or {},
                data.get("deviceTags") or {},
                secret,
                create_time,
                seq,
            )
            self._index(device)
            self._seq = max(self._seq, seq)

    def _index(self, device: StoredDevice) -> None:
        org = self.orgs[device.org_id]
        org.by_key[device.device_key] = device
        org.by_asset[device.asset_id] = device
        org.per_product[device.product_key] += 1
        self.assets[device.asset_id] = device

    # ------------------------------------------------------------------------------ set-up
    def add_org(self, org_id: str) -> Org:
        org = self.orgs.get(org_id)
        if org is None:
            org = self.orgs[org_id] = Org(org_id)
            self._write("INSERT OR IGNORE INTO orgs VALUES (?)", [(org_id,)])
        return org

    def add_account(
        self, app_key: str, app_secret: str, orgs: set[str], private_pem: bytes | None
    ) -> Account:
        existing = self.accounts.get(app_key)
        if existing is not None:
            existing.orgs |= orgs
            self._write(
                "UPDATE accounts SET orgs = ? WHERE app_key = ?",
                [(",".join(sorted(existing.orgs)), app_key)],
            )
            return existing
        account = self.accounts[app_key] = Account(app_key, app_secret, set(orgs), private_pem)
        self._write(
            "INSERT OR REPLACE INTO accounts VALUES (?, ?, ?, ?)",
            [(app_key, app_secret, ",".join(sorted(orgs)), private_pem)],
        )
        return account

    def add_product(self, org_id: str, product_key: str, name: str | None = None) -> Product:
        org = self.add_org(org_id)
        product = org.products.get(product_key)
        if product is None:
            product = Product(
                org_id, product_key, name or product_key, f"model-{product_key}", _now_ms()
            )
            org.products[product_key] = product
            self._write(
                "INSERT OR IGNORE INTO products VALUES (?, ?, ?, ?, ?)",
                [(org_id, product_key, product.name, product.model_id, product.created)],
            )
        return product

    def seed_demo(self) -> Account:
        """The demo org, account (with an RSA key pair) and products; idempotent."""
        for product_key in DEMO_PRODUCTS:
            self.add_product(DEMO_ORG, product_key)
        self.add_org(DEMO_FORBIDDEN_ORG)
        account = self.accounts.get(DEMO_APP_KEY)
        if account is None or account.private_pem is None:
            account = self.add_account(
                DEMO_APP_KEY, DEMO_APP_SECRET, {DEMO_ORG}, generate_private_key_pem()
            )
        return account

    # ----------------------------------------------------------------------------- devices
    def new_asset_id(self) -> str:
        while True:
            asset_id = self._asset_text.take(8)
            if asset_id not in self.assets:
                return asset_id

    def new_device_key(self, org: Org) -> str:
        while True:
            key = self._key_text.take(10)
            if key not in org.by_key:
                return key

    def new_secret(self) -> str:
        return self._key_text.take(16)

    def next_seq(self) -> int:
        self._seq += 1
        return self._seq

    def commit_devices(self, devices: list[StoredDevice]) -> None:
        """Indexes new devices and writes them through to the state file in one transaction."""
        for device in devices:
            self._index(device)
        self.created_total += len(devices)
        if self._db is not None and devices:
            self._write(
                "INSERT INTO devices VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                [
                    (
                        d.asset_id,
                        d.org_id,
                        d.product_key,
                        d.device_key,
                        orjson.dumps(d.body()),
                        d.secret,
                        d.create_time,
                        d.seq,
                    )
                    for d in devices
                ],
            )

    def delete_device(self, device: StoredDevice) -> None:
        org = self.orgs[device.org_id]
        del org.by_key[device.device_key]
        del org.by_asset[device.asset_id]
        org.per_product[device.product_key] -= 1
        del self.assets[device.asset_id]
        # seq is the key of the table (asset_id was, in state files written before).
        self._write(
            "DELETE FROM devices WHERE seq = ? AND asset_id = ?", [(device.seq, device.asset_id)]
        )

    def clear_devices(self) -> None:
        for org in self.orgs.values():
            org.by_key.clear()
            org.by_asset.clear()
            org.per_product.clear()
        self.assets.clear()
        self._write("DELETE FROM devices", [()])

    def device_count(self) -> int:
        return len(self.assets)

    def _write(self, sql: str, rows: list[tuple[Any, ...]]) -> None:
        if self._db is None:
            return
        with self._lock:
            self._db.execute("BEGIN")
            self._db.executemany(sql, rows)
            self._db.execute("COMMIT")

    def close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None


def orgs_from(text: str) -> list[str]:
    return [org for org in text.split(",") if org]


def _now_ms() -> int:
    return int(time.time() * 1000)
