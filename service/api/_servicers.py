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
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Mapping, Sequence
from contextlib import aclosing, asynccontextmanager, nullcontext
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal, NamedTuple, NoReturn, TypedDict, TypeVar, cast

import grpc
from google.protobuf import descriptor_pool
from google.protobuf.message import Message
from google.protobuf.message_factory import GetMessageClass
from google.protobuf.timestamp_pb2 import Timestamp

from payments.amazonpay.v1 import (
    button_pb2,
    button_pb2_grpc,
    buyer_pb2_grpc,
    charge_pb2_grpc,
    charge_permission_pb2_grpc,
    checkout_session_pb2_grpc,
    common_pb2,
    delivery_tracker_pb2_grpc,
    dispute_pb2,
    dispute_pb2_grpc,
    ledger_pb2,
    ledger_pb2_grpc,
    refund_pb2_grpc,
    settlement_pb2,
    settlement_pb2_grpc,
)
from service.core import (
    KINDS,
    AmazonCall,
    BuyerDataErasure,
    Payments,
    Settlements,
    SettlementSettings,
)
from service.ledger import (
    EVENT_SOURCES,
    Event,
    EventFilter,
    EventHub,
    ObjectFilter,
    Page,
    Position,
    Repository,
    StoredObject,
    StoredReport,
    StreamLimitReached,
)
from service.telemetry import Metrics

from ._access import RpcRecord, rpc_record
from ._convert import ENVELOPE_FIELDS, json_to_message, message_to_json, timestamp_of
from ._errors import RpcFailure, to_status
from ._registry import PROTO_PACKAGE, discover_services
from ._scope import allowed_merchant, hide_buyer_pii, pii_allowed, scoped_idempotency_key
from ._settlement import (
    OUTCOME_NAME,
    STATUS_NAME,
    disbursement_of,
    dispute_of,
    line_of,
    reconciled,
    settlement_of,
)
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

    def of(self, request: Any) -> _Paging:
        """The page a listing request asks for: its size (clamped) and its page token."""
        return _Paging(page_size=self.size(request.page_size), page_token=request.page_token)


class _Paging(TypedDict):
    page_size: int
    page_token: str


def _listing(response: Callable[..., Resp], page: Page[Any], **field: Callable[[Any], Any]) -> Resp:
    """A listing's response: the page's items, each converted, in its one repeated `field`
    (`events=event_of`), and the page's next token."""
    ((name, convert),) = field.items()
    return response(
        **{name: [convert(item) for item in page.items]}, next_page_token=page.next_page_token
    )


_TRANSACTIONS_PAGE = PageLimits(default=50, maximum=500)
_EVENTS_PAGE = PageLimits(default=100, maximum=1000)


@dataclass(frozen=True)
class Mutation:
    """An RPC that changes an object at Amazon, exactly once (`Payments.execute`)."""

    path_field: str | None = None
    """The request field naming the object in Amazon's path."""
    masked: bool = False
    """The request's `update_mask` limits what is sent."""


MUTATIONS: Mapping[str, Mutation] = {
    "CreateCheckoutSession": Mutation(),
    "UpdateCheckoutSession": Mutation(path_field="checkout_session_id", masked=True),
    "CompleteCheckoutSession": Mutation(path_field="checkout_session_id"),
    "FinalizeCheckoutSession": Mutation(path_field="checkout_session_id"),
    "UpdateChargePermission": Mutation(path_field="charge_permission_id", masked=True),
    "CloseChargePermission": Mutation(path_field="charge_permission_id"),
    "CreateCharge": Mutation(),
    "CaptureCharge": Mutation(path_field="charge_id"),
    "CancelCharge": Mutation(path_field="charge_id"),
    "CreateRefund": Mutation(),
    "CreateDeliveryTracker": Mutation(),
}


@dataclass(frozen=True)
class Read:
    """An object the ledger keeps, read from it or from Amazon per `source` (`Payments.read`)."""

    kind: str
    id_field: str


READS: Mapping[str, Read] = {
    "GetCheckoutSession": Read(kind="checkout_session", id_field="checkout_session_id"),
    "GetChargePermission": Read(kind="charge_permission", id_field="charge_permission_id"),
    "GetCharge": Read(kind="charge", id_field="charge_id"),
    "GetRefund": Read(kind="refund", id_field="refund_id"),
    "GetDispute": Read(kind="dispute", id_field="dispute_id"),
}


@dataclass(frozen=True)
class Fetch:
    """A read the ledger does not keep, always answered by Amazon (`Payments.fetch`)."""

    id_field: str


FETCHES: Mapping[str, Fetch] = {
    "GetBuyer": Fetch(id_field="buyer_token"),  # PII behind a 24-hour token: never stored
}


class Answer(NamedTuple):
    """How a row's RPC answers, as its proto says: the response type, and the response's field
    holding Amazon's object (its one field of a message type of this package)."""

    response: type[Message]
    result_field: str

    def message(self, amazon_object: Mapping[str, Any], **fields: Any) -> Message:
        """The response: `fields` set, and Amazon's object converted into its object field."""
        response = self.response(**fields)
        json_to_message(amazon_object, getattr(response, self.result_field))
        return response


def _answers() -> Mapping[str, Answer]:
    pool = descriptor_pool.Default()
    answers: dict[str, Answer] = {}
    for service in discover_services():
        for name in service.method_names:
            if name in MUTATIONS or name in READS or name in FETCHES:
                output = pool.FindMethodByName(f"{service.full_name}.{name}").output_type
                objects = [
                    f.name
                    for f in output.fields
                    if f.message_type is not None
                    and f.message_type.full_name.startswith(f"{PROTO_PACKAGE}.")
                ]
                if len(objects) != 1:
                    raise TypeError(f"{output.name} must hold exactly one object, has {objects}")
                answers[name] = Answer(response=GetMessageClass(output), result_field=objects[0])
    return answers


ANSWERS: Mapping[str, Answer] = _answers()

ADDRESSED: Mapping[str, tuple[str, ...]] = {
    **{name: (row.id_field,) for name, row in READS.items()},
    **{name: (row.id_field,) for name, row in FETCHES.items()},
    **{name: (row.path_field,) for name, row in MUTATIONS.items() if row.path_field},
}
"""The id each row's RPC addresses: required (`validate`), like `REQUIRED`'s fields."""

_SOURCES: Mapping[int, Literal["auto", "ledger", "amazon"]] = {
    common_pb2.READ_SOURCE_UNSPECIFIED: "auto",
    common_pb2.READ_SOURCE_AUTO: "auto",
    common_pb2.READ_SOURCE_LEDGER: "ledger",
    common_pb2.READ_SOURCE_AMAZON: "amazon",
}

KIND_ENUM: Mapping[str, int] = {
    kind: ledger_pb2.ObjectKind.Value(f"OBJECT_KIND_{kind.upper()}") for kind in KINDS
}
"""Core's kinds as `ObjectKind` values (the proto names each kind as core's table does)."""
KIND_NAME: Mapping[int, str] = {v: k for k, v in KIND_ENUM.items()}
EVENT_KIND_ENUM: Mapping[str, int] = {
    **KIND_ENUM,
    "settlement_line": ledger_pb2.OBJECT_KIND_SETTLEMENT_LINE,
}
"""Kinds of events: the object kinds and settlement findings (which have no Transaction)."""
EVENT_KIND_NAME: Mapping[int, str] = {v: k for k, v in EVENT_KIND_ENUM.items()}
SOURCE_ENUM: Mapping[str, int] = {
    source: ledger_pb2.EventSource.Value(f"EVENT_SOURCE_{source.upper()}")
    for source in EVENT_SOURCES
}
"""The ledger's event sources as `EventSource` values."""
SOURCE_NAME: Mapping[int, str] = {v: k for k, v in SOURCE_ENUM.items()}


def _deadline(context: grpc.aio.ServicerContext[Any, Any]) -> float | None:
    remaining = context.time_remaining()
    if remaining is None:
        return None
    return time.monotonic() + max(0.0, remaining - _DEADLINE_RESERVE_S)


def _price(data: Any) -> common_pb2.Price | None:
    if isinstance(data, Mapping) and data.get("amount") is not None:
        return common_pb2.Price(
            amount=str(data["amount"]), currency_code=str(data.get("currencyCode") or "")
        )
    return None


_TOTALS: Mapping[str, str] = {
    "captured_amount": "captureAmount",
    "refunded_amount": "refundedAmount",
}
"""Transaction field -> the running total Amazon keeps in the object's JSON that fills it."""


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
    for total, json_key in _TOTALS.items():
        price = _price(obj.snapshot.get(json_key))
        if price is not None:
            getattr(tx, total).CopyFrom(price)
    tx.created_at.CopyFrom(timestamp_of(obj.created_at))
    if obj.buyer_data_erased_at is not None:
        tx.buyer_data_erased_at.CopyFrom(timestamp_of(obj.buyer_data_erased_at))
    tx.updated_at.CopyFrom(timestamp_of(obj.updated_at))
    if obj.amazon_expires_at is not None:
        tx.amazon_expiration_timestamp.CopyFrom(timestamp_of(obj.amazon_expires_at))
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
    message.occurred_at.CopyFrom(timestamp_of(event.recorded_at))
    message.recorded_at.CopyFrom(timestamp_of(event.recorded_at))
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


@dataclass(eq=False)
class RequestPath:
    """The path every RPC takes: authorize the merchant, validate, run, hide PII the caller may
    not see, map any failure to a rich status, and log one line."""

    payments: Payments
    repository: Repository
    hub: EventHub | None = None
    metrics: Metrics | None = None
    settlements: Settlements | None = None
    """Reconciliation on request (the worker's, so both use the same settings)."""
    erasure: BuyerDataErasure = field(init=False)

    def __post_init__(self) -> None:
        self.erasure = BuyerDataErasure(self.repository)

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
        with (
            rpc_record(method, context.invocation_metadata())
            if unary
            else nullcontext(RpcRecord(method)) as record
        ):
            record.request(request)
            try:
                # Authorization first: a caller learns nothing about another merchant's requests.
                allowed_merchant(self.payments.merchants, getattr(request, "merchant"))  # noqa: B009
                violations = validate(method, request, addressed=ADDRESSED.get(method, ()))
                if violations:
                    raise RpcFailure.invalid(
                        f"invalid {method} request: "
                        + "; ".join(f"{v.field} {v.description}" for v in violations[:5]),
                        *violations,
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

    async def mutate(self, method: str, req: Message, *, deadline: float | None) -> Message:
        """A `MUTATIONS` row's work: the call to Amazon, exactly once."""
        spec = MUTATIONS[method]
        merchant: str = getattr(req, "merchant")  # noqa: B009
        simulation = getattr(req, "sandbox_simulation_code", "")
        if simulation and not self.payments.merchants.get(merchant).is_sandbox:
            raise RpcFailure.invalid(
                "sandbox_simulation_code is accepted only for sandbox merchants",
                Violation("sandbox_simulation_code", "must be empty for a live merchant"),
            )
        skip = set(ENVELOPE_FIELDS)
        if spec.path_field:
            skip.add(spec.path_field)
        only = None
        mask = getattr(req, "update_mask", None)
        if spec.masked and mask is not None and mask.paths:
            only = {p.split(".")[0] for p in mask.paths}
        call = AmazonCall(
            operation=method,
            body=message_to_json(req, skip=skip, only=only),
            path_id=getattr(req, spec.path_field) if spec.path_field else None,
            simulation_code=simulation or None,
        )
        outcome = await self.payments.execute(
            merchant,
            call,
            idempotency_key=scoped_idempotency_key(getattr(req, "idempotency_key", "")) or None,
            request_hash=_request_hash(req),
            deadline=deadline,
        )
        response = ANSWERS[method].message(
            outcome.body, amazon_request_id=outcome.request_id, idempotent_replay=outcome.replayed
        )
        if "authorization_pending" in response.DESCRIPTOR.fields_by_name:
            setattr(response, "authorization_pending", outcome.status == 202)  # noqa: B010
        return response

    async def read(self, method: str, req: Message, *, deadline: float | None) -> Message:
        """A `READS` row's work: the ledger or Amazon, per the request's `source`."""
        spec = READS[method]
        result = await self.payments.read(
            getattr(req, "merchant"),  # noqa: B009
            spec.kind,
            getattr(req, spec.id_field),
            source=_SOURCES.get(getattr(req, "source"), "auto"),  # noqa: B009
            deadline=deadline,
        )
        response = ANSWERS[method].message(
            result.body,
            amazon_request_id=result.request_id,
            served_from=(
                common_pb2.DATA_ORIGIN_AMAZON
                if result.origin == "amazon"
                else common_pb2.DATA_ORIGIN_LEDGER
            ),
        )
        getattr(response, "as_of").CopyFrom(timestamp_of(result.as_of))  # noqa: B009
        return response

    async def fetch(self, method: str, req: Message, *, deadline: float | None) -> Message:
        """A `FETCHES` row's work: a read from Amazon the ledger does not keep."""
        result = await self.payments.fetch(
            getattr(req, "merchant"),  # noqa: B009
            method,
            getattr(req, FETCHES[method].id_field),
            deadline=deadline,
        )
        response = ANSWERS[method].message(
            result.raw,
            amazon_request_id=result.request_id or "",
            served_from=common_pb2.DATA_ORIGIN_AMAZON,
        )
        getattr(response, "as_of").GetCurrentTime()  # noqa: B009
        return response


def _request_hash(request: Message) -> bytes:
    return hashlib.sha256(request.SerializeToString(deterministic=True)).digest()


async def _abort(context: grpc.aio.ServicerContext[Any, Any], status: grpc.Status) -> NoReturn:
    await context.abort_with_status(status)  # type: ignore[attr-defined]  # grpc-stubs lags grpc.aio
    raise AssertionError("unreachable")  # pragma: no cover


Servicer = TypeVar("Servicer", bound="_Servicer")


class _Servicer:
    """Base of the servicers, each named after its proto service and defining every one of its
    RPCs: a row of the tables above is one line, `Rpc = _row("Rpc")`; the rest are `_unary`
    methods. Checked when the class is made, so no RPC falls through to the generated base
    (which answers UNIMPLEMENTED) and no row line names another RPC."""

    def __init__(self, path: RequestPath) -> None:
        self._path = path
        self._repo = path.repository

    def _merchant(self, alias: str) -> str:
        """The configured alias of a request's `merchant` (what the ledger files it under)."""
        return self._path.payments.merchants.get(alias).alias

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        service = descriptor_pool.Default().FindServiceByName(f"{PROTO_PACKAGE}.{cls.__name__}")
        for rpc in service.methods:
            method = vars(cls).get(rpc.name)
            if getattr(method, "__name__", None) != rpc.name:
                raise TypeError(f"{cls.__name__} does not define {rpc.name}")


def _row(name: str) -> Callable[..., Awaitable[Any]]:
    """The method of an RPC that is a `MUTATIONS`, `READS` or `FETCHES` row (typed Any: the
    response type is the proto's, `ANSWERS`)."""
    tables = (
        (MUTATIONS, RequestPath.mutate),
        (READS, RequestPath.read),
        (FETCHES, RequestPath.fetch),
    )
    work = next((work for table, work in tables if name in table), None)
    if work is None:
        raise KeyError(f"{name} is not a MUTATIONS, READS or FETCHES row")

    async def row(self: _Servicer, req: Message, deadline: float | None) -> Message:
        return await work(self._path, name, req, deadline=deadline)

    row.__name__ = row.__qualname__ = name
    return _unary(row)


def _unary(
    work: Callable[[Servicer, Req, float | None], Awaitable[Resp]],
) -> Callable[[Servicer, Req, grpc.aio.ServicerContext[Req, Resp]], Awaitable[Resp]]:
    """An RPC method whose work is `work(self, request, deadline)`, run on the request path."""
    name = work.__name__

    async def rpc(
        self: Servicer, request: Req, context: grpc.aio.ServicerContext[Req, Resp]
    ) -> Resp:
        return await self._path.run(
            name, request, context, handler=lambda req, deadline: work(self, req, deadline)
        )

    rpc.__name__, rpc.__qualname__, rpc.__doc__ = name, work.__qualname__, work.__doc__
    return rpc


class CheckoutSessionService(_Servicer, checkout_session_pb2_grpc.CheckoutSessionServiceServicer):
    CreateCheckoutSession = _row("CreateCheckoutSession")
    GetCheckoutSession = _row("GetCheckoutSession")
    UpdateCheckoutSession = _row("UpdateCheckoutSession")
    CompleteCheckoutSession = _row("CompleteCheckoutSession")
    FinalizeCheckoutSession = _row("FinalizeCheckoutSession")


class ChargePermissionService(
    _Servicer, charge_permission_pb2_grpc.ChargePermissionServiceServicer
):
    GetChargePermission = _row("GetChargePermission")
    UpdateChargePermission = _row("UpdateChargePermission")
    CloseChargePermission = _row("CloseChargePermission")


class ChargeService(_Servicer, charge_pb2_grpc.ChargeServiceServicer):
    CreateCharge = _row("CreateCharge")
    GetCharge = _row("GetCharge")
    CaptureCharge = _row("CaptureCharge")
    CancelCharge = _row("CancelCharge")


class RefundService(_Servicer, refund_pb2_grpc.RefundServiceServicer):
    CreateRefund = _row("CreateRefund")
    GetRefund = _row("GetRefund")


class DeliveryTrackerService(_Servicer, delivery_tracker_pb2_grpc.DeliveryTrackerServiceServicer):
    CreateDeliveryTracker = _row("CreateDeliveryTracker")


class BuyerService(_Servicer, buyer_pb2_grpc.BuyerServiceServicer):
    GetBuyer = _row("GetBuyer")


class ButtonService(_Servicer, button_pb2_grpc.ButtonServiceServicer):
    @_unary
    async def SignButtonPayload(
        self, req: button_pb2.SignButtonPayloadRequest, deadline: float | None
    ) -> button_pb2.SignButtonPayloadResponse:
        try:
            parsed = json.loads(req.payload)
        except (ValueError, RecursionError):
            parsed = None  # 5000 nested arrays exhaust the parser's stack, nothing else
        if not isinstance(parsed, dict):
            raise RpcFailure.invalid(
                "payload must be a JSON object", Violation("payload", "must be a JSON object")
            )
        merchant = self._path.payments.merchants.get(req.merchant)
        signed = await merchant.client.sign_button_payload(req.payload)
        return button_pb2.SignButtonPayloadResponse(
            payload=signed.payload,
            signature=signed.signature,
            public_key_id=signed.public_key_id,
            algorithm=signed.algorithm.value,
        )


class _Scope(TypedDict):
    """What every listing of the ledger is filtered on first (`ledger.proto`)."""

    merchant: str
    kind: str | None
    charge_permission_id: str | None


class LedgerService(_Servicer, ledger_pb2_grpc.LedgerServiceServicer):
    def _scope(
        self,
        req: (
            ledger_pb2.ListTransactionsRequest
            | ledger_pb2.ListEventsRequest
            | ledger_pb2.WatchEventsRequest
        ),
        kinds: Mapping[int, str] = KIND_NAME,
    ) -> _Scope:
        """The request's scope; events name their kind from `kinds` (`EVENT_KIND_NAME`)."""
        return _Scope(
            merchant=self._merchant(req.merchant),
            kind=kinds.get(req.kind),
            charge_permission_id=req.charge_permission_id or None,
        )

    @_unary
    async def GetTransaction(
        self, req: ledger_pb2.GetTransactionRequest, deadline: float | None
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

    @_unary
    async def ListTransactions(
        self, req: ledger_pb2.ListTransactionsRequest, deadline: float | None
    ) -> ledger_pb2.ListTransactionsResponse:
        where = ObjectFilter(
            **self._scope(req),
            state=req.state or None,
            merchant_reference_id=req.merchant_reference_id or None,
            created_after=_time(req, "created_after"),
            created_before=_time(req, "created_before"),
        )
        page = await self._repo.list_objects(where, **_TRANSACTIONS_PAGE.of(req))
        return _listing(ledger_pb2.ListTransactionsResponse, page, transactions=transaction_of)

    @_unary
    async def ListEvents(
        self, req: ledger_pb2.ListEventsRequest, deadline: float | None
    ) -> ledger_pb2.ListEventsResponse:
        where = EventFilter(
            **self._scope(req, kinds=EVENT_KIND_NAME),
            object_id=req.object_id or None,
            source=SOURCE_NAME.get(req.source),
            recorded_after=_time(req, "occurred_after"),
            recorded_before=_time(req, "occurred_before"),
            after_event_id=req.after_event_id,
        )
        page = await self._repo.list_events(
            where,
            **_EVENTS_PAGE.of(req),
            settle_s=_settle_s(deadline),
        )
        return _listing(ledger_pb2.ListEventsResponse, page, events=event_of)

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
            **self._scope(request, kinds=EVENT_KIND_NAME), object_id=request.object_id or None
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

    @_unary
    async def EraseBuyerData(
        self, req: ledger_pb2.EraseBuyerDataRequest, deadline: float | None
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
        response.erased_at.CopyFrom(timestamp_of(result.erased_at))
        return response


def _time(request: Message, name: str) -> datetime | None:
    """A request's optional Timestamp field as an aware datetime (None when not set)."""
    if not request.HasField(name):
        return None
    stamp: Timestamp = getattr(request, name)
    return stamp.ToDatetime(tzinfo=UTC)


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


_SETTLEMENTS_PAGE = PageLimits(default=50, maximum=500)
_LINES_PAGE = PageLimits(default=100, maximum=1000)


class DisputeService(_Servicer, dispute_pb2_grpc.DisputeServiceServicer):
    """Disputes: from Amazon or the ledger by id (like every Get*), and the ledger's by charge or
    state."""

    GetDispute = _row("GetDispute")

    @_unary
    async def ListDisputes(
        self, req: dispute_pb2.ListDisputesRequest, deadline: float | None
    ) -> dispute_pb2.ListDisputesResponse:
        page = await self._repo.list_disputes(
            self._merchant(req.merchant),
            charge_id=req.charge_id or None,
            state=req.state or None,
            **_SETTLEMENTS_PAGE.of(req),
        )
        return _listing(dispute_pb2.ListDisputesResponse, page, disputes=dispute_of)


class SettlementService(_Servicer, settlement_pb2_grpc.SettlementServiceServicer):
    """Settlements and their lines from the ledger; reconciliation of a period on request."""

    def _settlements(self) -> Settlements:
        if self._path.settlements is None:
            payments = self._path.payments
            self._path.settlements = Settlements(
                payments.merchants,
                self._repo,
                SettlementSettings(),
                owner=payments.instance_id,
            )
        return self._path.settlements

    async def _disbursements(
        self, merchant: str, settlement_id: str
    ) -> list[settlement_pb2.Disbursement]:
        paid = await self._repo.list_disbursements(
            merchant,
            settlement_id=settlement_id,
            after_time=None,
            before_time=None,
            page_size=_SETTLEMENTS_PAGE.maximum,
        )
        return [disbursement_of(d) for d in paid.items]

    async def _summaries(
        self, merchant: str, reports: Sequence[StoredReport]
    ) -> list[settlement_pb2.Settlement]:
        counts = await self._repo.settlement_counts(merchant, reports)
        return [settlement_of(r, counts[r.report_id]) for r in reports]

    @_unary
    async def ListSettlements(
        self, req: settlement_pb2.ListSettlementsRequest, deadline: float | None
    ) -> settlement_pb2.ListSettlementsResponse:
        merchant = self._merchant(req.merchant)
        page = await self._repo.list_reports(
            merchant,
            status=STATUS_NAME.get(req.status),
            ended_after=_time(req, "ended_after"),
            ended_before=_time(req, "ended_before"),
            **_SETTLEMENTS_PAGE.of(req),
        )
        return settlement_pb2.ListSettlementsResponse(
            settlements=await self._summaries(merchant, page.items),
            next_page_token=page.next_page_token,
        )

    @_unary
    async def GetSettlement(
        self, req: settlement_pb2.GetSettlementRequest, deadline: float | None
    ) -> settlement_pb2.GetSettlementResponse:
        merchant = self._merchant(req.merchant)
        report = await self._repo.get_report(
            merchant,
            settlement_id=req.settlement_id or None,
            report_id=req.report_id or None,
        )
        if report is None:
            raise _not_in_ledger(req.settlement_id or req.report_id)
        [summary] = await self._summaries(merchant, [report])
        response = settlement_pb2.GetSettlementResponse(settlement=summary)
        if report.settlement_id:
            page = await self._repo.settlement_lines(
                merchant,
                report.settlement_id,
                outcome=OUTCOME_NAME.get(req.outcome),
                **_LINES_PAGE.of(req),
            )
            response.lines.extend(line_of(r) for r in page.items)
            response.next_page_token = page.next_page_token
            response.disbursements.extend(await self._disbursements(merchant, report.settlement_id))
        return response

    @_unary
    async def ListDisbursements(
        self, req: settlement_pb2.ListDisbursementsRequest, deadline: float | None
    ) -> settlement_pb2.ListDisbursementsResponse:
        page = await self._repo.list_disbursements(
            self._merchant(req.merchant),
            settlement_id=req.settlement_id or None,
            after_time=_time(req, "created_after"),
            before_time=_time(req, "created_before"),
            **_SETTLEMENTS_PAGE.of(req),
        )
        return _listing(
            settlement_pb2.ListDisbursementsResponse, page, disbursements=disbursement_of
        )

    @_unary
    async def ListUnmatchedLines(
        self, req: settlement_pb2.ListUnmatchedLinesRequest, deadline: float | None
    ) -> settlement_pb2.ListUnmatchedLinesResponse:
        page = await self._repo.unmatched_lines(
            self._merchant(req.merchant),
            outcome=OUTCOME_NAME.get(req.outcome),
            posted_after=_time(req, "created_after"),
            posted_before=_time(req, "created_before"),
            **_LINES_PAGE.of(req),
        )
        return _listing(settlement_pb2.ListUnmatchedLinesResponse, page, lines=line_of)

    @_unary
    async def ReconcileSettlementPeriod(
        self, req: settlement_pb2.ReconcileSettlementPeriodRequest, deadline: float | None
    ) -> settlement_pb2.ReconcileSettlementPeriodResponse:
        merchant = self._merchant(req.merchant)
        work = self._settlements().reconcile_period(
            merchant,
            start=_time(req, "period_start"),
            end=_time(req, "period_end"),
            settlement_id=req.settlement_id or None,
        )
        async with asyncio.timeout(None if deadline is None else deadline - time.monotonic()):
            summary = await work
        if req.settlement_id and not summary.reports:
            raise _not_in_ledger(req.settlement_id)
        counts = await self._repo.settlement_counts(merchant, summary.reports)
        response = reconciled(summary, counts)
        for report in summary.reports:
            if report.settlement_id:
                response.disbursements.extend(
                    await self._disbursements(merchant, report.settlement_id)
                )
        return response


def _not_in_ledger(settlement: str) -> RpcFailure:
    return RpcFailure(
        grpc.StatusCode.NOT_FOUND, f"settlement {settlement} is not in the ledger", "NOT_IN_LEDGER"
    )


SERVICERS: tuple[type[_Servicer], ...] = (
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


def build_servicers(path: RequestPath) -> dict[str, Any]:
    """Servicers by service name, for `build_server`."""
    return {cls.__name__: cls(path) for cls in SERVICERS}
