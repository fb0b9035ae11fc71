"""Buyer PII is ciphertext in Postgres, readable through the API, and erasable while the
financial record stays."""

from __future__ import annotations

import grpc
import pytest

from payments.amazonpay.v1 import charge_permission_pb2, common_pb2, ledger_pb2
from payments.amazonpay.v1 import checkout_session_pb2 as cs
from service.app import Application
from tests._emulator import EmulatorProcess
from tests.e2e._flows import checkout, failure
from tests.e2e.conftest import Stubs

BUYER_NAME = "Zelda Quartermaine"
BUYER_EMAIL = "zelda.quartermaine@example.com"


async def _raw_database_text(app: Application) -> str:
    """Everything the ledger tables hold, as text: what an attacker with a dump would see."""
    assert app.ledger is not None
    parts = []
    async with app.ledger.pool.acquire() as conn:
        for table in ("objects", "events", "operations", "pii_values"):
            rows = await conn.fetch(f"SELECT * FROM {table}")  # noqa: S608 - fixed table names
            parts += [str(dict(r)) for r in rows]
    return "\n".join(parts)


async def _signed_in_checkout(api: Stubs, emulator: EmulatorProcess) -> str:
    original = emulator.sign_in

    async def sign_in_with_buyer(session_id: str, card: str = "1111") -> dict[str, object]:
        return await emulator.control(  # type: ignore[no-any-return]
            "POST",
            f"checkoutSessions/{session_id}/signIn",
            {"card": card, "buyer": {"name": BUYER_NAME, "email": BUYER_EMAIL}},
        )

    emulator.sign_in = sign_in_with_buyer  # type: ignore[method-assign]
    try:
        done = await checkout(api, emulator, intent=cs.PAYMENT_INTENT_AUTHORIZE)
    finally:
        emulator.sign_in = original  # type: ignore[method-assign]
    return done.charge_permission_id


async def test_buyer_pii_is_ciphertext_at_rest_and_plain_through_the_api(
    api: Stubs, app: Application, clean_emulator: EmulatorProcess
) -> None:
    charge_permission_id = await _signed_in_checkout(api, clean_emulator)
    from_ledger = await api.permissions.GetChargePermission(
        charge_permission_pb2.GetChargePermissionRequest(
            charge_permission_id=charge_permission_id, source=common_pb2.READ_SOURCE_LEDGER
        )
    )
    assert from_ledger.charge_permission.buyer.name == BUYER_NAME
    assert from_ledger.charge_permission.buyer.email == BUYER_EMAIL
    dump = await _raw_database_text(app)
    assert charge_permission_id in dump
    assert BUYER_NAME not in dump
    assert BUYER_EMAIL not in dump
    assert "zelda" not in dump.lower()


async def test_erasure_removes_buyer_data_and_keeps_amounts_and_states(
    api: Stubs, app: Application, clean_emulator: EmulatorProcess
) -> None:
    charge_permission_id = await _signed_in_checkout(api, clean_emulator)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await api.ledger.EraseBuyerData(
            ledger_pb2.EraseBuyerDataRequest(charge_permission_id=charge_permission_id)
        )
    info = failure(caught.value)
    assert (info.code, info.reason) == (
        grpc.StatusCode.FAILED_PRECONDITION,
        "CHARGE_PERMISSION_OPEN",
    )

    await api.permissions.CloseChargePermission(
        charge_permission_pb2.CloseChargePermissionRequest(
            charge_permission_id=charge_permission_id, closure_reason="order fulfilled"
        )
    )
    before = await api.ledger.ListTransactions(
        ledger_pb2.ListTransactionsRequest(charge_permission_id=charge_permission_id)
    )
    request = ledger_pb2.EraseBuyerDataRequest(
        charge_permission_id=charge_permission_id,
        reason="customer request #123",
        idempotency_key="erase-123",
    )
    erased = await api.ledger.EraseBuyerData(request)
    assert erased.objects_erased == len(before.transactions)
    assert erased.events_erased > 0
    assert not erased.idempotent_replay
    replay = await api.ledger.EraseBuyerData(request)
    assert replay.idempotent_replay
    assert (replay.objects_erased, replay.erased_at) == (erased.objects_erased, erased.erased_at)
    with pytest.raises(grpc.aio.AioRpcError) as reused:
        await api.ledger.EraseBuyerData(
            ledger_pb2.EraseBuyerDataRequest(
                buyer_id="amzn1.account.X", idempotency_key="erase-123"
            )
        )
    assert reused.value.code() == grpc.StatusCode.ALREADY_EXISTS
    again = await api.ledger.EraseBuyerData(
        ledger_pb2.EraseBuyerDataRequest(charge_permission_id=charge_permission_id)
    )
    assert (again.objects_erased, again.events_erased) == (0, 0)

    after = await api.ledger.ListTransactions(
        ledger_pb2.ListTransactionsRequest(charge_permission_id=charge_permission_id)
    )
    assert [(t.object_id, t.raw_state, t.amount.amount) for t in after.transactions] == [
        (t.object_id, t.raw_state, t.amount.amount) for t in before.transactions
    ]
    assert all(t.HasField("buyer_data_erased_at") for t in after.transactions)
    permission = next(
        t for t in after.transactions if t.kind == ledger_pb2.OBJECT_KIND_CHARGE_PERMISSION
    )
    assert permission.charge_permission.buyer.name == ""
    assert not permission.charge_permission.HasField("shipping_address")
    history = await api.ledger.GetTransaction(
        ledger_pb2.GetTransactionRequest(
            kind=ledger_pb2.OBJECT_KIND_CHARGE_PERMISSION, object_id=charge_permission_id
        )
    )
    assert all(e.charge_permission.buyer.email == "" for e in history.events)

    # A later read from Amazon (within its 30 days) must not bring the data back.
    await api.permissions.GetChargePermission(
        charge_permission_pb2.GetChargePermissionRequest(
            charge_permission_id=charge_permission_id, source=common_pb2.READ_SOURCE_AMAZON
        )
    )
    dump = await _raw_database_text(app)
    assert BUYER_NAME not in dump
    reread = await api.permissions.GetChargePermission(
        charge_permission_pb2.GetChargePermissionRequest(
            charge_permission_id=charge_permission_id, source=common_pb2.READ_SOURCE_LEDGER
        )
    )
    assert reread.charge_permission.buyer.name == ""


async def test_erasing_an_unknown_target_is_not_found(api: Stubs) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await api.ledger.EraseBuyerData(
            ledger_pb2.EraseBuyerDataRequest(buyer_id="amzn1.account.NOBODY")
        )
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND
    with pytest.raises(grpc.aio.AioRpcError) as missing:
        await api.ledger.EraseBuyerData(ledger_pb2.EraseBuyerDataRequest())
    assert missing.value.code() == grpc.StatusCode.INVALID_ARGUMENT


async def test_an_erasure_without_a_target_names_the_field_with_the_other_violations(
    api: Stubs,
) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await api.ledger.EraseBuyerData(
            ledger_pb2.EraseBuyerDataRequest(idempotency_key="not a key!")
        )
    info = failure(caught.value)
    assert (info.code, info.reason) == (grpc.StatusCode.INVALID_ARGUMENT, "VALIDATION_FAILED")
    assert set(info.violations) == {"target", "idempotency_key"}
