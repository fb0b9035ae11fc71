"""Every service through the Python client, against the real service, ledger and emulator."""

from __future__ import annotations

import asyncio
import json

import pytest
from amazonpay_client import (
    AmazonPayClient,
    InvalidStateError,
    NotFoundError,
    UnknownMerchantError,
    price,
)

from payments.amazonpay.v1 import charge_pb2, common_pb2, ledger_pb2, refund_pb2
from payments.amazonpay.v1 import checkout_session_pb2 as cs
from tests._emulator import EmulatorProcess
from tests.clients.python._flows import REVIEW_URL, checkout
from tests.e2e.conftest import KEY_ID


async def test_checkout_capture_refund_through_the_client(
    client: AmazonPayClient, clean_emulator: EmulatorProcess
) -> None:
    done = await checkout(client, clean_emulator, amount="42.50", reference="order-py-1")

    session = await client.checkout_sessions.get(done.session_id)
    assert session.checkout_session.status_details.state == cs.CHECKOUT_SESSION_STATE_COMPLETED
    charge = await client.charges.get(done.charge_id)
    assert charge.charge.status_details.raw_state == "Authorized"
    assert charge.charge.charge_amount.amount == "42.50"

    captured = await client.charges.capture(done.charge_id, capture_amount=price("42.50", "USD"))
    assert captured.charge.status_details.state == charge_pb2.CHARGE_STATE_CAPTURED
    assert not captured.idempotent_replay

    refund = await client.refunds.create(
        charge_id=done.charge_id, refund_amount=price("10.00", "USD")
    )
    refund_id = refund.refund.refund_id
    assert refund.refund.refund_amount.amount == "10.00"
    fetched = await client.refunds.get(refund_id, source="ledger")
    assert fetched.refund.refund_id == refund_id
    assert fetched.served_from == common_pb2.DATA_ORIGIN_LEDGER
    assert fetched.refund.status_details.state in (
        refund_pb2.REFUND_STATE_REFUND_INITIATED,
        refund_pb2.REFUND_STATE_REFUNDED,
    )


async def test_an_explicit_idempotency_key_replays_the_stored_answer(
    client: AmazonPayClient, clean_emulator: EmulatorProcess
) -> None:
    done = await checkout(client, clean_emulator)
    first = await client.charges.capture(
        done.charge_id, capture_amount=price("100.00", "USD"), idempotency_key="capture-order-1"
    )
    again = await client.charges.capture(
        done.charge_id, capture_amount=price("100.00", "USD"), idempotency_key="capture-order-1"
    )
    assert not first.idempotent_replay
    assert again.idempotent_replay
    assert again.charge.charge_id == first.charge.charge_id


async def test_charge_permission_update_close_and_a_new_charge_then_cancel(
    client: AmazonPayClient, clean_emulator: EmulatorProcess
) -> None:
    done = await checkout(client, clean_emulator, intent="PAYMENT_INTENT_CONFIRM")
    permission = await client.charge_permissions.get(done.charge_permission_id)
    assert permission.charge_permission.status_details.raw_state == "Chargeable"

    charge = await client.charges.create(
        charge_permission_id=done.charge_permission_id,
        charge_amount=price("20.00", "USD"),
        capture_now=False,
    )
    assert charge.charge.status_details.raw_state == "Authorized"
    canceled = await client.charges.cancel(
        charge.charge.charge_id, cancellation_reason="customer changed their mind"
    )
    assert canceled.charge.status_details.raw_state == "Canceled"

    updated = await client.charge_permissions.update(
        done.charge_permission_id,
        merchant_metadata={"merchant_reference_id": "order-renamed"},
        update_mask=["merchant_metadata"],
    )
    assert updated.charge_permission.merchant_metadata.merchant_reference_id == "order-renamed"
    closed = await client.charge_permissions.close(
        done.charge_permission_id, closure_reason="order done", cancel_pending_charges=True
    )
    assert closed.charge_permission.status_details.raw_state == "Closed"


async def test_buyer_button_delivery_tracker_and_finalize(
    client: AmazonPayClient, clean_emulator: EmulatorProcess
) -> None:
    created = await client.checkout_sessions.create(
        web_checkout_details={
            "checkout_review_return_url": REVIEW_URL,
            "checkout_result_return_url": "https://shop.example/result",
        }
    )
    session_id = created.checkout_session.checkout_session_id
    signed_in = await clean_emulator.sign_in(session_id)
    buyer = await client.buyers.get(signed_in["buyerToken"])
    assert buyer.buyer.buyer_id
    assert buyer.served_from == common_pb2.DATA_ORIGIN_AMAZON

    finalized = await client.checkout_sessions.finalize(
        session_id, charge_amount=price("15.00", "USD"), payment_intent="PAYMENT_INTENT_AUTHORIZE"
    )
    permission_id = finalized.checkout_session.charge_permission_id
    assert finalized.checkout_session.status_details.state == cs.CHECKOUT_SESSION_STATE_COMPLETED

    tracker = await client.delivery_trackers.create(
        charge_permission_id=permission_id,
        delivery_details=[{"tracking_number": "1Z999", "carrier_code": "UPS"}],
    )
    assert tracker.delivery_tracker.charge_permission_id == permission_id

    payload = json.dumps({"webCheckoutDetails": {"checkoutReviewReturnUrl": REVIEW_URL}})
    signed = await client.buttons.sign_payload(payload)
    assert signed.payload == payload
    assert signed.public_key_id == KEY_ID
    assert signed.signature


async def test_ledger_reads_page_through_transactions_and_events(
    client: AmazonPayClient, clean_emulator: EmulatorProcess
) -> None:
    done = await checkout(client, clean_emulator, reference="order-ledger")
    await client.charges.capture(done.charge_id, capture_amount=price("100.00", "USD"))

    shown = await client.ledger.get_transaction("charge", done.charge_id)
    assert shown.transaction.raw_state == "Captured"
    assert [e.raw_state for e in shown.events][-1] == "Captured"

    page = await client.ledger.list_transactions(kind="charge", state="Captured", page_size=1)
    assert [t.object_id for t in page.transactions] == [done.charge_id]

    everything = [
        t.object_id
        async for t in client.ledger.iter_transactions(
            charge_permission_id=done.charge_permission_id, page_size=1
        )
    ]
    assert set(everything) == {done.session_id, done.charge_permission_id, done.charge_id}

    events = [e async for e in client.ledger.iter_events(object_id=done.charge_id, page_size=1)]
    assert [e.raw_state for e in events][-1] == "Captured"
    assert [e.event_id for e in events] == sorted(e.event_id for e in events)
    by_source = await client.ledger.list_events(object_id=done.charge_id, source="api")
    assert len(by_source.events) == len(events)


async def test_watch_events_replays_from_a_resume_point_then_streams_live(
    client: AmazonPayClient, clean_emulator: EmulatorProcess
) -> None:
    done = await checkout(client, clean_emulator)
    history = await client.ledger.get_transaction("charge", done.charge_id)
    resume_after = history.events[-1].event_id - 1
    received: list[ledger_pb2.LedgerEvent] = []

    async def watch() -> None:
        async for event in client.ledger.watch_events(
            kind="charge", object_id=done.charge_id, after_event_id=resume_after
        ):
            received.append(event)
            if len(received) == 2:
                return

    watcher = asyncio.create_task(watch())
    for _ in range(200):  # the replayed event shows the stream is open before the capture
        if received:
            break
        await asyncio.sleep(0.02)
    assert [e.raw_state for e in received] == ["Authorized"]
    await client.charges.capture(done.charge_id, capture_amount=price("100.00", "USD"))
    await asyncio.wait_for(watcher, timeout=20)
    assert [e.raw_state for e in received] == ["Authorized", "Captured"]
    assert received[1].previous_raw_state == "Authorized"
    assert received[0].event_id < received[1].event_id


async def test_erase_buyer_data_after_the_permission_is_closed(
    client: AmazonPayClient, clean_emulator: EmulatorProcess
) -> None:
    done = await checkout(client, clean_emulator)
    with pytest.raises(InvalidStateError) as still_open:
        await client.ledger.erase_buyer_data(charge_permission_id=done.charge_permission_id)
    assert still_open.value.reason == "CHARGE_PERMISSION_OPEN"

    await client.charge_permissions.close(
        done.charge_permission_id, closure_reason="order done", cancel_pending_charges=True
    )
    erased = await client.ledger.erase_buyer_data(
        charge_permission_id=done.charge_permission_id,
        reason="ticket DSR-1",
        idempotency_key="dsr-1",
    )
    assert erased.objects_erased >= 1
    again = await client.ledger.erase_buyer_data(charge_permission_id=done.charge_permission_id)
    assert (again.objects_erased, again.events_erased) == (0, 0)
    shown = await client.ledger.get_transaction("charge_permission", done.charge_permission_id)
    assert shown.transaction.HasField("buyer_data_erased_at")
    with pytest.raises(NotFoundError):
        await client.ledger.erase_buyer_data(buyer_id="amzn1.account.NOBODY")


async def test_the_client_merchant_is_the_default_and_a_call_may_override_it(
    target: str, clean_emulator: EmulatorProcess
) -> None:
    async with AmazonPayClient(target, merchant="second") as second:
        created = await second.checkout_sessions.create(
            web_checkout_details={"checkout_review_return_url": REVIEW_URL}
        )
        session_id = created.checkout_session.checkout_session_id
        listed = await second.ledger.list_transactions(kind="checkout_session")
        assert [t.merchant for t in listed.transactions] == ["second"]
        default = await second.ledger.list_transactions(kind="checkout_session", merchant="")
        assert session_id not in [t.object_id for t in default.transactions]
        with pytest.raises(UnknownMerchantError) as caught:
            await second.charges.get("S01-0000000-0000000-C000001", merchant="nobody")
        assert caught.value.field_violations.keys() == {"merchant"}
