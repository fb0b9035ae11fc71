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
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any, Generic, TypeVar

from ._pii import PII_FIELDS
from ._records import (
    EVENT_SOURCES,
    Conn,
    Event,
    ObjectRecord,
    Position,
    QueryBase,
    StoredObject,
    _event,
    _object_params,
    _stored,
)

__all__ = [
    "EventFilter",
    "InvalidPageToken",
    "ObjectFilter",
    "ObjectQueries",
    "Page",
    "StableEvents",
]

T = TypeVar("T")


class InvalidPageToken(ValueError):
    """A page token that this query did not produce (tampered, or reused with other filters)."""


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


@dataclass(frozen=True, kw_only=True)
class _Filter:
    """What every listing filters on: one merchant, optionally one kind and one charge
    permission's objects (None: any). Fields are passed by name only: six optional ones, most of
    them strings, are too easily shifted by one."""

    merchant: str
    kind: str | None = None
    charge_permission_id: str | None = None


@dataclass(frozen=True, kw_only=True)
class ObjectFilter(_Filter):
    state: str | None = None
    merchant_reference_id: str | None = None
    created_after: datetime | None = None
    created_before: datetime | None = None


@dataclass(frozen=True, kw_only=True)
class EventFilter(_Filter):
    object_id: str | None = None
    source: str | None = None
    recorded_after: datetime | None = None
    recorded_before: datetime | None = None
    after_event_id: int = 0


@dataclass(frozen=True)
class Page(Generic[T]):
    items: list[T]
    next_page_token: str


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


_EVENT_FILTERS = """
    ($1::text IS NULL OR merchant = $1)
    AND ($2::text IS NULL OR kind = $2)
    AND ($3::text IS NULL OR object_id = $3)
    AND ($4::text IS NULL OR charge_permission_id = $4)
    AND ($5::text IS NULL OR source = $5)
    AND ($6::timestamptz IS NULL OR recorded_at >= $6)
    AND ($7::timestamptz IS NULL OR recorded_at < $7)
    AND (tx, event_id) > ($8::xid8, $9::bigint)
"""
"""The events a read admits: the filters and the position, the same for both halves of
`_STABLE_EVENTS`."""

# $1..$7 the ListEvents filters (NULL = any), $8/$9 the position to read after, $10 the limit.
# One statement and one snapshot: the frontier and the rows it admits come from the same snapshot,
# so no transaction below the frontier can commit an event this read does not see. Always returns
# a row (event columns NULL when none), carrying the frontier and the largest `tx` of the matching
# events held back beyond it (NULL: none).
_STABLE_EVENTS = f"""
    WITH f AS MATERIALIZED (SELECT ledger_event_frontier() AS x),
    stable AS (
        SELECT * FROM events
        WHERE {_EVENT_FILTERS} AND tx < (SELECT x FROM f)
        ORDER BY tx, event_id
        LIMIT $10
    ), held AS (
        SELECT (SELECT x FROM f) AS frontier, (
            SELECT max(tx) FROM events
            WHERE {_EVENT_FILTERS} AND tx >= (SELECT x FROM f)
        ) AS held_until
    )
    SELECT stable.*, held.frontier, held.held_until
    FROM held LEFT JOIN stable ON true
    ORDER BY stable.tx, stable.event_id
"""  # noqa: S608 - fixed text; values are parameters


def _merged(current: Mapping[str, Any], incoming: Mapping[str, Any]) -> dict[str, Any]:
    """The snapshot after a new observation. Amazon's answers are sparse (Complete leaves
    `paymentDetails`, `merchantMetadata`, `buyer` null): a null never erases what the ledger knew.
    The answer as received stays in the event."""
    return {**current, **{k: v for k, v in incoming.items() if v is not None}}


def _text_or_none(value: object) -> str | None:
    return value if isinstance(value, str) and value else None


class _Settling:
    """Waiting for held-back events to become stable: pauses of 2 ms, doubling up to 50 ms,
    for `settle_s` at most in all."""

    def __init__(self, settle_s: float) -> None:
        self._loop = asyncio.get_running_loop()
        self._give_up = self._loop.time() + settle_s
        self._delay = 0.002

    @property
    def over(self) -> bool:
        return self._loop.time() >= self._give_up

    async def wait(self) -> None:
        await asyncio.sleep(min(self._delay, max(0.0, self._give_up - self._loop.time())))
        self._delay = min(self._delay * 2, 0.05)


class ObjectQueries(QueryBase):
    """Objects, their events, and the positions events are delivered in."""

    async def record(
        self, records: Sequence[ObjectRecord], source: str, *, timeout: float | None = None
    ) -> list[Event]:
        """Upsert objects and append an event for each that changed, in one transaction."""
        async with self._pool.acquire() as conn, conn.transaction():
            return await self._record(conn, records, source, timeout=timeout)

    async def _record(
        self, conn: Conn, records: Sequence[ObjectRecord], source: str, *, timeout: float | None
    ) -> list[Event]:
        if source not in EVENT_SOURCES:
            raise ValueError(f"unknown event source {source!r}")
        events: list[Event] = []
        for record in records:
            event = await self._upsert(conn, record, source, timeout=timeout)
            if event is not None:
                events.append(event)
        return events

    async def _upsert(
        self, conn: Conn, rec: ObjectRecord, source: str, *, timeout: float | None
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
        return None if row is None else (await self._opened([_stored(row)]))[0]

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
        items = await self._opened([_stored(r) for r in rows[:page_size]])
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
        settling = _Settling(settle_s)
        page = await self._stable_events(filters, after, limit=page_size, timeout=timeout)
        # Wait only for what was committed when the call came: on a busy ledger there is always a
        # newer event held back.
        target = page.held_until
        while (
            target is not None
            and page.frontier <= target
            and len(page.items) <= page_size
            and not settling.over
        ):
            await settling.wait()
            page = await self._stable_events(filters, after, limit=page_size, timeout=timeout)
        items = await self._opened(page.items[:page_size])
        token = ""
        if len(page.items) > page_size:
            tx, event_id = items[-1].position
            token = _encode_token({"t": tx, "e": event_id}, filters)
        return Page(items, token)

    async def stable_events(
        self, after: Position, *, limit: int, timeout: float | None = None
    ) -> StableEvents:
        """Every merchant's stable events after `after` (the event hub's one shared read)."""
        page = await self._stable_events([None] * 7, after, limit=limit, timeout=timeout)
        return replace(page, items=await self._opened(page.items))

    async def _stable_events(
        self, filters: Sequence[object], after: Position, *, limit: int, timeout: float | None
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
        settling = _Settling(settle_s)
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
            if settling.over:
                return (int(row["frontier"]), 0)
            await settling.wait()

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
        return await self._opened([_event(r) for r in rows])
