from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import pytest

from service.ledger import (
    EventFilter,
    InvalidPageToken,
    Ledger,
    ObjectFilter,
    ObjectRecord,
    Operation,
    OperationConflict,
)

CP = "S01-1234567-1234567"


def charge(state: str, *, final: bool = False, **snapshot: object) -> ObjectRecord:
    return ObjectRecord(
        merchant="default",
        kind="charge",
        object_id=f"{CP}-C000001",
        state=state,
        is_final=final,
        charge_permission_id=CP,
        amount="14.00",
        currency_code="USD",
        snapshot={"chargeId": f"{CP}-C000001", "statusDetails": {"state": state}, **snapshot},
    )


async def test_a_new_object_and_each_change_append_exactly_one_event(ledger: Ledger) -> None:
    repo = ledger.repository
    assert len(await repo.record([charge("Authorized")], "api")) == 1
    assert await repo.record([charge("Authorized")], "poll") == []
    changed = await repo.record([charge("Captured", final=True)], "ipn")
    assert [(e.state, e.source) for e in changed] == [("Captured", "ipn")]
    stored = await repo.get_object("default", "charge", f"{CP}-C000001")
    assert stored is not None
    assert (stored.state, stored.is_final, stored.version, stored.amount) == (
        "Captured",
        True,
        2,
        "14.00",
    )
    events = await repo.object_events("default", "charge", f"{CP}-C000001")
    assert [e.state for e in events] == ["Authorized", "Captured"]
    assert all(e.charge_permission_id == CP for e in events)


async def test_a_stale_non_final_read_never_rolls_back_a_final_state(ledger: Ledger) -> None:
    repo = ledger.repository
    await repo.record([charge("Captured", final=True)], "api")
    assert await repo.record([charge("Authorized")], "poll") == []
    stored = await repo.get_object("default", "charge", f"{CP}-C000001")
    assert stored is not None
    assert stored.state == "Captured"


async def test_sparse_snapshots_merge_instead_of_erasing_fields(ledger: Ledger) -> None:
    repo = ledger.repository
    await repo.record([charge("Authorized", softDescriptor="SHOP")], "api")
    await repo.record(
        [
            ObjectRecord(
                merchant="default",
                kind="charge",
                object_id=f"{CP}-C000001",
                state="Captured",
                is_final=True,
                snapshot={"statusDetails": {"state": "Captured"}},
            )
        ],
        "poll",
    )
    stored = await repo.get_object("default", "charge", f"{CP}-C000001")
    assert stored is not None
    assert stored.snapshot["softDescriptor"] == "SHOP"
    assert stored.snapshot["statusDetails"] == {"state": "Captured"}
    assert stored.charge_permission_id == CP


async def test_concurrent_observers_of_one_transition_record_one_event(ledger: Ledger) -> None:
    repo = ledger.repository
    await repo.record([charge("AuthorizationInitiated")], "api")
    results = await asyncio.gather(
        *(repo.record([charge("Authorized")], src) for src in ("poll", "ipn", "poll", "ipn"))
    )
    assert sum(len(r) for r in results) == 1


async def test_an_operation_replays_and_rejects_a_different_request(ledger: Ledger) -> None:
    repo = ledger.repository
    args: dict[str, Any] = {
        "merchant": "default",
        "operation": "CreateCharge",
        "idempotency_key": "order-1",
        "amazon_idempotency_key": "abc",
        "request": {"chargeAmount": {"amount": "1.00", "currencyCode": "USD"}},
    }
    op, created = await repo.begin_operation(request_hash=b"h1", **args)
    assert created
    assert op.status == "pending"
    again, created_again = await repo.begin_operation(request_hash=b"h1", **args)
    assert not created_again
    assert again.amazon_idempotency_key == "abc"
    with pytest.raises(OperationConflict):
        await repo.begin_operation(request_hash=b"h2", **args)


async def test_completing_an_operation_writes_response_object_and_event_together(
    ledger: Ledger,
) -> None:
    repo = ledger.repository
    op, _ = await repo.begin_operation(
        merchant="default",
        operation="CreateCharge",
        idempotency_key="order-2",
        request_hash=b"h",
        amazon_idempotency_key="k",
        request={},
    )
    response = {"status": 201, "requestId": "r-1", "body": {"chargeId": f"{CP}-C000001"}}
    done, events = await repo.complete_operation(
        op, response=response, records=[charge("Captured", final=True)], source="api"
    )
    assert done.status == "succeeded"
    assert done.response == response
    assert (done.object_kind, done.object_id) == ("charge", f"{CP}-C000001")
    assert len(events) == 1
    # A second completion (another replica, a re-drive) keeps the first answer, adds no event.
    second, more = await repo.complete_operation(
        op,
        response={"status": 201, "body": {}},
        records=[charge("Captured", final=True)],
        source="recovery",
    )
    assert second.response == response
    assert more == []


async def _pending(ledger: Ledger, key: str) -> Operation:
    op, created = await ledger.repository.begin_operation(
        merchant="default",
        operation="CreateCharge",
        idempotency_key=key,
        request_hash=b"h",
        amazon_idempotency_key=f"amazon-{key}",
        request={"operation": "CreateCharge", "body": {"chargePermissionId": CP}},
    )
    assert created
    return op


async def test_a_completion_stores_every_column_of_operation_object_and_event(
    ledger: Ledger,
) -> None:
    op = await _pending(ledger, "order-cols")
    response = {"status": 201, "requestId": "r-2", "body": {"chargeId": f"{CP}-C000001"}}
    done, events = await ledger.repository.complete_operation(
        op, response=response, records=[charge("Authorized")], source="api"
    )
    stored = await ledger.repository.get_operation("default", "CreateCharge", "order-cols")
    assert stored is not None
    assert (stored.status, stored.response, stored.object_kind, stored.object_id) == (
        "succeeded",
        response,
        "charge",
        f"{CP}-C000001",
    )
    assert done.updated_at == stored.updated_at
    row = await ledger.pool.fetchrow(
        "SELECT state, is_final, amount::text, charge_permission_id, next_poll_at IS NOT NULL"
        " AS polled FROM objects WHERE object_id = $1",
        f"{CP}-C000001",
    )
    assert row is not None
    assert tuple(row) == ("Authorized", False, "14.00", CP, True)
    [event] = events
    assert (event.state, event.previous_state, event.source, event.charge_permission_id) == (
        "Authorized",
        None,
        "api",
        CP,
    )
    assert event.snapshot == charge("Authorized").snapshot
    assert [
        e.event_id
        for e in await ledger.repository.object_events("default", "charge", f"{CP}-C000001")
    ] == [event.event_id]


async def test_a_completion_for_an_object_an_ipn_recorded_first_updates_it(
    ledger: Ledger,
) -> None:
    await ledger.repository.record([charge("AuthorizationInitiated")], "ipn")
    op = await _pending(ledger, "order-ipn-first")
    done, events = await ledger.repository.complete_operation(
        op, response={"status": 201, "body": {}}, records=[charge("Captured")], source="api"
    )
    assert done.status == "succeeded"
    [event] = events
    assert (event.previous_state, event.state) == ("AuthorizationInitiated", "Captured")
    stored = await ledger.repository.get_object("default", "charge", f"{CP}-C000001")
    assert stored is not None
    assert stored.state == "Captured"


async def test_concurrent_completions_of_one_operation_record_one_event(ledger: Ledger) -> None:
    op = await _pending(ledger, "order-race")
    results = await asyncio.gather(
        *(
            ledger.repository.complete_operation(
                op,
                response={"status": 201, "requestId": f"r-{i}", "body": {}},
                records=[charge("Captured")],
                source="api" if i == 0 else "recovery",
            )
            for i in range(4)
        )
    )
    first = results[0][0].response
    assert all(done.response == first for done, _ in results)
    assert sum(len(events) for _, events in results) == 1
    count = await ledger.pool.fetchval(
        "SELECT count(*) FROM events WHERE object_id = $1", f"{CP}-C000001"
    )
    assert count == 1


async def test_ledger_require_undoes_every_write_of_its_statement(ledger: Ledger) -> None:
    with pytest.raises(asyncpg.exceptions.AssertError, match="parts disagree"):
        await ledger.pool.execute(
            """
            WITH obj AS (
                INSERT INTO objects (merchant, kind, object_id, state, snapshot, created_at)
                VALUES ('default', 'charge', 'undone', 'Authorized', '{}', now())
                RETURNING 1
            )
            SELECT ledger_require((SELECT count(*) FROM obj) = 0, 'parts disagree')
            """
        )
    assert (
        await ledger.pool.fetchval("SELECT count(*) FROM objects WHERE object_id = 'undone'") == 0
    )


async def test_a_failed_operation_keeps_its_error(ledger: Ledger) -> None:
    repo = ledger.repository
    op, _ = await repo.begin_operation(
        merchant="default",
        operation="CreateCharge",
        idempotency_key="order-3",
        request_hash=b"h",
        amazon_idempotency_key="k3",
        request={},
    )
    failed = await repo.fail_operation(op, error={"httpStatus": 422, "reasonCode": "HardDeclined"})
    assert failed.status == "failed"
    assert failed.error == {"httpStatus": 422, "reasonCode": "HardDeclined"}
    assert await repo.pending_operations(older_than_s=0, limit=10) == []


async def test_listing_pages_are_stable_while_new_objects_arrive(ledger: Ledger) -> None:
    repo = ledger.repository
    base = datetime(2026, 1, 1, tzinfo=UTC)

    def refund(i: int) -> ObjectRecord:
        return ObjectRecord(
            merchant="default",
            kind="refund",
            object_id=f"{CP}-R{i:06d}",
            state="Refunded",
            is_final=True,
            charge_permission_id=CP,
            created_at=base + timedelta(minutes=i % 7),
            snapshot={"refundId": f"{CP}-R{i:06d}"},
        )

    await repo.record([refund(i) for i in range(25)], "api")
    seen: list[str] = []
    token = ""
    while True:
        page = await repo.list_objects(
            ObjectFilter(merchant="default", kind="refund"), page_size=10, page_token=token
        )
        seen.extend(o.object_id for o in page.items)
        await repo.record([refund(100 + len(seen))], "api")
        token = page.next_page_token
        if not token:
            break
    assert len(seen) == len(set(seen))
    assert {f"{CP}-R{i:06d}" for i in range(25)} <= set(seen)


async def test_a_page_token_only_works_with_its_own_filters(ledger: Ledger) -> None:
    repo = ledger.repository
    await repo.record([charge("Authorized"), charge("Authorized")], "api")
    for i in range(3):
        await repo.record(
            [ObjectRecord("default", "refund", f"R{i}", "Refunded", {"refundId": f"R{i}"})], "api"
        )
    page = await repo.list_objects(ObjectFilter(merchant="default"), page_size=1)
    assert page.next_page_token
    with pytest.raises(InvalidPageToken, match="different filters"):
        await repo.list_objects(
            ObjectFilter(merchant="default", kind="refund"),
            page_size=1,
            page_token=page.next_page_token,
        )
    with pytest.raises(InvalidPageToken):
        await repo.list_objects(ObjectFilter(merchant="default"), page_size=1, page_token="garbage")


async def test_events_resume_after_an_event_id(ledger: Ledger) -> None:
    repo = ledger.repository
    first = await repo.record([charge("AuthorizationInitiated")], "api")
    await repo.record([charge("Authorized")], "poll")
    await repo.record([charge("Captured", final=True)], "api")
    page = await repo.list_events(
        EventFilter(merchant="default", after_event_id=first[0].event_id), page_size=1
    )
    assert [e.state for e in page.items] == ["Authorized"]
    rest = await repo.list_events(
        EventFilter(merchant="default", after_event_id=first[0].event_id),
        page_size=10,
        page_token=page.next_page_token,
    )
    assert [e.state for e in rest.items] == ["Captured"]
    assert rest.next_page_token == ""


async def test_a_settled_refund_marks_its_charge_for_a_re_read(ledger: Ledger) -> None:
    repo = ledger.repository
    await repo.record([charge("Captured", final=True, refundedAmount={"amount": "0.00"})], "api")

    def refund(state: str, final: bool) -> ObjectRecord:
        return ObjectRecord(
            merchant="default",
            kind="refund",
            object_id=f"{CP}-R000001",
            state=state,
            is_final=final,
            charge_id=f"{CP}-C000001",
            charge_permission_id=CP,
            snapshot={"refundId": f"{CP}-R000001", "chargeId": f"{CP}-C000001"},
        )

    await repo.record([refund("RefundInitiated", False)], "api")
    assert await repo.owed_reads(limit=10) == []
    await repo.record([refund("Refunded", True)], "ipn")
    assert await repo.owed_reads(limit=10) == [("default", "charge", f"{CP}-C000001")]
    await repo.record([charge("Captured", final=True, refundedAmount={"amount": "5.00"})], "poll")
    assert await repo.owed_reads(limit=10) == []


def _completed_session(number: int) -> ObjectRecord:
    session_cp = f"S01-0000000-{number:07d}"
    return ObjectRecord(
        merchant="default",
        kind="checkout_session",
        object_id=f"session-{number}",
        state="Completed",
        is_final=True,
        snapshot={
            "checkoutSessionId": f"session-{number}",
            "chargePermissionId": session_cp,
            "chargeId": f"{session_cp}-C000001",
            "statusDetails": {"state": "Completed"},
        },
    )


def _no_backoff(_attempts: int) -> float:
    return 0.0


async def _owed_rows(ledger: Ledger) -> list[tuple[str, str]]:
    rows = await ledger.pool.fetch("SELECT kind, object_id FROM owed_reads ORDER BY kind")
    return [(r["kind"], r["object_id"]) for r in rows]


async def test_a_completed_session_owes_reads_of_what_it_named_until_they_are_recorded(
    ledger: Ledger,
) -> None:
    repo = ledger.repository
    await repo.record([_completed_session(1)], "api")
    cp = "S01-0000000-0000001"
    assert await _owed_rows(ledger) == [("charge", f"{cp}-C000001"), ("charge_permission", cp)]
    assert sorted(await repo.owed_reads(limit=10)) == [
        ("default", "charge", f"{cp}-C000001"),
        ("default", "charge_permission", cp),
    ]
    await repo.record(
        [
            ObjectRecord(
                merchant="default",
                kind="charge_permission",
                object_id=cp,
                state="Chargeable",
                charge_permission_id=cp,
                snapshot={"chargePermissionId": cp},
            )
        ],
        "poll",
    )
    assert await repo.owed_reads(limit=10) == []  # the charge's read is still claimed
    assert await _owed_rows(ledger) == [("charge", f"{cp}-C000001")]


async def test_a_claimed_owed_read_is_not_handed_to_another_replica(ledger: Ledger) -> None:
    repo = ledger.repository
    await repo.record([_completed_session(4)], "api")
    first = await repo.owed_reads(limit=10)
    assert len(first) == 2
    assert await repo.owed_reads(limit=10) == []
    await ledger.pool.execute("UPDATE owed_reads SET due_at = now()")  # the claim lapsed
    assert sorted(await repo.owed_reads(limit=10)) == sorted(first)


async def test_a_failing_owed_read_backs_off_without_blocking_the_others(ledger: Ledger) -> None:
    repo = ledger.repository
    await repo.record([_completed_session(1), _completed_session(2)], "api")
    first = (await repo.owed_reads(limit=1))[0]
    attempts = await repo.settle_owed_read(
        *first, error="AmazonPayError", max_attempts=5, backoff_s=lambda n: 3600.0 * n
    )
    assert attempts == 1
    later = await repo.owed_reads(limit=10)
    assert first not in later
    assert len(later) == 3
    row = await ledger.pool.fetchrow(
        "SELECT due_at - now(), last_error FROM owed_reads"
        " WHERE merchant = $1 AND kind = $2 AND object_id = $3",
        *first,
    )
    assert row is not None
    due_at, last_error = row
    assert timedelta(minutes=59) < due_at <= timedelta(hours=1)
    assert last_error == "AmazonPayError"


async def test_an_owed_read_is_given_up_after_its_attempts(ledger: Ledger) -> None:
    repo = ledger.repository
    await repo.record([charge("Captured", final=True)], "api")
    await ledger.pool.execute("UPDATE objects SET needs_refresh = true")
    key = ("default", "charge", f"{CP}-C000001")
    for expected in (1, 2):
        assert await repo.owed_reads(limit=10) == [key]
        assert (
            await repo.settle_owed_read(
                *key, error="ObjectNotFound", max_attempts=3, backoff_s=_no_backoff
            )
            == expected
        )
    assert (
        await repo.settle_owed_read(
            *key, error="ObjectNotFound", max_attempts=3, backoff_s=_no_backoff
        )
        == 3
    )
    assert await repo.owed_reads(limit=10) == []
    assert await ledger.pool.fetchval("SELECT count(*) FROM owed_reads") == 0
    assert not await ledger.pool.fetchval("SELECT bool_or(needs_refresh) FROM objects")


async def test_a_successful_owed_read_is_forgotten(ledger: Ledger) -> None:
    repo = ledger.repository
    await repo.record([_completed_session(3)], "api")
    for key in await repo.owed_reads(limit=10):
        await repo.settle_owed_read(*key, error=None, max_attempts=3, backoff_s=_no_backoff)
    assert await ledger.pool.fetchval("SELECT count(*) FROM owed_reads") == 0
