"""Database chores of the benchmark, soak and test harnesses, so none of them needs the driver or
writes SQL of its own: create and drop a database, seed copies of recorded objects, audit the
tables after a run, and the one-statement probe of the driver floor."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg

__all__ = [
    "LedgerAudit",
    "audit_ledger",
    "create_database",
    "drop_database",
    "row_read_probe",
    "seed_captured_charges",
    "seed_object_copies",
    "statement_probe",
    "with_database",
]


def with_database(url: str, name: str) -> str:
    """`url` naming database `name` instead."""
    return urlunsplit(urlsplit(url)._replace(path=f"/{name}"))


async def create_database(server_url: str, name: str) -> str:
    """Create the empty database `name` on the server `server_url` reaches; returns its URL."""
    admin = await asyncpg.connect(server_url)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    return with_database(server_url, name)


async def drop_database(server_url: str, url: str) -> None:
    """Drop the database `url` names, closing its sessions first."""
    name = urlsplit(url).path.lstrip("/")
    admin = await asyncpg.connect(server_url)
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await admin.close()


async def seed_captured_charges(
    url: str, *, merchant: str, count: int, id_prefix: str, captured_at: str
) -> int:
    """`count` captured charges (ids `id_prefix` + 6 digits from 000001, capture amount
    `10 + n % 50` USD, `captured_at` an Amazon timestamp) for the settlement benchmark, in one
    statement; returns how many rows were inserted."""
    conn = await asyncpg.connect(url)
    try:
        status: str = await conn.execute(
            """
            INSERT INTO objects (merchant, kind, object_id, charge_permission_id, charge_id,
                state, is_final, amount, currency_code, snapshot, created_at)
            SELECT $1, 'charge', c.id, split_part(c.id, '-C', 1), c.id, 'Captured', true,
                c.amount, 'USD',
                jsonb_build_object('chargeId', c.id,
                    'chargeAmount', jsonb_build_object('amount', c.amount::text,
                        'currencyCode', 'USD'),
                    'captureAmount', jsonb_build_object('amount', c.amount::text,
                        'currencyCode', 'USD'),
                    'statusDetails', jsonb_build_object('state', 'Captured',
                        'lastUpdatedTimestamp', $4::text)),
                now()
            FROM generate_series(1, $2::int) g,
                LATERAL (SELECT $3::text || lpad(g::text, 6, '0') AS id,
                    (10 + g % 50)::numeric(12, 2) AS amount) c
            ON CONFLICT DO NOTHING
            """,
            merchant,
            count,
            id_prefix,
            captured_at,
        )
        await conn.execute("ANALYZE objects")
        return int(status.split()[-1])
    finally:
        await conn.close()


def id_field(kind: str) -> str:
    """The JSON field holding the id of an object of ledger kind `kind`: its name in camelCase
    with `Id` (`charge_permission` -> `chargePermissionId`), as Amazon names every one."""
    head, *rest = kind.split("_")
    return head + "".join(part.capitalize() for part in rest) + "Id"


async def seed_object_copies(url: str, count: int) -> tuple[int, int]:
    """Copy one recorded object of each kind into about `count` rows (ids `S01-SEED-…`, created
    7 s apart into the past) for list-query load; returns (rows seeded, objects in total)."""
    conn = await asyncpg.connect(url)
    try:
        templates = await conn.fetch(
            "SELECT DISTINCT ON (kind) kind, object_id FROM objects ORDER BY kind, created_at"
        )
        per_kind = -(-count // len(templates))
        for index, t in enumerate(templates):
            await conn.execute(
                """
                INSERT INTO objects (merchant, kind, object_id, checkout_session_id,
                    charge_permission_id, charge_id, state, reason_code, is_final, amount,
                    currency_code, merchant_reference_id, snapshot, created_at,
                    amazon_expires_at, first_seen_at, updated_at)
                SELECT o.merchant, o.kind, s.id,
                    CASE WHEN o.kind = 'checkout_session' THEN s.id
                         ELSE o.checkout_session_id END,
                    CASE WHEN o.kind = 'charge_permission' THEN s.id
                         ELSE o.charge_permission_id END,
                    CASE WHEN o.kind = 'charge' THEN s.id ELSE o.charge_id END,
                    o.state, o.reason_code, o.is_final, o.amount, o.currency_code,
                    'seed-' || g, o.snapshot || jsonb_build_object($3::text, s.id),
                    now() - make_interval(secs => g * 7.0 + $4::int), o.amazon_expires_at,
                    now(), now()
                FROM objects o,
                     generate_series(1, $2::int) g,
                     LATERAL (SELECT 'S01-SEED-' || $4::int || '-' || lpad(g::text, 8, '0') AS id) s
                WHERE o.kind = $1 AND o.object_id = $5
                """,
                t["kind"],
                per_kind,
                id_field(t["kind"]),
                index,
                t["object_id"],
            )
        await conn.execute("ANALYZE objects")
        total: int = await conn.fetchval("SELECT count(*) FROM objects")
        return per_kind * len(templates), total
    finally:
        await conn.close()


@dataclass(frozen=True)
class LedgerAudit:
    """What a soak run's audit compares with the emulator. Rows are plain dicts; `snapshot` is
    the JSON text as stored."""

    charges_and_refunds: list[dict[str, Any]]
    event_ids: list[int]
    """Event ids of merchant `default`."""
    objects_without_state_event: list[dict[str, Any]]
    charge_permissions: set[str]
    checkout_sessions: dict[str, str]
    """Checkout session id to state."""
    pending_operations: int
    stats: dict[str, Any]


async def audit_ledger(url: str) -> LedgerAudit:
    """Read back everything a soak run's audit checks, on one connection."""
    conn = await asyncpg.connect(url)
    try:
        rows = await conn.fetch(
            "SELECT kind, object_id, state, amount, currency_code, snapshot FROM objects"
            " WHERE kind IN ('charge', 'refund')"
        )
        event_ids = [
            r["event_id"]
            for r in await conn.fetch("SELECT event_id FROM events WHERE merchant = 'default'")
        ]
        missing_events = await conn.fetch(
            """
            SELECT o.kind, o.object_id, o.state FROM objects o
            WHERE NOT EXISTS (SELECT 1 FROM events e WHERE e.merchant = o.merchant
                AND e.kind = o.kind AND e.object_id = o.object_id AND e.state = o.state)
            """
        )
        ledger_cps = {
            r["object_id"]
            for r in await conn.fetch(
                "SELECT object_id FROM objects WHERE kind = 'charge_permission'"
            )
        }
        sessions = {
            r["object_id"]: r["state"]
            for r in await conn.fetch(
                "SELECT object_id, state FROM objects WHERE kind = 'checkout_session'"
            )
        }
        pending_ops = await conn.fetchval(
            "SELECT count(*) FROM operations WHERE status = 'pending'"
        )
        stats = {
            "operations_by_status": {
                r["status"]: r["n"]
                for r in await conn.fetch(
                    "SELECT status, count(*) AS n FROM operations GROUP BY status"
                )
            },
            "operations_retried_or_redriven": await conn.fetchval(
                "SELECT count(*) FROM operations WHERE attempts > 1"
            ),
            "events_by_source": {
                r["source"]: r["n"]
                for r in await conn.fetch(
                    "SELECT source, count(*) AS n FROM events GROUP BY source"
                )
            },
            "objects_by_kind": {
                r["kind"]: r["n"]
                for r in await conn.fetch("SELECT kind, count(*) AS n FROM objects GROUP BY kind")
            },
        }
    finally:
        await conn.close()
    return LedgerAudit(
        charges_and_refunds=[dict(r) for r in rows],
        event_ids=event_ids,
        objects_without_state_event=[dict(r) for r in missing_events],
        charge_permissions=ledger_cps,
        checkout_sessions=sessions,
        pending_operations=int(pending_ops),
        stats=stats,
    )


@asynccontextmanager
async def statement_probe(
    url: str, *, pool_size: int
) -> AsyncIterator[Callable[[], Awaitable[None]]]:
    """A scratch table and a call that writes one jsonb row to it through a pool of `pool_size`
    connections with the driver's defaults (no codecs, the default reset): the cost of one statement through the
    driver, which the benchmark's floor subtracts."""
    pool = await asyncpg.create_pool(url, min_size=pool_size, max_size=pool_size)
    try:
        await pool.execute("DROP TABLE IF EXISTS floor_probe_rows")
        await pool.execute("CREATE TABLE floor_probe_rows (id bigserial PRIMARY KEY, body jsonb)")
        body = json.dumps({"chargePermissionId": "S01-0000000-0000000", "captureNow": True})

        async def write() -> None:
            await pool.fetchrow(
                "INSERT INTO floor_probe_rows (body) VALUES ($1::jsonb) RETURNING id", body
            )

        yield write
        await pool.execute("DROP TABLE floor_probe_rows")
    finally:
        await pool.close()


_PROBE_CHARGE = {
    "chargeId": "S01-0000000-0000000-C000000",
    "chargePermissionId": "S01-0000000-0000000",
    "chargeAmount": {"amount": "1.00", "currencyCode": "USD"},
    "captureAmount": {"amount": "1.00", "currencyCode": "USD"},
    "refundedAmount": {"amount": "0.00", "currencyCode": "USD"},
    "convertedAmount": None,
    "conversionRate": None,
    "softDescriptor": "AMZ*Bench",
    "merchantMetadata": {"merchantReferenceId": None, "merchantStoreName": None},
    "providerMetadata": {"providerReferenceId": None},
    "statusDetails": {
        "state": "Captured",
        "reasonCode": None,
        "reasonDescription": None,
        "lastUpdatedTimestamp": "20260101T000000Z",
    },
    "creationTimestamp": "20260101T000000Z",
    "expirationTimestamp": "20260131T000000Z",
    "releaseEnvironment": "Sandbox",
}


@asynccontextmanager
async def row_read_probe(
    url: str, *, pool_size: int
) -> AsyncIterator[Callable[[], Awaitable[None]]]:
    """A scratch table holding one charge-sized jsonb row and a call that reads it by primary key
    through a pool of `pool_size` connections with the driver's defaults: the one query a
    ledger-served GetCharge cannot skip, for the benchmark's floor."""
    pool = await asyncpg.create_pool(url, min_size=pool_size, max_size=pool_size)
    try:
        await pool.execute("DROP TABLE IF EXISTS floor_probe_reads")
        await pool.execute("CREATE TABLE floor_probe_reads (id bigint PRIMARY KEY, body jsonb)")
        await pool.execute(
            "INSERT INTO floor_probe_reads VALUES (1, $1::jsonb)", json.dumps(_PROBE_CHARGE)
        )

        async def read() -> None:
            row = await pool.fetchrow("SELECT body FROM floor_probe_reads WHERE id = $1", 1)
            assert row is not None

        yield read
        await pool.execute("DROP TABLE floor_probe_reads")
    finally:
        await pool.close()
