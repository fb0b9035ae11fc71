"""A whole checkout driven through the Python client plus the emulator's buyer steps."""

from __future__ import annotations

from dataclasses import dataclass

from amazonpay_client import AmazonPayClient, price

from tests._emulator import EmulatorProcess

REVIEW_URL = "https://shop.example/review"
RESULT_URL = "https://shop.example/result"


@dataclass
class Checkout:
    session_id: str
    charge_permission_id: str
    charge_id: str


async def checkout(
    client: AmazonPayClient,
    emulator: EmulatorProcess,
    *,
    intent: str = "PAYMENT_INTENT_AUTHORIZE",
    amount: str = "100.00",
    reference: str = "order-1",
    card: str = "1111",
) -> Checkout:
    created = await client.checkout_sessions.create(
        web_checkout_details={"checkout_review_return_url": REVIEW_URL}
    )
    session_id = created.checkout_session.checkout_session_id
    await emulator.sign_in(session_id, card)
    await client.checkout_sessions.update(
        session_id,
        web_checkout_details={"checkout_result_return_url": RESULT_URL},
        payment_details={"payment_intent": intent, "charge_amount": price(amount, "USD")},
        merchant_metadata={"merchant_reference_id": reference},
    )
    await emulator.confirm(session_id)
    completed = await client.checkout_sessions.complete(
        session_id, charge_amount=price(amount, "USD")
    )
    session = completed.checkout_session
    return Checkout(session_id, session.charge_permission_id, session.charge_id)
