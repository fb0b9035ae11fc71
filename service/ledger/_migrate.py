"""Versioned plain-SQL migrations, applied under an advisory lock so replicas can start together."""

from __future__ import annotations

import hashlib
import logging
import re
from dataclasses import dataclass
from importlib import resources

import asyncpg
from asyncpg.pool import PoolConnectionProxy

__all__ = [
    "Migration",
    "MigrationError",
    "apply_migrations",
    "load_migrations",
    "require_migrated",
]

_log = logging.getLogger("service.ledger.migrate")

# Any constant works as long as every replica uses the same one: it names "the schema lock".
_ADVISORY_LOCK_ID = 0x616D7A6E_70617931  # "amznpay1"
_NAME = re.compile(r"^(?P<version>[0-9]{4})_(?P<name>[a-z0-9_]+)\.sql$")


class MigrationError(RuntimeError):
    """The database's migration history disagrees with the migrations shipped in this build."""


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    sql: str

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.sql.encode()).hexdigest()


def load_migrations() -> list[Migration]:
    """Migrations shipped in `service/ledger/migrations`, ordered by version."""
    found: list[Migration] = []
    for entry in resources.files("service.ledger").joinpath("migrations").iterdir():
        match = _NAME.fullmatch(entry.name)
        if match is None:
            continue
        found.append(
            Migration(int(match["version"]), match["name"], entry.read_text(encoding="utf-8"))
        )
    found.sort(key=lambda m: m.version)
    versions = [m.version for m in found]
    if len(set(versions)) != len(versions):
        raise MigrationError(f"duplicate migration versions in {versions}")
    return found


async def apply_migrations(
    conn: asyncpg.Connection | PoolConnectionProxy, migrations: list[Migration] | None = None
) -> list[int]:
    """Apply pending migrations, each in its own transaction; return the versions applied.

    A session-level advisory lock serializes concurrent callers: the second waits, then finds
    nothing left to do. An applied migration whose text changed is refused rather than ignored.
    """
    wanted = load_migrations() if migrations is None else migrations
    await conn.execute("SELECT pg_advisory_lock($1)", _ADVISORY_LOCK_ID)
    try:
        await conn.execute(
            """
            CREATE TABLE IF NOT EXISTS schema_migrations (
                version    integer     PRIMARY KEY,
                name       text        NOT NULL,
                checksum   text        NOT NULL,
                applied_at timestamptz NOT NULL DEFAULT now()
            )
            """
        )
        rows = await conn.fetch("SELECT version, name, checksum FROM schema_migrations")
        applied = {row["version"]: row for row in rows}
        known = {m.version for m in wanted}
        unknown = sorted(set(applied) - known)
        if unknown:
            raise MigrationError(
                f"database has migrations {unknown} that this build does not know; "
                "it was migrated by a newer release"
            )
        done: list[int] = []
        for migration in wanted:
            row = applied.get(migration.version)
            if row is not None:
                if row["checksum"] != migration.checksum:
                    raise MigrationError(
                        f"migration {migration.version:04d}_{migration.name} was changed after it "
                        "was applied; add a new migration instead of editing an applied one"
                    )
                continue
            async with conn.transaction():
                await conn.execute(migration.sql)
                await conn.execute(
                    "INSERT INTO schema_migrations (version, name, checksum) VALUES ($1, $2, $3)",
                    migration.version,
                    migration.name,
                    migration.checksum,
                )
            _log.info("applied migration", extra={"version": migration.version})
            done.append(migration.version)
        return done
    finally:
        await conn.execute("SELECT pg_advisory_unlock($1)", _ADVISORY_LOCK_ID)


async def require_migrated(conn: asyncpg.Connection | PoolConnectionProxy) -> None:
    """Refuse to run against a schema this build does not match (when a migration Job, not
    start-up, applies migrations)."""
    exists = await conn.fetchval("SELECT to_regclass('schema_migrations') IS NOT NULL")
    applied = (
        {r["version"] for r in await conn.fetch("SELECT version FROM schema_migrations")}
        if exists
        else set()
    )
    shipped = {m.version for m in load_migrations()}
    if shipped - applied:
        raise MigrationError(
            f"database lacks migrations {sorted(shipped - applied)}: run `python -m service "
            "migrate` (the migration Job) before starting this release"
        )
    if applied - shipped:
        raise MigrationError(
            f"database has migrations {sorted(applied - shipped)} this build does not know; "
            "it was migrated by a newer release"
        )
