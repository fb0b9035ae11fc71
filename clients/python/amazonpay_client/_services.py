"""One object per gRPC service (settlements and disputes too); keyword arguments carry Amazon's field names in snake_case.

Nested messages may be passed as the generated message or as a dict of its fields
(`charge_amount={"amount": "10.00", "currency_code": "USD"}` or `price("10.00", "USD")`).
Every mutating call gets a fresh idempotency key unless you pass one; the key is reused by every
retry of that call. Pass your own (stored with your order) to make a retry after a crash of YOUR
process safe too.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Generic, Literal, TypedDict, TypeVar, Unpack, cast

import grpc
from google.protobuf import field_mask_pb2, timestamp_pb2
from google.protobuf.message import Message as _ProtoMessage

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
    dispute_pb2_grpc,
    ledger_pb2,
    ledger_pb2_grpc,
    refund_pb2,
    refund_pb2_grpc,
    settlement_pb2,
    settlement_pb2_grpc,
)

from ._errors import ValidationError, error_from_rpc
from ._retry import RetryEvent
from ._transport import Transport, new_key

__all__ = [
    "KINDS",
    "OUTCOMES",
    "STATUSES",
    "ButtonService",
    "BuyerService",
    "ChargePermissionService",
    "ChargeService",
    "CheckoutSessionService",
    "DeliveryTrackerService",
    "DisputeService",
    "Kind",
    "LedgerService",
    "Outcome",
    "RefundService",
    "SettlementService",
    "Source",
    "kind_enum",
    "kind_name",
    "outcome_enum",
    "outcome_name",
    "price",
]

Message = Any
"""A generated protobuf message (typed by the stubs' .pyi files)."""
MessageLike = Message | Mapping[str, Any]
"""A generated message or a dict of its fields."""
Source = Literal["auto", "ledger", "amazon"]
Kind = Literal[
    "checkout_session", "charge_permission", "charge", "refund", "dispute", "settlement_line"
]
EventSourceName = Literal["api", "poll", "ipn", "recovery", "settlement"]
Resp = TypeVar("Resp", bound=_ProtoMessage)
GetResp = TypeVar("GetResp", bound=_ProtoMessage)

_PACKAGE = "payments.amazonpay.v1"


def _names(enum: Any, prefix: str) -> Mapping[str, int]:
    """A proto enum by lower-case name without its prefix (`charge` for
    OBJECT_KIND_CHARGE), the unspecified value left out."""
    return {
        v.name.removeprefix(prefix).lower(): v.number for v in enum.DESCRIPTOR.values if v.number
    }


def _value(name: str | int | None, names: Mapping[str, int], what: str) -> int | None:
    """The value `names` gives `name` (any case, dashes for underscores: "charge-permission");
    an int passes as it is, None stays None."""
    if name is None or isinstance(name, int):
        return name
    normalized = name.strip().lower().replace("-", "_")
    if normalized not in names:
        raise ValueError(f"unknown {what} {name!r}; expected one of {', '.join(names)}")
    return names[normalized]


_SOURCES: Mapping[str, int] = _names(common_pb2.ReadSource, "READ_SOURCE_")
KINDS: Mapping[str, int] = _names(ledger_pb2.ObjectKind, "OBJECT_KIND_")
_KIND_NAMES: Mapping[int, str] = {v: k for k, v in KINDS.items()}
_EVENT_SOURCES: Mapping[str, int] = _names(ledger_pb2.EventSource, "EVENT_SOURCE_")

Outcome = Literal[
    "matched", "missing_in_ledger", "missing_at_amazon", "amount_mismatch", "currency_mismatch"
]
OUTCOMES: Mapping[str, int] = _names(settlement_pb2.MatchOutcome, "MATCH_OUTCOME_")
_OUTCOME_NAMES: Mapping[int, str] = {v: k for k, v in OUTCOMES.items()}
STATUSES: Mapping[str, int] = _names(settlement_pb2.SettlementStatus, "SETTLEMENT_STATUS_")


def outcome_enum(outcome: Outcome | str | int | None) -> int:
    """MatchOutcome value of "amount_mismatch", "missing-in-ledger", ... (0 for None)."""
    return _value(outcome, OUTCOMES, "outcome") or 0


def outcome_name(outcome: int) -> str:
    """ "amount_mismatch" for MATCH_OUTCOME_AMOUNT_MISMATCH; "" for unspecified."""
    return _OUTCOME_NAMES.get(outcome, "")


def _status(status: str | int | None) -> int:
    return _value(status, STATUSES, "status") or 0


def price(amount: str, currency_code: str) -> Message:
    """A `Price`; amounts are decimal strings ("14.00"), never floats."""
    if not isinstance(amount, str):
        raise TypeError("amount must be a decimal string such as '14.00', never a float")
    return common_pb2.Price(amount=amount, currency_code=currency_code)


def kind_enum(kind: str | int | None) -> int:
    """ObjectKind value of "charge", "charge-permission", ... (0 for None: any kind)."""
    return _value(kind, KINDS, "kind") or 0


def kind_name(kind: int) -> str:
    """ "charge" for OBJECT_KIND_CHARGE; "" for unspecified."""
    return _KIND_NAMES.get(kind, "")


def _source(source: Source | int | None) -> int | None:
    return _value(source, _SOURCES, "source")


def _event_source(source: EventSourceName | int | None) -> int | None:
    return _value(source, _EVENT_SOURCES, "event source")


def _timestamp(value: datetime | None) -> Message:
    if value is None:
        return None
    if value.tzinfo is None:
        raise ValueError("timestamps must be timezone-aware (e.g. datetime.now(UTC))")
    stamp = timestamp_pb2.Timestamp()
    stamp.FromDatetime(value.astimezone(UTC))
    return stamp


def _mask(paths: Sequence[str] | None) -> Message:
    return None if paths is None else field_mask_pb2.FieldMask(paths=list(paths))


def _request(cls: Any, fields: Mapping[str, Any]) -> Message:
    """Build a request from the fields that were given (None means "not set")."""
    try:
        return cls(**{k: v for k, v in fields.items() if v is not None})
    except (TypeError, ValueError) as exc:
        raise ValidationError(
            grpc.StatusCode.INVALID_ARGUMENT,
            f"cannot build {cls.DESCRIPTOR.name}: {exc}",
            reason="CLIENT_VALIDATION",
        ) from exc


class _ReadOptions(TypedDict, total=False):
    """Keyword arguments every read takes."""

    merchant: str | None
    timeout: float | None


class _WriteOptions(_ReadOptions, total=False):
    """Keyword arguments every mutating call takes."""

    idempotency_key: str | None


@dataclass(frozen=True)
class _Rpc(Generic[Resp]):
    """One RPC: its name, request and response messages, and whether it changes something."""

    name: str
    request: Any
    response: type[Resp]
    write: bool = False


def _rpc(response: type[Resp], *, write: bool = False) -> _Rpc[Resp]:
    """The RPC answering with `response`: `<Name>Response`, its request `<Name>Request` beside
    it in the generated module."""
    name = response.DESCRIPTOR.name.removesuffix("Response")
    request = getattr(sys.modules[response.__module__], f"{name}Request")
    return _Rpc(name, request, response, write=write)


def _fields(arguments: Mapping[str, Any]) -> dict[str, Any]:
    """A method's `locals()` as request fields: `self` dropped, the options merged in."""
    fields = {k: v for k, v in arguments.items() if k not in ("self", "options", "__class__")}
    fields.update(arguments.get("options") or {})
    return fields


async def _every(page: Callable[[str], Awaitable[Any]], field: str) -> AsyncIterator[Any]:
    """Every item of a paginated listing: `page(token)` answers one page whose `field` holds
    the items, following next_page_token."""
    token = ""
    while True:
        answer = await page(token)
        for item in getattr(answer, field):
            yield item
        token = answer.next_page_token
        if not token:
            return


class _Service:
    """One gRPC service of the client, named by its generated stub class."""

    _stub_class: Any
    _service: str = ""
    _stub: Any

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "_stub_class" in vars(cls):
            cls._service = cls._stub_class.__name__.removesuffix("Stub")

    def __init__(self, transport: Transport) -> None:
        self._transport = transport
        self._stub = self._stub_class(transport.channel)

    def _method(self, rpc: str) -> str:
        return f"/{_PACKAGE}.{self._service}/{rpc}"

    async def _call(self, rpc: _Rpc[Resp], fields: dict[str, Any]) -> Resp:
        timeout = fields.pop("timeout", None)
        fields["merchant"] = self._transport.merchant_for(fields.get("merchant"))
        if rpc.write and "idempotency_key" in rpc.request.DESCRIPTOR.fields_by_name:
            # One key per logical call, generated once here so every retry below re-sends it.
            fields["idempotency_key"] = fields.get("idempotency_key") or new_key()
        request = _request(rpc.request, fields)
        result = await self._transport.unary(
            self._method(rpc.name),
            getattr(self._stub, rpc.name),
            request,
            timeout=timeout,
            write=rpc.write,
        )
        return cast(Resp, result)


class _ReadsById(_Service, Generic[GetResp]):
    """A service whose objects are read by id from Amazon or the ledger."""

    _get: _Rpc[GetResp]
    _id_field: str

    async def get(
        self,
        object_id: str,
        /,
        *,
        source: Source | int | None = None,
        **options: Unpack[_ReadOptions],
    ) -> GetResp:
        """Get<Object> from Amazon or the ledger (see `source`)."""
        fields = {self._id_field: object_id, "source": _source(source), **options}
        return await self._call(self._get, fields)


class CheckoutSessionService(_ReadsById[checkout_session_pb2.GetCheckoutSessionResponse]):
    """Checkout Sessions: create, read, update, complete, finalize."""

    _get = _rpc(checkout_session_pb2.GetCheckoutSessionResponse)
    _id_field = "checkout_session_id"

    _stub_class = checkout_session_pb2_grpc.CheckoutSessionServiceStub

    async def create(
        self,
        *,
        web_checkout_details: MessageLike,
        store_id: str | None = None,
        scopes: Iterable[str] | None = None,
        delivery_specifications: MessageLike | None = None,
        payment_details: MessageLike | None = None,
        merchant_metadata: MessageLike | None = None,
        platform_id: str | None = None,
        provider_metadata: MessageLike | None = None,
        charge_permission_type: int | str | None = None,
        recurring_metadata: MessageLike | None = None,
        address_details: MessageLike | None = None,
        sandbox_simulation_code: str | None = None,
        **options: Unpack[_WriteOptions],
    ) -> checkout_session_pb2.CreateCheckoutSessionResponse:
        """CreateCheckoutSession; the response's session has the id to render the button with."""
        fields = {**_fields(locals()), "scopes": None if scopes is None else list(scopes)}
        return await self._call(_CREATE_CHECKOUT_SESSION, fields)

    async def update(
        self,
        checkout_session_id: str,
        *,
        web_checkout_details: MessageLike | None = None,
        payment_details: MessageLike | None = None,
        merchant_metadata: MessageLike | None = None,
        platform_id: str | None = None,
        provider_metadata: MessageLike | None = None,
        recurring_metadata: MessageLike | None = None,
        update_mask: Sequence[str] | None = None,
        **options: Unpack[_WriteOptions],
    ) -> checkout_session_pb2.UpdateCheckoutSessionResponse:
        """UpdateCheckoutSession after the buyer returned to checkoutReviewReturnUrl."""
        fields = {**_fields(locals()), "update_mask": _mask(update_mask)}
        return await self._call(_UPDATE_CHECKOUT_SESSION, fields)

    async def complete(
        self,
        checkout_session_id: str,
        *,
        charge_amount: MessageLike,
        total_order_amount: MessageLike | None = None,
        sandbox_simulation_code: str | None = None,
        **options: Unpack[_WriteOptions],
    ) -> checkout_session_pb2.CompleteCheckoutSessionResponse:
        """CompleteCheckoutSession after the buyer returned to checkoutResultReturnUrl."""
        return await self._call(_COMPLETE_CHECKOUT_SESSION, _fields(locals()))

    async def finalize(
        self,
        checkout_session_id: str,
        *,
        charge_amount: MessageLike,
        total_order_amount: MessageLike | None = None,
        shipping_address: MessageLike | None = None,
        billing_address: MessageLike | None = None,
        payment_intent: int | str | None = None,
        can_handle_pending_authorization: bool | None = None,
        supplementary_data: str | None = None,
        sandbox_simulation_code: str | None = None,
        **options: Unpack[_WriteOptions],
    ) -> checkout_session_pb2.FinalizeCheckoutSessionResponse:
        """FinalizeCheckoutSession (additional payment button flow)."""
        return await self._call(_FINALIZE_CHECKOUT_SESSION, _fields(locals()))


class ChargePermissionService(_ReadsById[charge_permission_pb2.GetChargePermissionResponse]):
    """Charge Permissions: read, update metadata, close."""

    _get = _rpc(charge_permission_pb2.GetChargePermissionResponse)
    _id_field = "charge_permission_id"

    _stub_class = charge_permission_pb2_grpc.ChargePermissionServiceStub

    async def update(
        self,
        charge_permission_id: str,
        *,
        merchant_metadata: MessageLike | None = None,
        recurring_metadata: MessageLike | None = None,
        update_mask: Sequence[str] | None = None,
        **options: Unpack[_WriteOptions],
    ) -> charge_permission_pb2.UpdateChargePermissionResponse:
        """UpdateChargePermission (merchant metadata, recurring metadata)."""
        fields = {**_fields(locals()), "update_mask": _mask(update_mask)}
        return await self._call(_UPDATE_CHARGE_PERMISSION, fields)

    async def close(
        self,
        charge_permission_id: str,
        *,
        closure_reason: str | None = None,
        cancel_pending_charges: bool | None = None,
        sandbox_simulation_code: str | None = None,
        **options: Unpack[_WriteOptions],
    ) -> charge_permission_pb2.CloseChargePermissionResponse:
        """CloseChargePermission: no further charges."""
        return await self._call(_CLOSE_CHARGE_PERMISSION, _fields(locals()))


class ChargeService(_ReadsById[charge_pb2.GetChargeResponse]):
    """Charges: authorize (and capture), read, capture, cancel."""

    _get = _rpc(charge_pb2.GetChargeResponse)
    _id_field = "charge_id"

    _stub_class = charge_pb2_grpc.ChargeServiceStub

    async def create(
        self,
        *,
        charge_permission_id: str,
        charge_amount: MessageLike,
        capture_now: bool | None = None,
        soft_descriptor: str | None = None,
        can_handle_pending_authorization: bool | None = None,
        merchant_metadata: MessageLike | None = None,
        provider_metadata: MessageLike | None = None,
        platform_id: str | None = None,
        charge_initiator: int | str | None = None,
        channel: str | None = None,
        sandbox_simulation_code: str | None = None,
        **options: Unpack[_WriteOptions],
    ) -> charge_pb2.CreateChargeResponse:
        """CreateCharge; a decline raises DeclinedError (reason SoftDeclined, HardDeclined, ...)."""
        return await self._call(_CREATE_CHARGE, _fields(locals()))

    async def capture(
        self,
        charge_id: str,
        *,
        capture_amount: MessageLike,
        soft_descriptor: str | None = None,
        sandbox_simulation_code: str | None = None,
        **options: Unpack[_WriteOptions],
    ) -> charge_pb2.CaptureChargeResponse:
        """CaptureCharge of an Authorized charge."""
        return await self._call(_CAPTURE_CHARGE, _fields(locals()))

    async def cancel(
        self,
        charge_id: str,
        *,
        cancellation_reason: str | None = None,
        **options: Unpack[_WriteOptions],
    ) -> charge_pb2.CancelChargeResponse:
        """CancelCharge of a charge not captured yet."""
        return await self._call(_CANCEL_CHARGE, _fields(locals()))


class RefundService(_ReadsById[refund_pb2.GetRefundResponse]):
    """Refunds of captured charges."""

    _get = _rpc(refund_pb2.GetRefundResponse)
    _id_field = "refund_id"

    _stub_class = refund_pb2_grpc.RefundServiceStub

    async def create(
        self,
        *,
        charge_id: str,
        refund_amount: MessageLike,
        soft_descriptor: str | None = None,
        sandbox_simulation_code: str | None = None,
        **options: Unpack[_WriteOptions],
    ) -> refund_pb2.CreateRefundResponse:
        """CreateRefund; Amazon settles refunds asynchronously (RefundInitiated first)."""
        return await self._call(_CREATE_REFUND, _fields(locals()))


class BuyerService(_ReadsById[buyer_pb2.GetBuyerResponse]):
    """Buyer details by buyer token (always from Amazon; buyers are not kept in the ledger)."""

    _get = _rpc(buyer_pb2.GetBuyerResponse)
    _id_field = "buyer_token"

    _stub_class = buyer_pb2_grpc.BuyerServiceStub


class DeliveryTrackerService(_Service):
    """Delivery trackers (shipment notifications to the buyer)."""

    _stub_class = delivery_tracker_pb2_grpc.DeliveryTrackerServiceStub

    async def create(
        self,
        *,
        delivery_details: Iterable[MessageLike],
        charge_permission_id: str | None = None,
        amazon_order_reference_id: str | None = None,
        sandbox_simulation_code: str | None = None,
        **options: Unpack[_WriteOptions],
    ) -> delivery_tracker_pb2.CreateDeliveryTrackerResponse:
        """CreateDeliveryTracker for a charge permission (or a legacy order reference)."""
        fields = {**_fields(locals()), "delivery_details": list(delivery_details)}
        return await self._call(_CREATE_DELIVERY_TRACKER, fields)


class ButtonService(_Service):
    """Signs Amazon Pay button payloads (the private key stays in the service)."""

    _stub_class = button_pb2_grpc.ButtonServiceStub

    async def sign_payload(
        self, payload: str, **options: Unpack[_ReadOptions]
    ) -> button_pb2.SignButtonPayloadResponse:
        """SignButtonPayload: `payload` is the button's JSON (createCheckoutSessionConfig)."""
        return await self._call(_SIGN_BUTTON_PAYLOAD, _fields(locals()))


class _TransactionQuery(_ReadOptions, total=False):
    """Filters of ListTransactions (all optional; `kind` as in `kind_enum`)."""

    kind: Kind | str | int | None
    state: str | None
    charge_permission_id: str | None
    merchant_reference_id: str | None
    created_after: datetime | None
    created_before: datetime | None
    page_size: int | None


class _EventQuery(_ReadOptions, total=False):
    """Filters of ListEvents (all optional; `kind` as in `kind_enum`)."""

    kind: Kind | str | int | None
    object_id: str | None
    charge_permission_id: str | None
    source: EventSourceName | int | None
    occurred_after: datetime | None
    occurred_before: datetime | None
    after_event_id: int | None
    page_size: int | None


class LedgerService(_Service):
    """The service's own record: transactions, their history, and the live change feed."""

    _stub_class = ledger_pb2_grpc.LedgerServiceStub

    async def get_transaction(
        self, kind: Kind | str | int, object_id: str, **options: Unpack[_ReadOptions]
    ) -> ledger_pb2.GetTransactionResponse:
        """GetTransaction: one object and its events, oldest first."""
        fields = {**_fields(locals()), "kind": kind_enum(kind)}
        return await self._call(_GET_TRANSACTION, fields)

    async def list_transactions(
        self, *, page_token: str | None = None, **query: Unpack[_TransactionQuery]
    ) -> ledger_pb2.ListTransactionsResponse:
        """ListTransactions: one page, newest first; see `iter_transactions` for all pages."""
        fields: dict[str, Any] = {**query, "page_token": page_token}
        fields["kind"] = kind_enum(query.get("kind"))
        fields["created_after"] = _timestamp(query.get("created_after"))
        fields["created_before"] = _timestamp(query.get("created_before"))
        return await self._call(_LIST_TRANSACTIONS, fields)

    async def iter_transactions(
        self, **query: Unpack[_TransactionQuery]
    ) -> AsyncIterator[ledger_pb2.Transaction]:
        """Every matching transaction, following next_page_token (each page has `timeout`)."""
        async for transaction in _every(
            lambda token: self.list_transactions(page_token=token, **query), "transactions"
        ):
            yield transaction

    async def list_events(
        self, *, page_token: str | None = None, **query: Unpack[_EventQuery]
    ) -> ledger_pb2.ListEventsResponse:
        """ListEvents: one page, oldest first; see `iter_events` for all pages."""
        fields: dict[str, Any] = {**query, "page_token": page_token}
        fields["kind"] = kind_enum(query.get("kind"))
        fields["source"] = _event_source(query.get("source"))
        fields["occurred_after"] = _timestamp(query.get("occurred_after"))
        fields["occurred_before"] = _timestamp(query.get("occurred_before"))
        return await self._call(_LIST_EVENTS, fields)

    async def iter_events(
        self, **query: Unpack[_EventQuery]
    ) -> AsyncIterator[ledger_pb2.LedgerEvent]:
        """Every matching event, following next_page_token."""
        async for event in _every(
            lambda token: self.list_events(page_token=token, **query), "events"
        ):
            yield event

    async def watch_events(
        self,
        *,
        kind: Kind | str | int | None = None,
        object_id: str | None = None,
        charge_permission_id: str | None = None,
        after_event_id: int = 0,
        resume: bool = True,
        merchant: str | None = None,
        timeout: float | None = None,
    ) -> AsyncIterator[ledger_pb2.LedgerEvent]:
        """WatchEvents as an endless async iterator of LedgerEvent (break or cancel to stop).

        With `resume`, an UNAVAILABLE or RESOURCE_EXHAUSTED (with RetryInfo) stream is reopened
        with after_event_id = the last event received, which the service documents as lossless:
        events come in commit-safe position order, not event_id order, so it is the LAST id, not
        the largest. Start from a known after_event_id (e.g. the last one you processed) to also
        be lossless across a disconnect before the first event. `timeout` bounds each stream;
        None = open.
        """
        method = self._method("WatchEvents")
        base = {
            "merchant": self._transport.merchant_for(merchant),
            "kind": kind_enum(kind),
            "object_id": object_id,
            "charge_permission_id": charge_permission_id,
        }
        last = after_event_id
        failures = 0
        while True:
            request = _request(ledger_pb2.WatchEventsRequest, {**base, "after_event_id": last})
            call = self._stub.WatchEvents(
                request, timeout=timeout, metadata=self._transport.metadata()
            )
            try:
                async for message in call:
                    failures = 0
                    last = message.event.event_id
                    yield message.event
                return
            except grpc.aio.AioRpcError as exc:
                error = error_from_rpc(exc, method)
                failures += 1
                if not resume or not self._transport.retry.should_retry(error, failures):
                    raise error from exc
                delay = self._transport.retry.delay(error, failures, self._transport.rng)
            finally:
                call.cancel()
            await self._transport.notify_retry(
                RetryEvent(
                    method=method, attempt=failures, error=error, delay=delay, idempotency_key=""
                )
            )
            await asyncio.sleep(delay)

    async def erase_buyer_data(
        self,
        *,
        charge_permission_id: str | None = None,
        buyer_id: str | None = None,
        reason: str | None = None,
        **options: Unpack[_WriteOptions],
    ) -> ledger_pb2.EraseBuyerDataResponse:
        """EraseBuyerData of one charge permission or one buyer (irreversible)."""
        return await self._call(_ERASE_BUYER_DATA, _fields(locals()))


class DisputeService(_ReadsById[dispute_pb2.GetDisputeResponse]):
    """Disputes (chargebacks): by id from Amazon or the ledger, and the ledger's by charge or
    state."""

    _get = _rpc(dispute_pb2.GetDisputeResponse)
    _id_field = "dispute_id"

    _stub_class = dispute_pb2_grpc.DisputeServiceStub

    async def list(
        self,
        *,
        charge_id: str | None = None,
        state: str | None = None,
        page_size: int | None = None,
        page_token: str | None = None,
        **options: Unpack[_ReadOptions],
    ) -> dispute_pb2.ListDisputesResponse:
        """ListDisputes: one page, newest first."""
        return await self._call(_LIST_DISPUTES, _fields(locals()))

    async def iter(
        self,
        *,
        charge_id: str | None = None,
        state: str | None = None,
        **options: Unpack[_ReadOptions],
    ) -> AsyncIterator[dispute_pb2.Dispute]:
        """Every matching dispute, following next_page_token."""
        async for dispute in _every(
            lambda token: self.list(charge_id=charge_id, state=state, page_token=token, **options),
            "disputes",
        ):
            yield dispute


class _Period(_ReadOptions, total=False):
    """Time filters (timezone-aware datetimes) and the page size of a listing."""

    created_after: datetime | None
    created_before: datetime | None
    page_size: int | None


class SettlementService(_Service):
    """What Amazon paid out: settlements with their lines and match results, disbursements,
    unmatched lines, and reconciliation of a period on request."""

    _stub_class = settlement_pb2_grpc.SettlementServiceStub

    async def list(
        self,
        *,
        status: str | int | None = None,
        ended_after: datetime | None = None,
        ended_before: datetime | None = None,
        page_size: int | None = None,
        page_token: str | None = None,
        **options: Unpack[_ReadOptions],
    ) -> settlement_pb2.ListSettlementsResponse:
        """ListSettlements: one page, newest period first."""
        fields = {
            **_fields(locals()),
            "status": _status(status),
            "ended_after": _timestamp(ended_after),
            "ended_before": _timestamp(ended_before),
        }
        return await self._call(_LIST_SETTLEMENTS, fields)

    async def get(
        self,
        settlement_id: str | None = None,
        *,
        report_id: str | None = None,
        outcome: Outcome | str | int | None = None,
        page_size: int | None = None,
        page_token: str | None = None,
        **options: Unpack[_ReadOptions],
    ) -> settlement_pb2.GetSettlementResponse:
        """GetSettlement by settlement id (or `report_id`): counts, totals, a page of lines."""
        fields = {**_fields(locals()), "outcome": outcome_enum(outcome)}
        return await self._call(_GET_SETTLEMENT, fields)

    async def iter_lines(
        self,
        settlement_id: str,
        *,
        outcome: Outcome | str | int | None = None,
        **options: Unpack[_ReadOptions],
    ) -> AsyncIterator[settlement_pb2.SettlementLine]:
        """Every line of a settlement (optionally of one outcome), in line order."""
        async for line in _every(
            lambda token: self.get(settlement_id, outcome=outcome, page_token=token, **options),
            "lines",
        ):
            yield line

    async def list_disbursements(
        self,
        *,
        settlement_id: str | None = None,
        page_token: str | None = None,
        **query: Unpack[_Period],
    ) -> settlement_pb2.ListDisbursementsResponse:
        """ListDisbursements: one page, newest first."""
        return await self._call(_LIST_DISBURSEMENTS, self._query(locals(), query))

    async def list_unmatched(
        self,
        *,
        outcome: Outcome | str | int | None = None,
        page_token: str | None = None,
        **query: Unpack[_Period],
    ) -> settlement_pb2.ListUnmatchedLinesResponse:
        """ListUnmatchedLines: one page of lines that did not match (and misses), newest first."""
        fields = {**self._query(locals(), query), "outcome": outcome_enum(outcome)}
        return await self._call(_LIST_UNMATCHED_LINES, fields)

    async def iter_unmatched(
        self, *, outcome: Outcome | str | int | None = None, **query: Unpack[_Period]
    ) -> AsyncIterator[settlement_pb2.SettlementLine]:
        """Every unmatched line and miss, following next_page_token."""
        async for line in _every(
            lambda token: self.list_unmatched(outcome=outcome, page_token=token, **query), "lines"
        ):
            yield line

    async def reconcile(
        self,
        *,
        period_start: datetime | None = None,
        period_end: datetime | None = None,
        settlement_id: str | None = None,
        **options: Unpack[_ReadOptions],
    ) -> settlement_pb2.ReconcileSettlementPeriodResponse:
        """ReconcileSettlementPeriod: fetch, reconcile (again) and summarize a period (or one
        settlement). Safe to repeat: nothing is recorded twice."""
        fields = {
            **_fields(locals()),
            "period_start": _timestamp(period_start),
            "period_end": _timestamp(period_end),
        }
        return await self._call(_RECONCILE_SETTLEMENT_PERIOD, fields)

    @staticmethod
    def _query(arguments: Mapping[str, Any], query: Mapping[str, Any]) -> dict[str, Any]:
        fields = {k: v for k, v in _fields(arguments).items() if k != "query"}
        fields.update(query)
        fields["created_after"] = _timestamp(query.get("created_after"))
        fields["created_before"] = _timestamp(query.get("created_before"))
        return fields


_CREATE_CHECKOUT_SESSION = _rpc(checkout_session_pb2.CreateCheckoutSessionResponse, write=True)
_UPDATE_CHECKOUT_SESSION = _rpc(checkout_session_pb2.UpdateCheckoutSessionResponse, write=True)
_COMPLETE_CHECKOUT_SESSION = _rpc(checkout_session_pb2.CompleteCheckoutSessionResponse, write=True)
_FINALIZE_CHECKOUT_SESSION = _rpc(checkout_session_pb2.FinalizeCheckoutSessionResponse, write=True)
_UPDATE_CHARGE_PERMISSION = _rpc(charge_permission_pb2.UpdateChargePermissionResponse, write=True)
_CLOSE_CHARGE_PERMISSION = _rpc(charge_permission_pb2.CloseChargePermissionResponse, write=True)
_CREATE_CHARGE = _rpc(charge_pb2.CreateChargeResponse, write=True)
_CAPTURE_CHARGE = _rpc(charge_pb2.CaptureChargeResponse, write=True)
_CANCEL_CHARGE = _rpc(charge_pb2.CancelChargeResponse, write=True)
_CREATE_REFUND = _rpc(refund_pb2.CreateRefundResponse, write=True)
_CREATE_DELIVERY_TRACKER = _rpc(delivery_tracker_pb2.CreateDeliveryTrackerResponse, write=True)
_ERASE_BUYER_DATA = _rpc(ledger_pb2.EraseBuyerDataResponse, write=True)
_SIGN_BUTTON_PAYLOAD = _rpc(button_pb2.SignButtonPayloadResponse)
_GET_TRANSACTION = _rpc(ledger_pb2.GetTransactionResponse)
_LIST_TRANSACTIONS = _rpc(ledger_pb2.ListTransactionsResponse)
_LIST_EVENTS = _rpc(ledger_pb2.ListEventsResponse)
_LIST_DISPUTES = _rpc(dispute_pb2.ListDisputesResponse)
_LIST_SETTLEMENTS = _rpc(settlement_pb2.ListSettlementsResponse)
_GET_SETTLEMENT = _rpc(settlement_pb2.GetSettlementResponse)
_LIST_DISBURSEMENTS = _rpc(settlement_pb2.ListDisbursementsResponse)
_LIST_UNMATCHED_LINES = _rpc(settlement_pb2.ListUnmatchedLinesResponse)
_RECONCILE_SETTLEMENT_PERIOD = _rpc(settlement_pb2.ReconcileSettlementPeriodResponse)
