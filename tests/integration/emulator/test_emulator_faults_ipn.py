"""Fault injection (status, latency, drop-after-commit) and IPN delivery with SNS signatures."""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from emulator import RunningEmulator
from emulator.ipn import sns_string_to_sign
from emulator.testing import SignedClient

from ._flows import STORE_ID, advance, purchase, ready_session, usd


async def test_status_fault_fails_next_n_calls_of_the_operation_only(client: SignedClient) -> None:
    added = await client.control(
        "POST",
        "/faults",
        {
            "operation": "CreateCheckoutSession",
            "status": 503,
            "reasonCode": "ServiceUnavailable",
            "count": 2,
        },
    )
    assert added.status == 201
    for _ in range(2):
        reply = await client.call("POST", "/checkoutSessions", {"storeId": STORE_ID})
        assert (reply.status, reply.body["reasonCode"]) == (503, "ServiceUnavailable")
    assert (await client.call("POST", "/checkoutSessions", {"storeId": STORE_ID})).status == 201
    assert (await client.control("GET", "/faults")).body["faults"] == []


async def test_status_fault_does_not_store_the_idempotent_response(client: SignedClient) -> None:
    await client.control("POST", "/faults", {"operation": "CreateCheckoutSession", "status": 500})
    failed = await client.call(
        "POST", "/checkoutSessions", {"storeId": STORE_ID}, idempotency_key="r1"
    )
    assert failed.status == 500
    retried = await client.call(
        "POST", "/checkoutSessions", {"storeId": STORE_ID}, idempotency_key="r1"
    )
    assert retried.status == 201


async def test_latency_fault_is_consumed_and_the_call_still_succeeds(client: SignedClient) -> None:
    await client.control("POST", "/faults", {"operation": "GetCharge", "latencyMs": 50, "count": 1})
    reply = await client.call("GET", "/charges/S01-0000000-0000000-C000000")
    assert reply.status == 404
    assert (await client.control("GET", "/faults")).body["faults"] == []


async def test_drop_after_commit_aborts_connection_but_keeps_the_state_change(
    client: SignedClient,
) -> None:
    done = await purchase(client)
    await client.control("POST", "/faults", {"operation": "CaptureCharge", "drop": True})
    path = f"/charges/{done['chargeId']}/capture"
    with pytest.raises(aiohttp.ClientError):
        await client.call("POST", path, {"captureAmount": usd("100.00")}, idempotency_key="drop1")
    charge = (await client.call("GET", f"/charges/{done['chargeId']}")).body
    assert charge["statusDetails"]["state"] == "Captured"
    retry = await client.call(
        "POST", path, {"captureAmount": usd("100.00")}, idempotency_key="drop1"
    )
    assert (retry.status, retry.body["statusDetails"]["state"]) == (200, "Captured")


async def test_standing_drop_fault_drops_the_replayed_answer_too(client: SignedClient) -> None:
    """With `count: null` every call is dropped, a retry that Amazon answers from its idempotency
    record included: a network fault does not care where the answer came from."""
    done = await purchase(client)
    await client.control(
        "POST", "/faults", {"operation": "CaptureCharge", "drop": True, "count": None}
    )
    path = f"/charges/{done['chargeId']}/capture"
    for _ in range(3):
        with pytest.raises(aiohttp.ClientError):
            await client.call(
                "POST", path, {"captureAmount": usd("100.00")}, idempotency_key="drop3"
            )
    [fault] = (await client.control("GET", "/faults")).body["faults"]
    assert fault["remaining"] is None
    await client.control("DELETE", "/faults")
    retry = await client.call(
        "POST", path, {"captureAmount": usd("100.00")}, idempotency_key="drop3"
    )
    assert (retry.status, retry.body["statusDetails"]["state"]) == (200, "Captured")


async def test_counted_drop_fault_counts_replays_it_drops(client: SignedClient) -> None:
    """`count: 2` drops the call and its first retry; the second retry gets the stored answer."""
    done = await purchase(client)
    await client.control(
        "POST", "/faults", {"operation": "CaptureCharge", "drop": True, "count": 2}
    )
    path = f"/charges/{done['chargeId']}/capture"
    for _ in range(2):
        with pytest.raises(aiohttp.ClientError):
            await client.call(
                "POST", path, {"captureAmount": usd("100.00")}, idempotency_key="drop4"
            )
    assert (await client.control("GET", "/faults")).body["faults"] == []
    retry = await client.call(
        "POST", path, {"captureAmount": usd("100.00")}, idempotency_key="drop4"
    )
    assert (retry.status, retry.body["statusDetails"]["state"]) == (200, "Captured")


async def test_dropped_complete_is_not_replayed_a_retry_is_refused(client: SignedClient) -> None:
    """Complete takes no idempotency key at Amazon: after a drop, the retry with the same key is
    a second Complete on a Completed session."""
    sid = await ready_session(client)
    await client.control("POST", "/faults", {"operation": "CompleteCheckoutSession", "drop": True})
    path = f"/checkoutSessions/{sid}/complete"
    with pytest.raises(aiohttp.ClientError):
        await client.call("POST", path, {"chargeAmount": usd("100.00")}, idempotency_key="drop2")
    session = (await client.call("GET", f"/checkoutSessions/{sid}")).body
    assert session["statusDetails"]["state"] == "Completed"
    retry = await client.call(
        "POST", path, {"chargeAmount": usd("100.00")}, idempotency_key="drop2"
    )
    assert (retry.status, retry.body["reasonCode"]) == (422, "InvalidCheckoutSessionStatus")


async def test_delete_faults_clears_them(client: SignedClient) -> None:
    await client.control("POST", "/faults", {"operation": "*", "status": 500, "count": None})
    await client.control("DELETE", "/faults")
    assert (await client.call("POST", "/checkoutSessions", {"storeId": STORE_ID})).status == 201


async def test_fault_for_unknown_operation_is_rejected(client: SignedClient) -> None:
    reply = await client.control("POST", "/faults", {"operation": "Nope", "status": 500})
    assert reply.status == 400


class Receiver:
    """A loopback IPN endpoint that can fail the first N deliveries."""

    def __init__(self, fail_first: int = 0) -> None:
        self.fail_first = fail_first
        self.received: list[tuple[str, dict[str, Any]]] = []
        self.attempts = 0
        self.arrived = asyncio.Event()

    async def handle(self, request: web.Request) -> web.Response:
        self.attempts += 1
        if self.attempts <= self.fail_first:
            return web.Response(status=500)
        self.received.append((request.content_type, json.loads(await request.text())))
        self.arrived.set()
        return web.Response(status=200)


@pytest.fixture
async def receiver_factory() -> AsyncIterator[Any]:
    runners: list[web.AppRunner] = []

    async def make(fail_first: int = 0) -> tuple[Receiver, str]:
        receiver = Receiver(fail_first)
        app = web.Application()
        app.router.add_post("/ipn", receiver.handle)
        runner = web.AppRunner(app)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        runners.append(runner)
        port = runner.addresses[0][1]
        return receiver, f"http://127.0.0.1:{port}/ipn"

    yield make
    for runner in runners:
        await runner.cleanup()


async def _wait_for(receiver: Receiver, count: int) -> None:
    async with asyncio.timeout(20):
        while len(receiver.received) < count:
            receiver.arrived.clear()
            await receiver.arrived.wait()


async def _verify(http: aiohttp.ClientSession, envelope: dict[str, Any]) -> None:
    async with http.get(envelope["SigningCertURL"]) as resp:
        cert = x509.load_pem_x509_certificate(await resp.read())
    public = cert.public_key()
    assert isinstance(public, rsa.RSAPublicKey)
    digest: hashes.HashAlgorithm = (
        hashes.SHA1() if envelope["SignatureVersion"] == "1" else hashes.SHA256()  # noqa: S303
    )
    public.verify(
        base64.b64decode(envelope["Signature"]),
        sns_string_to_sign(envelope),
        padding.PKCS1v15(),
        digest,
    )


@pytest.mark.parametrize("version", ["1", "2"])
async def test_ipn_envelopes_are_signed_sns_notifications(
    client: SignedClient, http: aiohttp.ClientSession, receiver_factory: Any, version: str
) -> None:
    receiver, url = await receiver_factory()
    await client.control("POST", "/ipn/subscriptions", {"url": url})
    await client.control("POST", "/ipn", {"signatureVersion": version})
    done = await purchase(client, intent="AuthorizeWithCapture")
    await _wait_for(receiver, 2)
    kinds = set()
    for content_type, envelope in receiver.received:
        assert content_type == "text/plain"
        assert envelope["Type"] == "Notification"
        assert envelope["SignatureVersion"] == version
        await _verify(http, envelope)
        message = json.loads(envelope["Message"])
        assert message["NotificationVersion"] == "V2"
        assert message["NotificationType"] == "STATE_CHANGE"
        assert message["ChargePermissionId"] == done["chargePermissionId"]
        kinds.add((message["ObjectType"], message["ObjectId"]))
    assert ("CHARGE", done["chargeId"]) in kinds
    assert ("CHARGE_PERMISSION", done["chargePermissionId"]) in kinds
    tampered = dict(receiver.received[0][1], Message="{}")
    with pytest.raises(Exception):  # noqa: B017, PT011
        await _verify(http, tampered)


async def test_refund_completion_is_notified(client: SignedClient, receiver_factory: Any) -> None:
    done = await purchase(client, intent="AuthorizeWithCapture")
    receiver, url = await receiver_factory()
    await client.control("POST", "/ipn/subscriptions", {"url": url})
    refund = await client.call(
        "POST", "/refunds", {"chargeId": done["chargeId"], "refundAmount": usd("1.00")}
    )
    await advance(client, 31)
    await _wait_for(receiver, 2)
    refund_messages = [json.loads(e["Message"]) for _, e in receiver.received]
    assert all(
        m["ObjectType"] == "REFUND" and m["ObjectId"] == refund.body["refundId"]
        for m in refund_messages
    )


async def test_failed_ipn_delivery_is_retried_until_accepted(
    client: SignedClient, receiver_factory: Any
) -> None:
    receiver, url = await receiver_factory(fail_first=2)
    await client.control("POST", "/ipn", {"retryBaseSeconds": 0.05})
    await client.control("POST", "/ipn/subscriptions", {"url": url})
    await purchase(client, intent="Confirm")
    await _wait_for(receiver, 1)
    listing = (await client.control("GET", "/ipn")).body
    delivered = [d for d in listing["deliveries"] if d["status"] == "delivered"]
    assert delivered
    assert max(d["attempts"] for d in delivered) == 3


async def test_disabled_ipn_records_but_does_not_deliver(
    client: SignedClient, receiver_factory: Any
) -> None:
    receiver, url = await receiver_factory()
    await client.control("POST", "/ipn/subscriptions", {"url": url})
    await client.control("POST", "/ipn", {"enabled": False})
    await purchase(client, intent="Confirm")
    listing = (await client.control("GET", "/ipn")).body
    assert listing["deliveries"]
    assert {d["status"] for d in listing["deliveries"]} == {"disabled"}
    assert receiver.attempts == 0


async def test_state_and_object_listing_support_reconciliation(
    client: SignedClient, emu: RunningEmulator
) -> None:
    done = await purchase(client, intent="AuthorizeWithCapture")
    state = (await client.control("GET", "/state")).body
    assert [c["chargeId"] for c in state["charges"]] == [done["chargeId"]]
    one = await client.control("GET", f"/objects/chargePermissions/{done['chargePermissionId']}")
    assert one.body["chargePermissionId"] == done["chargePermissionId"]
    await client.control("POST", "/reset")
    assert (await client.control("GET", "/objects/charges")).body == {"charges": []}
