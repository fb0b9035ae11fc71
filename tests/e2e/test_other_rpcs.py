"""The RPCs beyond the main purchase path, each through the real stack."""

from __future__ import annotations

import base64
import hashlib
import json

import grpc
import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from payments.amazonpay.v1 import (
    button_pb2,
    buyer_pb2,
    charge_pb2,
    charge_permission_pb2,
    common_pb2,
    delivery_tracker_pb2,
    ledger_pb2,
)
from payments.amazonpay.v1 import checkout_session_pb2 as cs
from tests._emulator import EmulatorProcess
from tests.e2e._flows import checkout, failure, key, usd
from tests.e2e.conftest import KEY_ID, Keys, Stubs


async def test_a_declined_card_cancels_the_session_and_completion_fails(
    api: Stubs, clean_emulator: EmulatorProcess
) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await checkout(api, clean_emulator, card="3434")
    info = failure(caught.value)
    assert info.code == grpc.StatusCode.FAILED_PRECONDITION
    assert info.domain == "amazonpay"
    assert info.reason in {"CheckoutSessionCanceled", "InvalidCheckoutSessionStatus"}


async def test_cancel_an_authorized_charge(api: Stubs, clean_emulator: EmulatorProcess) -> None:
    done = await checkout(api, clean_emulator, intent=cs.PAYMENT_INTENT_AUTHORIZE)
    canceled = await api.charges.CancelCharge(
        charge_pb2.CancelChargeRequest(charge_id=done.charge_id, cancellation_reason="out of stock")
    )
    assert canceled.charge.status_details.state == charge_pb2.CHARGE_STATE_CANCELED
    assert canceled.charge.status_details.raw_reason_code == "MerchantCanceled"
    # Amazon refuses a second cancel as a state error; the charge is canceled, so it succeeds.
    again = await api.charges.CancelCharge(
        charge_pb2.CancelChargeRequest(charge_id=done.charge_id, cancellation_reason="retry")
    )
    assert again.charge.status_details.state == charge_pb2.CHARGE_STATE_CANCELED
    from_ledger = await api.charges.GetCharge(charge_pb2.GetChargeRequest(charge_id=done.charge_id))
    assert from_ledger.served_from == common_pb2.DATA_ORIGIN_LEDGER
    assert from_ledger.charge.status_details.state == charge_pb2.CHARGE_STATE_CANCELED


async def test_update_then_close_a_charge_permission(
    api: Stubs, clean_emulator: EmulatorProcess
) -> None:
    done = await checkout(api, clean_emulator, intent=cs.PAYMENT_INTENT_CONFIRM)
    updated = await api.permissions.UpdateChargePermission(
        charge_permission_pb2.UpdateChargePermissionRequest(
            charge_permission_id=done.charge_permission_id,
            merchant_metadata=common_pb2.MerchantMetadata(merchant_reference_id="order-42"),
        )
    )
    assert updated.charge_permission.merchant_metadata.merchant_reference_id == "order-42"
    closed = await api.permissions.CloseChargePermission(
        charge_permission_pb2.CloseChargePermissionRequest(
            charge_permission_id=done.charge_permission_id, closure_reason="order canceled"
        )
    )
    state = closed.charge_permission.status_details.state
    assert state == charge_permission_pb2.CHARGE_PERMISSION_STATE_CLOSED
    closed_again = await api.permissions.CloseChargePermission(
        charge_permission_pb2.CloseChargePermissionRequest(
            charge_permission_id=done.charge_permission_id, closure_reason="retry"
        )
    )
    assert closed_again.charge_permission.status_details.state == state
    by_reference = await api.ledger.ListTransactions(
        ledger_pb2.ListTransactionsRequest(merchant_reference_id="order-42")
    )
    assert {t.object_id for t in by_reference.transactions} >= {done.charge_permission_id}


async def test_get_buyer_reads_amazon_and_refuses_the_ledger(
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
    signed_in = await clean_emulator.sign_in(created.checkout_session.checkout_session_id)
    token = signed_in["buyerToken"]
    buyer = await api.buyers.GetBuyer(buyer_pb2.GetBuyerRequest(buyer_token=token))
    assert buyer.buyer.buyer_id
    assert buyer.buyer.email
    assert buyer.served_from == common_pb2.DATA_ORIGIN_AMAZON
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await api.buyers.GetBuyer(
            buyer_pb2.GetBuyerRequest(buyer_token=token, source=common_pb2.READ_SOURCE_LEDGER)
        )
    info = failure(caught.value)
    assert info.code == grpc.StatusCode.INVALID_ARGUMENT
    assert info.violations == {
        "source": "must be AUTO or AMAZON: buyers are not stored in the ledger"
    }


async def test_button_payload_is_signed_with_the_merchant_key(api: Stubs, keys: Keys) -> None:
    payload = json.dumps(
        {
            "storeId": "amzn1.application-oa2-client.e2e",
            "webCheckoutDetails": {"checkoutReviewReturnUrl": "https://shop.example/review"},
        }
    )
    signed = await api.buttons.SignButtonPayload(
        button_pb2.SignButtonPayloadRequest(payload=payload)
    )
    assert signed.payload == payload
    assert signed.public_key_id == KEY_ID
    assert signed.algorithm == "AMZN-PAY-RSASSA-PSS-V2"
    public = serialization.load_pem_public_key(keys.public.read_bytes())
    to_sign = f"AMZN-PAY-RSASSA-PSS-V2\n{hashlib.sha256(payload.encode()).hexdigest()}"
    assert isinstance(public, rsa.RSAPublicKey)
    public.verify(
        base64.b64decode(signed.signature),
        to_sign.encode(),
        padding.PSS(mgf=padding.MGF1(hashes.SHA256()), salt_length=32),
        hashes.SHA256(),
    )
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await api.buttons.SignButtonPayload(button_pb2.SignButtonPayloadRequest(payload="[1]"))
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT


async def test_delivery_tracker_is_created(api: Stubs, clean_emulator: EmulatorProcess) -> None:
    done = await checkout(api, clean_emulator, intent=cs.PAYMENT_INTENT_AUTHORIZE_WITH_CAPTURE)
    tracker = await api.trackers.CreateDeliveryTracker(
        delivery_tracker_pb2.CreateDeliveryTrackerRequest(
            idempotency_key=key(),
            charge_permission_id=done.charge_permission_id,
            delivery_details=[
                delivery_tracker_pb2.DeliveryDetail(tracking_number="1Z999", carrier_code="UPS")
            ],
        )
    )
    assert tracker.delivery_tracker.charge_permission_id == done.charge_permission_id
    assert tracker.delivery_tracker.delivery_details[0].tracking_number == "1Z999"


async def test_a_delivery_tracker_without_a_caller_key_is_sent_with_a_fresh_one(
    api: Stubs, clean_emulator: EmulatorProcess
) -> None:
    done = await checkout(api, clean_emulator, intent=cs.PAYMENT_INTENT_AUTHORIZE_WITH_CAPTURE)
    request = delivery_tracker_pb2.CreateDeliveryTrackerRequest(
        charge_permission_id=done.charge_permission_id,
        delivery_details=[
            delivery_tracker_pb2.DeliveryDetail(tracking_number="1Z1", carrier_code="UPS")
        ],
    )
    first = await api.trackers.CreateDeliveryTracker(request)
    second = await api.trackers.CreateDeliveryTracker(request)
    for tracker in (first, second):
        assert tracker.delivery_tracker.charge_permission_id == done.charge_permission_id
        assert not tracker.idempotent_replay


async def test_finalize_a_session_for_an_additional_payment_button(
    api: Stubs, clean_emulator: EmulatorProcess
) -> None:
    created = await api.sessions.CreateCheckoutSession(
        cs.CreateCheckoutSessionRequest(
            idempotency_key=key(),
            web_checkout_details=cs.WebCheckoutDetails(
                checkout_review_return_url="https://shop.example/review",
                checkout_result_return_url="https://shop.example/result",
            ),
        )
    )
    session_id = created.checkout_session.checkout_session_id
    await clean_emulator.sign_in(session_id)
    finalize = cs.FinalizeCheckoutSessionRequest(
        checkout_session_id=session_id,
        idempotency_key=key(),
        charge_amount=usd("15.00"),
        payment_intent=cs.PAYMENT_INTENT_AUTHORIZE,
    )
    result = await api.sessions.FinalizeCheckoutSession(finalize)
    session = result.checkout_session
    assert session.status_details.state == cs.CHECKOUT_SESSION_STATE_COMPLETED
    assert not result.authorization_pending
    listed = await api.ledger.ListTransactions(
        ledger_pb2.ListTransactionsRequest(charge_permission_id=session.charge_permission_id)
    )
    states = {ledger_pb2.ObjectKind.Name(t.kind): t.raw_state for t in listed.transactions}
    assert states["OBJECT_KIND_CHARGE"] == "Authorized"
    assert states["OBJECT_KIND_CHARGE_PERMISSION"] == "Chargeable"


async def test_list_events_pages_through_history(
    api: Stubs, clean_emulator: EmulatorProcess
) -> None:
    done = await checkout(api, clean_emulator, intent=cs.PAYMENT_INTENT_AUTHORIZE)
    await api.charges.CaptureCharge(
        charge_pb2.CaptureChargeRequest(
            charge_id=done.charge_id, idempotency_key=key(), capture_amount=usd("100.00")
        )
    )
    seen: list[ledger_pb2.LedgerEvent] = []
    token = ""
    while True:
        page = await api.ledger.ListEvents(
            ledger_pb2.ListEventsRequest(
                charge_permission_id=done.charge_permission_id, page_size=2, page_token=token
            )
        )
        seen.extend(page.events)
        token = page.next_page_token
        if not token:
            break
    ids = [e.event_id for e in seen]
    assert ids == sorted(ids)
    assert len(ids) == len(set(ids))
    charge_states = [e.raw_state for e in seen if e.kind == ledger_pb2.OBJECT_KIND_CHARGE]
    assert charge_states == ["Authorized", "Captured"]
    assert all(e.source == ledger_pb2.EVENT_SOURCE_API for e in seen)
