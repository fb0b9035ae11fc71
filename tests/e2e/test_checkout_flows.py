"""Whole purchases over real gRPC, a real Postgres and the emulator."""

from __future__ import annotations

import grpc
import pytest

from payments.amazonpay.v1 import (
    charge_pb2,
    charge_permission_pb2,
    common_pb2,
    ledger_pb2,
    refund_pb2,
)
from payments.amazonpay.v1 import checkout_session_pb2 as cs
from service.app import Application
from tests._emulator import EmulatorProcess
from tests.e2e._flows import checkout, failure, key, usd
from tests.e2e.conftest import Stubs


async def test_one_time_checkout_capture_and_two_partial_refunds(
    api: Stubs, clean_emulator: EmulatorProcess
) -> None:
    done = await checkout(api, clean_emulator, intent=cs.PAYMENT_INTENT_AUTHORIZE, amount="100.00")
    assert (
        done.complete.checkout_session.status_details.state == cs.CHECKOUT_SESSION_STATE_COMPLETED
    )
    assert done.charge_permission_id
    assert done.charge_id

    charge = await api.charges.GetCharge(charge_pb2.GetChargeRequest(charge_id=done.charge_id))
    assert charge.charge.status_details.state == charge_pb2.CHARGE_STATE_AUTHORIZED
    assert charge.served_from == common_pb2.DATA_ORIGIN_AMAZON

    captured = await api.charges.CaptureCharge(
        charge_pb2.CaptureChargeRequest(
            charge_id=done.charge_id, idempotency_key=key(), capture_amount=usd("100.00")
        )
    )
    assert captured.charge.status_details.state == charge_pb2.CHARGE_STATE_CAPTURED

    refund_ids = []
    for amount in ("30.00", "20.00"):
        refund = await api.refunds.CreateRefund(
            refund_pb2.CreateRefundRequest(
                charge_id=done.charge_id, idempotency_key=key(), refund_amount=usd(amount)
            )
        )
        assert refund.refund.status_details.state == refund_pb2.REFUND_STATE_REFUND_INITIATED
        assert refund.refund.refund_amount.amount == amount
        refund_ids.append(refund.refund.refund_id)
    assert len(set(refund_ids)) == 2

    listed = await api.ledger.ListTransactions(
        ledger_pb2.ListTransactionsRequest(charge_permission_id=done.charge_permission_id)
    )
    kinds = sorted(ledger_pb2.ObjectKind.Name(t.kind) for t in listed.transactions)
    assert kinds == [
        "OBJECT_KIND_CHARGE",
        "OBJECT_KIND_CHARGE_PERMISSION",
        "OBJECT_KIND_CHECKOUT_SESSION",
        "OBJECT_KIND_REFUND",
        "OBJECT_KIND_REFUND",
    ]
    history = await api.ledger.GetTransaction(
        ledger_pb2.GetTransactionRequest(
            kind=ledger_pb2.OBJECT_KIND_CHARGE, object_id=done.charge_id
        )
    )
    assert [e.raw_state for e in history.events] == ["Authorized", "Captured"]
    assert history.events[1].previous_raw_state == "Authorized"
    assert history.transaction.raw_state == "Captured"
    assert history.transaction.is_final


async def test_authorize_with_capture_captures_at_completion(
    api: Stubs, clean_emulator: EmulatorProcess
) -> None:
    done = await checkout(
        api, clean_emulator, intent=cs.PAYMENT_INTENT_AUTHORIZE_WITH_CAPTURE, amount="25.00"
    )
    charge = await api.charges.GetCharge(charge_pb2.GetChargeRequest(charge_id=done.charge_id))
    assert charge.charge.status_details.state == charge_pb2.CHARGE_STATE_CAPTURED
    assert charge.charge.capture_amount.amount == "25.00"


async def test_deferred_authorization_then_deferred_capture(
    api: Stubs, clean_emulator: EmulatorProcess
) -> None:
    done = await checkout(api, clean_emulator, intent=cs.PAYMENT_INTENT_CONFIRM, amount="40.00")
    assert done.charge_id == ""
    permission = await api.permissions.GetChargePermission(
        charge_permission_pb2.GetChargePermissionRequest(
            charge_permission_id=done.charge_permission_id
        )
    )
    assert (
        permission.charge_permission.status_details.state
        == charge_permission_pb2.CHARGE_PERMISSION_STATE_CHARGEABLE
    )
    authorized = await api.charges.CreateCharge(
        charge_pb2.CreateChargeRequest(
            idempotency_key=key(),
            charge_permission_id=done.charge_permission_id,
            charge_amount=usd("40.00"),
            capture_now=False,
        )
    )
    assert authorized.charge.status_details.state == charge_pb2.CHARGE_STATE_AUTHORIZED
    captured = await api.charges.CaptureCharge(
        charge_pb2.CaptureChargeRequest(
            charge_id=authorized.charge.charge_id,
            idempotency_key=key(),
            capture_amount=usd("40.00"),
        )
    )
    assert captured.charge.status_details.state == charge_pb2.CHARGE_STATE_CAPTURED


async def test_a_declined_charge_is_failed_precondition_with_amazons_reason(
    api: Stubs, clean_emulator: EmulatorProcess
) -> None:
    done = await checkout(api, clean_emulator, intent=cs.PAYMENT_INTENT_CONFIRM)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await api.charges.CreateCharge(
            charge_pb2.CreateChargeRequest(
                idempotency_key=key(),
                charge_permission_id=done.charge_permission_id,
                charge_amount=usd("10.00"),
                capture_now=True,
                sandbox_simulation_code="HardDeclined",
            )
        )
    info = failure(caught.value)
    assert info.code == grpc.StatusCode.FAILED_PRECONDITION
    assert (info.reason, info.domain) == ("HardDeclined", "amazonpay")
    assert info.metadata["http_status"] == "422"
    assert info.metadata["amazon_request_id"]


async def test_idempotent_replay_returns_the_identical_response(
    api: Stubs, clean_emulator: EmulatorProcess
) -> None:
    done = await checkout(api, clean_emulator, intent=cs.PAYMENT_INTENT_CONFIRM)
    request = charge_pb2.CreateChargeRequest(
        idempotency_key=key(),
        charge_permission_id=done.charge_permission_id,
        charge_amount=usd("10.00"),
        capture_now=True,
    )
    first = await api.charges.CreateCharge(request)
    second = await api.charges.CreateCharge(request)
    assert not first.idempotent_replay
    assert second.idempotent_replay
    assert second.charge == first.charge
    assert second.amazon_request_id == first.amazon_request_id
    charges = [
        c
        for c in await clean_emulator.objects("charges")
        if c.get("chargeId") == first.charge.charge_id
    ]
    assert len(charges) == 1


async def test_a_reused_key_with_another_body_is_already_exists(
    api: Stubs, clean_emulator: EmulatorProcess
) -> None:
    done = await checkout(api, clean_emulator, intent=cs.PAYMENT_INTENT_CONFIRM)
    reused = key()
    await api.charges.CreateCharge(
        charge_pb2.CreateChargeRequest(
            idempotency_key=reused,
            charge_permission_id=done.charge_permission_id,
            charge_amount=usd("10.00"),
        )
    )
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await api.charges.CreateCharge(
            charge_pb2.CreateChargeRequest(
                idempotency_key=reused,
                charge_permission_id=done.charge_permission_id,
                charge_amount=usd("11.00"),
            )
        )
    info = failure(caught.value)
    assert info.code == grpc.StatusCode.ALREADY_EXISTS
    assert info.reason == "IDEMPOTENCY_KEY_REUSED"


async def test_a_dropped_connection_after_amazon_did_the_work_yields_one_charge(
    api: Stubs, clean_emulator: EmulatorProcess
) -> None:
    done = await checkout(api, clean_emulator, intent=cs.PAYMENT_INTENT_CONFIRM)
    await clean_emulator.control(
        "POST", "faults", {"operation": "CreateCharge", "drop": True, "count": 1}
    )
    charge = await api.charges.CreateCharge(
        charge_pb2.CreateChargeRequest(
            idempotency_key=key(),
            charge_permission_id=done.charge_permission_id,
            charge_amount=usd("10.00"),
            capture_now=True,
        ),
        timeout=20,
    )
    emulator_charges = [
        c
        for c in await clean_emulator.objects("charges")
        if c.get("chargePermissionId") == done.charge_permission_id
    ]
    assert [c["chargeId"] for c in emulator_charges] == [charge.charge.charge_id]
    ledger = await api.ledger.ListTransactions(
        ledger_pb2.ListTransactionsRequest(
            kind=ledger_pb2.OBJECT_KIND_CHARGE, charge_permission_id=done.charge_permission_id
        )
    )
    assert [t.object_id for t in ledger.transactions] == [charge.charge.charge_id]


async def test_a_session_read_31_days_later_is_served_from_the_ledger(
    api: Stubs, clean_emulator: EmulatorProcess
) -> None:
    created = await api.sessions.CreateCheckoutSession(
        cs.CreateCheckoutSessionRequest(
            idempotency_key=key(),
            web_checkout_details=cs.WebCheckoutDetails(
                checkout_review_return_url="https://shop.example/review"
            ),
        )
    )
    session_id = created.checkout_session.checkout_session_id
    await clean_emulator.advance(31 * 24 * 3600)
    read = await api.sessions.GetCheckoutSession(
        cs.GetCheckoutSessionRequest(checkout_session_id=session_id)
    )
    assert read.served_from == common_pb2.DATA_ORIGIN_LEDGER
    assert read.checkout_session.checkout_session_id == session_id
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await api.sessions.GetCheckoutSession(
            cs.GetCheckoutSessionRequest(
                checkout_session_id=session_id, source=common_pb2.READ_SOURCE_AMAZON
            )
        )
    assert failure(caught.value).reason == "ResourceNotFound"


async def test_a_second_merchant_is_chosen_by_the_merchant_field(
    api: Stubs, clean_emulator: EmulatorProcess, app: Application
) -> None:
    done = await checkout(api, clean_emulator, intent=cs.PAYMENT_INTENT_CONFIRM, merchant="second")
    listed = await api.ledger.ListTransactions(
        ledger_pb2.ListTransactionsRequest(
            merchant="second", kind=ledger_pb2.OBJECT_KIND_CHECKOUT_SESSION
        )
    )
    assert done.session_id in {t.object_id for t in listed.transactions}
    default = await api.ledger.ListTransactions(
        ledger_pb2.ListTransactionsRequest(kind=ledger_pb2.OBJECT_KIND_CHECKOUT_SESSION)
    )
    assert done.session_id not in {t.object_id for t in default.transactions}
