"""Whole purchases driven through the gRPC API and the emulator's buyer steps."""

from __future__ import annotations

import uuid
from dataclasses import dataclass

import grpc
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from payments.amazonpay.v1 import checkout_session_pb2 as cs
from payments.amazonpay.v1 import common_pb2
from service.app import Application
from service.ledger import ObjectRecord
from tests._emulator import EmulatorProcess
from tests.e2e.conftest import Stubs

REVIEW_URL = "https://shop.example/review"
RESULT_URL = "https://shop.example/result"


def key() -> str:
    return uuid.uuid4().hex


def usd(amount: str) -> common_pb2.Price:
    return common_pb2.Price(amount=amount, currency_code="USD")


@dataclass
class Checkout:
    session_id: str
    charge_permission_id: str
    charge_id: str
    complete: cs.CompleteCheckoutSessionResponse


async def checkout(
    api: Stubs,
    emulator: EmulatorProcess,
    *,
    intent: int = cs.PAYMENT_INTENT_AUTHORIZE,
    amount: str = "100.00",
    card: str = "1111",
    can_handle_pending: bool = False,
    reference: str = "order-1",
    merchant: str = "",
) -> Checkout:
    created = await api.sessions.CreateCheckoutSession(
        cs.CreateCheckoutSessionRequest(
            merchant=merchant,
            idempotency_key=key(),
            web_checkout_details=cs.WebCheckoutDetails(checkout_review_return_url=REVIEW_URL),
        ),
        timeout=10,
    )
    session_id = created.checkout_session.checkout_session_id
    redirect = await emulator.sign_in(session_id, card)
    assert session_id in redirect["redirectUrl"]
    details = cs.PaymentDetails(
        payment_intent=intent,  # type: ignore[arg-type]
        charge_amount=usd(amount),
    )
    if can_handle_pending:
        details.can_handle_pending_authorization = True
    await api.sessions.UpdateCheckoutSession(
        cs.UpdateCheckoutSessionRequest(
            merchant=merchant,
            checkout_session_id=session_id,
            web_checkout_details=cs.WebCheckoutDetails(checkout_result_return_url=RESULT_URL),
            payment_details=details,
            merchant_metadata=common_pb2.MerchantMetadata(merchant_reference_id=reference),
        ),
        timeout=10,
    )
    await emulator.confirm(session_id)
    complete = await api.sessions.CompleteCheckoutSession(
        cs.CompleteCheckoutSessionRequest(
            merchant=merchant,
            checkout_session_id=session_id,
            idempotency_key=key(),
            charge_amount=usd(amount),
        ),
        timeout=10,
    )
    return Checkout(
        session_id,
        complete.checkout_session.charge_permission_id,
        complete.checkout_session.charge_id,
        complete,
    )


@dataclass
class Failure:
    code: grpc.StatusCode
    reason: str
    domain: str
    metadata: dict[str, str]
    violations: dict[str, str]
    retry_delay_s: float | None


def failure(error: grpc.aio.AioRpcError) -> Failure:
    status = rpc_status.from_call(error)  # type: ignore[arg-type]
    assert status is not None, f"no rich status on {error.code()}: {error.details()}"
    info = error_details_pb2.ErrorInfo()
    violations: dict[str, str] = {}
    retry: float | None = None
    for detail in status.details:
        if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            detail.Unpack(info)
        elif detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            bad = error_details_pb2.BadRequest()
            detail.Unpack(bad)
            violations = {v.field: v.description for v in bad.field_violations}
        elif detail.Is(error_details_pb2.RetryInfo.DESCRIPTOR):
            retry_info = error_details_pb2.RetryInfo()
            detail.Unpack(retry_info)
            retry = retry_info.retry_delay.ToMilliseconds() / 1000
    return Failure(error.code(), info.reason, info.domain, dict(info.metadata), violations, retry)


async def record_completed_session_naming(
    app: Application, session_id: str, charge_id: str
) -> None:
    """A completed checkout in the ledger that names a charge the ledger does not hold (as after
    a crash right after Complete): the reconciler owes a read of it."""
    assert app.ledger is not None
    await app.ledger.repository.record(
        [
            ObjectRecord(
                merchant="default",
                kind="checkout_session",
                object_id=session_id,
                state="Completed",
                is_final=True,
                snapshot={"checkoutSessionId": session_id, "chargeId": charge_id},
            )
        ],
        "poll",
    )
