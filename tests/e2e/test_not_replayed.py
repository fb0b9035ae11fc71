"""Calls Amazon does not replay by idempotency key (Complete, Finalize, Update, Close, Cancel): a
repeat after Amazon applied the call is refused, and the service converges by reading the object.

The dangerous path is Complete: Amazon completes the session, the answer is lost (a dropped
connection, a killed process), and the retry or re-drive gets 422 InvalidCheckoutSessionStatus.
The buyer paid; the caller must hear success, with the charge permission and the charge."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import asyncpg
import grpc
import pytest

from payments.amazonpay.v1 import checkout_session_pb2 as cs
from payments.amazonpay.v1 import common_pb2, ledger_pb2
from tests._emulator import EmulatorProcess
from tests._process import ServiceProcess, free_port
from tests.e2e._flows import RESULT_URL, REVIEW_URL, checkout, failure, key, usd
from tests.e2e.conftest import Keys, Stubs, service_env, stubs_for


async def _ready_session(api: Stubs, emulator: EmulatorProcess, amount: str = "100.00") -> str:
    """A session the buyer confirmed: the merchant's next call is Complete."""
    created = await api.sessions.CreateCheckoutSession(
        cs.CreateCheckoutSessionRequest(
            idempotency_key=key(),
            web_checkout_details=cs.WebCheckoutDetails(checkout_review_return_url=REVIEW_URL),
        ),
        timeout=10,
    )
    session_id = created.checkout_session.checkout_session_id
    await emulator.sign_in(session_id)
    await api.sessions.UpdateCheckoutSession(
        cs.UpdateCheckoutSessionRequest(
            checkout_session_id=session_id,
            web_checkout_details=cs.WebCheckoutDetails(checkout_result_return_url=RESULT_URL),
            payment_details=cs.PaymentDetails(
                payment_intent=cs.PAYMENT_INTENT_AUTHORIZE, charge_amount=usd(amount)
            ),
            merchant_metadata=common_pb2.MerchantMetadata(merchant_reference_id="order-16"),
        ),
        timeout=10,
    )
    await emulator.confirm(session_id)
    return session_id


def _complete(session_id: str, caller_key: str, amount: str = "100.00") -> Any:
    return cs.CompleteCheckoutSessionRequest(
        checkout_session_id=session_id, idempotency_key=caller_key, charge_amount=usd(amount)
    )


async def _emulator_charges(emulator: EmulatorProcess, session_id: str) -> list[str]:
    sessions = {s["checkoutSessionId"]: s for s in await emulator.objects("checkoutSessions")}
    permission = sessions[session_id].get("chargePermissionId")
    return [
        c["chargeId"]
        for c in await emulator.objects("charges")
        if permission and c.get("chargePermissionId") == permission
    ]


async def _ledger_has_the_purchase(
    database_url: str, session_id: str, permission_id: str, charge_id: str
) -> None:
    conn = await asyncpg.connect(database_url)
    try:
        rows = await conn.fetch("SELECT kind, object_id, state FROM objects ORDER BY kind")
    finally:
        await conn.close()
    found = {(r["kind"], r["object_id"]): r["state"] for r in rows}
    assert found[("checkout_session", session_id)] == "Completed"
    assert found[("charge_permission", permission_id)] == "Chargeable"
    assert found[("charge", charge_id)] == "Authorized"


async def test_a_dropped_complete_is_a_success_with_its_permission_and_charge(
    api: Stubs, clean_emulator: EmulatorProcess, database_url: str
) -> None:
    session_id = await _ready_session(api, clean_emulator)
    # Amazon completes the session, then the connection drops before the answer.
    await clean_emulator.control(
        "POST", "faults", {"operation": "CompleteCheckoutSession", "drop": True, "count": 1}
    )
    caller_key = key()
    # The HTTP client retries the lost POST; Amazon refuses the repeat as a state error.
    done = await api.sessions.CompleteCheckoutSession(_complete(session_id, caller_key), timeout=30)
    session = done.checkout_session
    assert session.status_details.state == cs.CHECKOUT_SESSION_STATE_COMPLETED
    assert session.charge_permission_id
    assert session.charge_id
    assert await _emulator_charges(clean_emulator, session_id) == [session.charge_id]
    await _ledger_has_the_purchase(
        database_url, session_id, session.charge_permission_id, session.charge_id
    )
    again = await api.sessions.CompleteCheckoutSession(
        _complete(session_id, caller_key), timeout=30
    )
    assert again.idempotent_replay
    assert again.checkout_session.charge_id == session.charge_id


async def test_a_dropped_complete_with_a_pending_authorization_still_says_pending(
    api: Stubs, clean_emulator: EmulatorProcess
) -> None:
    created = await api.sessions.CreateCheckoutSession(
        cs.CreateCheckoutSessionRequest(
            idempotency_key=key(),
            web_checkout_details=cs.WebCheckoutDetails(checkout_review_return_url=REVIEW_URL),
        ),
        timeout=10,
    )
    session_id = created.checkout_session.checkout_session_id
    await clean_emulator.sign_in(session_id, "0701")
    await api.sessions.UpdateCheckoutSession(
        cs.UpdateCheckoutSessionRequest(
            checkout_session_id=session_id,
            web_checkout_details=cs.WebCheckoutDetails(checkout_result_return_url=RESULT_URL),
            payment_details=cs.PaymentDetails(
                payment_intent=cs.PAYMENT_INTENT_AUTHORIZE,
                charge_amount=usd("100.00"),
                can_handle_pending_authorization=True,
            ),
        ),
        timeout=10,
    )
    await clean_emulator.confirm(session_id)
    await clean_emulator.control(
        "POST", "faults", {"operation": "CompleteCheckoutSession", "drop": True, "count": 1}
    )
    done = await api.sessions.CompleteCheckoutSession(_complete(session_id, key()), timeout=30)
    assert done.authorization_pending
    assert done.checkout_session.charge_id


@pytest.mark.parametrize(
    "intent", [cs.PAYMENT_INTENT_AUTHORIZE, cs.PAYMENT_INTENT_CONFIRM], ids=["Authorize", "Confirm"]
)
async def test_a_repeated_complete_under_a_new_key_does_not_fail_a_paid_checkout(
    api: Stubs, clean_emulator: EmulatorProcess, intent: int
) -> None:
    """The Magento complaint: a second Complete of a paid order must not report a failure.
    With Confirm there is no charge: the amount the ledger recorded for the session is the
    witness."""
    done = await checkout(api, clean_emulator, intent=intent)
    again = await api.sessions.CompleteCheckoutSession(
        _complete(done.session_id, key()), timeout=30
    )
    assert again.checkout_session.charge_id == done.charge_id
    assert again.checkout_session.charge_permission_id == done.charge_permission_id
    charges = [done.charge_id] if intent == cs.PAYMENT_INTENT_AUTHORIZE else []
    assert await _emulator_charges(clean_emulator, done.session_id) == charges


async def test_a_repeated_complete_the_ledger_cannot_witness_is_proven_by_the_permission(
    api: Stubs, clean_emulator: EmulatorProcess, database_url: str
) -> None:
    """A Confirm checkout whose amount the ledger does not hold (completed elsewhere, or an old
    row): the charge permission's limit witnesses the amount."""
    done = await checkout(api, clean_emulator, intent=cs.PAYMENT_INTENT_CONFIRM)
    conn = await asyncpg.connect(database_url)
    try:
        await conn.execute(
            "UPDATE objects SET amount = NULL, currency_code = NULL WHERE object_id = $1",
            done.session_id,
        )
    finally:
        await conn.close()
    again = await api.sessions.CompleteCheckoutSession(
        _complete(done.session_id, key()), timeout=30
    )
    assert again.checkout_session.charge_permission_id == done.charge_permission_id
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await api.sessions.CompleteCheckoutSession(
            _complete(done.session_id, key(), amount="99.00"), timeout=30
        )
    assert failure(caught.value).reason == "InvalidCheckoutSessionStatus"


async def test_a_repeated_complete_for_another_amount_stays_refused(
    api: Stubs, clean_emulator: EmulatorProcess
) -> None:
    done = await checkout(api, clean_emulator)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await api.sessions.CompleteCheckoutSession(
            _complete(done.session_id, key(), amount="99.00"), timeout=30
        )
    info = failure(caught.value)
    assert info.code == grpc.StatusCode.FAILED_PRECONDITION
    assert info.reason == "InvalidCheckoutSessionStatus"


async def test_complete_on_a_canceled_session_is_the_callers_failure_with_amazons_reason(
    api: Stubs, clean_emulator: EmulatorProcess
) -> None:
    session_id = await _ready_session(api, clean_emulator)
    await clean_emulator.advance(86400 + 1)  # the session expires: Canceled, Expired
    caller_key = key()
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await api.sessions.CompleteCheckoutSession(_complete(session_id, caller_key), timeout=30)
    info = failure(caught.value)
    assert info.code == grpc.StatusCode.FAILED_PRECONDITION
    assert info.reason == "CheckoutSessionCanceled"
    assert "Expired" in (caught.value.details() or "")
    with pytest.raises(grpc.aio.AioRpcError) as replayed:
        await api.sessions.CompleteCheckoutSession(_complete(session_id, caller_key), timeout=30)
    assert failure(replayed.value).reason == "CheckoutSessionCanceled"


async def test_a_repeated_update_after_the_buyer_left_for_amazon_converges(
    api: Stubs, clean_emulator: EmulatorProcess
) -> None:
    """Update is a PATCH (no replay); once the buyer is at the amazonPayRedirectUrl Amazon
    refuses it. A repeat of an update already applied is a success; another change is not."""
    session_id = await _ready_session(api, clean_emulator, amount="42.00")
    same = cs.UpdateCheckoutSessionRequest(
        checkout_session_id=session_id,
        payment_details=cs.PaymentDetails(
            payment_intent=cs.PAYMENT_INTENT_AUTHORIZE, charge_amount=usd("42.00")
        ),
    )
    updated = await api.sessions.UpdateCheckoutSession(same, timeout=10)
    assert updated.checkout_session.payment_details.charge_amount.amount in ("42.00", "42")
    other = cs.UpdateCheckoutSessionRequest(
        checkout_session_id=session_id,
        payment_details=cs.PaymentDetails(charge_amount=usd("43.00")),
    )
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await api.sessions.UpdateCheckoutSession(other, timeout=10)
    assert failure(caught.value).reason == "InvalidCheckoutSessionStatus"


@pytest.mark.slow
async def test_a_service_killed_after_amazons_complete_converges_at_restart(
    database_url: str, clean_emulator: EmulatorProcess, keys: Keys, tmp_path: Path
) -> None:
    port = free_port()
    env = {
        **service_env(database_url, clean_emulator, keys, tmp_path),
        "GRPC_LISTEN": f"127.0.0.1:{port}",
    }
    target = f"127.0.0.1:{port}"
    caller_key = key()
    first = ServiceProcess(env)
    await first.start()
    try:
        await first.wait_serving()
        async with grpc.aio.insecure_channel(target) as channel:
            api = stubs_for(channel, target)
            session_id = await _ready_session(api, clean_emulator)
            # Amazon completes the session on the first attempt; no answer ever arrives.
            await clean_emulator.control(
                "POST",
                "faults",
                {"operation": "CompleteCheckoutSession", "drop": True, "count": None},
            )
            call = asyncio.ensure_future(
                api.sessions.CompleteCheckoutSession(_complete(session_id, caller_key), timeout=60)
            )
            # A deadline, not a number of polls: a slow machine must not kill the service
            # before Amazon completed the session (the test would prove something else).
            deadline = time.monotonic() + 30
            while True:
                sessions = await clean_emulator.objects("checkoutSessions")
                state = next(
                    s["statusDetails"]["state"]
                    for s in sessions
                    if s["checkoutSessionId"] == session_id
                )
                if state == "Completed":
                    break
                assert time.monotonic() < deadline, f"Amazon never completed it: {state}"
                await asyncio.sleep(0.02)
            await first.kill()
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await call
            assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
    finally:
        await first.kill()

    conn = await asyncpg.connect(database_url)
    try:
        status = await conn.fetchval(
            "SELECT status FROM operations WHERE idempotency_key = $1", caller_key
        )
        assert status == "pending"
    finally:
        await conn.close()

    await clean_emulator.control("DELETE", "faults")
    second = ServiceProcess(env)
    await second.start()
    try:
        await second.wait_serving()
        conn = await asyncpg.connect(database_url)
        try:
            assert (
                await conn.fetchval(
                    "SELECT status FROM operations WHERE idempotency_key = $1", caller_key
                )
                == "succeeded"
            )
        finally:
            await conn.close()
        charges = await _emulator_charges(clean_emulator, session_id)
        assert len(charges) == 1
        async with grpc.aio.insecure_channel(target) as channel:
            api = stubs_for(channel, target)
            retry = await api.sessions.CompleteCheckoutSession(
                _complete(session_id, caller_key), timeout=30
            )
            assert retry.idempotent_replay
            session = retry.checkout_session
            assert session.status_details.state == cs.CHECKOUT_SESSION_STATE_COMPLETED
            assert session.charge_id == charges[0]
            ledger = await api.ledger.ListTransactions(
                ledger_pb2.ListTransactionsRequest(
                    kind=ledger_pb2.OBJECT_KIND_CHARGE,
                    charge_permission_id=session.charge_permission_id,
                )
            )
            assert [t.object_id for t in ledger.transactions] == charges
        await _ledger_has_the_purchase(
            database_url, session_id, session.charge_permission_id, session.charge_id
        )
        assert await second.terminate() == 0
    finally:
        await second.kill()
