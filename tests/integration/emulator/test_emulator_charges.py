"""Charge Permission and Charge state machines, limits, currency rules and clock-driven rules."""

from __future__ import annotations

from typing import Any

import pytest

from emulator.testing import SignedClient

from ._flows import advance, purchase, state_of, usd

DAY = 86400


async def _cp(client: SignedClient, amount: str = "100.00", card: str = "1111") -> str:
    done = await purchase(client, intent="Confirm", amount=usd(amount), card=card)
    return str(done["chargePermissionId"])


async def _charge(
    client: SignedClient, cp_id: str, amount: str, **extra: object
) -> tuple[int, dict[str, Any]]:
    body = {"chargePermissionId": cp_id, "chargeAmount": usd(amount), **extra}
    reply = await client.call("POST", "/charges", body)
    return reply.status, reply.body


async def test_create_charge_authorizes_and_reduces_balance(client: SignedClient) -> None:
    cp_id = await _cp(client)
    status, charge = await _charge(client, cp_id, "40.00")
    assert status == 201
    assert charge["statusDetails"]["state"] == "Authorized"
    assert charge["chargeId"].startswith(cp_id + "-C")
    assert charge["refundedAmount"] == usd("0.00")
    assert (charge["convertedAmount"], charge["conversionRate"]) == ("40.00", "1.00")
    cp = (await client.call("GET", f"/chargePermissions/{cp_id}")).body
    assert cp["limits"]["amountBalance"] == usd("60.00")


async def test_charge_above_balance_is_transaction_amount_exceeded(client: SignedClient) -> None:
    cp_id = await _cp(client)
    assert (await _charge(client, cp_id, "60.00"))[0] == 201
    status, body = await _charge(client, cp_id, "40.01")
    assert (status, body["reasonCode"]) == (400, "TransactionAmountExceeded")


async def test_twenty_sixth_charge_is_transaction_count_exceeded(client: SignedClient) -> None:
    cp_id = await _cp(client)
    for _ in range(25):
        status, body = await _charge(client, cp_id, "1.00")
        assert status == 201, body
        await client.call("DELETE", f"/charges/{body['chargeId']}/cancel", {})
    status, body = await _charge(client, cp_id, "1.00")
    assert (status, body["reasonCode"]) == (422, "TransactionCountExceeded")


async def test_charge_in_other_currency_is_currency_mismatch(client: SignedClient) -> None:
    cp_id = await _cp(client)
    reply = await client.call(
        "POST",
        "/charges",
        {"chargePermissionId": cp_id, "chargeAmount": {"amount": "1", "currencyCode": "EUR"}},
    )
    assert (reply.status, reply.body["reasonCode"]) == (400, "CurrencyMismatch")


async def test_jpy_checkout_rejects_fractional_yen_and_caps_at_ten_million(
    client: SignedClient,
) -> None:
    client.region = "jp"
    fractional = await client.call(
        "POST",
        "/checkoutSessions",
        {
            "storeId": "s",
            "paymentDetails": {"chargeAmount": {"amount": "10.5", "currencyCode": "JPY"}},
        },
    )
    assert (fractional.status, fractional.body["reasonCode"]) == (400, "InvalidParameterValue")
    too_big = await client.call(
        "POST",
        "/checkoutSessions",
        {
            "storeId": "s",
            "paymentDetails": {"chargeAmount": {"amount": "10000001", "currencyCode": "JPY"}},
        },
    )
    assert (too_big.status, too_big.body["reasonCode"]) == (400, "InvalidParameterValue")
    done = await purchase(
        client, intent="AuthorizeWithCapture", amount={"amount": "10000000", "currencyCode": "JPY"}
    )
    charge = (await client.call("GET", f"/charges/{done['chargeId']}")).body
    assert charge["captureAmount"] == {"amount": "10000000", "currencyCode": "JPY"}


async def test_usd_charge_above_150000_is_invalid_parameter_value(client: SignedClient) -> None:
    cp_id = await _cp(client)
    status, body = await _charge(client, cp_id, "150000.01")
    assert (status, body["reasonCode"]) == (400, "InvalidParameterValue")


async def test_capture_now_captures_and_full_capture_closes_one_time_permission(
    client: SignedClient,
) -> None:
    cp_id = await _cp(client)
    status, charge = await _charge(client, cp_id, "100.00", captureNow=True, softDescriptor="SHOP")
    assert status == 201
    assert charge["statusDetails"]["state"] == "Captured"
    assert charge["softDescriptor"] == "SHOP"
    assert await state_of(client, f"/chargePermissions/{cp_id}") == "Closed"
    status, body = await _charge(client, cp_id, "1.00")
    assert (status, body["reasonCode"]) == (422, "InvalidChargePermissionStatus")


async def test_soft_descriptor_without_capture_now_is_invalid_parameter_combination(
    client: SignedClient,
) -> None:
    cp_id = await _cp(client)
    status, body = await _charge(client, cp_id, "1.00", softDescriptor="X")
    assert (status, body["reasonCode"]) == (400, "InvalidParameterCombination")


async def test_capture_within_seven_days_is_synchronous(client: SignedClient) -> None:
    done = await purchase(client)
    await advance(client, 7 * DAY - 60)
    reply = await client.call(
        "POST", f"/charges/{done['chargeId']}/capture", {"captureAmount": usd("100.00")}
    )
    assert (reply.status, reply.body["statusDetails"]["state"]) == (200, "Captured")


async def test_capture_after_seven_days_is_asynchronous(client: SignedClient) -> None:
    done = await purchase(client)
    await advance(client, 7 * DAY + 60)
    path = f"/charges/{done['chargeId']}"
    reply = await client.call("POST", path + "/capture", {"captureAmount": usd("60.00")})
    assert (reply.status, reply.body["statusDetails"]["state"]) == (200, "CaptureInitiated")
    await advance(client, 31)
    charge = (await client.call("GET", path)).body
    assert charge["statusDetails"]["state"] == "Captured"
    assert charge["captureAmount"] == usd("60.00")


async def test_unused_authorization_expires_after_30_days(client: SignedClient) -> None:
    done = await purchase(client)
    await advance(client, 30 * DAY + 1)
    charge = (await client.call("GET", f"/charges/{done['chargeId']}")).body
    assert (charge["statusDetails"]["state"], charge["statusDetails"]["reasonCode"]) == (
        "Canceled",
        "ExpiredUnused",
    )
    reply = await client.call(
        "POST", f"/charges/{done['chargeId']}/capture", {"captureAmount": usd("1.00")}
    )
    assert (reply.status, reply.body["reasonCode"]) == (422, "InvalidChargeStatus")


async def test_capture_more_than_authorized_is_rejected(client: SignedClient) -> None:
    done = await purchase(client)
    reply = await client.call(
        "POST", f"/charges/{done['chargeId']}/capture", {"captureAmount": usd("100.01")}
    )
    assert (reply.status, reply.body["reasonCode"]) == (400, "TransactionAmountExceeded")


async def test_capture_of_captured_charge_is_invalid_charge_status(client: SignedClient) -> None:
    done = await purchase(client, intent="AuthorizeWithCapture")
    reply = await client.call(
        "POST", f"/charges/{done['chargeId']}/capture", {"captureAmount": usd("1.00")}
    )
    assert (reply.status, reply.body["reasonCode"]) == (422, "InvalidChargeStatus")


async def test_cancel_authorized_charge_is_merchant_canceled_and_frees_balance(
    client: SignedClient,
) -> None:
    cp_id = await _cp(client)
    _, charge = await _charge(client, cp_id, "100.00")
    reply = await client.call(
        "DELETE", f"/charges/{charge['chargeId']}/cancel", {"cancellationReason": "out of stock"}
    )
    assert reply.status == 200
    assert reply.body["statusDetails"]["reasonCode"] == "MerchantCanceled"
    again = await client.call("DELETE", f"/charges/{charge['chargeId']}/cancel", {})
    assert (again.status, again.body["reasonCode"]) == (422, "InvalidChargeStatus")
    assert (await _charge(client, cp_id, "100.00"))[0] == 201


@pytest.mark.parametrize(
    "code", ["SoftDeclined", "HardDeclined", "AmazonRejected", "TransactionTimedOut"]
)
async def test_create_charge_decline_simulation_is_synchronous_422(
    client: SignedClient, code: str
) -> None:
    cp_id = await _cp(client)
    reply = await client.call(
        "POST",
        "/charges",
        {"chargePermissionId": cp_id, "chargeAmount": usd("5.00")},
        simulation=code,
    )
    assert (reply.status, reply.body["reasonCode"]) == (422, code)
    cp = (await client.call("GET", f"/chargePermissions/{cp_id}")).body
    expected = "NonChargeable" if code == "HardDeclined" else "Chargeable"
    assert cp["statusDetails"]["state"] == expected


async def test_decline_simulation_with_pending_allowed_declines_asynchronously(
    client: SignedClient,
) -> None:
    cp_id = await _cp(client)
    reply = await client.call(
        "POST",
        "/charges",
        {
            "chargePermissionId": cp_id,
            "chargeAmount": usd("5.00"),
            "canHandlePendingAuthorization": True,
        },
        simulation="SoftDeclined",
    )
    assert (reply.status, reply.body["statusDetails"]["state"]) == (202, "AuthorizationInitiated")
    await advance(client, 31)
    charge = (await client.call("GET", f"/charges/{reply.body['chargeId']}")).body
    assert (charge["statusDetails"]["state"], charge["statusDetails"]["reasonCode"]) == (
        "Declined",
        "SoftDeclined",
    )


async def test_capture_initiated_simulation_on_create_charge_settles_to_captured(
    client: SignedClient,
) -> None:
    cp_id = await _cp(client)
    reply = await client.call(
        "POST",
        "/charges",
        {"chargePermissionId": cp_id, "chargeAmount": usd("5.00"), "captureNow": True},
        simulation="CaptureInitiated",
    )
    assert reply.body["statusDetails"]["state"] == "CaptureInitiated"
    await advance(client, 31)
    assert await state_of(client, f"/charges/{reply.body['chargeId']}") == "Captured"


@pytest.mark.parametrize(
    ("code", "final"), [("CaptureInitiated", "Captured"), ("AmazonRejected", "Declined")]
)
async def test_capture_simulations_pass_through_capture_initiated(
    client: SignedClient, code: str, final: str
) -> None:
    done = await purchase(client)
    path = f"/charges/{done['chargeId']}"
    reply = await client.call(
        "POST", path + "/capture", {"captureAmount": usd("100.00")}, simulation=code
    )
    assert reply.body["statusDetails"]["state"] == "CaptureInitiated"
    await advance(client, 31)
    assert await state_of(client, path) == final


async def test_pending_card_0701_authorizes_after_about_30_seconds(client: SignedClient) -> None:
    done = await purchase(client, card="0701", pending_ok=True)
    path = f"/charges/{done['chargeId']}"
    assert await state_of(client, path) == "AuthorizationInitiated"
    cancel_blocked = await client.call("POST", path + "/capture", {"captureAmount": usd("1.00")})
    assert cancel_blocked.body["reasonCode"] == "InvalidChargeStatus"
    await advance(client, 29)
    assert await state_of(client, path) == "AuthorizationInitiated"
    await advance(client, 2)
    assert await state_of(client, path) == "Authorized"


async def test_pending_card_4354_hard_declines_after_about_30_seconds(client: SignedClient) -> None:
    done = await purchase(client, card="4354", pending_ok=True)
    path = f"/charges/{done['chargeId']}"
    assert await state_of(client, path) == "AuthorizationInitiated"
    await advance(client, 31)
    charge = (await client.call("GET", path)).body
    assert (charge["statusDetails"]["state"], charge["statusDetails"]["reasonCode"]) == (
        "Declined",
        "HardDeclined",
    )


async def test_pending_authorization_can_be_canceled(client: SignedClient) -> None:
    done = await purchase(client, card="0701", pending_ok=True)
    reply = await client.call("DELETE", f"/charges/{done['chargeId']}/cancel", {})
    assert reply.body["statusDetails"]["state"] == "Canceled"
    await advance(client, 31)
    assert await state_of(client, f"/charges/{done['chargeId']}") == "Canceled"


async def test_close_charge_permission_cancels_pending_charges_on_request(
    client: SignedClient,
) -> None:
    cp_id = await _cp(client)
    _, charge = await _charge(client, cp_id, "10.00")
    reply = await client.call(
        "DELETE",
        f"/chargePermissions/{cp_id}/close",
        {"closureReason": "order canceled", "cancelPendingCharges": True},
    )
    assert reply.status == 200
    assert reply.body["statusDetails"]["state"] == "Closed"
    assert reply.body["statusDetails"]["reasons"][0]["reasonCode"] == "MerchantClosed"
    charge_now = (await client.call("GET", f"/charges/{charge['chargeId']}")).body
    assert charge_now["statusDetails"]["reasonCode"] == "ChargePermissionCanceled"


async def test_close_with_amazon_closed_simulation_records_that_reason(
    client: SignedClient,
) -> None:
    cp_id = await _cp(client)
    reply = await client.call(
        "DELETE",
        f"/chargePermissions/{cp_id}/close",
        {"closureReason": "x"},
        simulation="AmazonClosed",
    )
    assert reply.body["statusDetails"]["reasons"][0]["reasonCode"] == "AmazonClosed"


async def test_closing_a_closed_permission_returns_it_unchanged(client: SignedClient) -> None:
    """Amazon is silent on a repeated Close; the emulator answers the Closed permission (the
    service accepts this and a 422 InvalidChargePermissionStatus alike)."""
    cp_id = await _cp(client)
    first = await client.call("DELETE", f"/chargePermissions/{cp_id}/close", {"closureReason": "a"})
    again = await client.call("DELETE", f"/chargePermissions/{cp_id}/close", {"closureReason": "b"})
    assert (first.status, again.status) == (200, 200)
    assert again.body["statusDetails"] == first.body["statusDetails"]


async def test_closure_reason_over_255_characters_is_rejected(client: SignedClient) -> None:
    cp_id = await _cp(client)
    reply = await client.call(
        "DELETE", f"/chargePermissions/{cp_id}/close", {"closureReason": "x" * 256}
    )
    assert (reply.status, reply.body["reasonCode"]) == (400, "InvalidParameterValue")


async def test_one_time_charge_permission_expires_after_180_days(client: SignedClient) -> None:
    cp_id = await _cp(client)
    await advance(client, 180 * DAY + 1)
    cp = (await client.call("GET", f"/chargePermissions/{cp_id}")).body
    assert cp["statusDetails"]["state"] == "Closed"
    assert cp["statusDetails"]["reasons"][0]["reasonCode"] == "Expired"


async def test_update_charge_permission_metadata_until_closed(client: SignedClient) -> None:
    cp_id = await _cp(client)
    reply = await client.call(
        "PATCH",
        f"/chargePermissions/{cp_id}",
        {"merchantMetadata": {"merchantReferenceId": "ORD-9"}},
    )
    assert reply.body["merchantMetadata"]["merchantReferenceId"] == "ORD-9"
    await client.call("DELETE", f"/chargePermissions/{cp_id}/close", {"closureReason": "done"})
    closed = await client.call("PATCH", f"/chargePermissions/{cp_id}", {"merchantMetadata": {}})
    assert (closed.status, closed.body["reasonCode"]) == (422, "InvalidChargePermissionStatus")


async def test_metadata_change_after_capture_is_not_modifiable(client: SignedClient) -> None:
    cp_id = await _cp(client)
    await _charge(client, cp_id, "10.00", captureNow=True)
    reply = await client.call(
        "PATCH", f"/chargePermissions/{cp_id}", {"merchantMetadata": {"merchantReferenceId": "NEW"}}
    )
    assert (reply.status, reply.body["reasonCode"]) == (422, "ChargePermissionNotModifiable")


async def test_unknown_charge_is_404_resource_not_found(client: SignedClient) -> None:
    reply = await client.call("GET", "/charges/S01-0000000-0000000-C000000")
    assert (reply.status, reply.body["reasonCode"]) == (404, "ResourceNotFound")


async def test_delivery_tracker_accepts_tracking_for_known_permission(client: SignedClient) -> None:
    cp_id = await _cp(client)
    body = {
        "chargePermissionId": cp_id,
        "deliveryDetails": [{"trackingNumber": "1Z999", "carrierCode": "UPS"}],
    }
    reply = await client.call("POST", "/deliveryTrackers", body)
    assert reply.status == 200
    assert reply.body["deliveryDetails"] == body["deliveryDetails"]
    missing = await client.call("POST", "/deliveryTrackers", {"chargePermissionId": cp_id})
    assert (missing.status, missing.body["reasonCode"]) == (400, "MissingParameterValue")


async def test_live_environment_uses_p01_ids(client: SignedClient) -> None:
    client.prefix = "/live/v2"
    done = await purchase(client, intent="Confirm")
    assert done["chargePermissionId"].startswith("P01-")
