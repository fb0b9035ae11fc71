"""`is_unavailable` against errors a real Postgres and a real pool raise."""

from __future__ import annotations

import asyncio
import socket
import uuid

import asyncpg

from service.ledger import (
    InvalidPageToken,
    Ledger,
    OperationConflict,
    is_unavailable,
)


async def _raised(call: object) -> BaseException:
    try:
        await call  # type: ignore[misc]
    except Exception as exc:
        return exc
    raise AssertionError("the call succeeded")


async def test_a_terminated_backend_is_unavailable(ledger: Ledger, database_url: str) -> None:
    """What a statement in flight meets when Postgres ends its session (a restart, a kill)."""
    admin = await asyncpg.connect(database_url)
    try:
        async with ledger.pool.acquire() as conn:
            pid = await conn.fetchval("SELECT pg_backend_pid()")
            query = asyncio.ensure_future(conn.fetchval("SELECT pg_sleep(30)"))
            await asyncio.sleep(0.2)
            assert await admin.fetchval("SELECT pg_terminate_backend($1, 5000)", pid)
            exc = await _raised(query)
    finally:
        await admin.close()
    assert is_unavailable(exc), repr(exc)


async def test_a_closed_pool_is_unavailable(ledger: Ledger) -> None:
    await ledger.pool.close()
    exc = await _raised(ledger.repository.get_object("m", "charge", "S01-1"))
    assert is_unavailable(exc), repr(exc)


async def test_a_refused_connection_is_unavailable() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    exc = await _raised(asyncpg.connect(f"postgresql://postgres@127.0.0.1:{port}/postgres"))
    assert is_unavailable(exc), repr(exc)


async def test_the_statement_timeout_is_unavailable(ledger: Ledger) -> None:
    async with ledger.pool.acquire() as conn:
        await conn.execute("SET statement_timeout = 10")
        exc = await _raised(conn.fetchval("SELECT pg_sleep(5)"))
        await conn.execute("RESET statement_timeout")
    assert isinstance(exc, asyncpg.PostgresError)
    assert exc.sqlstate == "57014"
    assert is_unavailable(exc)


async def test_too_many_connections_is_unavailable(database_url: str) -> None:
    role = f"full_{uuid.uuid4().hex[:12]}"
    admin = await asyncpg.connect(database_url)
    try:
        await admin.execute(f'CREATE ROLE "{role}" LOGIN CONNECTION LIMIT 0')
        exc = await _raised(asyncpg.connect(database_url, user=role))
        assert isinstance(exc, asyncpg.PostgresError), repr(exc)
        assert exc.sqlstate == "53300"
        assert is_unavailable(exc)
    finally:
        await admin.execute(f'DROP ROLE IF EXISTS "{role}"')
        await admin.close()


async def test_errors_of_the_request_are_not_unavailable(ledger: Ledger) -> None:
    async with ledger.pool.acquire() as conn:
        syntax = await _raised(conn.fetchval("SELEC 1"))
        missing = await _raised(conn.fetchval("SELECT * FROM no_such_table"))
    begin = {
        "merchant": "m",
        "operation": "CreateCharge",
        "idempotency_key": "k",
        "amazon_idempotency_key": "ak",
        "request": {},
    }
    await ledger.repository.begin_operation(request_hash=b"a", **begin)  # type: ignore[arg-type]
    conflict = await _raised(ledger.repository.begin_operation(request_hash=b"b", **begin))  # type: ignore[arg-type]
    assert isinstance(conflict, OperationConflict)
    for exc in (syntax, missing, conflict, InvalidPageToken("forged"), ValueError("bad")):
        assert not is_unavailable(exc), repr(exc)
