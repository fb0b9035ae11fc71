"""Outcomes Amazon decides later reach the ledger once, via IPN or via polling."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import grpc
import pytest

from payments.amazonpay.v1 import charge_pb2, ledger_pb2, refund_pb2
from payments.amazonpay.v1 import checkout_session_pb2 as cs
from service.app import Application
from service.config import load_settings
from tests._emulator import EmulatorProcess
from tests.e2e._flows import checkout, key, usd
from tests.e2e.conftest import Keys, Stubs, service_env, stubs_for

DAY = 24 * 3600
FAST_RECONCILER = {
    "RECONCILER_ENABLED": "1",
    "RECONCILER_INTERVAL_S": "0.1",
    "RECONCILER_POLL_BASE_S": "0.1",
    "RECONCILER_POLL_MAX_S": "0.5",
}


async def _running(
    database_url: str,
    emulator: EmulatorProcess,
    keys: Keys,
    tmp_path: Path,
    extra: dict[str, str],
    *,
    ipn: bool,
) -> AsyncIterator[tuple[Application, Stubs]]:
    app = Application(
        load_settings({**service_env(database_url, emulator, keys, tmp_path), **extra})
    )
    await app.start()
    url = f"http://127.0.0.1:{app.ipn_port}/ipn"
    if ipn:
        await emulator.control("POST", "ipn/subscriptions", {"url": url})
    try:
        target = f"127.0.0.1:{app.grpc_port}"
        async with grpc.aio.insecure_channel(target) as channel:
            yield app, stubs_for(channel, target)
    finally:
        await emulator.control("DELETE", "ipn/subscriptions", {"url": url})
        await app.stop()


@pytest.fixture
async def with_ipn(
    database_url: str, clean_emulator: EmulatorProcess, keys: Keys, tmp_path: Path
) -> AsyncIterator[tuple[Application, Stubs]]:
    """IPN delivery on, reconciler off: only a notification can move the ledger."""
    async for running in _running(database_url, clean_emulator, keys, tmp_path, {}, ipn=True):
        yield running


@pytest.fixture
async def with_polling(
    database_url: str, clean_emulator: EmulatorProcess, keys: Keys, tmp_path: Path
) -> AsyncIterator[tuple[Application, Stubs]]:
    """No IPN subscription, fast reconciler: only polling can move the ledger."""
    async for running in _running(
        database_url, clean_emulator, keys, tmp_path, FAST_RECONCILER, ipn=False
    ):
        yield running


async def _eventually(check: Callable[[], Awaitable[bool]], seconds: float = 15.0) -> None:
    for _ in range(int(seconds / 0.05)):
        if await check():
            return
        await asyncio.sleep(0.05)
    raise AssertionError("condition not reached in time")


async def _history(api: Stubs, kind: int, object_id: str) -> ledger_pb2.GetTransactionResponse:
    return await api.ledger.GetTransaction(
        ledger_pb2.GetTransactionRequest(kind=kind, object_id=object_id)  # type: ignore[arg-type]
    )


async def _reaches(
    api: Stubs, kind: int, object_id: str, state: str
) -> ledger_pb2.GetTransactionResponse:
    async def done() -> bool:
        return (await _history(api, kind, object_id)).transaction.raw_state == state

    await _eventually(done)
    return await _history(api, kind, object_id)


async def _pending_authorization(api: Stubs, emulator: EmulatorProcess, card: str) -> str:
    done = await checkout(
        api, emulator, intent=cs.PAYMENT_INTENT_AUTHORIZE, card=card, can_handle_pending=True
    )
    assert done.complete.authorization_pending
    charge = await _history(api, ledger_pb2.OBJECT_KIND_CHARGE, done.charge_id)
    assert charge.transaction.raw_state == "AuthorizationInitiated"
    return done.charge_id


async def test_a_pending_authorization_is_authorized_via_ipn(
    with_ipn: tuple[Application, Stubs], clean_emulator: EmulatorProcess
) -> None:
    _, api = with_ipn
    charge_id = await _pending_authorization(api, clean_emulator, "0701")
    await clean_emulator.advance(60)
    history = await _reaches(api, ledger_pb2.OBJECT_KIND_CHARGE, charge_id, "Authorized")
    # The first sighting may come from the API answer or from the creation IPN, whichever
    # commits first; the outcome can only have come from a notification (no reconciler here).
    assert [e.raw_state for e in history.events] == ["AuthorizationInitiated", "Authorized"]
    assert history.events[-1].source == ledger_pb2.EVENT_SOURCE_IPN


async def test_a_pending_authorization_is_authorized_via_polling_without_ipn(
    with_polling: tuple[Application, Stubs], clean_emulator: EmulatorProcess
) -> None:
    _, api = with_polling
    charge_id = await _pending_authorization(api, clean_emulator, "0701")
    await clean_emulator.advance(60)
    history = await _reaches(api, ledger_pb2.OBJECT_KIND_CHARGE, charge_id, "Authorized")
    assert history.events[-1].source == ledger_pb2.EVENT_SOURCE_POLL
    assert [e.raw_state for e in history.events] == ["AuthorizationInitiated", "Authorized"]


async def test_card_4354_is_declined_after_pending(
    with_polling: tuple[Application, Stubs], clean_emulator: EmulatorProcess
) -> None:
    _, api = with_polling
    charge_id = await _pending_authorization(api, clean_emulator, "4354")
    await clean_emulator.advance(60)
    history = await _reaches(api, ledger_pb2.OBJECT_KIND_CHARGE, charge_id, "Declined")
    assert history.transaction.raw_reason_code == "HardDeclined"
    assert history.transaction.is_final


async def test_capture_eight_days_after_authorization_completes_asynchronously(
    with_ipn: tuple[Application, Stubs], clean_emulator: EmulatorProcess
) -> None:
    _, api = with_ipn
    done = await checkout(api, clean_emulator, intent=cs.PAYMENT_INTENT_AUTHORIZE)
    await clean_emulator.advance(8 * DAY)
    captured = await api.charges.CaptureCharge(
        charge_pb2.CaptureChargeRequest(
            charge_id=done.charge_id, idempotency_key=key(), capture_amount=usd("100.00")
        )
    )
    assert captured.charge.status_details.state == charge_pb2.CHARGE_STATE_CAPTURE_INITIATED
    await clean_emulator.advance(60)
    history = await _reaches(api, ledger_pb2.OBJECT_KIND_CHARGE, done.charge_id, "Captured")
    assert [e.raw_state for e in history.events][-2:] == ["CaptureInitiated", "Captured"]


async def test_refunds_go_from_initiated_to_refunded(
    with_polling: tuple[Application, Stubs], clean_emulator: EmulatorProcess
) -> None:
    _, api = with_polling
    done = await checkout(api, clean_emulator, intent=cs.PAYMENT_INTENT_AUTHORIZE_WITH_CAPTURE)
    refund = await api.refunds.CreateRefund(
        refund_pb2.CreateRefundRequest(
            charge_id=done.charge_id, idempotency_key=key(), refund_amount=usd("10.00")
        )
    )
    refund_id = refund.refund.refund_id
    await clean_emulator.advance(60)
    history = await _reaches(api, ledger_pb2.OBJECT_KIND_REFUND, refund_id, "Refunded")
    assert [e.raw_state for e in history.events] == ["RefundInitiated", "Refunded"]

    async def charge_shows_refund() -> bool:
        charge = await _history(api, ledger_pb2.OBJECT_KIND_CHARGE, done.charge_id)
        return charge.transaction.refunded_amount.amount in {"10.00", "10"}

    await _eventually(charge_shows_refund)


async def test_an_unused_authorization_expires_after_thirty_days(
    with_polling: tuple[Application, Stubs], clean_emulator: EmulatorProcess
) -> None:
    _, api = with_polling
    done = await checkout(api, clean_emulator, intent=cs.PAYMENT_INTENT_AUTHORIZE)
    await clean_emulator.advance(31 * DAY)
    history = await _reaches(api, ledger_pb2.OBJECT_KIND_CHARGE, done.charge_id, "Canceled")
    assert history.transaction.raw_reason_code == "ExpiredUnused"


async def _post(url: str, body: str) -> tuple[int, Any]:
    async with (
        aiohttp.ClientSession() as session,
        session.post(url, data=body, headers={"content-type": "text/plain"}) as response,
    ):
        return response.status, await response.json(content_type=None)


async def _ipn_rows(app: Application) -> int:
    assert app.ledger is not None
    count: int = await app.ledger.pool.fetchval("SELECT count(*) FROM ipn_messages")
    return count


async def test_duplicate_and_forged_notifications(
    with_ipn: tuple[Application, Stubs], clean_emulator: EmulatorProcess
) -> None:
    app, api = with_ipn
    await clean_emulator.control("POST", "ipn", {"enabled": False})
    try:
        charge_id = await _pending_authorization(api, clean_emulator, "0701")
        await clean_emulator.advance(60)
        deliveries = (await clean_emulator.control("GET", "ipn"))["deliveries"]
        envelope = next(d["envelope"] for d in deliveries if d["objectId"] == charge_id)
    finally:
        await clean_emulator.control("POST", "ipn", {"enabled": True})
    url = f"http://127.0.0.1:{app.ipn_port}/ipn"
    before = await _ipn_rows(app)

    other = "8" if charge_id.endswith("9") else "9"  # a changed id, whatever its last digit
    forged = {**envelope, "Message": envelope["Message"].replace(charge_id, charge_id[:-1] + other)}
    foreign = {**envelope, "SigningCertURL": "https://evil.example.com/cert.pem"}
    lookalike = {
        **envelope,
        "SigningCertURL": "https://sns.us-east-1.amazonaws.com.evil.example/x.pem",
    }
    for bad, reason in (
        (forged, "bad_signature"),
        (foreign, "untrusted_certificate_host"),
        (lookalike, "untrusted_certificate_host"),
    ):
        status, body = await _post(url, json.dumps(bad))
        assert (status, body.get("error")) == (403, reason)
    status, body = await _post(url, "{not json")
    assert status == 400
    status, _ = await _post(url, "x" * (70 * 1024))
    assert status == 413
    assert await _ipn_rows(app) == before

    assert await _post(url, json.dumps(envelope)) == (200, {"status": "accepted"})
    assert await _post(url, json.dumps(envelope)) == (200, {"status": "duplicate"})
    assert await _ipn_rows(app) == before + 1
    history = await _reaches(api, ledger_pb2.OBJECT_KIND_CHARGE, charge_id, "Authorized")
    assert [e.raw_state for e in history.events].count("Authorized") == 1


async def test_a_pinned_topic_rejects_other_topics(
    database_url: str, clean_emulator: EmulatorProcess, keys: Keys, tmp_path: Path
) -> None:
    pinned = {"IPN_TOPIC_ARNS": "arn:aws:sns:us-east-1:000000000000:not-the-emulators"}
    async for app, api in _running(database_url, clean_emulator, keys, tmp_path, pinned, ipn=False):
        await clean_emulator.control("POST", "ipn/subscriptions", {"url": "http://127.0.0.1:9/ipn"})
        try:
            charge_id = await _pending_authorization(api, clean_emulator, "0701")
            await clean_emulator.advance(60)
            deliveries = (await clean_emulator.control("GET", "ipn"))["deliveries"]
            envelope = next(d["envelope"] for d in deliveries if d["objectId"] == charge_id)
        finally:
            await clean_emulator.control(
                "DELETE", "ipn/subscriptions", {"url": "http://127.0.0.1:9/ipn"}
            )
        status, body = await _post(f"http://127.0.0.1:{app.ipn_port}/ipn", json.dumps(envelope))
        assert (status, body["error"]) == (403, "unexpected_topic")
        assert await _ipn_rows(app) == 0
        conn = await asyncpg.connect(database_url)
        try:
            assert await conn.fetchval("SELECT count(*) FROM ipn_messages") == 0
        finally:
            await conn.close()
