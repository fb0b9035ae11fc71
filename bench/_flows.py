"""gRPC stubs and the whole purchase as a caller (and the emulator's buyer steps) performs it."""

from __future__ import annotations

import uuid
from dataclasses import dataclass

import grpc

from bench._stack import Emulator
from payments.amazonpay.v1 import (
    charge_pb2_grpc,
    charge_permission_pb2_grpc,
    checkout_session_pb2_grpc,
    common_pb2,
    ledger_pb2_grpc,
    refund_pb2_grpc,
)
from payments.amazonpay.v1 import checkout_session_pb2 as cs

REVIEW_URL = "https://shop.example/review"
RESULT_URL = "https://shop.example/result"


def key() -> str:
    return uuid.uuid4().hex


def usd(amount: str) -> common_pb2.Price:
    return common_pb2.Price(amount=amount, currency_code="USD")


@dataclass
class Stubs:
    """grpc.aio stubs (the generated stubs' asynchronous types: their calls are awaitable)."""

    target: str
    sessions: checkout_session_pb2_grpc.CheckoutSessionServiceAsyncStub
    permissions: charge_permission_pb2_grpc.ChargePermissionServiceAsyncStub
    charges: charge_pb2_grpc.ChargeServiceAsyncStub
    refunds: refund_pb2_grpc.RefundServiceAsyncStub
    ledger: ledger_pb2_grpc.LedgerServiceAsyncStub


def stubs_for(channel: grpc.aio.Channel, target: str) -> Stubs:
    return Stubs(
        target,
        checkout_session_pb2_grpc.CheckoutSessionServiceStub(channel),
        charge_permission_pb2_grpc.ChargePermissionServiceStub(channel),
        charge_pb2_grpc.ChargeServiceStub(channel),
        refund_pb2_grpc.RefundServiceStub(channel),
        ledger_pb2_grpc.LedgerServiceStub(channel),
    )


@dataclass
class Checkout:
    session_id: str
    charge_permission_id: str
    charge_id: str


async def checkout(
    api: Stubs,
    emulator: Emulator,
    *,
    intent: int = cs.PAYMENT_INTENT_CONFIRM,
    amount: str = "1000.00",
    card: str = "1111",
    reference: str = "bench-order",
    timeout: float = 30.0,
    can_handle_pending: bool = False,
) -> Checkout:
    """Create, buyer sign-in, Update, buyer confirm, Complete: one purchase end to end."""
    created = await api.sessions.CreateCheckoutSession(
        cs.CreateCheckoutSessionRequest(
            idempotency_key=key(),
            web_checkout_details=cs.WebCheckoutDetails(checkout_review_return_url=REVIEW_URL),
        ),
        timeout=timeout,
    )
    session_id = created.checkout_session.checkout_session_id
    await emulator.control("POST", f"checkoutSessions/{session_id}/signIn", {"card": card})
    details = cs.PaymentDetails(
        payment_intent=intent,  # type: ignore[arg-type]
        charge_amount=usd(amount),
    )
    if can_handle_pending:
        details.can_handle_pending_authorization = True
    await api.sessions.UpdateCheckoutSession(
        cs.UpdateCheckoutSessionRequest(
            checkout_session_id=session_id,
            web_checkout_details=cs.WebCheckoutDetails(checkout_result_return_url=RESULT_URL),
            payment_details=details,
            merchant_metadata=common_pb2.MerchantMetadata(merchant_reference_id=reference),
        ),
        timeout=timeout,
    )
    await emulator.control("POST", f"checkoutSessions/{session_id}/confirm", {})
    complete = await api.sessions.CompleteCheckoutSession(
        cs.CompleteCheckoutSessionRequest(
            checkout_session_id=session_id,
            idempotency_key=key(),
            charge_amount=usd(amount),
        ),
        timeout=timeout,
    )
    return Checkout(
        session_id,
        complete.checkout_session.charge_permission_id,
        complete.checkout_session.charge_id,
    )
