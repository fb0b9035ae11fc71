"""The settlement record is kept: the serving role reads, adds and updates it, never deletes."""

from __future__ import annotations

import os

import asyncpg
import pytest

from service.ledger import apply_migrations, grant_service_role
from service.ledger._migrate import KEPT_TABLES
from tests._postgres import table_privileges


async def test_the_service_role_cannot_delete_settlement_data(
    database_url: str, postgres_server_url: str
) -> None:
    role = f"svc_{os.urandom(5).hex()}"
    admin = await asyncpg.connect(postgres_server_url)
    await admin.execute(f"CREATE ROLE {role} LOGIN")
    conn = await asyncpg.connect(database_url)
    try:
        await apply_migrations(conn)
        await grant_service_role(conn, role)
        by_table = await table_privileges(conn, role)
        assert {
            "settlement_reports",
            "settlement_lines",
            "settlement_misses",
            "disbursements",
            "settlement_runs",
        } == KEPT_TABLES
        for table in KEPT_TABLES:
            assert by_table[table] == {"SELECT", "INSERT", "UPDATE"}, table
        assert by_table["settlement_cursors"] == {"SELECT", "INSERT", "UPDATE", "DELETE"}
        await conn.execute(
            "INSERT INTO settlement_reports (merchant, report_id, report_type, snapshot)"
            " VALUES ('default', 'R-1', 'settlement', '{}')"
        )
        await conn.execute(f"SET ROLE {role}")
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await conn.execute("DELETE FROM settlement_reports")
        await conn.execute("UPDATE settlement_reports SET attempts = 1")
        await conn.execute("RESET ROLE")
    finally:
        await conn.execute("RESET ROLE")
        await conn.execute(f"DROP OWNED BY {role}")
        await conn.close()
        await admin.execute(f"DROP ROLE {role}")
        await admin.close()
