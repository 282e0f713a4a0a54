"""What EnOS's answers mean for each row: one attempt at one chunk, gathered before it is written.

The answer table, item by item: created → ``created``; 11702 → look the device up by deviceKey
(same productKey and ``deviceName.defaultValue`` → ``adopted``, else ``conflict``); 11714 → that
row again; 11739 → ``failed`` and the product is full (the rest of it is not sent), unless an
earlier call may have created the row (then it is looked up first, see
:mod:`worker.importer.settle`); 11858 → the job fails; anything else → ``failed`` with EnOS's
code and message.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import orjson

from worker.db.models import ItemStatus, KeySource
from worker.enos.client import EnosClient
from worker.enos.models import (
    DEVICE_KEY_EXISTED,
    GENERATE_KEY_FAILED,
    INVALID_ARGUMENTS,
    PRODUCT_FULL,
    BatchResult,
    Device,
    ItemKind,
)
from worker.enos.responses import no_public_key_message
from worker.importer.chunks import PendingItem
from worker.importer.settle import NO_KEY_MESSAGE


@dataclass(slots=True)
class Outcome:
    status: str
    asset_id: str | None = None
    error_code: int | None = None
    error_message: str | None = None
    retryable: bool = False
    device_secret: str | None = field(default=None, repr=False)
    session_key: str | None = field(default=None, repr=False)


@dataclass
class Answers:
    """Outcomes gathered for the rows of one chunk attempt.

    ``earlier`` are the rows an earlier call may have created. ``maybe`` holds the rows without
    an outcome whose device may exist: it starts as ``earlier``, loses those a look-up settles,
    and gains those of a call whose answer was lost. Only rows outside it may be ended without
    an answer of their own.
    """

    earlier: frozenset[int] = frozenset()
    # With requireSecret, an adopted row's secret is fetched in the look-up that adopts it.
    require_secret: bool = False
    outcomes: dict[int, Outcome] = field(default_factory=dict)
    sent: set[int] = field(default_factory=set)
    maybe: set[int] = field(default_factory=set)
    full_products: dict[str, str] = field(default_factory=dict)
    job_error: str | None = None
    last_error: str | None = None
    created: int = 0

    def __post_init__(self) -> None:
        self.maybe |= self.earlier

    def settle(self, item: PendingItem, outcome: Outcome) -> None:
        self.outcomes[item.id] = outcome
        self.maybe.discard(item.id)

    def reconcile(self, client: EnosClient, org_id: str, items: list[PendingItem]) -> None:
        """After a lost answer: every row is looked up; those whose device exists are settled,
        and rows whose key EnOS generates, which cannot be looked up, go to ``review``."""
        self.look_up(client, org_id, [item for item in items if item.device_key])
        for item in items:
            if item.key_source == KeySource.PLATFORM:
                self.settle(item, Outcome(ItemStatus.REVIEW, error_message=NO_KEY_MESSAGE))

    def look_up(self, client: EnosClient, org_id: str, items: list[PendingItem]) -> None:
        """Rows (with a deviceKey) whose device exists are settled; the others are known not
        to exist (the caller looks up only after EnOS's reads have caught up)."""
        if not items:
            return
        found = client.find_devices(org_id, [item.device_key or "" for item in items])
        for item in items:
            device = found.get(item.device_key or "")
            if device is not None:
                self.settle(item, settle_existing(item, device))
            else:
                self.maybe.discard(item.id)
        self._fetch_secrets(client, org_id, items)

    def lost(self, items: list[PendingItem]) -> None:
        """The answer of a call with these rows was lost: each may now exist."""
        self.maybe.update(item.id for item in items if item.id not in self.outcomes)

    def apply(
        self, result: BatchResult, items: list[PendingItem]
    ) -> tuple[list[PendingItem], list[PendingItem]]:
        """Reads a batchCreate answer (matched by position); returns the rows EnOS says exist
        (11702), and the rows of a full product that an earlier call may have created."""
        exists: list[PendingItem] = []
        full_but_maybe: list[PendingItem] = []
        outcomes, maybe, created = self.outcomes, self.maybe, ItemStatus.CREATED
        for item, answer in zip(items, result.items, strict=True):
            if answer.ok:  # the kind of almost every answer, settled in place (see ``settle``)
                self.created += 1
                # Positional: (status, asset_id, error_code, error_message, retryable,
                # device_secret, session_key).
                outcomes[item.id] = Outcome(
                    created, answer.asset_id, None, None, False, answer.device_secret,
                    answer.session_key,
                )  # fmt: skip
                if maybe:
                    maybe.discard(item.id)
                continue
            kind = answer.kind
            if kind is ItemKind.EXISTS:
                exists.append(item)
            elif kind is ItemKind.RETRY:
                self.last_error = f"{GENERATE_KEY_FAILED}: {answer.message}"
            elif kind is ItemKind.PRODUCT_FULL:
                message = f"{answer.message} (product {item.product_key} is full)"
                self.full_products[item.product_key] = message
                # EnOS may check room before existence: "full" does not say "not created" for
                # a row an earlier call may have made, even if a look-up missed it (reads lag).
                if item.id in self.maybe or item.id in self.earlier:
                    self.maybe.add(item.id)
                    full_but_maybe.append(item)
                    continue
                self.settle(
                    item,
                    Outcome(
                        ItemStatus.FAILED,
                        error_code=PRODUCT_FULL,
                        error_message=message,
                        retryable=True,
                    ),
                )
            elif kind is ItemKind.NO_PUBLIC_KEY:
                self.job_error = no_public_key_message(answer.message)
            else:
                self.settle(
                    item,
                    Outcome(
                        ItemStatus.FAILED,
                        error_code=answer.error_code,
                        error_message=answer.message or "refused by EnOS without a message",
                    ),
                )
        return exists, full_but_maybe

    def resolve_existing(self, client: EnosClient, org_id: str, items: list[PendingItem]) -> None:
        """11702: the deviceKey is taken; adopt the device if it is the one the row describes."""
        if not items:
            return
        found = client.find_devices(org_id, [item.device_key or "" for item in items])
        for item in items:
            device = found.get(item.device_key or "")
            if device is None:
                # EnOS reads lag its writes by about two seconds: look again next attempt.
                self.last_error = f"{DEVICE_KEY_EXISTED}: deviceKey {item.device_key} not found yet"
                self.maybe.add(item.id)
                continue
            self.settle(item, settle_existing(item, device))
        self._fetch_secrets(client, org_id, items)

    def _fetch_secrets(self, client: EnosClient, org_id: str, items: list[PendingItem]) -> None:
        """An adopted row's secret: EnOS returned it only in the answer that was lost (or went
        to an earlier import), so it is asked for again with Get Device and ``requireSecret``.

        Search Device returns no secrets, hence one Get Device per adopted row. A device gone
        between the search and the get is unsettled again (and may exist: looked up again)."""
        if not self.require_secret:
            return
        for item in items:
            outcome = self.outcomes.get(item.id)
            if outcome is None or outcome.status != ItemStatus.ADOPTED:
                continue
            device = client.get_device(org_id, asset_id=outcome.asset_id, require_secret=True)
            if device is None:
                del self.outcomes[item.id]
                self.maybe.add(item.id)
                self.last_error = f"deviceKey {item.device_key} vanished while it was adopted"
                continue
            sealed = device.sealed_secret
            if sealed is not None:
                outcome.device_secret, outcome.session_key = sealed

    def fail_single(self, item: PendingItem, message: str) -> None:
        self.sent.add(item.id)
        self.settle(
            item, Outcome(ItemStatus.FAILED, error_code=INVALID_ARGUMENTS, error_message=message)
        )


def settle_existing(item: PendingItem, device: Device) -> Outcome:
    wanted = _default_name(item.payload)
    if device.product_key == item.product_key and device.default_name == wanted:
        return Outcome(ItemStatus.ADOPTED, asset_id=device.asset_id)
    return Outcome(
        ItemStatus.CONFLICT,
        asset_id=None,
        error_code=DEVICE_KEY_EXISTED,
        error_message=(
            f"deviceKey {item.device_key} belongs to another device (assetId {device.asset_id}, "
            f"product {device.product_key}, name {device.default_name!r})"
        ),
    )


def _default_name(payload: bytes) -> Any:
    option = orjson.loads(payload)
    return (option.get("deviceName") or {}).get("defaultValue")
