"""Erasure of buyer PII: on request for a charge permission or buyer, and by retention age."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from ._pii import buyer_hash_of
from ._records import QueryBase

__all__ = ["Erasure", "ErasureQueries", "ErasureRefused"]


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


class ErasureQueries(QueryBase):
    """Erase PII, keep amounts, states and history."""

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
