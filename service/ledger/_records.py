"""What every query module of the ledger shares: the object and event records, the row
converters, and the base that holds the pool and the PII vault."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields, replace
from datetime import datetime
from decimal import Decimal
from typing import Any, TypeVar

import asyncpg
from asyncpg.pool import PoolConnectionProxy

from ._pii import PiiVault, holds_references

__all__ = [
    "EVENT_KINDS",
    "EVENT_SOURCES",
    "OBJECT_KINDS",
    "Conn",
    "Event",
    "ObjectRecord",
    "Position",
    "QueryBase",
    "StoredObject",
]

OBJECT_KINDS = ("checkout_session", "charge_permission", "charge", "refund", "dispute")
EVENT_KINDS = (*OBJECT_KINDS, "settlement_line")
"""Kinds of events: every object kind, and settlement reconciliation findings (no object row)."""
EVENT_SOURCES = ("api", "poll", "ipn", "recovery", "settlement")

Conn = asyncpg.Connection | PoolConnectionProxy

# Where an event sits in the order events are delivered: (writing transaction id, event id).
Position = tuple[int, int]


@dataclass(frozen=True)
class _ObjectState:
    """Which merchant's Amazon object, and the state it was in."""

    merchant: str
    kind: str
    object_id: str
    state: str


@dataclass(frozen=True)
class ObjectRecord(_ObjectState):
    """What the ledger keeps of one Amazon object after one observation."""

    snapshot: Mapping[str, Any]
    """Amazon's JSON for the object (camelCase), possibly sparse."""
    reason_code: str | None = None
    is_final: bool = False
    checkout_session_id: str | None = None
    charge_permission_id: str | None = None
    charge_id: str | None = None
    amount: str | None = None
    currency_code: str | None = None
    merchant_reference_id: str | None = None
    created_at: datetime | None = None
    amazon_expires_at: datetime | None = None
    amazon_request_id: str | None = None
    """`x-amz-pay-request-id` of our call whose answer this is (None: an IPN, no call of ours)."""


@dataclass(frozen=True)
class StoredObject(_ObjectState):
    """An object's row: its last observation, and the ledger's bookkeeping of it."""

    reason_code: str | None
    is_final: bool
    snapshot: dict[str, Any]
    checkout_session_id: str | None
    charge_permission_id: str | None
    charge_id: str | None
    amount: str | None
    currency_code: str | None
    merchant_reference_id: str | None
    created_at: datetime
    amazon_expires_at: datetime | None
    first_seen_at: datetime
    updated_at: datetime
    version: int
    poll_attempts: int = 0
    buyer_data_erased_at: datetime | None = None


@dataclass(frozen=True)
class Event:
    event_id: int
    recorded_at: datetime
    merchant: str
    kind: str
    object_id: str
    charge_permission_id: str | None
    state: str
    reason_code: str | None
    previous_state: str | None
    source: str
    snapshot: dict[str, Any]
    amazon_request_id: str | None = None
    tx: int = 1

    @property
    def position(self) -> Position:
        return (self.tx, self.event_id)


def _decimal_text(value: Decimal | None) -> str | None:
    return None if value is None else format(value, "f")


R = TypeVar("R")
Snapshotted = TypeVar("Snapshotted", "StoredObject", "Event")


_COLUMNS: dict[type, tuple[str, ...]] = {}
"""Per record class, its fields' names (fields() walked once, not on every row)."""


def _from_row(cls: type[R], row: asyncpg.Record, **converted: Any) -> R:
    """A record dataclass from a row holding (at least) its fields, a column of the same name
    each; `converted`: fields whose column needs converting first (a field whose column the row
    lacks keeps its default)."""
    names = _COLUMNS.get(cls)
    if names is None:
        names = _COLUMNS[cls] = tuple(f.name for f in fields(cls))  # type: ignore[arg-type]
    values = {name: row[name] for name in names if name in row and name not in converted}
    return cls(**values, **converted)


def _stored(row: asyncpg.Record) -> StoredObject:
    return _from_row(StoredObject, row, amount=_decimal_text(row["amount"]))


def _event(row: asyncpg.Record) -> Event:
    return _from_row(Event, row, tx=int(row["tx"]))


def _object_params(rec: ObjectRecord, snapshot: Mapping[str, Any]) -> tuple[object, ...]:
    """$1..$15 of the objects INSERT and UPDATE statements, in column order."""
    return (
        rec.merchant,
        rec.kind,
        rec.object_id,
        rec.checkout_session_id,
        rec.charge_permission_id,
        rec.charge_id,
        rec.state,
        rec.reason_code,
        rec.is_final,
        rec.amount,
        rec.currency_code,
        rec.merchant_reference_id,
        dict(snapshot),
        rec.created_at,
        rec.amazon_expires_at,
    )


class QueryBase:
    """The pool and the vault every query mixin of `Repository` works with. Methods take the
    pool; none holds a connection between calls."""

    def __init__(self, pool: asyncpg.Pool, vault: PiiVault) -> None:
        self._pool = pool
        self._vault = vault

    async def _opened(self, items: list[Snapshotted]) -> list[Snapshotted]:
        """Objects or events with their sealed values opened (those holding none as they are)."""
        if not any(holds_references(item.snapshot) for item in items):
            return items
        snapshots = await self._vault.open_many(self._pool, [item.snapshot for item in items])
        return [replace(item, snapshot=s) for item, s in zip(items, snapshots, strict=True)]
