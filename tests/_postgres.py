"""Test databases on a real PostgreSQL: `TEST_DATABASE_URL` when set, else the embedded server."""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import asyncpg

from service.ledger import EmbeddedPostgres

REPO = Path(__file__).resolve().parents[1]


def with_database(url: str, name: str) -> str:
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path=f"/{name}"))


@asynccontextmanager
async def postgres_server() -> AsyncIterator[str]:
    """Yield an admin URL of a running server."""
    url = os.environ.get("TEST_DATABASE_URL")
    if url:
        yield url
        return
    embedded = EmbeddedPostgres(REPO / ".data" / "test-postgres")
    try:
        yield await embedded.start()
    finally:
        await embedded.stop()


@asynccontextmanager
async def fresh_database(server_url: str) -> AsyncIterator[str]:
    """Create an empty database for one test and drop it afterwards."""
    name = f"test_{uuid.uuid4().hex[:16]}"
    admin = await asyncpg.connect(server_url)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    try:
        yield with_database(server_url, name)
    finally:
        admin = await asyncpg.connect(server_url)
        try:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await admin.close()


async def table_privileges(conn: asyncpg.Connection, role: str) -> dict[str, set[str]]:
    """The privileges `role` holds on each table (information_schema.role_table_grants)."""
    granted = await conn.fetch(
        "SELECT table_name, privilege_type FROM information_schema.role_table_grants "
        "WHERE grantee = $1",
        role,
    )
    by_table: dict[str, set[str]] = {}
    for row in granted:
        by_table.setdefault(row["table_name"], set()).add(row["privilege_type"])
    return by_table
