"""gRPC stubs and the whole purchase as a caller (and the emulator's buyer steps) performs it."""

from __future__ import annotations

import contextlib
import itertools
import uuid
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

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


class _RoundRobin:
    """The same stub over several channels: each call goes out on the next one."""

    def __init__(self, stubs: list[Any]) -> None:
        self._next = itertools.cycle(stubs)

    def __getattr__(self, name: str) -> Any:
        return getattr(next(self._next), name)


def stubs_for(channels: grpc.aio.Channel | Sequence[grpc.aio.Channel], target: str) -> Stubs:
    """Stubs over one channel, or spread call by call over several (several connections, as
    several client processes would open: `SO_REUSEPORT` spreads connections, not calls, over
    the service's workers)."""
    pool = [channels] if isinstance(channels, grpc.aio.Channel) else list(channels)

    def each(stub: Any) -> Any:
        return _RoundRobin([stub(channel) for channel in pool]) if len(pool) > 1 else stub(pool[0])

    return Stubs(
        target,
        each(checkout_session_pb2_grpc.CheckoutSessionServiceStub),
        each(charge_permission_pb2_grpc.ChargePermissionServiceStub),
        each(charge_pb2_grpc.ChargeServiceStub),
        each(refund_pb2_grpc.RefundServiceStub),
        each(ledger_pb2_grpc.LedgerServiceStub),
    )


@asynccontextmanager
async def channels(target: str, count: int) -> AsyncIterator[list[grpc.aio.Channel]]:
    """`count` insecure channels to `target`, each with its own connection."""
    async with contextlib.AsyncExitStack() as stack:
        yield [
            await stack.enter_async_context(
                grpc.aio.insecure_channel(target, options=[("grpc.use_local_subchannel_pool", 1)])
            )
            for _ in range(count)
        ]


@dataclass
class Checkout:
    session_id: str
    charge_permission_id: str
    charge_id: str


async def create_session(api: Stubs, *, timeout: float = 30.0) -> str:
    """CreateCheckoutSession with an idempotency key; the new session's id."""
    created = await api.sessions.CreateCheckoutSession(
        cs.CreateCheckoutSessionRequest(
            idempotency_key=key(),
            web_checkout_details=cs.WebCheckoutDetails(checkout_review_return_url=REVIEW_URL),
        ),
        timeout=timeout,
    )
    session_id: str = created.checkout_session.checkout_session_id
    return session_id


async def update_session(
    api: Stubs,
    session_id: str,
    *,
    intent: int = cs.PAYMENT_INTENT_CONFIRM,
    amount: str = "1000.00",
    reference: str = "bench-order",
    timeout: float = 30.0,
    can_handle_pending: bool = False,
) -> None:
    """UpdateCheckoutSession (no idempotency key) with the payment details."""
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


async def complete_session(
    api: Stubs, session_id: str, *, amount: str = "1000.00", timeout: float = 30.0
) -> Checkout:
    """CompleteCheckoutSession with an idempotency key (the service then reads the charge
    permission and the charge into the ledger)."""
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
    session_id = await create_session(api, timeout=timeout)
    await emulator.control("POST", f"checkoutSessions/{session_id}/signIn", {"card": card})
    await update_session(
        api,
        session_id,
        intent=intent,
        amount=amount,
        reference=reference,
        timeout=timeout,
        can_handle_pending=can_handle_pending,
    )
    await emulator.control("POST", f"checkoutSessions/{session_id}/confirm", {})
    return await complete_session(api, session_id, amount=amount, timeout=timeout)
