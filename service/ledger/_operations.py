"""Operations: the idempotency records of calls to Amazon and of ledger-only answers."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

import asyncpg

from ._instance import instance_alive
from ._objects import ObjectQueries
from ._pii import holds_pii
from ._records import EVENT_SOURCES, Event, ObjectRecord, _event, _object_params

__all__ = ["Operation", "OperationConflict", "OperationQueries"]


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


class OperationConflict(Exception):
    """The idempotency key was first used with a different request."""

    def __init__(self, operation: Operation) -> None:
        super().__init__(f"idempotency key already used for a different {operation.operation}")
        self.operation = operation


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


def _single_statement_completion(
    op: Operation, response: Mapping[str, Any], records: Sequence[ObjectRecord], *, source: str
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


class OperationQueries(ObjectQueries):
    """Begin, complete and fail operations; completion records its objects and events in the
    same transaction, hence the objects queries underneath."""

    async def _open_operation(self, op: Operation) -> Operation:
        request = dict(op.request)
        request["body"] = await self._vault.open(self._pool, op.request.get("body") or {})
        response = op.response
        if response is not None:
            response = dict(response)
            response["body"] = await self._vault.open(self._pool, response.get("body") or {})
        return replace(op, request=request, response=response)

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
            created = _operation(row)
            if not holds_pii(plain):
                return created, True  # nothing was sealed: the stored request is the plain one
            return await self._open_operation(created), True
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
        if _single_statement_completion(op, response, records, source=source):
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
            events = await self._record(conn, records, source, timeout=timeout)
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

    async def stored_answer(
        self, *, merchant: str, operation: str, idempotency_key: str, request_hash: bytes
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
        stored = await self.stored_answer(
            merchant=merchant,
            operation=operation,
            idempotency_key=idempotency_key,
            request_hash=request_hash,
        )
        assert stored is not None
        return stored
