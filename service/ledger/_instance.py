"""Which service processes are alive, as Postgres sees them.

Each process holds a session advisory lock named by its instance id on a dedicated connection for
its whole life. When the process dies (even by SIGKILL) its connection closes and Postgres releases
the lock, so another process can tell a crashed owner's pending operation from one still in flight.
"""

from __future__ import annotations

import secrets

import asyncpg

__all__ = ["INSTANCE_LOCK_CLASS", "InstanceLease", "instance_alive"]

INSTANCE_LOCK_CLASS = 0x616D7A6E  # "amzn": namespace of instance locks


class InstanceLease:
    def __init__(self, url: str) -> None:
        self._url = url
        self.instance_id = str(secrets.randbelow(2**31 - 1) + 1)
        self._conn: asyncpg.Connection | None = None

    async def acquire(self) -> None:
        self._conn = await asyncpg.connect(self._url)
        await self._conn.execute(
            "SELECT pg_advisory_lock($1, $2)", INSTANCE_LOCK_CLASS, int(self.instance_id)
        )

    @property
    def held(self) -> bool:
        return self._conn is not None and not self._conn.is_closed()

    async def ensure(self) -> bool:
        """Re-take the lock after Postgres restarted (the old session and its lock are gone).
        False when Postgres refused it this time; the caller tries again at its next check."""
        if not self.held:
            try:
                await self.acquire()
            except (OSError, asyncpg.PostgresError):
                return False
        return True

    async def release(self) -> None:
        if self._conn is not None:
            conn, self._conn = self._conn, None
            await conn.close()


async def instance_alive(
    conn: asyncpg.Connection | asyncpg.pool.PoolConnectionProxy, owner: str
) -> bool:
    """True while the process named `owner` still holds its lock."""
    try:
        key = int(owner)
    except ValueError:
        return False
    got = await conn.fetchval("SELECT pg_try_advisory_lock($1, $2)", INSTANCE_LOCK_CLASS, key)
    if got:
        await conn.execute("SELECT pg_advisory_unlock($1, $2)", INSTANCE_LOCK_CLASS, key)
    return not got
