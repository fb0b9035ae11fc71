"""Shared purchase flows for the emulator tests."""

from __future__ import annotations

from typing import Any

from emulator.testing import SignedClient

STORE_ID = "amzn1.application-oa2-client.emulatortests"
REVIEW_URL = "https://merchant.example/review"
RESULT_URL = "https://merchant.example/result"


def usd(amount: str) -> dict[str, str]:
    return {"amount": amount, "currencyCode": "USD"}


async def new_session(client: SignedClient, **extra: Any) -> str:
    body = {"webCheckoutDetails": {"checkoutReviewReturnUrl": REVIEW_URL}, "storeId": STORE_ID}
    body.update(extra)
    reply = await client.call("POST", "/checkoutSessions", body)
    assert reply.status == 201, reply.body
    return str(reply.body["checkoutSessionId"])


async def ready_session(
    client: SignedClient,
    *,
    intent: str = "Authorize",
    amount: dict[str, str] | None = None,
    card: str = "1111",
    pending_ok: bool = False,
    confirm: bool = True,
    **session_extra: Any,
) -> str:
    """Create, sign the buyer in, set the payment details and (optionally) let the buyer confirm."""
    sid = await new_session(client, **session_extra)
    signed_in = await client.control("POST", f"/checkoutSessions/{sid}/signIn", {"card": card})
    assert signed_in.status == 200, signed_in.body
    update = {
        "webCheckoutDetails": {"checkoutResultReturnUrl": RESULT_URL},
        "paymentDetails": {
            "paymentIntent": intent,
            "chargeAmount": amount or usd("100.00"),
            "canHandlePendingAuthorization": pending_ok,
        },
    }
    reply = await client.call("PATCH", f"/checkoutSessions/{sid}", update)
    assert reply.status == 200, reply.body
    if confirm:
        confirmed = await client.control("POST", f"/checkoutSessions/{sid}/confirm")
        assert confirmed.status == 200, confirmed.body
    return sid


async def purchase(
    client: SignedClient,
    *,
    intent: str = "Authorize",
    amount: dict[str, str] | None = None,
    card: str = "1111",
    pending_ok: bool = False,
) -> dict[str, Any]:
    """A completed checkout; returns the Complete response body."""
    amount = amount or usd("100.00")
    sid = await ready_session(
        client, intent=intent, amount=amount, card=card, pending_ok=pending_ok
    )
    reply = await client.call("POST", f"/checkoutSessions/{sid}/complete", {"chargeAmount": amount})
    assert reply.status in (200, 202), reply.body
    body: dict[str, Any] = reply.body
    return body


async def advance(client: SignedClient, seconds: float) -> None:
    reply = await client.control("POST", "/clock", {"advanceSeconds": seconds})
    assert reply.status == 200, reply.body


async def state_of(client: SignedClient, path: str) -> str:
    reply = await client.call("GET", path)
    assert reply.status == 200, reply.body
    return str(reply.body["statusDetails"]["state"])
