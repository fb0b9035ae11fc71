"""Checkout Session: fields, constraints, buyer steps, Complete/Finalize and session lifetime."""

from __future__ import annotations

import re

import aiohttp
import pytest

from emulator import RunningEmulator
from emulator.testing import SignedClient

from ._flows import (
    RESULT_URL,
    REVIEW_URL,
    STORE_ID,
    advance,
    new_session,
    purchase,
    ready_session,
    usd,
)

UUID_RE = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$")
TS_RE = re.compile(r"^\d{8}T\d{6}Z$")
CP_RE = re.compile(r"^S01-\d{7}-\d{7}$")


async def test_create_returns_201_open_session_with_all_constraints(client: SignedClient) -> None:
    reply = await client.call("POST", "/checkoutSessions", {"storeId": STORE_ID})
    assert reply.status == 201
    body = reply.body
    assert UUID_RE.match(body["checkoutSessionId"])
    assert body["statusDetails"]["state"] == "Open"
    assert TS_RE.match(body["creationTimestamp"])
    assert TS_RE.match(body["expirationTimestamp"])
    assert {c["constraintId"] for c in body["constraints"]} == {
        "CheckoutReviewReturnUrlNotSet",
        "BuyerNotAssociated",
        "ChargeAmountNotSet",
        "CheckoutResultReturnUrlNotSet",
        "PaymentIntentNotSet",
    }
    assert body["webCheckoutDetails"]["amazonPayRedirectUrl"] is None
    assert body["releaseEnvironment"] == "Sandbox"


async def test_create_without_store_id_is_missing_parameter_value(client: SignedClient) -> None:
    reply = await client.call("POST", "/checkoutSessions", {})
    assert (reply.status, reply.body["reasonCode"]) == (400, "MissingParameterValue")
    assert "storeId" in reply.body["message"]


async def test_unknown_top_level_field_is_unrecognized_field(client: SignedClient) -> None:
    reply = await client.call("POST", "/checkoutSessions", {"storeId": STORE_ID, "bogus": 1})
    assert (reply.status, reply.body["reasonCode"]) == (400, "UnrecognizedField")
    assert "bogus" in reply.body["message"]


async def test_malformed_json_is_invalid_request_format(client: SignedClient) -> None:
    reply = await client.call("PATCH", "/checkoutSessions/x", ["not", "an", "object"])
    assert (reply.status, reply.body["reasonCode"]) == (400, "InvalidRequestFormat")


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"merchantMetadata": {"noteToBuyer": "n" * 256}}, "merchantMetadata.noteToBuyer"),
        (
            {"merchantMetadata": {"merchantStoreName": "s" * 51}},
            "merchantMetadata.merchantStoreName",
        ),
        ({"merchantMetadata": {"merchantReferenceId": "r" * 257}}, "merchantReferenceId"),
        ({"merchantMetadata": {"customInformation": "c" * 4097}}, "customInformation"),
        ({"paymentDetails": {"softDescriptor": "d" * 17}}, "paymentDetails.softDescriptor"),
        (
            {"webCheckoutDetails": {"checkoutResultReturnUrl": "u" * 1025}},
            "checkoutResultReturnUrl",
        ),
    ],
)
async def test_values_over_max_length_are_invalid_parameter_value_naming_the_field(
    client: SignedClient, body: dict[str, object], field: str
) -> None:
    reply = await client.call("POST", "/checkoutSessions", {"storeId": STORE_ID, **body})
    assert (reply.status, reply.body["reasonCode"]) == (400, "InvalidParameterValue")
    assert field in reply.body["message"]


async def test_sign_in_address_over_max_length_is_rejected(client: SignedClient) -> None:
    sid = await new_session(client)
    reply = await client.control(
        "POST", f"/checkoutSessions/{sid}/signIn", {"shippingAddress": {"postalCode": "9" * 21}}
    )
    assert (reply.status, reply.body["reasonCode"]) == (400, "InvalidParameterValue")
    assert "shippingAddress.postalCode" in reply.body["message"]


async def test_sign_in_associates_buyer_and_redirects_to_review_url(client: SignedClient) -> None:
    sid = await new_session(client)
    reply = await client.control(
        "POST",
        f"/checkoutSessions/{sid}/signIn",
        {"card": "4444", "buyer": {"name": "Ann Buyer", "email": "ann@example.com"}},
    )
    assert reply.body["redirectUrl"] == f"{REVIEW_URL}?amazonCheckoutSessionId={sid}"
    session = (await client.call("GET", f"/checkoutSessions/{sid}")).body
    assert session["buyer"]["name"] == "Ann Buyer"
    assert session["buyer"]["buyerId"].startswith("amzn1.account.")
    assert (
        session["paymentPreferences"][0]["paymentDescriptor"] == "MasterCard ****4444 (Amazon Pay)"
    )
    assert session["shippingAddress"]["city"] == "Chicago"
    assert "BuyerNotAssociated" not in {c["constraintId"] for c in session["constraints"]}
    buyer = await client.call("GET", f"/buyers/{reply.body['buyerToken']}")
    assert (buyer.status, buyer.body["email"]) == (200, "ann@example.com")


async def test_buyer_token_expires_after_24_hours(client: SignedClient) -> None:
    sid = await new_session(client)
    token = (await client.control("POST", f"/checkoutSessions/{sid}/signIn", {})).body["buyerToken"]
    await advance(client, 86401)
    reply = await client.call("GET", f"/buyers/{token}")
    assert (reply.status, reply.body["reasonCode"]) == (404, "ResourceNotFound")


async def test_update_clearing_all_constraints_hands_out_amazon_pay_redirect_url(
    client: SignedClient,
) -> None:
    sid = await ready_session(client, confirm=False)
    session = (await client.call("GET", f"/checkoutSessions/{sid}")).body
    assert session["constraints"] == []
    assert session["webCheckoutDetails"]["amazonPayRedirectUrl"].endswith(f"/{sid}/pay")
    assert session["paymentDetails"]["chargeAmount"] == usd("100.00")


async def test_buyer_cannot_confirm_while_constraints_are_open(client: SignedClient) -> None:
    sid = await new_session(client)
    await client.control("POST", f"/checkoutSessions/{sid}/signIn", {})
    reply = await client.control("POST", f"/checkoutSessions/{sid}/confirm")
    assert (reply.status, reply.body["reasonCode"]) == (422, "InvalidCheckoutSessionStatus")
    for constraint in (
        "ChargeAmountNotSet",
        "PaymentIntentNotSet",
        "CheckoutResultReturnUrlNotSet",
    ):
        assert constraint in reply.body["message"]


async def test_confirm_without_buyer_reports_buyer_not_associated(client: SignedClient) -> None:
    sid = await new_session(client)
    reply = await client.control("POST", f"/checkoutSessions/{sid}/confirm")
    assert "BuyerNotAssociated" in reply.body["message"]


async def test_confirm_redirects_to_result_url(client: SignedClient) -> None:
    sid = await ready_session(client, confirm=False)
    reply = await client.control("POST", f"/checkoutSessions/{sid}/confirm")
    assert reply.body["redirectUrl"] == f"{RESULT_URL}?amazonCheckoutSessionId={sid}"


async def test_complete_before_buyer_confirmed_is_invalid_checkout_session_status(
    client: SignedClient,
) -> None:
    sid = await ready_session(client, confirm=False)
    reply = await client.call(
        "POST", f"/checkoutSessions/{sid}/complete", {"chargeAmount": usd("100.00")}
    )
    assert (reply.status, reply.body["reasonCode"]) == (422, "InvalidCheckoutSessionStatus")


async def test_complete_with_different_amount_is_409_amount_mismatch(client: SignedClient) -> None:
    sid = await ready_session(client)
    reply = await client.call(
        "POST", f"/checkoutSessions/{sid}/complete", {"chargeAmount": usd("99.99")}
    )
    assert (reply.status, reply.body["reasonCode"]) == (409, "AmountMismatch")


async def test_complete_without_charge_amount_is_missing_parameter_value(
    client: SignedClient,
) -> None:
    sid = await ready_session(client)
    reply = await client.call("POST", f"/checkoutSessions/{sid}/complete", {})
    assert (reply.status, reply.body["reasonCode"]) == (400, "MissingParameterValue")


async def test_complete_with_authorize_creates_authorized_charge(client: SignedClient) -> None:
    done = await purchase(client, intent="Authorize")
    assert done["statusDetails"]["state"] == "Completed"
    assert CP_RE.match(done["chargePermissionId"])
    assert re.match(rf"^{done['chargePermissionId']}-C\d{{6}}$", done["chargeId"])
    assert done["webCheckoutDetails"] is None
    assert done["buyer"] is None
    charge = (await client.call("GET", f"/charges/{done['chargeId']}")).body
    assert charge["statusDetails"]["state"] == "Authorized"
    assert charge["captureAmount"] is None
    cp = (await client.call("GET", f"/chargePermissions/{done['chargePermissionId']}")).body
    assert cp["statusDetails"]["state"] == "Chargeable"
    assert cp["limits"] == {"amountLimit": usd("100.00"), "amountBalance": usd("0.00")}
    assert cp["buyer"]["name"]
    assert cp["chargePermissionType"] == "OneTime"


async def test_complete_with_authorize_with_capture_captures_and_closes_one_time_permission(
    client: SignedClient,
) -> None:
    done = await purchase(client, intent="AuthorizeWithCapture")
    charge = (await client.call("GET", f"/charges/{done['chargeId']}")).body
    assert charge["statusDetails"]["state"] == "Captured"
    assert charge["captureAmount"] == usd("100.00")
    cp = (await client.call("GET", f"/chargePermissions/{done['chargePermissionId']}")).body
    assert cp["statusDetails"]["state"] == "Closed"


async def test_complete_with_confirm_creates_only_a_charge_permission(client: SignedClient) -> None:
    done = await purchase(client, intent="Confirm")
    assert done["chargeId"] is None
    cp = (await client.call("GET", f"/chargePermissions/{done['chargePermissionId']}")).body
    assert cp["limits"]["amountBalance"] == usd("100.00")


@pytest.mark.parametrize("same_key", [False, True])
async def test_repeated_complete_is_refused_as_invalid_checkout_session_status(
    client: SignedClient, emu: RunningEmulator, same_key: bool
) -> None:
    """Amazon's FAQ: Complete on a Completed session answers 422 InvalidCheckoutSessionStatus.
    Complete takes no idempotency key at Amazon, so a repeated key does not replay the 200."""
    sid = await ready_session(client)
    key = "complete-key-1" if same_key else None
    first = await client.call(
        "POST",
        f"/checkoutSessions/{sid}/complete",
        {"chargeAmount": usd("100.00")},
        idempotency_key=key,
    )
    assert first.status == 200
    again = await client.call(
        "POST",
        f"/checkoutSessions/{sid}/complete",
        {"chargeAmount": usd("100.00")},
        idempotency_key=key,
    )
    assert (again.status, again.body["reasonCode"]) == (422, "InvalidCheckoutSessionStatus")
    charges = emu.emulator.engine.objects("charges")
    assert [c["chargeId"] for c in charges] == [first.body["chargeId"]]
    session = (await client.call("GET", f"/checkoutSessions/{sid}")).body
    assert session["statusDetails"]["state"] == "Completed"
    assert session["chargeId"] == first.body["chargeId"]


async def test_repeated_complete_while_authorization_is_pending_is_refused(
    client: SignedClient,
) -> None:
    sid = await ready_session(client)
    first = await client.call(
        "POST",
        f"/checkoutSessions/{sid}/complete",
        {"chargeAmount": usd("100.00")},
        simulation="AuthorizationInitiated",
    )
    assert first.status == 202
    again = await client.call(
        "POST", f"/checkoutSessions/{sid}/complete", {"chargeAmount": usd("100.00")}
    )
    assert (again.status, again.body["reasonCode"]) == (422, "InvalidCheckoutSessionStatus")


async def test_complete_after_the_cancellation_was_answered_is_invalid_status(
    client: SignedClient,
) -> None:
    sid = await ready_session(client)
    first = await client.call(
        "POST",
        f"/checkoutSessions/{sid}/complete",
        {"chargeAmount": usd("100.00")},
        simulation="Declined",
    )
    assert (first.status, first.body["reasonCode"]) == (422, "CheckoutSessionCanceled")
    again = await client.call(
        "POST", f"/checkoutSessions/{sid}/complete", {"chargeAmount": usd("100.00")}
    )
    assert (again.status, again.body["reasonCode"]) == (422, "InvalidCheckoutSessionStatus")


async def test_complete_on_an_expired_session_is_invalid_status(client: SignedClient) -> None:
    sid = await ready_session(client)
    await advance(client, 86400 + 1)
    reply = await client.call(
        "POST", f"/checkoutSessions/{sid}/complete", {"chargeAmount": usd("100.00")}
    )
    assert (reply.status, reply.body["reasonCode"]) == (422, "InvalidCheckoutSessionStatus")


async def test_completed_session_can_no_longer_be_updated(client: SignedClient) -> None:
    done = await purchase(client)
    sid = done["checkoutSessionId"]
    reply = await client.call("PATCH", f"/checkoutSessions/{sid}", {"platformId": "x"})
    assert (reply.status, reply.body["reasonCode"]) == (422, "InvalidCheckoutSessionStatus")


async def test_update_after_buyer_redirect_is_rejected(client: SignedClient) -> None:
    sid = await ready_session(client)
    reply = await client.call("PATCH", f"/checkoutSessions/{sid}", {"platformId": "x"})
    assert (reply.status, reply.body["reasonCode"]) == (422, "InvalidCheckoutSessionStatus")


@pytest.mark.parametrize(("card", "reason"), [("3064", "BuyerCanceled"), ("3434", "Declined")])
async def test_declining_wallet_cards_cancel_the_session(
    client: SignedClient, card: str, reason: str
) -> None:
    sid = await ready_session(client, card=card)
    session = (await client.call("GET", f"/checkoutSessions/{sid}")).body
    assert session["statusDetails"]["state"] == "Canceled"
    assert session["statusDetails"]["reasonCode"] == reason
    assert session["buyer"] is None
    assert session["paymentDetails"] is None
    reply = await client.call(
        "POST", f"/checkoutSessions/{sid}/complete", {"chargeAmount": usd("100.00")}
    )
    assert (reply.status, reply.body["reasonCode"]) == (422, "CheckoutSessionCanceled")


@pytest.mark.parametrize("card", ["9424", "0000"])
async def test_every_happy_case_wallet_card_completes(client: SignedClient, card: str) -> None:
    done = await purchase(client, card=card)
    assert done["statusDetails"]["state"] == "Completed"


@pytest.mark.parametrize(
    ("card", "intent", "pending_ok"),
    [("0701", "Authorize", False), ("4354", "Authorize", False), ("0701", "Confirm", True)],
)
async def test_pending_cards_without_their_prerequisite_are_refused_at_the_buyer_step(
    client: SignedClient, card: str, intent: str, pending_ok: bool
) -> None:
    """Amazon's sandbox page: ...0701 and ...4354 need paymentIntent Authorize and
    canHandlePendingAuthorization true, "or using this payment method will result in an error"."""
    sid = await ready_session(
        client, card=card, intent=intent, pending_ok=pending_ok, confirm=False
    )
    refused = await client.control("POST", f"/checkoutSessions/{sid}/confirm")
    assert (refused.status, refused.body["reasonCode"]) == (400, "InvalidParameterCombination")
    session = (await client.call("GET", f"/checkoutSessions/{sid}")).body
    assert session["statusDetails"]["state"] == "Open"


@pytest.mark.parametrize("code", ["BuyerCanceled", "AmazonCanceled", "Declined"])
async def test_complete_simulations_cancel_the_session(client: SignedClient, code: str) -> None:
    sid = await ready_session(client)
    reply = await client.call(
        "POST",
        f"/checkoutSessions/{sid}/complete",
        {"chargeAmount": usd("100.00")},
        simulation=code,
    )
    assert (reply.status, reply.body["reasonCode"]) == (422, "CheckoutSessionCanceled")
    session = (await client.call("GET", f"/checkoutSessions/{sid}")).body
    assert (session["statusDetails"]["state"], session["statusDetails"]["reasonCode"]) == (
        "Canceled",
        code,
    )


async def test_authorization_initiated_simulation_completes_with_202_then_authorizes(
    client: SignedClient,
) -> None:
    sid = await ready_session(client)
    reply = await client.call(
        "POST",
        f"/checkoutSessions/{sid}/complete",
        {"chargeAmount": usd("100.00")},
        simulation="AuthorizationInitiated",
    )
    assert reply.status == 202
    charge_path = f"/charges/{reply.body['chargeId']}"
    assert (await client.call("GET", charge_path)).body["statusDetails"][
        "state"
    ] == "AuthorizationInitiated"
    await advance(client, 31)
    assert (await client.call("GET", charge_path)).body["statusDetails"]["state"] == "Authorized"


async def test_open_session_expires_after_24_hours(client: SignedClient) -> None:
    sid = await new_session(client)
    await advance(client, 86399)
    assert (await client.call("GET", f"/checkoutSessions/{sid}")).body["statusDetails"][
        "state"
    ] == "Open"
    await advance(client, 2)
    status = (await client.call("GET", f"/checkoutSessions/{sid}")).body["statusDetails"]
    assert (status["state"], status["reasonCode"]) == ("Canceled", "Expired")


async def test_session_is_deleted_30_days_after_creation(client: SignedClient) -> None:
    done = await purchase(client)
    sid = done["checkoutSessionId"]
    await advance(client, 30 * 86400 + 1)
    reply = await client.call("GET", f"/checkoutSessions/{sid}")
    assert (reply.status, reply.body["reasonCode"]) == (404, "ResourceNotFound")


async def test_charge_permission_hides_buyer_details_after_30_days(client: SignedClient) -> None:
    done = await purchase(client, intent="Confirm")
    await advance(client, 30 * 86400 + 1)
    cp = (await client.call("GET", f"/chargePermissions/{done['chargePermissionId']}")).body
    assert cp["buyer"] is None
    assert cp["shippingAddress"] is None


async def test_singular_seed_spellings_are_accepted_on_input(client: SignedClient) -> None:
    reply = await client.call(
        "POST",
        "/checkoutSessions",
        {
            "storeId": STORE_ID,
            "webCheckoutDetail": {"checkoutReviewReturnUrl": REVIEW_URL},
            "paymentDetail": {"paymentIntent": "Confirm"},
        },
    )
    assert reply.status == 201
    assert reply.body["webCheckoutDetails"]["checkoutReviewReturnUrl"] == REVIEW_URL
    assert reply.body["paymentDetails"]["paymentIntent"] == "Confirm"


async def test_invalid_payment_intent_is_invalid_parameter_value(client: SignedClient) -> None:
    reply = await client.call(
        "POST",
        "/checkoutSessions",
        {"storeId": STORE_ID, "paymentDetails": {"paymentIntent": "Buy"}},
    )
    assert (reply.status, reply.body["reasonCode"]) == (400, "InvalidParameterValue")


async def test_finalize_completes_a_buy_now_session(client: SignedClient) -> None:
    sid = await new_session(
        client,
        webCheckoutDetails={"checkoutMode": "ProcessOrder", "checkoutResultReturnUrl": RESULT_URL},
    )
    await client.control("POST", f"/checkoutSessions/{sid}/signIn", {})
    reply = await client.call(
        "POST",
        f"/checkoutSessions/{sid}/finalize",
        {"chargeAmount": usd("20.00"), "paymentIntent": "AuthorizeWithCapture"},
    )
    assert reply.status == 200, reply.body
    assert reply.body["statusDetails"]["state"] == "Completed"
    charge = (await client.call("GET", f"/charges/{reply.body['chargeId']}")).body
    assert charge["captureAmount"] == usd("20.00")


async def test_repeated_finalize_is_refused_as_invalid_checkout_session_status(
    client: SignedClient, emu: RunningEmulator
) -> None:
    sid = await new_session(
        client,
        webCheckoutDetails={"checkoutMode": "ProcessOrder", "checkoutResultReturnUrl": RESULT_URL},
    )
    await client.control("POST", f"/checkoutSessions/{sid}/signIn", {})
    body = {"chargeAmount": usd("20.00"), "paymentIntent": "AuthorizeWithCapture"}
    first = await client.call(
        "POST", f"/checkoutSessions/{sid}/finalize", body, idempotency_key="finalize-1"
    )
    assert first.status == 200
    again = await client.call(
        "POST", f"/checkoutSessions/{sid}/finalize", body, idempotency_key="finalize-1"
    )
    assert (again.status, again.body["reasonCode"]) == (422, "InvalidCheckoutSessionStatus")
    assert len(emu.emulator.engine.objects("charges")) == 1


async def test_browser_pages_sign_in_and_confirm_with_redirects(
    client: SignedClient, emu: RunningEmulator, http: aiohttp.ClientSession
) -> None:
    sid = await new_session(client)
    async with http.get(f"{emu.url}/_emulator/checkoutSessions/{sid}/signIn") as page:
        assert "<form" in await page.text()
    async with http.post(
        f"{emu.url}/_emulator/checkoutSessions/{sid}/signIn",
        data={"card": "0005"},
        allow_redirects=False,
    ) as resp:
        assert resp.status == 303
        assert resp.headers["Location"] == f"{REVIEW_URL}?amazonCheckoutSessionId={sid}"
    await client.call(
        "PATCH",
        f"/checkoutSessions/{sid}",
        {
            "webCheckoutDetails": {"checkoutResultReturnUrl": RESULT_URL},
            "paymentDetails": {"paymentIntent": "Authorize", "chargeAmount": usd("5.00")},
        },
    )
    redirect_url = (await client.call("GET", f"/checkoutSessions/{sid}")).body[
        "webCheckoutDetails"
    ]["amazonPayRedirectUrl"]
    async with http.get(redirect_url) as page:
        assert "AmericanExpress ****0005" in await page.text()
    async with http.post(
        f"{emu.url}/_emulator/checkoutSessions/{sid}/confirm", data={}, allow_redirects=False
    ) as resp:
        assert resp.headers["Location"] == f"{RESULT_URL}?amazonCheckoutSessionId={sid}"
    done = await client.call(
        "POST", f"/checkoutSessions/{sid}/complete", {"chargeAmount": usd("5.00")}
    )
    assert done.body["statusDetails"]["state"] == "Completed"
