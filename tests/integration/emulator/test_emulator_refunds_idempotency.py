"""Refunds (always asynchronous, ceiling) and POST idempotency exactly as Amazon stores it."""

from __future__ import annotations

import aiohttp

from emulator import RunningEmulator
from emulator.testing import SignedClient, generate_key

from ._flows import STORE_ID, advance, purchase, state_of, usd


async def _captured(client: SignedClient, amount: str = "100.00") -> str:
    done = await purchase(client, intent="AuthorizeWithCapture", amount=usd(amount))
    return str(done["chargeId"])


async def test_refund_is_initiated_then_refunded_after_about_30_seconds(
    client: SignedClient,
) -> None:
    charge_id = await _captured(client)
    reply = await client.call(
        "POST", "/refunds", {"chargeId": charge_id, "refundAmount": usd("30.00")}
    )
    assert reply.status == 201
    refund = reply.body
    assert refund["refundId"].startswith(charge_id[:19] + "-R")
    assert refund["statusDetails"]["state"] == "RefundInitiated"
    await advance(client, 31)
    assert await state_of(client, f"/refunds/{refund['refundId']}") == "Refunded"
    charge = (await client.call("GET", f"/charges/{charge_id}")).body
    assert charge["refundedAmount"] == usd("30.00")


async def test_refunds_may_exceed_capture_by_15_percent_but_no_more(client: SignedClient) -> None:
    charge_id = await _captured(client, "100.00")
    ok = await client.call(
        "POST", "/refunds", {"chargeId": charge_id, "refundAmount": usd("100.00")}
    )
    assert ok.status == 201
    ok2 = await client.call(
        "POST", "/refunds", {"chargeId": charge_id, "refundAmount": usd("15.00")}
    )
    assert ok2.status == 201
    over = await client.call(
        "POST", "/refunds", {"chargeId": charge_id, "refundAmount": usd("0.01")}
    )
    assert (over.status, over.body["reasonCode"]) == (400, "TransactionAmountExceeded")


async def test_refund_extra_is_capped_at_75_usd(client: SignedClient) -> None:
    charge_id = await _captured(client, "1000.00")
    over = await client.call(
        "POST", "/refunds", {"chargeId": charge_id, "refundAmount": usd("1075.01")}
    )
    assert (over.status, over.body["reasonCode"]) == (400, "TransactionAmountExceeded")
    ok = await client.call(
        "POST", "/refunds", {"chargeId": charge_id, "refundAmount": usd("1075.00")}
    )
    assert ok.status == 201


async def test_refund_of_uncaptured_charge_is_invalid_charge_status(client: SignedClient) -> None:
    done = await purchase(client)
    reply = await client.call(
        "POST", "/refunds", {"chargeId": done["chargeId"], "refundAmount": usd("1.00")}
    )
    assert (reply.status, reply.body["reasonCode"]) == (422, "InvalidChargeStatus")


async def test_refund_in_other_currency_is_currency_mismatch(client: SignedClient) -> None:
    charge_id = await _captured(client)
    reply = await client.call(
        "POST",
        "/refunds",
        {"chargeId": charge_id, "refundAmount": {"amount": "1", "currencyCode": "EUR"}},
    )
    assert (reply.status, reply.body["reasonCode"]) == (400, "CurrencyMismatch")


async def test_replay_with_same_key_returns_identical_stored_response(client: SignedClient) -> None:
    body = {"storeId": STORE_ID}
    first = await client.call("POST", "/checkoutSessions", body, idempotency_key="same-key-1")
    second = await client.call("POST", "/checkoutSessions", body, idempotency_key="same-key-1")
    assert first.status == second.status == 201
    assert first.body == second.body
    state = await client.control("GET", "/objects/checkoutSessions")
    assert len(state.body["checkoutSessions"]) == 1


async def test_same_key_with_different_body_is_duplicate_idempotency_key(
    client: SignedClient,
) -> None:
    await client.call("POST", "/checkoutSessions", {"storeId": STORE_ID}, idempotency_key="k-2")
    reply = await client.call(
        "POST", "/checkoutSessions", {"storeId": "other"}, idempotency_key="k-2"
    )
    assert (reply.status, reply.body["reasonCode"]) == (400, "DuplicateIdempotencyKey")


async def test_replayed_capture_does_not_capture_twice(client: SignedClient) -> None:
    done = await purchase(client)
    path = f"/charges/{done['chargeId']}/capture"
    first = await client.call(
        "POST", path, {"captureAmount": usd("100.00")}, idempotency_key="cap1"
    )
    again = await client.call(
        "POST", path, {"captureAmount": usd("100.00")}, idempotency_key="cap1"
    )
    assert (first.status, again.status) == (200, 200)
    assert first.body == again.body
    fresh = await client.call(
        "POST", path, {"captureAmount": usd("100.00")}, idempotency_key="cap2"
    )
    assert fresh.body["reasonCode"] == "InvalidChargeStatus"


async def test_missing_idempotency_key_on_create_is_missing_header(client: SignedClient) -> None:
    reply = await client.call("POST", "/checkoutSessions", {"storeId": STORE_ID}, auto_key=False)
    assert (reply.status, reply.body["reasonCode"]) == (400, "MissingHeader")


async def test_malformed_idempotency_key_is_invalid_header_value(client: SignedClient) -> None:
    reply = await client.call(
        "POST", "/checkoutSessions", {"storeId": STORE_ID}, idempotency_key="x" * 33
    )
    assert (reply.status, reply.body["reasonCode"]) == (400, "InvalidHeaderValue")
    bad = await client.call(
        "POST", "/checkoutSessions", {"storeId": STORE_ID}, idempotency_key="a b"
    )
    assert bad.body["reasonCode"] == "InvalidHeaderValue"


async def test_idempotency_keys_are_scoped_per_merchant(
    client: SignedClient, emu: RunningEmulator, http: aiohttp.ClientSession
) -> None:
    other_key, pem = generate_key()
    emu.emulator.add_key("OTHER-MERCHANT-KEY", pem, "A3OTHERMERCHANT")
    other = SignedClient(http, emu.url, other_key, "OTHER-MERCHANT-KEY")
    mine = await client.call(
        "POST", "/checkoutSessions", {"storeId": STORE_ID}, idempotency_key="shared"
    )
    theirs = await other.call(
        "POST", "/checkoutSessions", {"storeId": "x"}, idempotency_key="shared"
    )
    assert theirs.status == 201
    assert theirs.body["checkoutSessionId"] != mine.body["checkoutSessionId"]
    hidden = await other.call("GET", f"/checkoutSessions/{mine.body['checkoutSessionId']}")
    assert hidden.status == 404


async def test_validation_errors_are_not_stored_so_a_corrected_retry_succeeds(
    client: SignedClient,
) -> None:
    bad = await client.call("POST", "/checkoutSessions", {}, idempotency_key="fixme")
    assert bad.status == 400
    good = await client.call(
        "POST", "/checkoutSessions", {"storeId": STORE_ID}, idempotency_key="fixme"
    )
    assert good.status == 201


async def test_idempotency_is_ignored_on_patch(client: SignedClient) -> None:
    sid = (await client.call("POST", "/checkoutSessions", {"storeId": STORE_ID})).body[
        "checkoutSessionId"
    ]
    one = await client.call(
        "PATCH", f"/checkoutSessions/{sid}", {"platformId": "A"}, idempotency_key="p"
    )
    two = await client.call(
        "PATCH", f"/checkoutSessions/{sid}", {"platformId": "B"}, idempotency_key="p"
    )
    assert (one.body["platformId"], two.body["platformId"]) == ("A", "B")


async def test_simulation_code_for_wrong_operation_is_rejected(client: SignedClient) -> None:
    reply = await client.call(
        "POST", "/checkoutSessions", {"storeId": STORE_ID}, simulation="HardDeclined"
    )
    assert (reply.status, reply.body["reasonCode"]) == (400, "InvalidSandboxSimulationSpecified")
    unknown = await client.call("GET", "/charges/x", simulation="NoSuchCode")
    assert unknown.body["reasonCode"] == "InvalidSandboxSimulationSpecified"


async def test_simulation_code_in_live_is_rejected(client: SignedClient) -> None:
    client.prefix = "/live/v2"
    done = await purchase(client, intent="Confirm")
    reply = await client.call(
        "POST",
        "/charges",
        {"chargePermissionId": done["chargePermissionId"], "chargeAmount": usd("1.00")},
        simulation="SoftDeclined",
    )
    assert (reply.status, reply.body["reasonCode"]) == (400, "InvalidSandboxSimulationSpecified")
