"""Polling and owed reads: leases on objects due for a read, reads the reconciler owes, and the
backlog gauges."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from ._records import QueryBase, StoredObject, _stored

__all__ = ["Backlog", "PollingQueries"]


@dataclass(frozen=True)
class Backlog:
    """Work the service still owes: pending operations and IPNs not yet processed."""

    pending_operations: int = 0
    oldest_pending_operation_age_s: float = 0.0
    unprocessed_ipns: int = 0
    oldest_unprocessed_ipn_age_s: float = 0.0


class PollingQueries(QueryBase):
    """What the reconciler reads, and what it still owes."""

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
            pending_operations=int(row["ops"]),
            oldest_pending_operation_age_s=float(row["ops_age"]),
            unprocessed_ipns=int(row["ipns"]),
            oldest_unprocessed_ipn_age_s=float(row["ipns_age"]),
        )
