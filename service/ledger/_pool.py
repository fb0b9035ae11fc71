"""The asyncpg pool every ledger query goes through."""

from __future__ import annotations

import json

import asyncpg
from asyncpg.pool import PoolConnectionProxy

from ._migrate import apply_migrations
from ._pii import PiiKeyring, PiiVault
from ._repository import Repository

__all__ = ["Ledger", "reencrypt_pii"]


async def _keep_session(conn: asyncpg.Connection | PoolConnectionProxy) -> None:
    """Pooled connections carry no session state to reset (advisory locks and LISTEN live on
    dedicated connections), so skip asyncpg's reset round trip on every release; asyncpg still
    rolls back a transaction left open."""


async def _init_connection(conn: asyncpg.Connection | PoolConnectionProxy) -> None:
    """jsonb columns travel as Python dicts."""
    for type_name in ("json", "jsonb"):
        await conn.set_type_codec(
            type_name, encoder=json.dumps, decoder=json.loads, schema="pg_catalog"
        )


class Ledger:
    """Owns the connection pool; repositories borrow connections from it."""

    def __init__(self, pool: asyncpg.Pool, keyring: PiiKeyring) -> None:
        self.pool = pool
        self.vault = PiiVault(keyring)
        self.repository = Repository(pool, self.vault)

    @classmethod
    async def connect(
        cls,
        url: str,
        *,
        keyring: PiiKeyring,
        min_size: int = 2,
        max_size: int = 10,
        statement_timeout_ms: int = 10_000,
    ) -> Ledger:
        pool = await asyncpg.create_pool(
            url,
            min_size=min_size,
            max_size=max_size,
            server_settings={
                "statement_timeout": str(statement_timeout_ms),
                "application_name": "amazonpay-service",
                "timezone": "UTC",
            },
            init=_init_connection,
            reset=_keep_session,
        )
        return cls(pool, keyring)

    async def migrate(self) -> list[int]:
        async with self.pool.acquire() as conn:
            return await apply_migrations(conn)

    async def ping(self, timeout: float = 2.0) -> bool:
        """True when Postgres answers a trivial query within `timeout` seconds."""
        try:
            async with self.pool.acquire(timeout=timeout) as conn:
                await conn.fetchval("SELECT 1", timeout=timeout)
        except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError):
            return False
        return True

    async def close(self) -> None:
        await self.pool.close()


async def reencrypt_pii(url: str, *, keyring: PiiKeyring) -> int:
    """Rewrite buyer PII still encrypted under a key other than the keyring's active one, on a
    small pool of its own; returns the values rewritten."""
    ledger = await Ledger.connect(url, keyring=keyring, min_size=1, max_size=2)
    try:
        return await ledger.vault.reencrypt(ledger.pool)
    finally:
        await ledger.close()
