"""The IPN inbox: verified notifications, their claims and retries, and which merchant one is for."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from ._records import QueryBase

__all__ = ["IpnQueries"]


class IpnQueries(QueryBase):
    """Notifications received, claimed by the reconciler, settled or given up."""

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
