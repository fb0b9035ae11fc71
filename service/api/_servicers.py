"""The servicers: every RPC takes one `RequestPath` (authorize the merchant, validate, run, hide
PII, map errors, log one line); most are a row in a table.

- mutations: exactly-once execution (core) -> typed response
- reads: ledger/Amazon per `source` -> typed response with `served_from`
- ledger queries and erasure: repository / core -> typed response
- WatchEvents: the same path as a server stream
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import time
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Mapping
from contextlib import aclosing, asynccontextmanager, nullcontext
from dataclasses import dataclass
from datetime import UTC
from typing import Any, Literal, NamedTuple, NoReturn, TypeVar, cast

import grpc
from google.protobuf.message import Message
from google.protobuf.timestamp_pb2 import Timestamp

from payments.amazonpay.v1 import (
    button_pb2,
    button_pb2_grpc,
    buyer_pb2,
    buyer_pb2_grpc,
    charge_pb2,
    charge_pb2_grpc,
    charge_permission_pb2,
    charge_permission_pb2_grpc,
    checkout_session_pb2,
    checkout_session_pb2_grpc,
    common_pb2,
    delivery_tracker_pb2,
    delivery_tracker_pb2_grpc,
    dispute_pb2,
    ledger_pb2,
    ledger_pb2_grpc,
    refund_pb2,
    refund_pb2_grpc,
)
from service.core import AmazonCall, BuyerDataErasure, Payments, Settlements
from service.ledger import (
    Event,
    EventFilter,
    EventHub,
    ObjectFilter,
    Position,
    Repository,
    StoredObject,
    StreamLimitReached,
)
from service.telemetry import Metrics

from ._access import RpcRecord, rpc_record
from ._convert import ENVELOPE_FIELDS, json_to_message, message_to_json
from ._errors import RpcFailure, to_status
from ._scope import allowed_merchant, hide_buyer_pii, pii_allowed, scoped_idempotency_key
from ._validation import Violation, validate

__all__ = ["RequestPath", "build_servicers"]

_log = logging.getLogger("service.api")

Req = TypeVar("Req", bound=Message)
Resp = TypeVar("Resp", bound=Message)

# Leave this much of the caller's deadline for our own ledger writes and the reply.
_DEADLINE_RESERVE_S = 0.05


class PageLimits(NamedTuple):
    """As documented in ledger.proto: 0 means the default, larger values are clamped."""

    default: int
    maximum: int

    def size(self, requested: int) -> int:
        return min(requested or self.default, self.maximum)


_TRANSACTIONS_PAGE = PageLimits(default=50, maximum=500)
_EVENTS_PAGE = PageLimits(default=100, maximum=1000)


@dataclass(frozen=True)
class Mutation:
    response: type[Message]
    result_field: str
    result_type: type[Message]
    path_field: str | None = None
    masked: bool = False


MUTATIONS: Mapping[str, Mutation] = {
    "CreateCheckoutSession": Mutation(
        response=checkout_session_pb2.CreateCheckoutSessionResponse,
        result_field="checkout_session",
        result_type=checkout_session_pb2.CheckoutSession,
    ),
    "UpdateCheckoutSession": Mutation(
        response=checkout_session_pb2.UpdateCheckoutSessionResponse,
        result_field="checkout_session",
        result_type=checkout_session_pb2.CheckoutSession,
        path_field="checkout_session_id",
        masked=True,
    ),
    "CompleteCheckoutSession": Mutation(
        response=checkout_session_pb2.CompleteCheckoutSessionResponse,
        result_field="checkout_session",
        result_type=checkout_session_pb2.CheckoutSession,
        path_field="checkout_session_id",
    ),
    "FinalizeCheckoutSession": Mutation(
        response=checkout_session_pb2.FinalizeCheckoutSessionResponse,
        result_field="checkout_session",
        result_type=checkout_session_pb2.CheckoutSession,
        path_field="checkout_session_id",
    ),
    "UpdateChargePermission": Mutation(
        response=charge_permission_pb2.UpdateChargePermissionResponse,
        result_field="charge_permission",
        result_type=charge_permission_pb2.ChargePermission,
        path_field="charge_permission_id",
        masked=True,
    ),
    "CloseChargePermission": Mutation(
        response=charge_permission_pb2.CloseChargePermissionResponse,
        result_field="charge_permission",
        result_type=charge_permission_pb2.ChargePermission,
        path_field="charge_permission_id",
    ),
    "CreateCharge": Mutation(
        response=charge_pb2.CreateChargeResponse,
        result_field="charge",
        result_type=charge_pb2.Charge,
    ),
    "CaptureCharge": Mutation(
        response=charge_pb2.CaptureChargeResponse,
        result_field="charge",
        result_type=charge_pb2.Charge,
        path_field="charge_id",
    ),
    "CancelCharge": Mutation(
        response=charge_pb2.CancelChargeResponse,
        result_field="charge",
        result_type=charge_pb2.Charge,
        path_field="charge_id",
    ),
    "CreateRefund": Mutation(
        response=refund_pb2.CreateRefundResponse,
        result_field="refund",
        result_type=refund_pb2.Refund,
    ),
    "CreateDeliveryTracker": Mutation(
        response=delivery_tracker_pb2.CreateDeliveryTrackerResponse,
        result_field="delivery_tracker",
        result_type=delivery_tracker_pb2.DeliveryTracker,
    ),
}


@dataclass(frozen=True)
class Read:
    kind: str
    id_field: str
    response: type[Message]
    result_field: str
    result_type: type[Message]


READS: Mapping[str, Read] = {
    "GetCheckoutSession": Read(
        kind="checkout_session",
        id_field="checkout_session_id",
        response=checkout_session_pb2.GetCheckoutSessionResponse,
        result_field="checkout_session",
        result_type=checkout_session_pb2.CheckoutSession,
    ),
    "GetChargePermission": Read(
        kind="charge_permission",
        id_field="charge_permission_id",
        response=charge_permission_pb2.GetChargePermissionResponse,
        result_field="charge_permission",
        result_type=charge_permission_pb2.ChargePermission,
    ),
    "GetCharge": Read(
        kind="charge",
        id_field="charge_id",
        response=charge_pb2.GetChargeResponse,
        result_field="charge",
        result_type=charge_pb2.Charge,
    ),
    "GetRefund": Read(
        kind="refund",
        id_field="refund_id",
        response=refund_pb2.GetRefundResponse,
        result_field="refund",
        result_type=refund_pb2.Refund,
    ),
    "GetDispute": Read(
        kind="dispute",
        id_field="dispute_id",
        response=dispute_pb2.GetDisputeResponse,
        result_field="dispute",
        result_type=dispute_pb2.Dispute,
    ),
}

_SOURCES: Mapping[int, Literal["auto", "ledger", "amazon"]] = {
    common_pb2.READ_SOURCE_UNSPECIFIED: "auto",
    common_pb2.READ_SOURCE_AUTO: "auto",
    common_pb2.READ_SOURCE_LEDGER: "ledger",
    common_pb2.READ_SOURCE_AMAZON: "amazon",
}

KIND_ENUM: Mapping[str, int] = {
    "checkout_session": ledger_pb2.OBJECT_KIND_CHECKOUT_SESSION,
    "charge_permission": ledger_pb2.OBJECT_KIND_CHARGE_PERMISSION,
    "charge": ledger_pb2.OBJECT_KIND_CHARGE,
    "refund": ledger_pb2.OBJECT_KIND_REFUND,
    "dispute": ledger_pb2.OBJECT_KIND_DISPUTE,
}
KIND_NAME: Mapping[int, str] = {v: k for k, v in KIND_ENUM.items()}
EVENT_KIND_ENUM: Mapping[str, int] = {
    **KIND_ENUM,
    "settlement_line": ledger_pb2.OBJECT_KIND_SETTLEMENT_LINE,
}
"""Kinds of events: the object kinds and settlement findings (which have no Transaction)."""
EVENT_KIND_NAME: Mapping[int, str] = {v: k for k, v in EVENT_KIND_ENUM.items()}
SOURCE_ENUM: Mapping[str, int] = {
    "api": ledger_pb2.EVENT_SOURCE_API,
    "poll": ledger_pb2.EVENT_SOURCE_POLL,
    "ipn": ledger_pb2.EVENT_SOURCE_IPN,
    "recovery": ledger_pb2.EVENT_SOURCE_RECOVERY,
    "settlement": ledger_pb2.EVENT_SOURCE_SETTLEMENT,
}
SOURCE_NAME: Mapping[int, str] = {v: k for k, v in SOURCE_ENUM.items()}
_SNAPSHOT_TYPES: Mapping[str, type[Message]] = {
    "checkout_session": checkout_session_pb2.CheckoutSession,
    "charge_permission": charge_permission_pb2.ChargePermission,
    "charge": charge_pb2.Charge,
    "refund": refund_pb2.Refund,
    "dispute": dispute_pb2.Dispute,
}


def _deadline(context: grpc.aio.ServicerContext[Any, Any]) -> float | None:
    remaining = context.time_remaining()
    if remaining is None:
        return None
    return time.monotonic() + max(0.0, remaining - _DEADLINE_RESERVE_S)


def _timestamp(value: Any) -> Timestamp:
    stamp = Timestamp()
    stamp.FromDatetime(value.astimezone(UTC))
    return stamp


def _price(data: Any) -> common_pb2.Price | None:
    if isinstance(data, Mapping) and data.get("amount") is not None:
        return common_pb2.Price(
            amount=str(data["amount"]), currency_code=str(data.get("currencyCode") or "")
        )
    return None


class _Total(NamedTuple):
    """A running total Amazon keeps in an object's JSON, and the Transaction field it fills."""

    field: str
    json_key: str


_TOTALS = (
    _Total(field="captured_amount", json_key="captureAmount"),
    _Total(field="refunded_amount", json_key="refundedAmount"),
)


def transaction_of(obj: StoredObject) -> ledger_pb2.Transaction:
    tx = ledger_pb2.Transaction(
        merchant=obj.merchant,
        kind=cast(Any, KIND_ENUM[obj.kind]),
        object_id=obj.object_id,
        checkout_session_id=obj.checkout_session_id or "",
        charge_permission_id=obj.charge_permission_id or "",
        charge_id=obj.charge_id or "",
        raw_state=obj.state,
        raw_reason_code=obj.reason_code or "",
        merchant_reference_id=obj.merchant_reference_id or "",
        is_final=obj.is_final,
        release_environment=str(obj.snapshot.get("releaseEnvironment") or ""),
    )
    if obj.amount is not None:
        tx.amount.CopyFrom(
            common_pb2.Price(amount=obj.amount, currency_code=obj.currency_code or "")
        )
    for total in _TOTALS:
        price = _price(obj.snapshot.get(total.json_key))
        if price is not None:
            getattr(tx, total.field).CopyFrom(price)
    tx.created_at.CopyFrom(_timestamp(obj.created_at))
    if obj.buyer_data_erased_at is not None:
        tx.buyer_data_erased_at.CopyFrom(_timestamp(obj.buyer_data_erased_at))
    tx.updated_at.CopyFrom(_timestamp(obj.updated_at))
    if obj.amazon_expires_at is not None:
        tx.amazon_expiration_timestamp.CopyFrom(_timestamp(obj.amazon_expires_at))
    json_to_message(obj.snapshot, getattr(tx, obj.kind))
    return tx


def event_of(event: Event) -> ledger_pb2.LedgerEvent:
    message = ledger_pb2.LedgerEvent(
        event_id=event.event_id,
        kind=cast(Any, EVENT_KIND_ENUM[event.kind]),
        object_id=event.object_id,
        merchant=event.merchant,
        charge_permission_id=event.charge_permission_id or "",
        raw_state=event.state,
        raw_reason_code=event.reason_code or "",
        previous_raw_state=event.previous_state or "",
        source=cast(Any, SOURCE_ENUM[event.source]),
        amazon_request_id=event.amazon_request_id or "",
    )
    message.occurred_at.CopyFrom(_timestamp(event.recorded_at))
    message.recorded_at.CopyFrom(_timestamp(event.recorded_at))
    json_to_message(event.snapshot, getattr(message, event.kind))
    return message


class _Serving:
    """One RPC on its way along the request path: its log record and the caller's deadline."""

    def __init__(self, record: RpcRecord, deadline: float | None) -> None:
        self.record = record
        self.deadline = deadline

    def answer(self, response: Resp) -> Resp:
        """A unary RPC's response, as this caller may see it; its ids go into the log line."""
        if not pii_allowed():
            hide_buyer_pii(response)
        self.record.response(response)
        return response

    def deliver(self, message: Resp) -> Resp:
        """One message of a stream, as this caller may see it (the log line stays one per RPC,
        so the ids of a stream's messages are not collected)."""
        if not pii_allowed():
            hide_buyer_pii(message)
        return message


class RequestPath:
    """The path every RPC takes: authorize the merchant, validate, run, hide PII the caller may
    not see, map any failure to a rich status, and log one line."""

    def __init__(
        self,
        payments: Payments,
        repository: Repository,
        hub: EventHub | None = None,
        metrics: Metrics | None = None,
        settlements: Settlements | None = None,
    ) -> None:
        self.payments = payments
        self.repository = repository
        self.hub = hub
        self.metrics = metrics
        self.erasure = BuyerDataErasure(repository)
        self.settlements = settlements
        """Reconciliation on request (the worker's, so both use the same settings)."""

    async def run(
        self,
        method: str,
        request: Req,
        context: grpc.aio.ServicerContext[Req, Resp],
        *,
        handler: Callable[[Req, float | None], Awaitable[Resp]],
    ) -> Resp:
        """A unary RPC: `handler` gets the validated request and the deadline for its work."""
        async with self._serving(method, request, context, unary=True) as serving:
            return serving.answer(await handler(request, serving.deadline))

    async def stream(
        self,
        method: str,
        request: Req,
        context: grpc.aio.ServicerContext[Req, Resp],
        *,
        handler: Callable[[Req], AsyncGenerator[Resp, None]],
    ) -> AsyncIterator[Resp]:
        """A server stream: `handler` yields the messages; closed as soon as the caller goes."""
        async with (
            self._serving(method, request, context, unary=False) as serving,
            aclosing(handler(request)) as messages,
        ):
            async for message in messages:
                yield serving.deliver(message)

    @asynccontextmanager
    async def _serving(
        self,
        method: str,
        request: Message,
        context: grpc.aio.ServicerContext[Any, Any],
        *,
        unary: bool,
    ) -> AsyncIterator[_Serving]:
        # Amazon request ids are collected for unary RPCs only: a stream makes no Amazon calls,
        # and a context variable set in an async generator cannot be reset once it is finalized
        # elsewhere.
        with rpc_record(method) if unary else nullcontext(RpcRecord(method)) as record:
            record.request(request)
            try:
                # Authorization first: a caller learns nothing about another merchant's requests.
                allowed_merchant(self.payments.merchants, getattr(request, "merchant"))  # noqa: B009
                violations = validate(method, request)
                if violations:
                    raise RpcFailure(
                        grpc.StatusCode.INVALID_ARGUMENT,
                        f"invalid {method} request: "
                        + "; ".join(f"{v.field} {v.description}" for v in violations[:5]),
                        "VALIDATION_FAILED",
                        violations=violations,
                    )
                yield _Serving(record, _deadline(context))
            except Exception as exc:
                status = to_status(exc)
                if status is None:
                    record.code = "INTERNAL"
                    _log.exception("unexpected failure", extra={"rpc": method})
                    await context.abort(
                        grpc.StatusCode.INTERNAL, "internal error; see service logs"
                    )
                assert status is not None
                record.failed(status)
                await _abort(context, status)
            except BaseException as exc:
                if record.code == "OK" and isinstance(exc, asyncio.CancelledError | GeneratorExit):
                    record.code = "CANCELLED"
                raise
            finally:
                record.merchant = self.merchant_alias(record.merchant)
                record.log()
                # Streams stay out of the call metrics: their lifetime is no latency, and their
                # refusals are no sign of an outage.
                if unary and self.metrics is not None:
                    attributes = {"rpc": method, "code": record.code}
                    self.metrics.rpc_duration.record(record.elapsed_s(), attributes)
                    self.metrics.rpc_calls.add(1, attributes)

    def merchant_alias(self, value: str | None) -> str | None:
        """The configured alias a request's `merchant` names ("" = the default account)."""
        if value is None:
            return None
        try:
            return self.payments.merchants.get(value).alias
        except LookupError:
            return value

    async def mutate(
        self, method: str, request: Req, context: grpc.aio.ServicerContext[Req, Resp]
    ) -> Resp:
        spec = MUTATIONS[method]

        async def handler(req: Req, deadline: float | None) -> Resp:
            simulation = getattr(req, "sandbox_simulation_code", "")
            if (
                simulation
                and not self.payments.merchants.get(
                    getattr(req, "merchant")  # noqa: B009
                ).is_sandbox
            ):
                raise RpcFailure(
                    grpc.StatusCode.INVALID_ARGUMENT,
                    "sandbox_simulation_code is accepted only for sandbox merchants",
                    "VALIDATION_FAILED",
                    violations=[
                        Violation("sandbox_simulation_code", "must be empty for a live merchant")
                    ],
                )
            skip = set(ENVELOPE_FIELDS)
            if spec.path_field:
                skip.add(spec.path_field)
            only = None
            if spec.masked and getattr(req, "update_mask").paths:  # noqa: B009
                only = {p.split(".")[0] for p in getattr(req, "update_mask").paths}  # noqa: B009
            call = AmazonCall(
                operation=method,
                body=message_to_json(req, skip=skip, only=only),
                path_id=getattr(req, spec.path_field) if spec.path_field else None,
                simulation_code=getattr(req, "sandbox_simulation_code", "") or None,
            )
            outcome = await self.payments.execute(
                getattr(req, "merchant"),  # noqa: B009
                call,
                idempotency_key=scoped_idempotency_key(getattr(req, "idempotency_key", "")) or None,
                request_hash=_request_hash(req),
                deadline=deadline,
            )
            response = spec.response(
                amazon_request_id=outcome.request_id, idempotent_replay=outcome.replayed
            )
            json_to_message(outcome.body, getattr(response, spec.result_field))
            if "authorization_pending" in response.DESCRIPTOR.fields_by_name:
                setattr(response, "authorization_pending", outcome.status == 202)  # noqa: B010
            # The table's row for `method` names the response type of the RPC.
            return cast(Resp, response)

        return await self.run(method, request, context, handler=handler)

    async def read(
        self, method: str, request: Req, context: grpc.aio.ServicerContext[Req, Resp]
    ) -> Resp:
        spec = READS[method]

        async def handler(req: Req, deadline: float | None) -> Resp:
            result = await self.payments.read(
                getattr(req, "merchant"),  # noqa: B009
                spec.kind,
                getattr(req, spec.id_field),
                source=_SOURCES.get(getattr(req, "source"), "auto"),  # noqa: B009
                deadline=deadline,
            )
            response = spec.response(
                amazon_request_id=result.request_id,
                served_from=(
                    common_pb2.DATA_ORIGIN_AMAZON
                    if result.origin == "amazon"
                    else common_pb2.DATA_ORIGIN_LEDGER
                ),
            )
            getattr(response, "as_of").CopyFrom(_timestamp(result.as_of))  # noqa: B009
            json_to_message(result.body, getattr(response, spec.result_field))
            # The table's row for `method` names the response type of the RPC.
            return cast(Resp, response)

        return await self.run(method, request, context, handler=handler)


def _request_hash(request: Message) -> bytes:
    return hashlib.sha256(request.SerializeToString(deterministic=True)).digest()


async def _abort(context: grpc.aio.ServicerContext[Any, Any], status: grpc.Status) -> NoReturn:
    await context.abort_with_status(status)  # type: ignore[attr-defined]  # grpc-stubs lags grpc.aio
    raise AssertionError("unreachable")  # pragma: no cover


class CheckoutSessionService(checkout_session_pb2_grpc.CheckoutSessionServiceServicer):
    def __init__(self, path: RequestPath) -> None:
        self._path = path

    async def CreateCheckoutSession(
        self,
        request: checkout_session_pb2.CreateCheckoutSessionRequest,
        context: grpc.aio.ServicerContext[
            checkout_session_pb2.CreateCheckoutSessionRequest,
            checkout_session_pb2.CreateCheckoutSessionResponse,
        ],
    ) -> checkout_session_pb2.CreateCheckoutSessionResponse:
        return await self._path.mutate("CreateCheckoutSession", request, context)

    async def GetCheckoutSession(
        self,
        request: checkout_session_pb2.GetCheckoutSessionRequest,
        context: grpc.aio.ServicerContext[
            checkout_session_pb2.GetCheckoutSessionRequest,
            checkout_session_pb2.GetCheckoutSessionResponse,
        ],
    ) -> checkout_session_pb2.GetCheckoutSessionResponse:
        return await self._path.read("GetCheckoutSession", request, context)

    async def UpdateCheckoutSession(
        self,
        request: checkout_session_pb2.UpdateCheckoutSessionRequest,
        context: grpc.aio.ServicerContext[
            checkout_session_pb2.UpdateCheckoutSessionRequest,
            checkout_session_pb2.UpdateCheckoutSessionResponse,
        ],
    ) -> checkout_session_pb2.UpdateCheckoutSessionResponse:
        return await self._path.mutate("UpdateCheckoutSession", request, context)

    async def CompleteCheckoutSession(
        self,
        request: checkout_session_pb2.CompleteCheckoutSessionRequest,
        context: grpc.aio.ServicerContext[
            checkout_session_pb2.CompleteCheckoutSessionRequest,
            checkout_session_pb2.CompleteCheckoutSessionResponse,
        ],
    ) -> checkout_session_pb2.CompleteCheckoutSessionResponse:
        return await self._path.mutate("CompleteCheckoutSession", request, context)

    async def FinalizeCheckoutSession(
        self,
        request: checkout_session_pb2.FinalizeCheckoutSessionRequest,
        context: grpc.aio.ServicerContext[
            checkout_session_pb2.FinalizeCheckoutSessionRequest,
            checkout_session_pb2.FinalizeCheckoutSessionResponse,
        ],
    ) -> checkout_session_pb2.FinalizeCheckoutSessionResponse:
        return await self._path.mutate("FinalizeCheckoutSession", request, context)


class ChargePermissionService(charge_permission_pb2_grpc.ChargePermissionServiceServicer):
    def __init__(self, path: RequestPath) -> None:
        self._path = path

    async def GetChargePermission(
        self,
        request: charge_permission_pb2.GetChargePermissionRequest,
        context: grpc.aio.ServicerContext[
            charge_permission_pb2.GetChargePermissionRequest,
            charge_permission_pb2.GetChargePermissionResponse,
        ],
    ) -> charge_permission_pb2.GetChargePermissionResponse:
        return await self._path.read("GetChargePermission", request, context)

    async def UpdateChargePermission(
        self,
        request: charge_permission_pb2.UpdateChargePermissionRequest,
        context: grpc.aio.ServicerContext[
            charge_permission_pb2.UpdateChargePermissionRequest,
            charge_permission_pb2.UpdateChargePermissionResponse,
        ],
    ) -> charge_permission_pb2.UpdateChargePermissionResponse:
        return await self._path.mutate("UpdateChargePermission", request, context)

    async def CloseChargePermission(
        self,
        request: charge_permission_pb2.CloseChargePermissionRequest,
        context: grpc.aio.ServicerContext[
            charge_permission_pb2.CloseChargePermissionRequest,
            charge_permission_pb2.CloseChargePermissionResponse,
        ],
    ) -> charge_permission_pb2.CloseChargePermissionResponse:
        return await self._path.mutate("CloseChargePermission", request, context)


class ChargeService(charge_pb2_grpc.ChargeServiceServicer):
    def __init__(self, path: RequestPath) -> None:
        self._path = path

    async def CreateCharge(
        self,
        request: charge_pb2.CreateChargeRequest,
        context: grpc.aio.ServicerContext[
            charge_pb2.CreateChargeRequest, charge_pb2.CreateChargeResponse
        ],
    ) -> charge_pb2.CreateChargeResponse:
        return await self._path.mutate("CreateCharge", request, context)

    async def GetCharge(
        self,
        request: charge_pb2.GetChargeRequest,
        context: grpc.aio.ServicerContext[
            charge_pb2.GetChargeRequest, charge_pb2.GetChargeResponse
        ],
    ) -> charge_pb2.GetChargeResponse:
        return await self._path.read("GetCharge", request, context)

    async def CaptureCharge(
        self,
        request: charge_pb2.CaptureChargeRequest,
        context: grpc.aio.ServicerContext[
            charge_pb2.CaptureChargeRequest, charge_pb2.CaptureChargeResponse
        ],
    ) -> charge_pb2.CaptureChargeResponse:
        return await self._path.mutate("CaptureCharge", request, context)

    async def CancelCharge(
        self,
        request: charge_pb2.CancelChargeRequest,
        context: grpc.aio.ServicerContext[
            charge_pb2.CancelChargeRequest, charge_pb2.CancelChargeResponse
        ],
    ) -> charge_pb2.CancelChargeResponse:
        return await self._path.mutate("CancelCharge", request, context)


class RefundService(refund_pb2_grpc.RefundServiceServicer):
    def __init__(self, path: RequestPath) -> None:
        self._path = path

    async def CreateRefund(
        self,
        request: refund_pb2.CreateRefundRequest,
        context: grpc.aio.ServicerContext[
            refund_pb2.CreateRefundRequest, refund_pb2.CreateRefundResponse
        ],
    ) -> refund_pb2.CreateRefundResponse:
        return await self._path.mutate("CreateRefund", request, context)

    async def GetRefund(
        self,
        request: refund_pb2.GetRefundRequest,
        context: grpc.aio.ServicerContext[
            refund_pb2.GetRefundRequest, refund_pb2.GetRefundResponse
        ],
    ) -> refund_pb2.GetRefundResponse:
        return await self._path.read("GetRefund", request, context)


class DeliveryTrackerService(delivery_tracker_pb2_grpc.DeliveryTrackerServiceServicer):
    def __init__(self, path: RequestPath) -> None:
        self._path = path

    async def CreateDeliveryTracker(
        self,
        request: delivery_tracker_pb2.CreateDeliveryTrackerRequest,
        context: grpc.aio.ServicerContext[
            delivery_tracker_pb2.CreateDeliveryTrackerRequest,
            delivery_tracker_pb2.CreateDeliveryTrackerResponse,
        ],
    ) -> delivery_tracker_pb2.CreateDeliveryTrackerResponse:
        return await self._path.mutate("CreateDeliveryTracker", request, context)


class BuyerService(buyer_pb2_grpc.BuyerServiceServicer):
    """Buyers are not kept in the ledger (PII, tokens expire in 24 h): always read from Amazon."""

    def __init__(self, path: RequestPath) -> None:
        self._path = path

    async def GetBuyer(
        self,
        request: buyer_pb2.GetBuyerRequest,
        context: grpc.aio.ServicerContext[buyer_pb2.GetBuyerRequest, buyer_pb2.GetBuyerResponse],
    ) -> buyer_pb2.GetBuyerResponse:
        async def handler(
            req: buyer_pb2.GetBuyerRequest, deadline: float | None
        ) -> buyer_pb2.GetBuyerResponse:
            buyer = await self._path.payments.get_buyer(
                req.merchant, req.buyer_token, deadline=deadline
            )
            response = buyer_pb2.GetBuyerResponse(
                amazon_request_id=buyer.request_id or "",
                served_from=common_pb2.DATA_ORIGIN_AMAZON,
            )
            response.as_of.GetCurrentTime()
            json_to_message(buyer.raw, response.buyer)
            return response

        return await self._path.run("GetBuyer", request, context, handler=handler)


class ButtonService(button_pb2_grpc.ButtonServiceServicer):
    def __init__(self, path: RequestPath) -> None:
        self._path = path

    async def SignButtonPayload(
        self,
        request: button_pb2.SignButtonPayloadRequest,
        context: grpc.aio.ServicerContext[
            button_pb2.SignButtonPayloadRequest, button_pb2.SignButtonPayloadResponse
        ],
    ) -> button_pb2.SignButtonPayloadResponse:
        async def handler(
            req: button_pb2.SignButtonPayloadRequest, deadline: float | None
        ) -> button_pb2.SignButtonPayloadResponse:
            try:
                parsed = json.loads(req.payload)
            except (ValueError, RecursionError):
                parsed = None  # 5000 nested arrays exhaust the parser's stack, nothing else
            if not isinstance(parsed, dict):
                raise RpcFailure(
                    grpc.StatusCode.INVALID_ARGUMENT,
                    "payload must be a JSON object",
                    "VALIDATION_FAILED",
                    violations=[Violation("payload", "must be a JSON object")],
                )
            merchant = self._path.payments.merchants.get(req.merchant)
            signed = await merchant.client.sign_button_payload(req.payload)
            return button_pb2.SignButtonPayloadResponse(
                payload=signed.payload,
                signature=signed.signature,
                public_key_id=signed.public_key_id,
                algorithm=signed.algorithm.value,
            )

        return await self._path.run("SignButtonPayload", request, context, handler=handler)


class LedgerService(ledger_pb2_grpc.LedgerServiceServicer):
    def __init__(self, path: RequestPath) -> None:
        self._path = path
        self._repo = path.repository

    def _merchant(self, alias: str) -> str:
        return self._path.payments.merchants.get(alias).alias

    async def GetTransaction(
        self,
        request: ledger_pb2.GetTransactionRequest,
        context: grpc.aio.ServicerContext[
            ledger_pb2.GetTransactionRequest, ledger_pb2.GetTransactionResponse
        ],
    ) -> ledger_pb2.GetTransactionResponse:
        async def handler(
            req: ledger_pb2.GetTransactionRequest, deadline: float | None
        ) -> ledger_pb2.GetTransactionResponse:
            merchant = self._merchant(req.merchant)
            kind = KIND_NAME[req.kind]
            obj = await self._repo.get_object(merchant, kind, req.object_id)
            if obj is None:
                raise RpcFailure(
                    grpc.StatusCode.NOT_FOUND,
                    f"{kind} {req.object_id} is not in the ledger",
                    "NOT_IN_LEDGER",
                )
            events = await self._repo.object_events(merchant, kind, req.object_id)
            return ledger_pb2.GetTransactionResponse(
                transaction=transaction_of(obj), events=[event_of(e) for e in events]
            )

        return await self._path.run("GetTransaction", request, context, handler=handler)

    async def ListTransactions(
        self,
        request: ledger_pb2.ListTransactionsRequest,
        context: grpc.aio.ServicerContext[
            ledger_pb2.ListTransactionsRequest, ledger_pb2.ListTransactionsResponse
        ],
    ) -> ledger_pb2.ListTransactionsResponse:
        async def handler(
            req: ledger_pb2.ListTransactionsRequest, deadline: float | None
        ) -> ledger_pb2.ListTransactionsResponse:
            where = ObjectFilter(
                merchant=self._merchant(req.merchant),
                kind=KIND_NAME.get(req.kind),
                state=req.state or None,
                charge_permission_id=req.charge_permission_id or None,
                merchant_reference_id=req.merchant_reference_id or None,
                created_after=(
                    req.created_after.ToDatetime(tzinfo=UTC)
                    if req.HasField("created_after")
                    else None
                ),
                created_before=(
                    req.created_before.ToDatetime(tzinfo=UTC)
                    if req.HasField("created_before")
                    else None
                ),
            )
            page = await self._repo.list_objects(
                where,
                page_size=_TRANSACTIONS_PAGE.size(req.page_size),
                page_token=req.page_token,
            )
            return ledger_pb2.ListTransactionsResponse(
                transactions=[transaction_of(o) for o in page.items],
                next_page_token=page.next_page_token,
            )

        return await self._path.run("ListTransactions", request, context, handler=handler)

    async def ListEvents(
        self,
        request: ledger_pb2.ListEventsRequest,
        context: grpc.aio.ServicerContext[
            ledger_pb2.ListEventsRequest, ledger_pb2.ListEventsResponse
        ],
    ) -> ledger_pb2.ListEventsResponse:
        async def handler(
            req: ledger_pb2.ListEventsRequest, deadline: float | None
        ) -> ledger_pb2.ListEventsResponse:
            where = EventFilter(
                merchant=self._merchant(req.merchant),
                kind=EVENT_KIND_NAME.get(req.kind),
                object_id=req.object_id or None,
                charge_permission_id=req.charge_permission_id or None,
                source=SOURCE_NAME.get(req.source),
                recorded_after=(
                    req.occurred_after.ToDatetime(tzinfo=UTC)
                    if req.HasField("occurred_after")
                    else None
                ),
                recorded_before=(
                    req.occurred_before.ToDatetime(tzinfo=UTC)
                    if req.HasField("occurred_before")
                    else None
                ),
                after_event_id=req.after_event_id,
            )
            page = await self._repo.list_events(
                where,
                page_size=_EVENTS_PAGE.size(req.page_size),
                page_token=req.page_token,
                settle_s=_settle_s(deadline),
            )
            return ledger_pb2.ListEventsResponse(
                events=[event_of(e) for e in page.items], next_page_token=page.next_page_token
            )

        return await self._path.run("ListEvents", request, context, handler=handler)

    async def WatchEvents(
        self,
        request: ledger_pb2.WatchEventsRequest,
        context: grpc.aio.ServicerContext[
            ledger_pb2.WatchEventsRequest, ledger_pb2.WatchEventsResponse
        ],
    ) -> AsyncIterator[ledger_pb2.WatchEventsResponse]:
        async for message in self._path.stream(
            "WatchEvents", request, context, handler=self._watch
        ):
            yield message

    async def _watch(
        self, request: ledger_pb2.WatchEventsRequest
    ) -> AsyncGenerator[ledger_pb2.WatchEventsResponse, None]:
        """Replay the stable events after `after_event_id`, then stream what any replica commits.

        Events arrive in position order (migration 0008): per object that is commit order, and the
        stream never sends an event that sorts before one it has sent, so "after the last event
        received" is an exact resume point.
        """
        hub = self._path.hub
        if hub is None:
            raise RpcFailure(
                grpc.StatusCode.UNAVAILABLE, "event stream not running", "LEDGER_UNAVAILABLE"
            )
        where = EventFilter(
            merchant=self._merchant(request.merchant),
            kind=EVENT_KIND_NAME.get(request.kind),
            object_id=request.object_id or None,
            charge_permission_id=request.charge_permission_id or None,
        )
        try:
            subscription = hub.subscribe(lambda event: _matches(where, event))
        except StreamLimitReached:
            raise RpcFailure(
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                "this replica serves its maximum number of event streams; retry later",
                "TOO_MANY_STREAMS",
                retry_after_s=1.0,
            ) from None
        with subscription:
            # Subscribed first: whatever the hub offers from here on is queued, and the replay
            # below covers everything it offered before.
            if request.after_event_id > 0:
                cursor = await self._repo.event_position(where.merchant, request.after_event_id)
                async for event in self._events_after(where, cursor):
                    cursor = event.position
                    yield ledger_pb2.WatchEventsResponse(event=event_of(event))
            else:
                cursor = await self._repo.event_frontier()
            while True:
                live = await subscription.get()
                if hub.stopping:
                    raise RpcFailure(
                        grpc.StatusCode.UNAVAILABLE,
                        "server shutting down; resume from your last event_id",
                        "LEDGER_UNAVAILABLE",
                        retry_after_s=0.5,
                    )
                if subscription.overflowed:
                    raise RpcFailure(
                        grpc.StatusCode.RESOURCE_EXHAUSTED,
                        "stream fell behind; resume from your last event_id",
                        "STREAM_OVERFLOW",
                        retry_after_s=0.5,
                    )
                if live is None or live.position <= cursor:
                    continue
                cursor = live.position
                yield ledger_pb2.WatchEventsResponse(event=event_of(live))

    async def _events_after(self, where: EventFilter, after: Position) -> AsyncIterator[Event]:
        """Stable events after a position, page by page; the hub delivers the rest."""
        token = ""
        while True:
            page = await self._repo.list_events(
                where, page_size=500, page_token=token, after=after, settle_s=0.0
            )
            for event in page.items:
                yield event
            token = page.next_page_token
            if not token:
                return

    async def EraseBuyerData(
        self,
        request: ledger_pb2.EraseBuyerDataRequest,
        context: grpc.aio.ServicerContext[
            ledger_pb2.EraseBuyerDataRequest, ledger_pb2.EraseBuyerDataResponse
        ],
    ) -> ledger_pb2.EraseBuyerDataResponse:
        async def handler(
            req: ledger_pb2.EraseBuyerDataRequest, deadline: float | None
        ) -> ledger_pb2.EraseBuyerDataResponse:
            result = await self._path.erasure.erase(
                self._merchant(req.merchant),
                charge_permission_id=req.charge_permission_id or None,
                buyer_id=req.buyer_id or None,
                idempotency_key=scoped_idempotency_key(req.idempotency_key) or None,
                request_hash=_request_hash(req),
                reason_given=bool(req.reason),
            )
            response = ledger_pb2.EraseBuyerDataResponse(
                objects_erased=result.objects,
                events_erased=result.events,
                idempotent_replay=result.replayed,
            )
            response.erased_at.CopyFrom(_timestamp(result.erased_at))
            return response

        return await self._path.run("EraseBuyerData", request, context, handler=handler)


def _settle_s(deadline: float | None) -> float:
    """How long ListEvents may wait for events held back by running transactions: up to 1 s,
    within the caller's deadline."""
    if deadline is None:
        return 1.0
    return max(0.0, min(1.0, deadline - time.monotonic() - _DEADLINE_RESERVE_S))


def _matches(where: EventFilter, event: Event) -> bool:
    """The stream's filter, applied in memory to the hub's shared batch."""
    return (
        event.merchant == where.merchant
        and (where.kind is None or event.kind == where.kind)
        and (where.object_id is None or event.object_id == where.object_id)
        and (
            where.charge_permission_id is None
            or event.charge_permission_id == where.charge_permission_id
        )
    )


def build_servicers(path: RequestPath) -> dict[str, Any]:
    """Servicers by service name, for `build_server`."""
    from ._settlement import DisputeService, SettlementService  # they build on this module

    return {
        cls.__name__: cls(path)
        for cls in (
            CheckoutSessionService,
            ChargePermissionService,
            ChargeService,
            RefundService,
            DeliveryTrackerService,
            BuyerService,
            ButtonService,
            LedgerService,
            DisputeService,
            SettlementService,
        )
    }
