"""The harness chores the bench and soak run through the ledger instead of their own SQL."""

from __future__ import annotations

import uuid

import asyncpg

from service.ledger import (
    Ledger,
    ObjectFilter,
    ObjectRecord,
    audit_ledger,
    create_database,
    drop_database,
    seed_object_copies,
    statement_probe,
)

CP = "S01-7654321-7654321"


def _observed(kind: str, object_id: str, state: str, *, final: bool = False) -> ObjectRecord:
    return ObjectRecord(
        merchant="default",
        kind=kind,
        object_id=object_id,
        state=state,
        is_final=final,
        charge_permission_id=CP,
        amount="10.00",
        currency_code="USD",
        snapshot={"statusDetails": {"state": state}},
    )


async def test_a_created_database_is_empty_and_dropping_it_removes_it(
    postgres_server_url: str,
) -> None:
    name = f"tools_{uuid.uuid4().hex[:12]}"
    url = await create_database(postgres_server_url, name)
    try:
        conn = await asyncpg.connect(url)
        try:
            assert await conn.fetchval("SELECT current_database()") == name
        finally:
            await conn.close()
    finally:
        await drop_database(postgres_server_url, url)
    admin = await asyncpg.connect(postgres_server_url)
    try:
        assert await admin.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", name) is None
    finally:
        await admin.close()


async def test_seeded_copies_list_like_recorded_objects(ledger: Ledger, database_url: str) -> None:
    await ledger.repository.record(
        [
            _observed("charge_permission", CP, "Chargeable"),
            _observed("charge", f"{CP}-C000001", "Captured", final=True),
        ],
        "api",
    )
    seeded, total = await seed_object_copies(database_url, 9)
    assert (seeded, total) == (10, 12)  # 5 copies of each of the two kinds, plus the originals
    page = await ledger.repository.list_objects(
        ObjectFilter(merchant="default", kind="charge"), page_size=50
    )
    copies = [o for o in page.items if o.object_id.startswith("S01-SEED-")]
    assert len(copies) == 5
    assert {(o.state, o.amount, o.charge_id == o.object_id) for o in copies} == {
        ("Captured", "10.00", True)
    }
    assert all(o.snapshot["chargeId"] == o.object_id for o in copies)


async def test_the_audit_reads_back_objects_events_and_operations(
    ledger: Ledger, database_url: str
) -> None:
    repo = ledger.repository
    await repo.record([_observed("charge", f"{CP}-C000001", "Authorized")], "api")
    await repo.record([_observed("charge", f"{CP}-C000001", "Captured", final=True)], "poll")
    await repo.record([_observed("charge_permission", CP, "Chargeable")], "ipn")
    await repo.begin_operation(
        merchant="default",
        operation="CaptureCharge",
        idempotency_key="k1",
        request_hash=b"h",
        amazon_idempotency_key="a1",
        request={},
    )
    audited = await audit_ledger(database_url)
    assert [(r["kind"], r["object_id"], r["state"]) for r in audited.charges_and_refunds] == [
        ("charge", f"{CP}-C000001", "Captured")
    ]
    assert len(audited.event_ids) == 3
    assert audited.objects_without_state_event == []
    assert audited.charge_permissions == {CP}
    assert audited.checkout_sessions == {}
    assert audited.pending_operations == 1
    assert audited.stats["events_by_source"] == {"api": 1, "poll": 1, "ipn": 1}
    assert audited.stats["objects_by_kind"] == {"charge": 1, "charge_permission": 1}
    assert audited.stats["operations_by_status"] == {"pending": 1}


async def test_the_statement_probe_writes_one_row_per_call_and_cleans_up(
    database_url: str,
) -> None:
    async with statement_probe(database_url, pool_size=2) as write:
        for _ in range(3):
            await write()
        conn = await asyncpg.connect(database_url)
        try:
            assert await conn.fetchval("SELECT count(*) FROM floor_probe_rows") == 3
        finally:
            await conn.close()
    conn = await asyncpg.connect(database_url)
    try:
        assert await conn.fetchval("SELECT to_regclass('floor_probe_rows')") is None
    finally:
        await conn.close()
