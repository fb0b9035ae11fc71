from __future__ import annotations

import asyncio
import os
import sys

import asyncpg
import pytest

from service.ledger import (
    Ledger,
    Migration,
    MigrationError,
    apply_migrations,
    grant_service_role,
    load_migrations,
    require_migrated,
)
from tests._postgres import REPO, table_privileges


async def _applied_versions(url: str) -> list[int]:
    conn = await asyncpg.connect(url)
    try:
        rows = await conn.fetch("SELECT version FROM schema_migrations ORDER BY version")
        return [r["version"] for r in rows]
    finally:
        await conn.close()


async def test_migrations_apply_once_then_are_a_no_op(database_url: str) -> None:
    conn = await asyncpg.connect(database_url)
    try:
        first = await apply_migrations(conn)
        second = await apply_migrations(conn)
    finally:
        await conn.close()
    assert first == [m.version for m in load_migrations()]
    assert second == []
    assert await _applied_versions(database_url) == first


async def test_two_processes_migrating_at_once_apply_each_migration_exactly_once(
    database_url: str,
) -> None:
    env = {**os.environ, "DATABASE_URL": database_url, "LOG_LEVEL": "WARNING"}
    procs = [
        await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "service",
            "migrate",
            cwd=REPO,
            env=env,
            stderr=asyncio.subprocess.PIPE,
        )
        for _ in range(2)
    ]
    results = await asyncio.gather(*(p.communicate() for p in procs))
    for proc, (_, stderr) in zip(procs, results, strict=True):
        assert proc.returncode == 0, stderr.decode()
    assert await _applied_versions(database_url) == [m.version for m in load_migrations()]


async def test_concurrent_migrations_in_one_process_do_not_conflict(database_url: str) -> None:
    conns = [await asyncpg.connect(database_url) for _ in range(3)]
    try:
        results = await asyncio.gather(*(apply_migrations(c) for c in conns))
    finally:
        for c in conns:
            await c.close()
    assert sorted(len(r) for r in results) == [0, 0, len(load_migrations())]


async def test_an_edited_applied_migration_is_refused(database_url: str) -> None:
    conn = await asyncpg.connect(database_url)
    try:
        await apply_migrations(conn)
        edited = [Migration(m.version, m.name, m.sql + "\n-- edited") for m in load_migrations()]
        with pytest.raises(MigrationError, match="was changed after it was applied"):
            await apply_migrations(conn, edited)
    finally:
        await conn.close()


async def test_a_database_migrated_by_a_newer_release_is_refused(database_url: str) -> None:
    conn = await asyncpg.connect(database_url)
    try:
        newer = [*load_migrations(), Migration(9999, "future", "SELECT 1")]
        await apply_migrations(conn, newer)
        with pytest.raises(MigrationError, match="newer release"):
            await apply_migrations(conn)
    finally:
        await conn.close()


async def _insert_event(conn: asyncpg.Connection | asyncpg.pool.PoolConnectionProxy) -> int:
    event_id: int = await conn.fetchval(
        """
        INSERT INTO events (merchant, kind, object_id, state, source, snapshot)
        VALUES ('default', 'charge', 'S01-0000000-0000000-C000001', 'Authorized', 'api', '{}')
        RETURNING event_id
        """
    )
    return event_id


async def test_events_refuse_update(ledger: Ledger) -> None:
    async with ledger.pool.acquire() as conn:
        event_id = await _insert_event(conn)
        with pytest.raises(asyncpg.InsufficientPrivilegeError, match="append-only"):
            await conn.execute("UPDATE events SET state = 'Captured' WHERE event_id = $1", event_id)
        assert await conn.fetchval("SELECT state FROM events WHERE event_id = $1", event_id) == (
            "Authorized"
        )


async def test_events_refuse_delete_and_truncate(ledger: Ledger) -> None:
    async with ledger.pool.acquire() as conn:
        event_id = await _insert_event(conn)
        with pytest.raises(asyncpg.InsufficientPrivilegeError, match="append-only"):
            await conn.execute("DELETE FROM events WHERE event_id = $1", event_id)
        with pytest.raises(asyncpg.InsufficientPrivilegeError, match="append-only"):
            await conn.execute("TRUNCATE events")
        assert await conn.fetchval("SELECT count(*) FROM events") == 1


async def test_events_land_in_the_current_month_partition(ledger: Ledger) -> None:
    async with ledger.pool.acquire() as conn:
        await _insert_event(conn)
        partition = await conn.fetchval("SELECT tableoid::regclass::text FROM events")
        expected = await conn.fetchval("SELECT 'events_' || to_char(now(), 'YYYY_MM')")
    assert partition == expected


async def test_a_replica_that_does_not_migrate_refuses_an_unmigrated_database(
    database_url: str,
) -> None:
    conn = await asyncpg.connect(database_url)
    try:
        with pytest.raises(MigrationError, match="run `python -m service migrate`"):
            await require_migrated(conn)
        await apply_migrations(conn)
        await require_migrated(conn)
    finally:
        await conn.close()


async def test_the_grant_step_refuses_the_owner_and_unknown_roles(database_url: str) -> None:
    conn = await asyncpg.connect(database_url)
    try:
        await apply_migrations(conn)
        owner = await conn.fetchval("SELECT current_user")
        with pytest.raises(MigrationError, match="role of its own"):
            await grant_service_role(conn, owner)
        with pytest.raises(MigrationError, match="does not exist"):
            await grant_service_role(conn, "no_such_role_4f2a")
    finally:
        await conn.close()


async def test_the_grant_step_covers_tables_a_later_migration_adds(
    database_url: str, postgres_server_url: str
) -> None:
    """Grants are computed from the catalog after every migration, not listed per table."""
    role = f"svc_{os.urandom(5).hex()}"
    admin = await asyncpg.connect(postgres_server_url)
    await admin.execute(f"CREATE ROLE {role} LOGIN")
    conn = await asyncpg.connect(database_url)
    try:
        later = Migration(9999, "later_table", "CREATE TABLE later_things (id int PRIMARY KEY);")
        await apply_migrations(conn, [*load_migrations(), later])
        await grant_service_role(conn, role)
        by_table = await table_privileges(conn, role)
        assert by_table["later_things"] == {"SELECT", "INSERT", "UPDATE", "DELETE"}
        assert by_table["events"] == {"SELECT", "INSERT"}
        assert by_table["schema_migrations"] == {"SELECT"}
        assert not [t for t in by_table if t.startswith("events_")], "no partition is granted"
        assert all("TRUNCATE" not in p for p in by_table.values())
    finally:
        await conn.execute(f"DROP OWNED BY {role}")
        await conn.close()
        await admin.execute(f"DROP ROLE {role}")
        await admin.close()
