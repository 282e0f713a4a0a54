"""Typed shapes of what goes to EnOS and what comes back.

CreateOption travels as a plain JSON-shaped dict (it is built from files and sent as is, so a
TypedDict costs nothing); answers are parsed into small frozen dataclasses.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from typing import Any, NotRequired, TypedDict


class StringI18n(TypedDict):
    defaultValue: str
    i18nValue: NotRequired[dict[str, str]]


class CreateOption(TypedDict):
    """One device of a V2.4 batchCreate ``deviceList`` (the documented CreateOption struct)."""

    productKey: str
    deviceName: StringI18n
    timezone: str
    deviceKey: NotRequired[str]
    deviceAttributes: NotRequired[dict[str, Any]]
    deviceDesc: NotRequired[str]
    deviceTags: NotRequired[dict[str, str]]


# Item codes and messages documented on the V2.4 Batch Create Devices page.
DEVICE_KEY_EXISTED = 11702
GENERATE_KEY_FAILED = 11714
PRODUCT_FULL = 11739
NO_PUBLIC_KEY = 11858
INVALID_ARGUMENTS = 99400
PARTIAL_SUCCESS = 99206
DEVICE_NOT_FOUND = 11404
PRODUCT_NOT_FOUND = 11611


class ItemKind(Enum):
    """What one batchCreate item's answer means for that device."""

    CREATED = "created"
    EXISTS = "exists"  # 11702: the deviceKey is taken; look it up to adopt or report a conflict
    RETRY = "retry"  # 11714: EnOS could not generate a key right now
    PRODUCT_FULL = "product_full"  # 11739
    NO_PUBLIC_KEY = "no_public_key"  # 11858 reported per item
    FAILED = "failed"  # any other refusal of this one device


# Fallback for items that carry only ``code: -1`` and a message: lower-case fragments of the
# documented messages (and of the older "already exists" wording of the V2.0 page).
_MESSAGE_KINDS: tuple[tuple[str, ItemKind, int], ...] = (
    ("devicekey existed", ItemKind.EXISTS, DEVICE_KEY_EXISTED),
    ("devicekey already exist", ItemKind.EXISTS, DEVICE_KEY_EXISTED),
    ("generate devicekey failed", ItemKind.RETRY, GENERATE_KEY_FAILED),
    ("exceed max device size", ItemKind.PRODUCT_FULL, PRODUCT_FULL),
    ("unable to find public key", ItemKind.NO_PUBLIC_KEY, NO_PUBLIC_KEY),
)
_CODE_KINDS: dict[int, ItemKind] = {
    DEVICE_KEY_EXISTED: ItemKind.EXISTS,
    GENERATE_KEY_FAILED: ItemKind.RETRY,
    PRODUCT_FULL: ItemKind.PRODUCT_FULL,
    NO_PUBLIC_KEY: ItemKind.NO_PUBLIC_KEY,
}


# Not frozen: one is made per device of every answer, and a frozen one costs twice as much.
@dataclass(slots=True)
class ItemResult:
    """The answer for one device of a batch, matched to the request by position."""

    ok: bool
    code: int | None
    message: str
    asset_id: str | None = None
    device_key: str | None = None
    product_key: str | None = None
    device_secret: str | None = field(default=None, repr=False)
    session_key: str | None = field(default=None, repr=False)

    @property
    def kind(self) -> ItemKind:
        if self.ok:
            return ItemKind.CREATED
        if self.code is not None and self.code in _CODE_KINDS:
            return _CODE_KINDS[self.code]
        text = self.message.lower()
        for fragment, kind, _ in _MESSAGE_KINDS:
            if fragment in text:
                return kind
        return ItemKind.FAILED

    @property
    def error_code(self) -> int | None:
        """The EnOS code of a failed item: its own, else the one its message documents."""
        if self.ok:
            return None
        if self.code is not None and self.code != -1:
            return self.code
        text = self.message.lower()
        for fragment, _, code in _MESSAGE_KINDS:
            if fragment in text:
                return code
        return self.code


@dataclass(frozen=True, slots=True)
class BatchResult:
    code: int
    message: str
    request_id: str | None
    items: list[ItemResult]
    success_size: int | None
    total_size: int | None


@dataclass(frozen=True, slots=True)
class Device:
    """The fields of EnOS's Device struct that reconciliation needs (the rest kept in ``raw``)."""

    asset_id: str
    product_key: str
    device_key: str
    device_name: dict[str, Any]
    raw: dict[str, Any] = field(repr=False, compare=False)

    @property
    def default_name(self) -> str | None:
        value = self.device_name.get("defaultValue")
        return value if isinstance(value, str) else None

    @property
    def sealed_secret(self) -> tuple[str, str] | None:
        """``(deviceSecret, sessionKey)`` as Get Device returns them with ``requireSecret``
        (ciphertext), or ``None`` when the answer carries no secret."""
        secret, session_key = self.raw.get("deviceSecret"), self.raw.get("sessionKey")
        if isinstance(secret, str) and secret and isinstance(session_key, str) and session_key:
            return secret, session_key
        return None

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Device:
        name = data.get("deviceName")
        return cls(
            asset_id=str(data.get("assetId", "")),
            product_key=str(data.get("productKey", "")),
            device_key=str(data.get("deviceKey", "")),
            device_name=name if isinstance(name, dict) else {},
            raw=data,
        )


@dataclass(frozen=True, slots=True)
class Product:
    product_key: str
    raw: dict[str, Any] = field(repr=False, compare=False)
