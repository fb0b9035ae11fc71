"""The production database set-up of docs/operations.md ("Database roles"), step by step: an owner
role migrates, the service runs as a role that cannot rewrite history, and the whole flow works."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import asyncpg
import grpc
import pytest

from payments.amazonpay.v1 import charge_pb2, charge_permission_pb2, ledger_pb2, refund_pb2
from payments.amazonpay.v1 import checkout_session_pb2 as cs
from service.app import Application
from service.config import load_settings
from tests._emulator import EmulatorProcess
from tests._postgres import with_database
from tests._process import ServiceProcess
from tests.e2e._flows import checkout, key, usd
from tests.e2e.conftest import Keys, service_env, stubs_for


@dataclass(frozen=True)
class Roles:
    owner_url: str
    service_url: str
    service_role: str


@pytest.fixture
async def roles(postgres_server_url: str) -> AsyncIterator[Roles]:
    """Step 1 of the guide, as the cluster administrator: two roles and a database."""
    suffix = uuid.uuid4().hex[:10]
    owner, service, database = f"ledger_owner_{suffix}", f"ledger_service_{suffix}", f"db_{suffix}"
    admin = await asyncpg.connect(postgres_server_url)
    try:
        await admin.execute(f"CREATE ROLE {owner} LOGIN")
        await admin.execute(f"CREATE ROLE {service} LOGIN")
        await admin.execute(f"CREATE DATABASE {database} OWNER {owner}")
        await admin.execute(f"REVOKE ALL ON DATABASE {database} FROM PUBLIC")
        await admin.execute(f"GRANT CONNECT ON DATABASE {database} TO {service}")
    finally:
        await admin.close()
    base = with_database(postgres_server_url, database)
    try:
        yield Roles(
            base.replace("://postgres@", f"://{owner}@", 1),
            base.replace("://postgres@", f"://{service}@", 1),
            service,
        )
    finally:
        admin = await asyncpg.connect(postgres_server_url)
        try:
            await admin.execute(f"DROP DATABASE IF EXISTS {database} WITH (FORCE)")
            await admin.execute(f"DROP ROLE IF EXISTS {service}")
            await admin.execute(f"DROP ROLE IF EXISTS {owner}")
        finally:
            await admin.close()


FORBIDDEN = [
    "UPDATE events SET state = 'Captured'",
    "DELETE FROM events",
    "TRUNCATE events",
    "UPDATE {partition} SET state = 'Captured'",
    "DELETE FROM {partition}",
    "TRUNCATE {partition}",
    "TRUNCATE events_default",
    "INSERT INTO {partition} SELECT * FROM {partition} LIMIT 1",
    "ALTER TABLE events DISABLE TRIGGER ALL",
    "ALTER TABLE {partition} DISABLE TRIGGER ALL",
    "ALTER TABLE events DETACH PARTITION {partition}",
    "DROP TABLE {partition}",
    "DROP TABLE events",
    "TRUNCATE objects",
    "ALTER TABLE objects ADD COLUMN note text",
    "CREATE TABLE shadow (id int)",
    "SELECT ensure_event_partitions(12)",
    "UPDATE schema_migrations SET checksum = ''",
]


async def test_the_service_role_runs_the_whole_flow_but_cannot_rewrite_history(
    roles: Roles, clean_emulator: EmulatorProcess, keys: Keys, tmp_path: Path
) -> None:
    # Step 2: the migration Job, as the owner, grants the service role its privileges.
    migrate = ServiceProcess(
        {
            "MIGRATE_DATABASE_URL": roles.owner_url,
            "DATABASE_SERVICE_ROLE": roles.service_role,
            "DATABASE_URL": "",
        },
        args=("migrate",),
    )
    await migrate.start()
    try:
        assert await migrate.wait(timeout=120) == 0, "\n".join(migrate.log_lines)
    finally:
        await migrate.kill()
    # Step 3: the partition CronJob, as the owner.
    owner = await asyncpg.connect(roles.owner_url)
    try:
        await owner.fetchval("SELECT ensure_event_partitions(4)")
    finally:
        await owner.close()

    # Step 4: the service, as the serving role (MIGRATE_ON_START left at its default).
    env = service_env(roles.service_url, clean_emulator, keys, tmp_path)
    app = Application(load_settings(env))
    await app.start()
    try:
        target = f"127.0.0.1:{app.grpc_port}"
        async with grpc.aio.insecure_channel(target) as channel:
            api = stubs_for(channel, target)
            done = await checkout(api, clean_emulator, intent=cs.PAYMENT_INTENT_AUTHORIZE)
            await api.charges.CaptureCharge(
                charge_pb2.CaptureChargeRequest(
                    charge_id=done.charge_id, idempotency_key=key(), capture_amount=usd("100.00")
                ),
                timeout=10,
            )
            refund = await api.refunds.CreateRefund(
                refund_pb2.CreateRefundRequest(
                    charge_id=done.charge_id, idempotency_key=key(), refund_amount=usd("5.00")
                ),
                timeout=10,
            )
            assert refund.refund.refund_id
            events = await api.ledger.ListEvents(
                ledger_pb2.ListEventsRequest(charge_permission_id=done.charge_permission_id),
                timeout=10,
            )
            assert len(events.events) >= 3
            await api.permissions.CloseChargePermission(
                charge_permission_pb2.CloseChargePermissionRequest(
                    charge_permission_id=done.charge_permission_id, closure_reason="done"
                ),
                timeout=10,
            )
            erased = await api.ledger.EraseBuyerData(
                ledger_pb2.EraseBuyerDataRequest(
                    charge_permission_id=done.charge_permission_id, idempotency_key=key()
                ),
                timeout=10,
            )
            assert erased.objects_erased > 0
    finally:
        await app.stop()

    service = await asyncpg.connect(roles.service_url)
    try:
        partition = await service.fetchval(
            """
            SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
            WHERE i.inhparent = 'events'::regclass AND c.relname <> 'events_default'
            ORDER BY c.relname LIMIT 1
            """
        )
        assert partition is not None
        holding = await service.fetchval(
            f"SELECT count(*) FROM events WHERE tableoid = '{partition}'::regclass"  # noqa: S608
        )
        assert holding > 0, "the month's partition holds this test's events"
        before = await service.fetchval("SELECT count(*) FROM events")
        refused = []
        for template in FORBIDDEN:
            statement = template.format(partition=partition)
            try:
                await service.execute(statement)
            except asyncpg.InsufficientPrivilegeError as exc:
                # The role lacks the privilege: not merely stopped by the append-only trigger,
                # which an owner could disable.
                if str(exc).startswith(("permission denied", "must be owner")):
                    refused.append(statement)
        assert refused == [t.format(partition=partition) for t in FORBIDDEN]
        assert await service.fetchval("SELECT count(*) FROM events") == before
    finally:
        await service.close()
