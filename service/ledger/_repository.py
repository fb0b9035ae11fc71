"""Every SQL statement over objects, events and operations.

Write rules that make the ledger trustworthy:
- An object's row and the event describing its change are written in one transaction, under the
  row's lock, so concurrent observers (API call, poll, IPN) record each transition exactly once.
- A final state is never replaced by a non-final one: a slow, stale read cannot roll history back.
- Snapshots merge top-level fields, so Amazon's sparse answers (Complete, a canceled session) never
  erase what an earlier full read recorded.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any, Generic, TypeVar

import asyncpg
from asyncpg.pool import PoolConnectionProxy

from ._instance import instance_alive
from ._pii import PII_FIELDS, PiiVault, buyer_hash_of, holds_pii

__all__ = [
    "EVENT_SOURCES",
    "OBJECT_KINDS",
    "Erasure",
    "ErasureRefused",
    "Event",
    "EventFilter",
    "InvalidPageToken",
    "ObjectFilter",
    "ObjectRecord",
    "Operation",
    "OperationConflict",
    "Page",
    "Position",
    "Repository",
    "StableEvents",
    "StoredObject",
]

OBJECT_KINDS = ("checkout_session", "charge_permission", "charge", "refund")
EVENT_SOURCES = ("api", "poll", "ipn", "recovery")

Conn = asyncpg.Connection | PoolConnectionProxy
T = TypeVar("T")

# Where an event sits in the order events are delivered: (writing transaction id, event id).
Position = tuple[int, int]


class InvalidPageToken(ValueError):
    """A page token that this query did not produce (tampered, or reused with other filters)."""


class ErasureRefused(Exception):
    """Buyer data of a charge permission that can still be charged is not erased."""

    def __init__(self, open_permissions: Sequence[str]) -> None:
        super().__init__("charge permissions still open: close them before erasing buyer data")
        self.open_permissions = list(open_permissions)


@dataclass(frozen=True)
class Erasure:
    objects: int
    events: int
    erased_at: datetime


class OperationConflict(Exception):
    """The idempotency key was first used with a different request."""

    def __init__(self, operation: Operation) -> None:
        super().__init__(f"idempotency key already used for a different {operation.operation}")
        self.operation = operation


@dataclass(frozen=True)
class ObjectRecord:
    """What the ledger keeps of one Amazon object after one observation."""

    merchant: str
    kind: str
    object_id: str
    state: str
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
class Backlog:
    """Work the service still owes: pending operations and IPNs not yet processed."""

    pending_operations: int = 0
    oldest_pending_operation_age_s: float = 0.0
    unprocessed_ipns: int = 0
    oldest_unprocessed_ipn_age_s: float = 0.0


@dataclass(frozen=True)
class StoredObject:
    merchant: str
    kind: str
    object_id: str
    state: str
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


@dataclass(frozen=True)
class StableEvents:
    """Events no transaction can still precede, oldest position first; the frontier they were
    read below; and the largest `tx` of committed events beyond it (held back until the
    transactions before them end), if any."""

    items: list[Event]
    frontier: int
    held_until: int | None

    @property
    def held_back(self) -> bool:
        return self.held_until is not None


@dataclass(frozen=True)
class Operation:
    merchant: str
    operation: str
    idempotency_key: str
    request_hash: bytes
    amazon_idempotency_key: str
    status: str
    request: dict[str, Any]
    response: dict[str, Any] | None
    error: dict[str, Any] | None
    object_kind: str | None
    object_id: str | None
    attempts: int
    created_at: datetime
    updated_at: datetime


@dataclass(frozen=True)
class ObjectFilter:
    merchant: str
    kind: str | None = None
    state: str | None = None
    charge_permission_id: str | None = None
    merchant_reference_id: str | None = None
    created_after: datetime | None = None
    created_before: datetime | None = None


@dataclass(frozen=True)
class EventFilter:
    merchant: str
    kind: str | None = None
    object_id: str | None = None
    charge_permission_id: str | None = None
    source: str | None = None
    recorded_after: datetime | None = None
    recorded_before: datetime | None = None
    after_event_id: int = 0


@dataclass(frozen=True)
class Page(Generic[T]):
    items: list[T]
    next_page_token: str


def _decimal_text(value: Decimal | None) -> str | None:
    return None if value is None else format(value, "f")


def _stored(row: asyncpg.Record) -> StoredObject:
    amount: Decimal | None = row["amount"]
    return StoredObject(
        merchant=row["merchant"],
        kind=row["kind"],
        object_id=row["object_id"],
        state=row["state"],
        reason_code=row["reason_code"],
        is_final=row["is_final"],
        snapshot=row["snapshot"],
        checkout_session_id=row["checkout_session_id"],
        charge_permission_id=row["charge_permission_id"],
        charge_id=row["charge_id"],
        amount=_decimal_text(amount),
        currency_code=row["currency_code"],
        merchant_reference_id=row["merchant_reference_id"],
        created_at=row["created_at"],
        amazon_expires_at=row["amazon_expires_at"],
        first_seen_at=row["first_seen_at"],
        updated_at=row["updated_at"],
        version=row["version"],
        poll_attempts=row["poll_attempts"],
        buyer_data_erased_at=row["buyer_data_erased_at"],
    )


def _event(row: asyncpg.Record) -> Event:
    return Event(
        event_id=row["event_id"],
        recorded_at=row["recorded_at"],
        merchant=row["merchant"],
        kind=row["kind"],
        object_id=row["object_id"],
        charge_permission_id=row["charge_permission_id"],
        state=row["state"],
        reason_code=row["reason_code"],
        previous_state=row["previous_state"],
        source=row["source"],
        snapshot=row["snapshot"],
        amazon_request_id=row.get("amazon_request_id"),
        tx=int(row["tx"]),
    )


def _operation(row: asyncpg.Record) -> Operation:
    return Operation(
        merchant=row["merchant"],
        operation=row["operation"],
        idempotency_key=row["idempotency_key"],
        request_hash=bytes(row["request_hash"]),
        amazon_idempotency_key=row["amazon_idempotency_key"],
        status=row["status"],
        request=row["request"],
        response=row["response"],
        error=row["error"],
        object_kind=row["object_kind"],
        object_id=row["object_id"],
        attempts=row["attempts"],
        created_at=row["created_at"],
        updated_at=row["updated_at"],
    )


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


def _token_digest(parts: Sequence[object]) -> str:
    return hashlib.sha256(repr(tuple(parts)).encode()).hexdigest()[:16]


def _encode_token(position: Mapping[str, Any], filters: Sequence[object]) -> str:
    data = {"p": position, "f": _token_digest(filters)}
    return base64.urlsafe_b64encode(json.dumps(data, separators=(",", ":")).encode()).decode()


_MAX_BIGINT = 2**63 - 1


def _decode_token(token: str, filters: Sequence[object]) -> dict[str, Any]:
    """The position a token holds. Tokens are caller input: anything but the exact shape this
    service issues (a forged one, say) is `InvalidPageToken`, never an error from the driver."""
    try:
        data = json.loads(base64.urlsafe_b64decode(token.encode()))
    except (ValueError, TypeError, RecursionError):
        raise InvalidPageToken("page_token is not a token this service issued") from None
    if not isinstance(data, dict) or not isinstance(data.get("p"), dict):
        raise InvalidPageToken("page_token is not a token this service issued")
    if data.get("f") != _token_digest(filters):
        raise InvalidPageToken("page_token was issued for different filters")
    position: dict[str, Any] = data["p"]
    return position


def _object_position(pos: Mapping[str, Any]) -> tuple[datetime, str, str]:
    created, kind, object_id = pos.get("c"), pos.get("k"), pos.get("i")
    try:
        if not (isinstance(created, str) and isinstance(kind, str) and isinstance(object_id, str)):
            raise ValueError("wrong types")
        at = datetime.fromisoformat(created)
        if (
            at.tzinfo is None
            or len(kind) > 64
            or len(object_id) > 256
            or "\x00" in kind + object_id
        ):
            raise ValueError("out of range")
        at.astimezone(UTC)  # a time near the calendar's ends cannot be shifted to UTC
    except (ValueError, OverflowError):
        raise InvalidPageToken("page_token is not a token this service issued") from None
    return at, kind, object_id


# $1..$7 the ListEvents filters (NULL = any), $8/$9 the position to read after, $10 the limit.
# One statement and one snapshot: the frontier and the rows it admits come from the same snapshot,
# so no transaction below the frontier can commit an event this read does not see. Always returns
# a row (event columns NULL when none), carrying the frontier and the largest `tx` of the matching
# committed events that wait beyond it (NULL when none).
_STABLE_EVENTS = """
    WITH f AS MATERIALIZED (SELECT ledger_event_frontier() AS x),
    stable AS (
        SELECT * FROM events
        WHERE ($1::text IS NULL OR merchant = $1)
          AND ($2::text IS NULL OR kind = $2)
          AND ($3::text IS NULL OR object_id = $3)
          AND ($4::text IS NULL OR charge_permission_id = $4)
          AND ($5::text IS NULL OR source = $5)
          AND ($6::timestamptz IS NULL OR recorded_at >= $6)
          AND ($7::timestamptz IS NULL OR recorded_at < $7)
          AND (tx, event_id) > ($8::xid8, $9::bigint)
          AND tx < (SELECT x FROM f)
        ORDER BY tx, event_id
        LIMIT $10
    ), held AS (
        SELECT (SELECT x FROM f) AS frontier, (
            SELECT max(tx) FROM events
            WHERE ($1::text IS NULL OR merchant = $1)
              AND ($2::text IS NULL OR kind = $2)
              AND ($3::text IS NULL OR object_id = $3)
              AND ($4::text IS NULL OR charge_permission_id = $4)
              AND ($5::text IS NULL OR source = $5)
              AND ($6::timestamptz IS NULL OR recorded_at >= $6)
              AND ($7::timestamptz IS NULL OR recorded_at < $7)
              AND tx >= (SELECT x FROM f)
              AND (tx, event_id) > ($8::xid8, $9::bigint)
        ) AS held_until
    )
    SELECT stable.*, held.frontier, held.held_until
    FROM held LEFT JOIN stable ON true
    ORDER BY stable.tx, stable.event_id
"""

_BEGIN_OPERATION = """
    INSERT INTO operations (merchant, operation, idempotency_key, request_hash,
        amazon_idempotency_key, status, request, lease_owner, lease_expires_at)
    VALUES ($1, $2, $3, $4, $5, 'pending', $6, $7, now() + make_interval(secs => $8))
    ON CONFLICT (merchant, operation, idempotency_key) DO NOTHING
    RETURNING *
"""

# $1..$15 as in `_object_params`; $16 operation, $17 idempotency key, $18 response, $19 source,
# $20 Amazon's request id.
# The object is inserted only while the operation is pending, the operation completed only if the
# object was inserted, and `ledger_require` aborts the whole statement if the two disagree (the
# operation was settled between the snapshot and its row lock).
_COMPLETE_WITH_NEW_OBJECT = """
    WITH pending AS (
        SELECT 1 FROM operations
        WHERE merchant = $1 AND operation = $16 AND idempotency_key = $17 AND status = 'pending'
    ), obj AS (
        INSERT INTO objects (merchant, kind, object_id, checkout_session_id,
            charge_permission_id, charge_id, state, reason_code, is_final, amount,
            currency_code, merchant_reference_id, snapshot, created_at, amazon_expires_at,
            next_poll_at)
        SELECT $1::text, $2::text, $3::text, $4::text, $5::text, $6::text, $7::text, $8::text,
            $9::boolean, $10::numeric, $11::text, $12::text, $13::jsonb,
            coalesce($14::timestamptz, now()), $15::timestamptz,
            CASE WHEN $9::boolean THEN NULL ELSE now() END
        FROM pending
        ON CONFLICT (merchant, kind, object_id) DO NOTHING
        RETURNING charge_permission_id
    ), op AS (
        UPDATE operations SET status = 'succeeded', response = $18, error = NULL,
            object_kind = $2, object_id = $3, updated_at = now()
        WHERE merchant = $1 AND operation = $16 AND idempotency_key = $17
          AND status = 'pending' AND EXISTS (SELECT 1 FROM obj)
        RETURNING updated_at
    ), ev AS (
        INSERT INTO events (merchant, kind, object_id, charge_permission_id, state,
            reason_code, previous_state, source, snapshot, amazon_request_id)
        SELECT $1, $2, $3, obj.charge_permission_id, $7, $8, NULL, $19, $13, $20::text
        FROM obj, op
        RETURNING *
    )
    SELECT ev.*, (SELECT updated_at FROM op) AS op_updated_at,
        ledger_require((SELECT count(*) FROM obj) = (SELECT count(*) FROM op),
            'an object was inserted for an operation that is no longer pending') AS consistent
    FROM (SELECT 1) AS one LEFT JOIN ev ON true
"""


def _merged(current: Mapping[str, Any], incoming: Mapping[str, Any]) -> dict[str, Any]:
    """The snapshot after a new observation. Amazon's answers are sparse (Complete leaves
    `paymentDetails`, `merchantMetadata`, `buyer` null): a null never erases what the ledger knew.
    The answer as received stays in the event."""
    return {**current, **{k: v for k, v in incoming.items() if v is not None}}


def _text_or_none(value: object) -> str | None:
    return value if isinstance(value, str) and value else None


def _single_statement_completion(
    op: Operation, response: Mapping[str, Any], records: Sequence[ObjectRecord], source: str
) -> bool:
    """Whether `complete_operation` may try its one-statement form: one new-object candidate,
    nothing to seal, no settled refund whose charge must be marked for a re-read, and no completed
    checkout session whose related objects are owed reads."""
    if len(records) != 1 or source not in EVENT_SOURCES:
        return False
    record = records[0]
    if record.kind == "refund" and record.is_final:
        return False
    if record.kind == "checkout_session" and record.state == "Completed":
        return False  # owes reads of the objects it names
    return not (
        holds_pii(record.snapshot)
        or holds_pii(response.get("body") or {})
        or holds_pii(op.request.get("body") or {})
    )


class Repository:
    """The ledger's queries. Methods take the pool; none holds a connection between calls."""

    def __init__(self, pool: asyncpg.Pool, vault: PiiVault) -> None:
        self._pool = pool
        self._vault = vault

    async def _open_objects(self, items: list[StoredObject]) -> list[StoredObject]:
        snapshots = await self._vault.open_many(self._pool, [o.snapshot for o in items])
        return [replace(o, snapshot=s) for o, s in zip(items, snapshots, strict=True)]

    async def _open_events(self, items: list[Event]) -> list[Event]:
        snapshots = await self._vault.open_many(self._pool, [e.snapshot for e in items])
        return [replace(e, snapshot=s) for e, s in zip(items, snapshots, strict=True)]

    async def _open_operation(self, op: Operation) -> Operation:
        request = dict(op.request)
        request["body"] = await self._vault.open(self._pool, op.request.get("body") or {})
        response = op.response
        if response is not None:
            response = dict(response)
            response["body"] = await self._vault.open(self._pool, response.get("body") or {})
        return replace(op, request=request, response=response)

    # --- objects and events -------------------------------------------------------------------

    async def record(
        self, records: Sequence[ObjectRecord], source: str, *, timeout: float | None = None
    ) -> list[Event]:
        """Upsert objects and append an event for each that changed, in one transaction."""
        async with self._pool.acquire() as conn, conn.transaction():
            return await self._record(conn, records, source, timeout)

    async def _record(
        self, conn: Conn, records: Sequence[ObjectRecord], source: str, timeout: float | None
    ) -> list[Event]:
        if source not in EVENT_SOURCES:
            raise ValueError(f"unknown event source {source!r}")
        events: list[Event] = []
        for record in records:
            event = await self._upsert(conn, record, source, timeout)
            if event is not None:
                events.append(event)
        return events

    async def _upsert(
        self, conn: Conn, rec: ObjectRecord, source: str, timeout: float | None
    ) -> Event | None:
        plain: dict[str, Any] = dict(rec.snapshot)
        sealed = await self._vault.seal(
            conn,
            plain,
            merchant=rec.merchant,
            kind=rec.kind,
            object_id=rec.object_id,
            charge_permission_id=rec.charge_permission_id,
        )
        # Insert first: a concurrent first sighting (API answer and IPN at once) then conflicts
        # here instead of both inserting; the loser takes the update path under the row lock.
        inserted = await conn.fetchval(
            """
            INSERT INTO objects (merchant, kind, object_id, checkout_session_id,
                charge_permission_id, charge_id, state, reason_code, is_final, amount,
                currency_code, merchant_reference_id, snapshot, created_at, amazon_expires_at,
                next_poll_at)
            VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10::numeric, $11, $12, $13,
                coalesce($14, now()), $15, CASE WHEN $9 THEN NULL ELSE now() END)
            ON CONFLICT (merchant, kind, object_id) DO NOTHING
            RETURNING true
            """,
            *_object_params(rec, sealed),
            timeout=timeout,
        )
        previous_state = None
        if not inserted:
            await self._vault.discard(conn, sealed)
            current = await conn.fetchrow(
                """
                SELECT state, reason_code, is_final, snapshot, buyer_data_erased_at, needs_refresh
                FROM objects
                WHERE merchant = $1 AND kind = $2 AND object_id = $3
                FOR UPDATE
                """,
                rec.merchant,
                rec.kind,
                rec.object_id,
                timeout=timeout,
            )
            assert current is not None
            previous_state = current["state"]
            if current["needs_refresh"]:
                await conn.execute(
                    "UPDATE objects SET needs_refresh = false"
                    " WHERE merchant = $1 AND kind = $2 AND object_id = $3",
                    rec.merchant,
                    rec.kind,
                    rec.object_id,
                )
            if current["is_final"] and not rec.is_final:
                return None
            incoming = dict(rec.snapshot)
            if current["buyer_data_erased_at"] is not None:
                for field in PII_FIELDS:
                    incoming.pop(field, None)
            current_plain = await self._vault.open(conn, current["snapshot"])
            plain = _merged(current_plain, incoming)
            unchanged = (
                current["state"] == rec.state
                and current["reason_code"] == rec.reason_code
                and current_plain == plain
            )
            if unchanged:
                return None
            merged_sealed = _merged(current["snapshot"], incoming)
            sealed = await self._vault.seal(
                conn,
                merged_sealed,
                merchant=rec.merchant,
                kind=rec.kind,
                object_id=rec.object_id,
                charge_permission_id=rec.charge_permission_id,
                reuse=current["snapshot"],
                reuse_plain=current_plain,
            )
            await conn.execute(
                """
                UPDATE objects SET
                    checkout_session_id = coalesce($4, checkout_session_id),
                    charge_permission_id = coalesce($5, charge_permission_id),
                    charge_id = coalesce($6, charge_id),
                    state = $7, reason_code = $8, is_final = $9,
                    amount = coalesce($10::numeric, amount),
                    currency_code = coalesce($11, currency_code),
                    merchant_reference_id = coalesce($12, merchant_reference_id),
                    snapshot = $13,
                    created_at = coalesce($14, created_at),
                    amazon_expires_at = coalesce($15, amazon_expires_at),
                    updated_at = now(),
                    version = version + 1,
                    poll_attempts = CASE WHEN state = $7 THEN poll_attempts ELSE 0 END,
                    next_poll_at = CASE WHEN $9 THEN NULL ELSE coalesce(next_poll_at, now()) END
                WHERE merchant = $1 AND kind = $2 AND object_id = $3
                """,
                *_object_params(rec, sealed),
                timeout=timeout,
            )
        row = await conn.fetchrow(
            """
            INSERT INTO events (merchant, kind, object_id, charge_permission_id, state,
                reason_code, previous_state, source, snapshot, amazon_request_id, tx)
            VALUES ($1, $2, $3, coalesce($4, (SELECT charge_permission_id FROM objects
                WHERE merchant = $1 AND kind = $2 AND object_id = $3)), $5, $6, $7, $8, $9, $10,
                greatest(pg_current_xact_id(), (SELECT max(tx) FROM events
                    WHERE merchant = $1 AND kind = $2 AND object_id = $3)))
            RETURNING *
            """,
            rec.merchant,
            rec.kind,
            rec.object_id,
            rec.charge_permission_id,
            rec.state,
            rec.reason_code,
            previous_state,
            source,
            sealed,
            rec.amazon_request_id,
            timeout=timeout,
        )
        assert row is not None
        if rec.kind == "checkout_session" and rec.state == "Completed":
            await conn.execute(
                """
                INSERT INTO owed_reads (merchant, kind, object_id)
                SELECT $1, r.kind, r.object_id
                FROM (VALUES ('charge_permission', $2::text), ('charge', $3::text))
                    AS r(kind, object_id)
                WHERE r.object_id IS NOT NULL
                  AND NOT EXISTS (SELECT 1 FROM objects o WHERE o.merchant = $1
                                  AND o.kind = r.kind AND o.object_id = r.object_id)
                ON CONFLICT DO NOTHING
                """,
                rec.merchant,
                _text_or_none(plain.get("chargePermissionId")),
                _text_or_none(plain.get("chargeId")),
            )
        if rec.kind == "refund" and rec.is_final and previous_state != rec.state and rec.charge_id:
            await conn.execute(
                "UPDATE objects SET needs_refresh = true"
                " WHERE merchant = $1 AND kind = 'charge' AND object_id = $2",
                rec.merchant,
                rec.charge_id,
            )
        return replace(_event(row), snapshot=plain)

    async def get_object(
        self, merchant: str, kind: str, object_id: str, *, timeout: float | None = None
    ) -> StoredObject | None:
        row = await self._pool.fetchrow(
            "SELECT * FROM objects WHERE merchant = $1 AND kind = $2 AND object_id = $3",
            merchant,
            kind,
            object_id,
            timeout=timeout,
        )
        return None if row is None else (await self._open_objects([_stored(row)]))[0]

    async def list_objects(
        self,
        where: ObjectFilter,
        *,
        page_size: int,
        page_token: str = "",
        timeout: float | None = None,
    ) -> Page[StoredObject]:
        """Newest first, keyset-paginated on (created_at, kind, object_id): stable under inserts."""
        filters = [
            where.merchant,
            where.kind,
            where.state,
            where.charge_permission_id,
            where.merchant_reference_id,
            where.created_after,
            where.created_before,
        ]
        after: tuple[datetime, str, str] | None = None
        if page_token:
            after = _object_position(_decode_token(page_token, filters))
        rows = await self._pool.fetch(
            """
            SELECT * FROM objects
            WHERE merchant = $1
              AND ($2::text IS NULL OR kind = $2)
              AND ($3::text IS NULL OR state = $3)
              AND ($4::text IS NULL OR charge_permission_id = $4)
              AND ($5::text IS NULL OR merchant_reference_id = $5)
              AND ($6::timestamptz IS NULL OR created_at >= $6)
              AND ($7::timestamptz IS NULL OR created_at < $7)
              AND ($8::timestamptz IS NULL OR (created_at, kind, object_id) < ($8, $9, $10))
            ORDER BY created_at DESC, kind DESC, object_id DESC
            LIMIT $11
            """,
            *filters,
            after[0] if after else None,
            after[1] if after else None,
            after[2] if after else None,
            page_size + 1,
            timeout=timeout,
        )
        items = await self._open_objects([_stored(r) for r in rows[:page_size]])
        token = ""
        if len(rows) > page_size:
            last = items[-1]
            token = _encode_token(
                {"c": last.created_at.isoformat(), "k": last.kind, "i": last.object_id}, filters
            )
        return Page(items, token)

    async def list_events(
        self,
        where: EventFilter,
        *,
        page_size: int,
        page_token: str = "",
        after: Position | None = None,
        settle_s: float = 1.0,
        timeout: float | None = None,
    ) -> Page[Event]:
        """Stable events in delivery order (`Position`), so a reader can resume after the last
        event it saw (`after`, else `after_event_id`'s position). With `settle_s`, a short page waits that long at most for committed events
        held back by transactions still running, so a caller reads its own writes."""
        filters = [
            where.merchant,
            where.kind,
            where.object_id,
            where.charge_permission_id,
            where.source,
            where.recorded_after,
            where.recorded_before,
        ]
        if after is None:
            after = (0, 0)
            if where.after_event_id:
                after = await self.event_position(where.merchant, where.after_event_id)
        if page_token:
            pos = _decode_token(page_token, filters)
            tx, event_id = pos.get("t"), pos.get("e")
            if not all(type(v) is int and 0 <= v <= _MAX_BIGINT for v in (tx, event_id)):
                raise InvalidPageToken("page_token is not a token this service issued")
            after = max(after, (int(tx), int(event_id)))  # type: ignore[arg-type]
        loop = asyncio.get_running_loop()
        give_up = loop.time() + settle_s
        delay = 0.002
        page = await self._stable_events(filters, after, page_size, timeout)
        # Wait only for what was committed when the call came: on a busy ledger there is always a
        # newer event held back.
        target = page.held_until
        while (
            target is not None
            and page.frontier <= target
            and len(page.items) <= page_size
            and loop.time() < give_up
        ):
            await asyncio.sleep(min(delay, max(0.0, give_up - loop.time())))
            delay = min(delay * 2, 0.05)
            page = await self._stable_events(filters, after, page_size, timeout)
        items = await self._open_events(page.items[:page_size])
        token = ""
        if len(page.items) > page_size:
            tx, event_id = items[-1].position
            token = _encode_token({"t": tx, "e": event_id}, filters)
        return Page(items, token)

    async def stable_events(
        self, after: Position, *, limit: int, timeout: float | None = None
    ) -> StableEvents:
        """Every merchant's stable events after `after` (the event hub's one shared read)."""
        page = await self._stable_events([None] * 7, after, limit, timeout)
        return replace(page, items=await self._open_events(page.items))

    async def _stable_events(
        self, filters: Sequence[object], after: Position, limit: int, timeout: float | None
    ) -> StableEvents:
        rows = await self._pool.fetch(
            _STABLE_EVENTS, *filters, after[0], after[1], limit + 1, timeout=timeout
        )
        until = rows[0]["held_until"]
        return StableEvents(
            [_event(r) for r in rows if r["event_id"] is not None],
            int(rows[0]["frontier"]),
            None if until is None else int(until),
        )

    async def event_position(
        self, merchant: str, event_id: int, *, settle_s: float = 1.0
    ) -> Position:
        """The position of `event_id` (or of this merchant's last event before it), so a reader
        resuming "after event N" gets exactly the events it has not yet been sent.

        An event not yet stable (its id came from somewhere other than this feed, e.g.
        GetTransaction, or a write just answered) is waited for up to `settle_s`; if it is still
        held back, the resume starts at the frontier instead: events that may still commit before
        it are then delivered, at the price of sending it again."""
        loop = asyncio.get_running_loop()
        give_up = loop.time() + settle_s
        delay = 0.002
        while True:
            row = await self._pool.fetchrow(
                """
                WITH e AS MATERIALIZED (
                    SELECT tx, event_id FROM events WHERE merchant = $1 AND event_id <= $2
                    ORDER BY event_id DESC LIMIT 1
                )
                SELECT tx, event_id, ledger_event_frontier() AS frontier FROM e
                """,
                merchant,
                event_id,
            )
            if row is None:
                return (0, 0)
            if row["tx"] < row["frontier"]:
                return (int(row["tx"]), int(row["event_id"]))
            if loop.time() >= give_up:
                return (int(row["frontier"]), 0)
            await asyncio.sleep(min(delay, max(0.0, give_up - loop.time())))
            delay = min(delay * 2, 0.05)

    async def event_frontier(self) -> Position:
        """The position every event committed from now on sorts after."""
        value = await self._pool.fetchval("SELECT ledger_event_frontier()")
        return (int(value), 0)

    async def object_events(
        self, merchant: str, kind: str, object_id: str, *, timeout: float | None = None
    ) -> list[Event]:
        rows = await self._pool.fetch(
            """
            SELECT * FROM events WHERE merchant = $1 AND kind = $2 AND object_id = $3
            ORDER BY event_id
            """,
            merchant,
            kind,
            object_id,
            timeout=timeout,
        )
        return await self._open_events([_event(r) for r in rows])

    # --- operations (idempotency records) ----------------------------------------------------

    async def begin_operation(
        self,
        *,
        merchant: str,
        operation: str,
        idempotency_key: str,
        request_hash: bytes,
        amazon_idempotency_key: str,
        request: Mapping[str, Any],
        lease_owner: str | None = None,
        lease_s: float = 60.0,
        timeout: float | None = None,
    ) -> tuple[Operation, bool]:
        """Insert a pending record, or return the existing one; `True` when this call created it.

        Raises `OperationConflict` when the key was used for a different request: the unique key
        makes this hold across replicas.
        """
        params = (
            merchant,
            operation,
            idempotency_key,
            request_hash,
            amazon_idempotency_key,
        )
        plain = request.get("body") or {}
        if not holds_pii(plain):
            # Nothing to seal first: the INSERT alone is atomic, no transaction block needed.
            row = await self._pool.fetchrow(
                _BEGIN_OPERATION, *params, dict(request), lease_owner, lease_s, timeout=timeout
            )
        else:
            async with self._pool.acquire() as conn, conn.transaction():
                body = await self._vault.seal(
                    conn,
                    plain,
                    merchant=merchant,
                    kind="operation",
                    object_id=f"{operation}/{idempotency_key}",
                    charge_permission_id=None,
                )
                row = await conn.fetchrow(
                    _BEGIN_OPERATION,
                    *params,
                    {**request, "body": body},
                    lease_owner,
                    lease_s,
                    timeout=timeout,
                )
                if row is None:
                    await self._vault.discard(conn, body)
        if row is not None:
            return await self._open_operation(_operation(row)), True
        existing = await self.get_operation(merchant, operation, idempotency_key, timeout=timeout)
        assert existing is not None
        if existing.request_hash != request_hash:
            raise OperationConflict(existing)
        return existing, False

    async def get_operation(
        self, merchant: str, operation: str, idempotency_key: str, *, timeout: float | None = None
    ) -> Operation | None:
        row = await self._pool.fetchrow(
            """
            SELECT * FROM operations
            WHERE merchant = $1 AND operation = $2 AND idempotency_key = $3
            """,
            merchant,
            operation,
            idempotency_key,
            timeout=timeout,
        )
        return None if row is None else await self._open_operation(_operation(row))

    async def note_attempt(
        self, merchant: str, operation: str, idempotency_key: str, *, timeout: float | None = None
    ) -> None:
        await self._pool.execute(
            """
            UPDATE operations SET attempts = attempts + 1, updated_at = now()
            WHERE merchant = $1 AND operation = $2 AND idempotency_key = $3
            """,
            merchant,
            operation,
            idempotency_key,
            timeout=timeout,
        )

    async def complete_operation(
        self,
        op: Operation,
        *,
        response: Mapping[str, Any],
        records: Sequence[ObjectRecord],
        source: str,
        timeout: float | None = None,
    ) -> tuple[Operation, list[Event]]:
        """Store the response, upsert objects and append events in ONE transaction.

        If another replica completed the same operation first, its stored response wins and no
        second event is written.
        """
        if _single_statement_completion(op, response, records, source):
            fast = await self._complete_new_object(
                op, response=response, record=records[0], source=source, timeout=timeout
            )
            if fast is not None:
                return fast
        primary = records[0] if records else None
        reference = f"{op.operation}/{op.idempotency_key}"
        async with self._pool.acquire() as conn, conn.transaction():
            locked = await conn.fetchval(
                """
                SELECT true FROM operations
                WHERE merchant = $1 AND operation = $2 AND idempotency_key = $3
                  AND status = 'pending'
                FOR UPDATE
                """,
                op.merchant,
                op.operation,
                op.idempotency_key,
                timeout=timeout,
            )
            if not locked:
                existing = await conn.fetchrow(
                    """
                    SELECT * FROM operations
                    WHERE merchant = $1 AND operation = $2 AND idempotency_key = $3
                    """,
                    op.merchant,
                    op.operation,
                    op.idempotency_key,
                    timeout=timeout,
                )
                assert existing is not None
                return await self._open_operation(_operation(existing)), []
            charge_permission_id = primary.charge_permission_id if primary else None
            body = await self._vault.seal(
                conn,
                response.get("body") or {},
                merchant=op.merchant,
                kind="operation",
                object_id=reference,
                charge_permission_id=charge_permission_id,
            )
            if charge_permission_id:
                await conn.execute(
                    """
                    UPDATE pii_values SET charge_permission_id = $3
                    WHERE merchant = $1 AND kind = 'operation' AND object_id = $2
                      AND charge_permission_id IS NULL
                    """,
                    op.merchant,
                    reference,
                    charge_permission_id,
                )
            row = await conn.fetchrow(
                """
                UPDATE operations SET status = 'succeeded', response = $4, error = NULL,
                    object_kind = $5, object_id = $6, updated_at = now()
                WHERE merchant = $1 AND operation = $2 AND idempotency_key = $3
                RETURNING *
                """,
                op.merchant,
                op.operation,
                op.idempotency_key,
                {**response, "body": body},
                primary.kind if primary else None,
                primary.object_id if primary else None,
                timeout=timeout,
            )
            assert row is not None
            events = await self._record(conn, records, source, timeout)
            done = replace(_operation(row), request=dict(op.request), response=dict(response))
            return done, events

    async def _complete_new_object(
        self,
        op: Operation,
        *,
        response: Mapping[str, Any],
        record: ObjectRecord,
        source: str,
        timeout: float | None,
    ) -> tuple[Operation, list[Event]] | None:
        """The common completion (a pending operation whose answer is an object the ledger has
        not seen, no PII anywhere) as ONE statement: one round trip instead of a transaction of
        five. None when it does not apply after all (someone else recorded the object or the
        operation first); nothing was written then and the caller takes the general path."""
        try:
            row = await self._pool.fetchrow(
                _COMPLETE_WITH_NEW_OBJECT,
                *_object_params(record, record.snapshot),
                op.operation,
                op.idempotency_key,
                dict(response),
                source,
                record.amazon_request_id,
                timeout=timeout,
            )
        except asyncpg.exceptions.AssertError:
            return None
        if row is None or row["event_id"] is None:
            return None
        done = replace(
            op,
            status="succeeded",
            response=dict(response),
            error=None,
            object_kind=record.kind,
            object_id=record.object_id,
            updated_at=row["op_updated_at"],
        )
        return done, [replace(_event(row), snapshot=dict(record.snapshot))]

    async def fail_operation(
        self, op: Operation, *, error: Mapping[str, Any], timeout: float | None = None
    ) -> Operation:
        """Record a definitive failure (Amazon will answer the same for this key forever)."""
        row = await self._pool.fetchrow(
            """
            UPDATE operations SET status = 'failed', error = $4, updated_at = now()
            WHERE merchant = $1 AND operation = $2 AND idempotency_key = $3
              AND status = 'pending'
            RETURNING *
            """,
            op.merchant,
            op.operation,
            op.idempotency_key,
            dict(error),
            timeout=timeout,
        )
        if row is None:
            current = await self.get_operation(
                op.merchant, op.operation, op.idempotency_key, timeout=timeout
            )
            assert current is not None
            return current
        return await self._open_operation(_operation(row))

    async def pending_operations(
        self, *, older_than_s: float, limit: int, timeout: float | None = None
    ) -> list[Operation]:
        """Pending operations untouched for `older_than_s`, oldest first."""
        rows = await self._pool.fetch(
            """
            SELECT * FROM operations
            WHERE status = 'pending' AND updated_at < now() - make_interval(secs => $1)
            ORDER BY updated_at
            LIMIT $2
            """,
            older_than_s,
            limit,
            timeout=timeout,
        )
        return [await self._open_operation(_operation(r)) for r in rows]

    async def claim_orphaned_operations(
        self, *, owner: str, lease_s: float, limit: int, timeout: float | None = None
    ) -> list[Operation]:
        """Take over pending operations nobody is driving: lease expired (this replica's own
        included: the call that held it gave up), or the owning process is dead (its instance
        lock is free). Claiming is a compare-and-set on the owner and lease, so two replicas
        never claim the same operation."""
        claimed: list[Operation] = []
        async with self._pool.acquire() as conn:
            rows = await conn.fetch(
                """
                SELECT merchant, operation, idempotency_key, lease_owner, lease_expires_at,
                       lease_expires_at IS NULL OR lease_expires_at < now() AS expired
                FROM operations
                WHERE status = 'pending'
                  AND (lease_owner IS DISTINCT FROM $1
                       OR lease_expires_at IS NULL OR lease_expires_at < now())
                ORDER BY updated_at
                LIMIT $2
                """,
                owner,
                limit,
                timeout=timeout,
            )
            liveness: dict[str, bool] = {}
            for row in rows:
                previous = row["lease_owner"]
                if not row["expired"] and previous is not None:
                    if previous not in liveness:
                        liveness[previous] = await instance_alive(conn, previous)
                    if liveness[previous]:
                        continue
                taken = await conn.fetchrow(
                    """
                    UPDATE operations
                    SET lease_owner = $4, lease_expires_at = now() + make_interval(secs => $5),
                        attempts = attempts + 1, updated_at = now()
                    WHERE merchant = $1 AND operation = $2 AND idempotency_key = $3
                      AND status = 'pending' AND lease_owner IS NOT DISTINCT FROM $6
                      AND lease_expires_at IS NOT DISTINCT FROM $7
                    RETURNING *
                    """,
                    row["merchant"],
                    row["operation"],
                    row["idempotency_key"],
                    owner,
                    lease_s,
                    previous,
                    row["lease_expires_at"],
                    timeout=timeout,
                )
                if taken is not None:
                    claimed.append(await self._open_operation(_operation(taken)))
        return claimed

    # --- events by id, IPN messages, reconciler leases ---------------------------------------

    async def merchant_of(
        self, kind: str, object_id: str, charge_permission_id: str | None = None
    ) -> str | None:
        """Which merchant recorded this object (or, failing that, its charge permission)."""
        merchant: str | None = await self._pool.fetchval(
            """
            SELECT merchant FROM objects
            WHERE (kind = $1 AND object_id = $2)
               OR ($3::text IS NOT NULL AND charge_permission_id = $3)
            ORDER BY (kind = $1 AND object_id = $2) DESC
            LIMIT 1
            """,
            kind,
            object_id,
            charge_permission_id,
        )
        return merchant

    async def record_ipn(
        self,
        *,
        notification_id: str,
        message_id: str,
        merchant: str | None,
        object_type: str,
        object_id: str,
        charge_permission_id: str | None,
        notification_type: str,
        topic_arn: str | None,
        envelope: Mapping[str, Any],
        amazon_merchant_id: str | None = None,
        retry_in_s: float = 30.0,
    ) -> bool:
        """Store a verified notification; False when this NotificationId was seen before. The
        receiver processes it at once; the reconciler takes it over after `retry_in_s`."""
        inserted = await self._pool.fetchval(
            """
            INSERT INTO ipn_messages (notification_id, message_id, merchant, object_type,
                object_id, charge_permission_id, notification_type, topic_arn, envelope,
                amazon_merchant_id, due_at)
            VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, now() + make_interval(secs => $11))
            ON CONFLICT (notification_id) DO NOTHING
            RETURNING true
            """,
            notification_id,
            message_id,
            merchant,
            object_type,
            object_id,
            charge_permission_id,
            notification_type,
            topic_arn,
            dict(envelope),
            amazon_merchant_id,
            retry_in_s,
        )
        return bool(inserted)

    async def mark_ipn_processed(self, notification_id: str, merchant: str | None = None) -> None:
        """Done; `merchant` records which account the notification turned out to be for."""
        await self._pool.execute(
            "UPDATE ipn_messages SET processed_at = now(), merchant = coalesce($2, merchant),"
            " last_error = NULL WHERE notification_id = $1",
            notification_id,
            merchant,
        )

    async def claim_ipns(self, *, limit: int, lease_s: float = 120.0) -> list[dict[str, Any]]:
        """Claim up to `limit` notifications whose follow-up is due, longest due first. SKIP
        LOCKED plus pushing `due_at` out by `lease_s` keep replicas off each other's claims;
        `settle_ipn` or `mark_ipn_processed` ends one."""
        rows = await self._pool.fetch(
            """
            UPDATE ipn_messages SET due_at = now() + make_interval(secs => $2)
            WHERE notification_id IN (
                SELECT notification_id FROM ipn_messages
                WHERE processed_at IS NULL AND given_up_at IS NULL AND due_at <= now()
                ORDER BY due_at
                LIMIT $1
                FOR UPDATE SKIP LOCKED)
            RETURNING notification_id, merchant, object_type, object_id, charge_permission_id,
                amazon_merchant_id, attempts
            """,
            limit,
            lease_s,
        )
        return [dict(r) for r in rows]

    async def settle_ipn(
        self,
        notification_id: str,
        *,
        error: str,
        max_attempts: int,
        backoff_s: Callable[[int], float],
    ) -> int:
        """One more failed follow-up, due again after `backoff_s(attempts)`; at `max_attempts`
        the notification is given up (`given_up_at`). Returns the attempts so far."""
        async with self._pool.acquire() as conn, conn.transaction():
            before: int | None = await conn.fetchval(
                "SELECT attempts FROM ipn_messages"
                " WHERE notification_id = $1 AND processed_at IS NULL FOR UPDATE",
                notification_id,
            )
            if before is None:
                return 0
            attempts = before + 1
            await conn.execute(
                """
                UPDATE ipn_messages SET attempts = $2::integer, last_error = $3,
                    due_at = now() + make_interval(secs => $4::float8),
                    given_up_at = CASE WHEN $2::integer >= $5::integer THEN now() END
                WHERE notification_id = $1
                """,
                notification_id,
                attempts,
                error,
                backoff_s(attempts),
                max_attempts,
            )
        return attempts

    async def merchant_of_amazon_id(self, amazon_merchant_id: str) -> str | None:
        """The account earlier notifications with this MerchantID were processed for."""
        merchant: str | None = await self._pool.fetchval(
            """
            SELECT merchant FROM ipn_messages
            WHERE amazon_merchant_id = $1 AND processed_at IS NOT NULL AND merchant IS NOT NULL
            ORDER BY processed_at DESC
            LIMIT 1
            """,
            amazon_merchant_id,
        )
        return merchant

    async def lease_due_objects(
        self, *, owner: str, lease_s: float, limit: int
    ) -> list[StoredObject]:
        """Non-final objects due for a poll, leased to `owner`. SKIP LOCKED plus the lease make
        each object polled by one replica at a time."""
        rows = await self._pool.fetch(
            """
            UPDATE objects o
            SET lease_owner = $1, lease_expires_at = now() + make_interval(secs => $2)
            FROM (
                SELECT merchant, kind, object_id FROM objects
                WHERE NOT is_final AND next_poll_at <= now()
                  AND (lease_expires_at IS NULL OR lease_expires_at < now())
                ORDER BY next_poll_at
                LIMIT $3
                FOR UPDATE SKIP LOCKED
            ) due
            WHERE o.merchant = due.merchant AND o.kind = due.kind AND o.object_id = due.object_id
            RETURNING o.*
            """,
            owner,
            lease_s,
            limit,
        )
        return [_stored(r) for r in rows]

    async def finish_poll(
        self,
        merchant: str,
        kind: str,
        object_id: str,
        *,
        owner: str,
        next_poll_in_s: float | None,
    ) -> None:
        """Release the lease and schedule the next poll (None: stop polling this object)."""
        await self._pool.execute(
            """
            UPDATE objects SET
                lease_owner = NULL, lease_expires_at = NULL,
                poll_attempts = poll_attempts + 1,
                next_poll_at = CASE
                    WHEN is_final OR $5::float8 IS NULL THEN NULL
                    ELSE now() + make_interval(secs => $5::float8)
                END
            WHERE merchant = $1 AND kind = $2 AND object_id = $3 AND lease_owner = $4
            """,
            merchant,
            kind,
            object_id,
            owner,
            next_poll_in_s,
        )

    async def poll_soon(self, merchant: str, kind: str, object_id: str) -> None:
        """Ask the reconciler to read this object at its next pass (an IPN hint, a timeout)."""
        await self._pool.execute(
            """
            UPDATE objects SET next_poll_at = now(), poll_attempts = 0
            WHERE merchant = $1 AND kind = $2 AND object_id = $3 AND NOT is_final
            """,
            merchant,
            kind,
            object_id,
        )

    async def owed_reads(self, *, limit: int, lease_s: float = 120.0) -> list[tuple[str, str, str]]:
        """Claim up to `limit` reads the reconciler owes and may try now, longest due first:
        related objects a completed checkout named that the ledger lacks, and final objects
        marked `needs_refresh`. A claim pushes `due_at` out by `lease_s`, so replicas running
        this together do not read the same object; `settle_owed_read` ends it. Owed reads the
        ledger has since satisfied are dropped here."""
        async with self._pool.acquire() as conn:
            await conn.execute(
                """
                DELETE FROM owed_reads r USING objects o
                WHERE o.merchant = r.merchant AND o.kind = r.kind AND o.object_id = r.object_id
                  AND NOT o.needs_refresh
                """
            )
            await conn.execute(
                """
                INSERT INTO owed_reads (merchant, kind, object_id)
                SELECT merchant, kind, object_id FROM objects WHERE needs_refresh
                ON CONFLICT DO NOTHING
                """
            )
            rows = await conn.fetch(
                """
                UPDATE owed_reads SET due_at = now() + make_interval(secs => $2)
                WHERE (merchant, kind, object_id) IN (
                    SELECT merchant, kind, object_id FROM owed_reads
                    WHERE due_at <= now()
                    ORDER BY due_at
                    LIMIT $1
                    FOR UPDATE SKIP LOCKED)
                RETURNING merchant, kind, object_id, due_at
                """,
                limit,
                lease_s,
            )
        return [(r["merchant"], r["kind"], r["object_id"]) for r in rows]

    async def settle_owed_read(
        self,
        merchant: str,
        kind: str,
        object_id: str,
        *,
        error: str | None,
        max_attempts: int,
        backoff_s: Callable[[int], float],
    ) -> int:
        """Record the outcome of an owed read: done (`error` None), or one more failed attempt,
        due again after `backoff_s(attempts)`. Returns the attempts so far; at `max_attempts` the
        read is given up (its row deleted, `needs_refresh` cleared) and the caller logs it."""
        async with self._pool.acquire() as conn, conn.transaction():
            if error is None:
                await conn.execute(
                    "DELETE FROM owed_reads WHERE merchant = $1 AND kind = $2 AND object_id = $3",
                    merchant,
                    kind,
                    object_id,
                )
                return 0
            attempts: int = await conn.fetchval(
                """
                INSERT INTO owed_reads AS r (merchant, kind, object_id, attempts, last_error)
                VALUES ($1, $2, $3, 1, $4)
                ON CONFLICT (merchant, kind, object_id) DO UPDATE
                    SET attempts = r.attempts + 1, last_error = $4
                RETURNING attempts
                """,
                merchant,
                kind,
                object_id,
                error,
            )
            if attempts >= max_attempts:
                await conn.execute(
                    "DELETE FROM owed_reads WHERE merchant = $1 AND kind = $2 AND object_id = $3",
                    merchant,
                    kind,
                    object_id,
                )
                await conn.execute(
                    "UPDATE objects SET needs_refresh = false"
                    " WHERE merchant = $1 AND kind = $2 AND object_id = $3 AND needs_refresh",
                    merchant,
                    kind,
                    object_id,
                )
            else:
                await conn.execute(
                    "UPDATE owed_reads SET due_at = now() + make_interval(secs => $4)"
                    " WHERE merchant = $1 AND kind = $2 AND object_id = $3",
                    merchant,
                    kind,
                    object_id,
                    backoff_s(attempts),
                )
            return attempts

    async def owed_read_counts(self) -> tuple[int, int]:
        """(never failed, failing) owed reads, for the `amazonpay.ledger.owed_reads` gauge."""
        row = await self._pool.fetchrow(
            "SELECT count(*) FILTER (WHERE attempts = 0) AS due,"
            " count(*) FILTER (WHERE attempts > 0) AS failing FROM owed_reads"
        )
        assert row is not None
        return int(row["due"]), int(row["failing"])

    async def oldest_pending_age_s(self) -> float:
        """Seconds since the oldest still-polled non-final object was last updated (0 if none)."""
        age = await self._pool.fetchval(
            """
            SELECT coalesce(extract(epoch FROM now() - min(updated_at)), 0)::float8
            FROM objects WHERE NOT is_final AND next_poll_at IS NOT NULL
            """
        )
        return float(age or 0.0)

    async def backlog(self) -> Backlog:
        """Pending operations and unprocessed IPNs: how many, and how old the oldest is."""
        row = await self._pool.fetchrow(
            """
            SELECT
                (SELECT count(*) FROM operations WHERE status = 'pending') AS ops,
                (SELECT coalesce(extract(epoch FROM now() - min(created_at)), 0)::float8
                 FROM operations WHERE status = 'pending') AS ops_age,
                (SELECT count(*) FROM ipn_messages
                 WHERE processed_at IS NULL AND given_up_at IS NULL) AS ipns,
                (SELECT coalesce(extract(epoch FROM now() - min(received_at)), 0)::float8
                 FROM ipn_messages WHERE processed_at IS NULL AND given_up_at IS NULL) AS ipns_age
            """
        )
        assert row is not None
        return Backlog(
            int(row["ops"]), float(row["ops_age"]), int(row["ipns"]), float(row["ipns_age"])
        )

    # --- buyer PII erasure ----------------------------------------------------------------------

    async def erase_buyer_data(
        self, merchant: str, *, charge_permission_id: str | None = None, buyer_id: str | None = None
    ) -> Erasure:
        """Erase buyer PII of every object of a charge permission (or of a buyer) and of the
        operations that created them. Amounts, states and history rows stay; erasing again
        returns zero counts. Refused while a charge permission involved is not Closed."""
        async with self._pool.acquire() as conn, conn.transaction():
            if charge_permission_id is not None:
                permissions = [charge_permission_id]
            else:
                assert buyer_id is not None
                rows = await conn.fetch(
                    """
                    SELECT DISTINCT coalesce(o.charge_permission_id, p.charge_permission_id) AS cp
                    FROM pii_values p
                    LEFT JOIN objects o ON o.merchant = p.merchant AND o.kind = p.kind
                        AND o.object_id = p.object_id
                    WHERE p.merchant = $1 AND p.buyer_hash = $2
                    """,
                    merchant,
                    buyer_hash_of(buyer_id),
                )
                permissions = [r["cp"] for r in rows if r["cp"]]
            targets = await conn.fetch(
                """
                SELECT kind, object_id, state, buyer_data_erased_at FROM objects
                WHERE merchant = $1 AND charge_permission_id = ANY($2::text[])
                FOR UPDATE
                """,
                merchant,
                permissions,
            )
            if not targets:
                raise LookupError("nothing recorded for this charge permission or buyer")
            open_permissions = [
                t["object_id"]
                for t in targets
                if t["kind"] == "charge_permission" and t["state"] != "Closed"
            ]
            if open_permissions:
                raise ErasureRefused(open_permissions)
            kinds = [t["kind"] for t in targets]
            ids = [t["object_id"] for t in targets]
            await conn.execute(
                """
                UPDATE pii_values SET ciphertext = NULL, key_id = NULL, erased_at = now()
                WHERE merchant = $1 AND erased_at IS NULL AND (
                    charge_permission_id = ANY($2::text[])
                    OR (kind, object_id) IN (SELECT * FROM unnest($3::text[], $4::text[]))
                    OR (kind = 'operation' AND object_id IN (
                        SELECT operation || '/' || idempotency_key FROM operations
                        WHERE merchant = $1 AND (object_kind, object_id) IN (
                            SELECT * FROM unnest($3::text[], $4::text[])))))
                """,
                merchant,
                permissions,
                kinds,
                ids,
            )
            fresh = [t for t in targets if t["buyer_data_erased_at"] is None]
            erased_at = await conn.fetchval("SELECT now()")
            if not fresh:
                return Erasure(0, 0, erased_at)
            await conn.execute(
                """
                UPDATE objects SET buyer_data_erased_at = $4
                WHERE merchant = $1 AND (kind, object_id) IN (
                    SELECT * FROM unnest($2::text[], $3::text[]))
                """,
                merchant,
                [t["kind"] for t in fresh],
                [t["object_id"] for t in fresh],
                erased_at,
            )
            events = await conn.fetchval(
                """
                SELECT count(*) FROM events
                WHERE merchant = $1 AND (kind, object_id) IN (
                    SELECT * FROM unnest($2::text[], $3::text[]))
                """,
                merchant,
                [t["kind"] for t in fresh],
                [t["object_id"] for t in fresh],
            )
            return Erasure(len(fresh), int(events), erased_at)

    async def erase_expired_pii(self, *, older_than_days: int, batch: int = 1000) -> int:
        """Retention: erase PII recorded more than `older_than_days` ago; returns values erased."""
        async with self._pool.acquire() as conn, conn.transaction():
            rows = await conn.fetch(
                """
                UPDATE pii_values SET ciphertext = NULL, key_id = NULL, erased_at = now()
                WHERE pii_id IN (
                    SELECT pii_id FROM pii_values
                    WHERE erased_at IS NULL
                      AND created_at < now() - make_interval(days => $1)
                    LIMIT $2 FOR UPDATE SKIP LOCKED)
                RETURNING merchant, kind, object_id
                """,
                older_than_days,
                batch,
            )
            objects = {(r["merchant"], r["kind"], r["object_id"]) for r in rows}
            objects = {o for o in objects if o[1] != "operation"}
            if objects:
                await conn.execute(
                    """
                    UPDATE objects SET buyer_data_erased_at = now()
                    WHERE buyer_data_erased_at IS NULL AND (merchant, kind, object_id) IN (
                        SELECT * FROM unnest($1::text[], $2::text[], $3::text[]))
                    """,
                    [o[0] for o in objects],
                    [o[1] for o in objects],
                    [o[2] for o in objects],
                )
            return len(rows)

    async def stored_answer(
        self, merchant: str, operation: str, idempotency_key: str, request_hash: bytes
    ) -> dict[str, Any] | None:
        """The stored answer of a ledger-only operation (no Amazon call), or None."""
        op = await self.get_operation(merchant, operation, idempotency_key)
        if op is None:
            return None
        if op.request_hash != request_hash:
            raise OperationConflict(op)
        return dict(op.response or {})

    async def store_answer(
        self,
        merchant: str,
        operation: str,
        idempotency_key: str,
        request_hash: bytes,
        answer: Mapping[str, Any],
    ) -> dict[str, Any]:
        """Keep the answer of a ledger-only operation for replays; the first stored answer wins."""
        await self._pool.execute(
            """
            INSERT INTO operations (merchant, operation, idempotency_key, request_hash,
                amazon_idempotency_key, status, request, response)
            VALUES ($1, $2, $3, $4, '', 'succeeded', '{}'::jsonb, $5)
            ON CONFLICT (merchant, operation, idempotency_key) DO NOTHING
            """,
            merchant,
            operation,
            idempotency_key,
            request_hash,
            dict(answer),
        )
        stored = await self.stored_answer(merchant, operation, idempotency_key, request_hash)
        assert stored is not None
        return stored
