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
    "APPEND_ONLY_TABLES",
    "KEPT_TABLES",
    "Migration",
    "MigrationError",
    "apply_migrations",
    "grant_service_role",
    "load_migrations",
    "migrate_database",
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
        # Checked first, so a role without CREATE (the serving role) can start on a migrated
        # database with MIGRATE_ON_START left on.
        if not await conn.fetchval("SELECT to_regclass('schema_migrations') IS NOT NULL"):
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


APPEND_ONLY_TABLES = frozenset({"events"})
"""Tables the serving role may read and append to, never change: no UPDATE, DELETE, TRUNCATE."""

KEPT_TABLES = frozenset(
    {
        "settlement_reports",
        "settlement_lines",
        "settlement_misses",
        "disbursements",
        "settlement_runs",
    }
)
"""The settlement record, kept for years: the serving role may read, add and update, never delete."""

_READ_ONLY_TABLES = frozenset({"schema_migrations"})


async def grant_service_role(conn: asyncpg.Connection | PoolConnectionProxy, role: str) -> None:
    """Give `role` exactly the DML the service needs on every table migrations created.

    Run by the owner role after every migration (so tables added by any later migration are
    covered). Partitions get nothing: the service reads and appends through the parent table,
    where privileges are checked, so it can neither TRUNCATE, DETACH nor DROP a month of history,
    and the monthly partitions the CronJob creates later need no grant either. Only an owner may
    ALTER a table (DISABLE TRIGGER, DETACH PARTITION) or DROP it, and `role` owns nothing.
    Re-running revokes first, so the result never depends on earlier grants.
    """
    exists = await conn.fetchval("SELECT 1 FROM pg_roles WHERE rolname = $1", role)
    if exists is None:
        raise MigrationError(f"database role {role!r} (DATABASE_SERVICE_ROLE) does not exist")
    if role == await conn.fetchval("SELECT current_user"):
        raise MigrationError(
            "DATABASE_SERVICE_ROLE names the role that runs migrations; the service needs a "
            "role of its own that owns nothing"
        )
    schema = await conn.fetchval("SELECT current_schema()")
    tables = await conn.fetch(
        """
        SELECT c.relname, c.relispartition, pg_get_userbyid(c.relowner) = $2 AS owned
        FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE n.nspname = $1 AND c.relkind IN ('r', 'p')
        """,
        schema,
        role,
    )
    owned = [t["relname"] for t in tables if t["owned"]]
    if owned:
        raise MigrationError(
            f"role {role!r} owns {sorted(owned)}; the serving role must own nothing"
        )
    quoted_role = await conn.fetchval("SELECT quote_ident($1)", role)
    quoted_schema = await conn.fetchval("SELECT quote_ident($1)", schema)
    async with conn.transaction():
        await conn.execute(f"GRANT USAGE ON SCHEMA {quoted_schema} TO {quoted_role}")
        for table in tables:
            name = table["relname"]
            target = f"{quoted_schema}.{await conn.fetchval('SELECT quote_ident($1)', name)}"
            await conn.execute(f"REVOKE ALL ON {target} FROM {quoted_role}")
            if table["relispartition"]:
                continue
            if name in _READ_ONLY_TABLES:
                privileges = "SELECT"
            elif name in APPEND_ONLY_TABLES:
                privileges = "SELECT, INSERT"
            elif name in KEPT_TABLES:
                privileges = "SELECT, INSERT, UPDATE"
            else:
                privileges = "SELECT, INSERT, UPDATE, DELETE"
            await conn.execute(f"GRANT {privileges} ON {target} TO {quoted_role}")
        await conn.execute(
            f"GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA {quoted_schema} TO {quoted_role}"
        )
    _log.info("service role granted", extra={"role": role, "tables": len(tables)})


async def migrate_database(url: str, *, service_role: str | None = None) -> list[int]:
    """Apply pending migrations over their own connection (the owner role's URL), then grant
    `service_role` its privileges; the versions applied."""
    conn = await asyncpg.connect(url)
    try:
        applied = await apply_migrations(conn)
        if service_role is not None:
            await grant_service_role(conn, service_role)
        return applied
    finally:
        await conn.close()


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
