"""The exactly-once path of a call that changes something at Amazon.

1. Record the operation `(merchant, operation, caller key, request hash)` as pending.
   Same key + same request: replay the stored answer (or re-drive if still pending).
   Same key + different request: `OperationConflict`.
2. Call Amazon with a key derived from (merchant, operation, caller key), so every attempt,
   replica and re-drive sends the same key and Amazon replays rather than charging twice.
3. In one transaction store the answer, upsert the object and append its event.
4. A process that dies between 2 and 3 leaves the operation pending; `redrive_orphans` (at start-up
   and from the reconciler) repeats step 2 with the stored call and key, then does step 3.

The call itself is stored as data (`AmazonCall`), never as a closure, so any replica can re-drive it.
No gRPC and no SQL in here: this module speaks to the Amazon client and the ledger repository.
"""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import hashlib
import logging
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from functools import partial
from typing import Any, Literal, NamedTuple, TypeVar

from opentelemetry import trace

from service.amazonpay import (
    ENDPOINTS,
    AmazonPayClient,
    AmazonPayDeadlineExceeded,
    AmazonPayError,
    AmazonPayRequestError,
    ApiObject,
    Endpoint,
)
from service.ledger import Event, ObjectRecord, Operation, Repository, StoredObject
from service.telemetry import tracing_enabled

from ._guard import CircuitOpen, Overloaded
from ._merchants import Merchant, MerchantRegistry
from ._records import KINDS, record_of

__all__ = [
    "NOT_REPLAYED",
    "QUARANTINED",
    "SPECS",
    "AmazonCall",
    "ObjectNotFound",
    "Outcome",
    "Payments",
    "ReadResult",
    "StoredFailure",
    "amazon_idempotency_key",
]

_log = logging.getLogger("service.core.operations")
_tracer = trace.get_tracer(__name__)

# Ledger writes after Amazon said yes must not be lost to an impatient caller: they run shielded,
# with their own bound, even when the caller's deadline has passed.
_COMMIT_TIMEOUT_S = 10.0
OWED_READ_ATTEMPTS = 20
"""Failed reads of an owed object before it is given up: with `owed_read_backoff_s`, about three
days (Amazon keeps objects 30 days; one it answers 404 for that long is not coming back)."""
_LEASE_MARGIN_S = 30.0
QUARANTINED = "OPERATION_QUARANTINED"
"""`reasonCode` stored for an operation set aside because its request cannot be sent."""
T = TypeVar("T")


def owed_read_backoff_s(attempts: int) -> float:
    """1, 2, 4 ... minutes after each failed owed read, at most 6 hours."""
    return float(min(60 * 2 ** (attempts - 1), 6 * 3600))


def amazon_idempotency_key(merchant: str, operation: str, caller_key: str) -> str:
    """32 characters of [A-Za-z0-9_-], the same for the same (merchant, operation, caller key)."""
    digest = hashlib.sha256(f"{merchant}\x00{operation}\x00{caller_key}".encode()).digest()
    return base64.urlsafe_b64encode(digest).decode().rstrip("=")[:32]


@dataclass(frozen=True)
class AmazonCall:
    """Everything needed to repeat one Amazon call: stored in `operations.request`."""

    operation: str
    body: Mapping[str, Any] = field(default_factory=dict)
    path_id: str | None = None
    simulation_code: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "operation": self.operation,
            "body": dict(self.body),
            "pathId": self.path_id,
            "simulationCode": self.simulation_code,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> AmazonCall:
        return cls(
            operation=data["operation"],
            body=data.get("body") or {},
            path_id=data.get("pathId"),
            simulation_code=data.get("simulationCode"),
        )


@dataclass(frozen=True)
class Spec:
    """What core adds to an endpoint that changes something: the ledger kind it records."""

    operation: str
    """Name of the row in `ENDPOINTS` (also the operation's name in the ledger)."""
    kind: str | None
    """Ledger kind of the object Amazon answers with (None: nothing to record)."""

    @property
    def endpoint(self) -> Endpoint:
        return ENDPOINTS[self.operation]

    @property
    def amazon_key(self) -> bool:
        """Whether the call carries the derived idempotency key (every POST)."""
        return self.endpoint.takes_idempotency_key


SPECS: Mapping[str, Spec] = {
    s.operation: s
    for s in (
        Spec("CreateCheckoutSession", "checkout_session"),
        Spec("UpdateCheckoutSession", "checkout_session"),
        Spec("CompleteCheckoutSession", "checkout_session"),
        Spec("FinalizeCheckoutSession", "checkout_session"),
        Spec("UpdateChargePermission", "charge_permission"),
        Spec("CloseChargePermission", "charge_permission"),
        Spec("CreateCharge", "charge"),
        Spec("CaptureCharge", "charge"),
        Spec("CancelCharge", "charge"),
        Spec("CreateRefund", "refund"),
        Spec("CreateDeliveryTracker", None),
    )
}

GETTERS: Mapping[str, str] = {kind.name: kind.getter for kind in KINDS.values()}
"""Ledger kind -> the `ENDPOINTS` row that reads one object of it (from `KINDS`)."""


def _path_id(call: AmazonCall) -> str:
    if not call.path_id:
        raise ValueError(f"{call.operation} needs an object id")
    return call.path_id


def _send(
    client: AmazonPayClient, call: AmazonCall, *, amazon_key: str | None, deadline: float | None
) -> Awaitable[ApiObject]:
    endpoint = ENDPOINTS[call.operation]
    return client.invoke(
        endpoint,
        path_params={name: _path_id(call) for name in endpoint.path_params},
        body=call.body,
        idempotency_key=amazon_key if endpoint.takes_idempotency_key else None,
        simulation_code=call.simulation_code if endpoint.takes_simulation_code else None,
        deadline=deadline,
        typed=False,  # the ledger stores Amazon's JSON as it came
    )


def _get(
    client: AmazonPayClient, kind: str, object_id: str, *, deadline: float | None
) -> Awaitable[ApiObject]:
    endpoint = ENDPOINTS[GETTERS[kind]]
    [param] = endpoint.path_params
    return client.invoke(endpoint, path_params={param: object_id}, deadline=deadline)


# After these operations Amazon has created or changed related objects: read them so the ledger
# holds the charge permission and charge a completed checkout produced.
class FollowUp(NamedTuple):
    """A related object to read after an operation: its kind, and the answer's field naming it."""

    kind: str
    id_field: str


_CHECKOUT_RESULTS = (
    FollowUp(kind="charge_permission", id_field="chargePermissionId"),
    FollowUp(kind="charge", id_field="chargeId"),
)
_FOLLOW_UPS: Mapping[str, tuple[FollowUp, ...]] = {
    "CompleteCheckoutSession": _CHECKOUT_RESULTS,
    "FinalizeCheckoutSession": _CHECKOUT_RESULTS,
}


class NotReplayed(NamedTuple):
    """How a repeat of an operation Amazon does not replay is settled: by reading the object."""

    kind: str
    """Ledger kind of the object the operation changes."""
    refusals: frozenset[str]
    """The `reasonCode`s a repeat gets once Amazon applied the first call."""


NOT_REPLAYED: Mapping[str, NotReplayed] = {
    spec.operation: NotReplayed(kind=spec.kind, refusals=spec.endpoint.refusals_once_applied)
    for spec in SPECS.values()
    if spec.kind is not None and not spec.endpoint.replayed_by_key
}
"""Operations Amazon does not replay by idempotency key (read from `ENDPOINTS`)."""


class ObjectNotFound(LookupError):
    """Neither Amazon nor the ledger knows the object."""


@dataclass(frozen=True)
class ReadResult:
    body: Mapping[str, Any]
    origin: Literal["amazon", "ledger"]
    as_of: datetime
    request_id: str = ""


class StoredFailure(AmazonPayError):
    """Amazon's definitive refusal of this idempotency key, replayed from the ledger."""


@dataclass(frozen=True)
class Outcome:
    """Amazon's answer as stored: `{"status", "requestId", "body"}`."""

    response: Mapping[str, Any]
    replayed: bool
    events: Sequence[Event] = ()

    @property
    def body(self) -> Mapping[str, Any]:
        body: Mapping[str, Any] = self.response.get("body") or {}
        return body

    @property
    def status(self) -> int:
        return int(self.response.get("status") or 200)

    @property
    def request_id(self) -> str:
        return str(self.response.get("requestId") or "")


def _response_of(obj: ApiObject) -> dict[str, Any]:
    return {"status": obj.http_status, "requestId": obj.request_id, "body": dict(obj.raw)}


def _error_of(exc: AmazonPayError) -> dict[str, Any]:
    return {
        "httpStatus": exc.http_status,
        "reasonCode": exc.reason_code,
        "message": exc.message,
        "requestId": exc.request_id,
        "operation": exc.operation,
    }


def _is_definitive(exc: AmazonPayError) -> bool:
    """Amazon refused this request for good: the same key will always get this answer.

    Every 4xx (413 too) but 401/403 (our credentials; fixing them makes a retry succeed) and the
    transient 408/425/429; never a failure without an answer (the work may have been done).
    """
    status = exc.http_status
    return (
        status is not None
        and 400 <= status < 500
        and status not in _TRANSIENT_4XX
        and not exc.retryable
        and not isinstance(exc, CircuitOpen | AmazonPayDeadlineExceeded)
    )


_TRANSIENT_4XX = frozenset({401, 403, 408, 425, 429})


def _deadline_left(deadline: float | None) -> float | None:
    return None if deadline is None else max(0.0, deadline - time.monotonic())


class Payments:
    """Runs operations exactly once and reads objects; shared by the gRPC API and the workers."""

    def __init__(
        self,
        merchants: MerchantRegistry,
        repository: Repository,
        *,
        instance_id: str,
        on_quarantine: Callable[[str], None] | None = None,
    ) -> None:
        self.merchants = merchants
        self.repository = repository
        self.instance_id = instance_id
        self._on_quarantine = on_quarantine

    def records(
        self,
        spec_kind: str | None,
        merchant: str,
        body: Mapping[str, Any],
        *,
        request_id: str | None = None,
    ) -> list[ObjectRecord]:
        """What to record of Amazon's answer to our call with `x-amz-pay-request-id` `request_id`."""
        if spec_kind is None:
            return []
        record = record_of(spec_kind, body, merchant, amazon_request_id=request_id or None)
        return [] if record is None else [record]

    async def execute(
        self,
        merchant_alias: str,
        call: AmazonCall,
        *,
        idempotency_key: str | None,
        request_hash: bytes,
        deadline: float | None,
    ) -> Outcome:
        with _span(
            f"payments.{call.operation}", merchant_alias, call.operation, call.path_id
        ) as span:
            merchant = self.merchants.get(merchant_alias)
            span.set_attribute("amazonpay.merchant", merchant.alias)
            if call.simulation_code and not merchant.is_sandbox:
                # Amazon's client refuses it too, but only after the operation was recorded: a
                # pending row that every start-up would re-drive and fail on.
                raise AmazonPayRequestError(
                    "sandbox_simulation_code is accepted only for sandbox merchants",
                    operation=call.operation,
                )
            # Refused here, a call leaves no operation behind to re-drive.
            merchant.breaker.check()
            async with merchant.admission:
                outcome = await self._execute(
                    merchant,
                    call,
                    idempotency_key=idempotency_key,
                    request_hash=request_hash,
                    deadline=deadline,
                )
            spec = SPECS[call.operation]
            if spec.kind is not None:
                result_id = outcome.body.get(KINDS[spec.kind].id_field)
                if isinstance(result_id, str):
                    span.set_attribute("amazonpay.object_id", result_id)
            span.set_attribute("amazonpay.replayed", outcome.replayed)
            return outcome

    async def _execute(
        self,
        merchant: Merchant,
        call: AmazonCall,
        *,
        idempotency_key: str | None,
        request_hash: bytes,
        deadline: float | None,
    ) -> Outcome:
        spec = SPECS[call.operation]
        if not idempotency_key:
            # The caller did not make the call repeatable: a POST still needs a key at Amazon,
            # a fresh one (each such call is new).
            fresh = uuid.uuid4().hex if spec.amazon_key else None
            obj = await self._invoke(merchant, call, amazon_key=fresh, deadline=deadline)
            response = _response_of(obj)
            records = self.records(
                spec.kind, merchant.alias, response["body"], request_id=obj.request_id
            )
            events = await _shielded(
                self.repository.record(records, "api", timeout=_COMMIT_TIMEOUT_S)
            )
            return Outcome(response, replayed=False, events=events)

        left = _deadline_left(deadline)
        op, created = await self.repository.begin_operation(
            merchant=merchant.alias,
            operation=call.operation,
            idempotency_key=idempotency_key,
            request_hash=request_hash,
            amazon_idempotency_key=amazon_idempotency_key(
                merchant.alias, call.operation, idempotency_key
            ),
            request=call.to_json(),
            lease_owner=self.instance_id,
            lease_s=(left if left is not None else 60.0) + _LEASE_MARGIN_S,
            timeout=left,
        )
        if not created:
            if op.status == "succeeded":
                assert op.response is not None
                if op.operation in _FOLLOW_UPS:
                    await _shielded(
                        self._follow_up(
                            merchant, op.operation, op.response.get("body") or {}, only_missing=True
                        )
                    )
                return Outcome(op.response, replayed=True)
            if op.status == "failed":
                raise _replayed_failure(op)
            _log.info(
                "re-driving pending operation",
                extra={"operation": op.operation, "merchant": op.merchant},
            )
        return await self._drive(merchant, op, source="api", deadline=deadline)

    async def _drive(
        self, merchant: Merchant, op: Operation, *, source: str, deadline: float | None
    ) -> Outcome:
        try:
            spec = SPECS[op.operation]
            call = AmazonCall.from_json(op.request)
            key = op.amazon_idempotency_key if spec.amazon_key else None
            obj = await self._invoke(merchant, call, amazon_key=key, deadline=deadline)
        except AmazonPayError as exc:
            if _is_definitive(exc):
                await _shielded(
                    self.repository.fail_operation(
                        op, error=_error_of(exc), timeout=_COMMIT_TIMEOUT_S
                    )
                )
            elif isinstance(exc, AmazonPayRequestError) and not merchant.client.closed:
                await self._quarantine(op, exc)
            raise
        except (OSError, TimeoutError):
            raise
        except Exception as exc:
            # Not an answer from Amazon but this stored request failing the same way every
            # time: left pending, it would fail every start-up and reconciler pass.
            await self._quarantine(op, exc)
            raise
        response = _response_of(obj)
        records = self.records(
            spec.kind, merchant.alias, response["body"], request_id=obj.request_id
        )
        done, events = await _shielded(
            self.repository.complete_operation(
                op, response=response, records=records, source=source, timeout=_COMMIT_TIMEOUT_S
            )
        )
        if done.status == "failed":
            raise _replayed_failure(done)
        assert done.response is not None
        await _shielded(self._follow_up(merchant, op.operation, done.response.get("body") or {}))
        return Outcome(done.response, replayed=done.response != response, events=events)

    async def _quarantine(self, op: Operation, exc: Exception) -> None:
        """Set aside an operation whose stored request cannot be sent (refused locally, or a
        bug): failed with an internal reason, so its idempotency key replays that failure."""
        error = {
            "httpStatus": None,
            "reasonCode": QUARANTINED,
            "message": "the service could not send this request to Amazon Pay; it was set aside",
            "requestId": None,
            "operation": op.operation,
            "internal": type(exc).__name__,
        }
        await _shielded(self.repository.fail_operation(op, error=error, timeout=_COMMIT_TIMEOUT_S))
        _log.error(
            "operation quarantined: its stored request cannot be sent to Amazon Pay",
            extra={
                "operation": op.operation,
                "merchant": op.merchant,
                "error": type(exc).__name__,
                "attempts": op.attempts,
            },
        )
        if self._on_quarantine is not None:
            self._on_quarantine(op.operation)

    async def _invoke(
        self,
        merchant: Merchant,
        call: AmazonCall,
        *,
        amazon_key: str | None,
        deadline: float | None,
    ) -> ApiObject:
        """Call Amazon. A call in `NOT_REPLAYED` repeated after Amazon applied it (an HTTP retry,
        a re-drive after a crash, a second caller) is refused as a state error: if the object
        shows the call's effect, the call succeeded and the object is the answer."""
        try:
            return await merchant.call(
                lambda: _send(merchant.client, call, amazon_key=amazon_key, deadline=deadline)
            )
        except AmazonPayError as exc:
            settled = await self._settle_refusal(merchant, call, exc, deadline=deadline)
            if settled is None:
                raise
            return settled

    async def _settle_refusal(
        self, merchant: Merchant, call: AmazonCall, exc: AmazonPayError, *, deadline: float | None
    ) -> ApiObject | None:
        """The object if it shows that `call` was applied; None if it does not (the refusal
        stands). A checkout session found Canceled is the caller's failure with Amazon's
        reason."""
        rule = NOT_REPLAYED.get(call.operation)
        path_id = call.path_id
        if rule is None or exc.reason_code not in rule.refusals or not path_id:
            return None
        kind = rule.kind
        try:
            current = await merchant.call(
                lambda: _get(merchant.client, kind, path_id, deadline=deadline)
            )
        except AmazonPayError:
            return None
        state = getattr(current, "state", None)
        if call.operation == "CloseChargePermission":
            return current if state == "Closed" else None
        if call.operation == "CancelCharge":
            return current if state == "Canceled" else None
        if call.operation in ("CompleteCheckoutSession", "FinalizeCheckoutSession"):
            if state == "Canceled":
                raise _canceled_failure(current.raw, exc)
            if state != "Completed":
                return None
            proven, pending = await self._completed_with(
                merchant, current.raw, call.body, deadline=deadline
            )
            if not proven:
                return None
            _log.info(
                "a repeated call found its work done",
                extra={"operation": call.operation, "merchant": merchant.alias},
            )
            # Amazon's first answer was 202 while the authorization is pending: say so again.
            return dataclasses.replace(current, http_status=202) if pending else current
        return current if _holds(call.body, current.raw) else None

    async def _completed_with(
        self,
        merchant: Merchant,
        session: Mapping[str, Any],
        body: Mapping[str, Any],
        *,
        deadline: float | None,
    ) -> tuple[bool, bool]:
        """(proven, authorization pending). Proven: the Completed session was completed for the
        amount `body` asks, checked against every witness at hand (the session's own
        paymentDetails, its charge, the amount the ledger last recorded for the session; failing
        all, its charge permission's limit); with none, unproven."""
        requested = body.get("chargeAmount")
        if not isinstance(requested, Mapping):
            return False, False
        witnesses: list[Any] = []
        pending = False
        details = session.get("paymentDetails")
        if isinstance(details, Mapping) and details.get("chargeAmount") is not None:
            witnesses.append(details.get("chargeAmount"))
        charge_id = session.get("chargeId")
        if isinstance(charge_id, str) and charge_id:
            try:
                charge = await merchant.call(
                    partial(_get, merchant.client, "charge", charge_id, deadline=deadline)
                )
                witnesses.append(charge.raw.get("chargeAmount"))
                pending = getattr(charge, "state", None) == "AuthorizationInitiated"
            except AmazonPayError:
                pass
        session_id = session.get("checkoutSessionId")
        if isinstance(session_id, str):
            try:
                stored = await self.repository.get_object(
                    merchant.alias, "checkout_session", session_id, timeout=_COMMIT_TIMEOUT_S
                )
            except Exception as exc:
                # The ledger is one witness among others: the refusal is settled without it.
                _log.warning(
                    "could not read the ledger's checkout session",
                    extra={"error": type(exc).__name__},
                )
                stored = None
            # The row's amount keeps the last chargeAmount seen (the sparse Completed answer
            # nulls the snapshot's paymentDetails, not the column).
            if stored is not None and stored.amount is not None:
                witnesses.append({"amount": stored.amount, "currencyCode": stored.currency_code})
        permission_id = session.get("chargePermissionId")
        if not witnesses and isinstance(permission_id, str) and permission_id:
            # Last resort (a Confirm checkout the ledger never saw): a OneTime permission's
            # limit is the chargeAmount unless totalOrderAmount or allowOvercharge raised it.
            try:
                permission = await merchant.call(
                    partial(
                        _get, merchant.client, "charge_permission", permission_id, deadline=deadline
                    )
                )
                limits = permission.raw.get("limits")
                if isinstance(limits, Mapping) and limits.get("amountLimit") is not None:
                    witnesses.append(limits.get("amountLimit"))
            except AmazonPayError:
                pass
        return bool(witnesses) and all(_holds(requested, w) for w in witnesses), pending

    async def _follow_up(
        self,
        merchant: Merchant,
        operation: str,
        body: Mapping[str, Any],
        *,
        only_missing: bool = False,
    ) -> None:
        """Best effort, with its own time bound (it runs shielded: an impatient caller must not
        cut it off). Whatever fails here, the reconciler reads the missing objects later."""
        deadline = time.monotonic() + _COMMIT_TIMEOUT_S
        for kind, id_field in _FOLLOW_UPS.get(operation, ()):
            object_id = body.get(id_field)
            if not isinstance(object_id, str) or not object_id:
                continue
            try:
                if only_missing and await self.repository.get_object(
                    merchant.alias, kind, object_id, timeout=_COMMIT_TIMEOUT_S
                ):
                    continue
                obj = await merchant.call(
                    partial(_get, merchant.client, kind, object_id, deadline=deadline)
                )
                await self.repository.record(
                    self.records(kind, merchant.alias, obj.raw, request_id=obj.request_id),
                    "api",
                    timeout=_COMMIT_TIMEOUT_S,
                )
            except Exception as exc:
                _log.warning(
                    "could not read related object",
                    extra={"kind": kind, "error": type(exc).__name__},
                )

    async def read(
        self,
        merchant_alias: str,
        kind: str,
        object_id: str,
        *,
        source: Literal["auto", "ledger", "amazon"],
        deadline: float | None,
        record_source: str = "api",
    ) -> ReadResult:
        """`auto`: final objects from the ledger, others from Amazon; the ledger answers when
        Amazon has deleted the object (404 after 30 days) or cannot be reached."""
        with _span(
            f"payments.read.{kind}",
            merchant_alias,
            f"Get/{kind}",
            object_id,
            extra={"amazonpay.object_kind": kind, "amazonpay.read_source": source},
        ) as span:
            merchant = self.merchants.get(merchant_alias)
            stored = None
            if source != "amazon":
                stored = await self.repository.get_object(
                    merchant.alias, kind, object_id, timeout=_deadline_left(deadline)
                )
                if stored is not None and (source == "ledger" or stored.is_final):
                    return _from_ledger(stored, span)
                if source == "ledger":
                    raise ObjectNotFound(f"{kind} {object_id} is not in the ledger")
            try:
                async with merchant.admission:
                    obj = await merchant.call(
                        lambda: _get(merchant.client, kind, object_id, deadline=deadline)
                    )
            except AmazonPayError as exc:
                if source == "auto" and (exc.http_status == 404 or exc.retryable):
                    stored = stored or await self.repository.get_object(
                        merchant.alias, kind, object_id, timeout=_COMMIT_TIMEOUT_S
                    )
                    if stored is not None:
                        return _from_ledger(stored, span)
                raise
            events = await _shielded(
                self.repository.record(
                    self.records(kind, merchant.alias, obj.raw, request_id=obj.request_id),
                    record_source,
                    timeout=_COMMIT_TIMEOUT_S,
                )
            )
            if kind == "refund" and any(e.state in KINDS["refund"].final_states for e in events):
                # Whoever observes a refund settle (a caller's read, an IPN, a poll) refreshes
                # its charge, whose refundedAmount changed; the charge itself is final and not
                # polled.
                await _shielded(self._refresh_charge(merchant, obj.raw, record_source))
            span.set_attribute("amazonpay.served_from", "amazon")
            return ReadResult(
                body=obj.raw,
                origin="amazon",
                as_of=datetime.now(UTC),
                request_id=obj.request_id or "",
            )

    async def fetch(
        self, merchant_alias: str, operation: str, object_id: str, *, deadline: float | None
    ) -> ApiObject:
        """A read the ledger does not keep (`operation` is an `ENDPOINTS` GET with one path
        parameter, e.g. GetBuyer), through the same breaker and admission control as every
        Amazon call."""
        (parameter,) = ENDPOINTS[operation].path_params
        merchant = self.merchants.get(merchant_alias)
        async with merchant.admission:
            return await merchant.call(
                lambda: merchant.client.invoke(
                    operation, path_params={parameter: object_id}, deadline=deadline
                )
            )

    async def _refresh_charge(
        self, merchant: Merchant, refund: Mapping[str, Any], source: str
    ) -> None:
        charge_id = refund.get("chargeId")
        if not isinstance(charge_id, str):
            return
        try:
            obj = await merchant.call(
                partial(_get, merchant.client, "charge", charge_id, deadline=time.monotonic() + 30)
            )
            await self.repository.record(
                self.records("charge", merchant.alias, obj.raw, request_id=obj.request_id),
                source,
                timeout=_COMMIT_TIMEOUT_S,
            )
        except Exception as exc:
            _log.warning("could not refresh a refunded charge", extra={"error": type(exc).__name__})

    async def read_missing_related(self, *, limit: int = 50) -> int:
        """Reads the reconciler owes: objects a completed checkout produced that the ledger still
        lacks (a crash or a failure right after Complete), and final objects marked for a re-read
        (a charge whose refund settled). A failure backs off per object; one Amazon no longer
        has is given up after `OWED_READ_ATTEMPTS` (about three days). Returns how many were
        tried."""
        found = await self.repository.owed_reads(limit=limit)
        for merchant_alias, kind, object_id in found:
            error: str | None = None
            try:
                await self.read(
                    merchant_alias,
                    kind,
                    object_id,
                    source="amazon",
                    deadline=time.monotonic() + 30,
                    record_source="poll",
                )
            except (AmazonPayError, LookupError, Overloaded) as exc:
                error = type(exc).__name__
            attempts = await self.repository.settle_owed_read(
                merchant_alias,
                kind,
                object_id,
                error=error,
                max_attempts=OWED_READ_ATTEMPTS,
                backoff_s=owed_read_backoff_s,
            )
            if error is None:
                continue
            extra = {"kind": kind, "error": error, "attempts": attempts, "merchant": merchant_alias}
            if attempts >= OWED_READ_ATTEMPTS:
                _log.error("gave up reading an object the ledger is owed", extra=extra)
            else:
                _log.warning("could not read an object the ledger is owed", extra=extra)
        return len(found)

    async def redrive_orphans(self, *, limit: int = 100, deadline_s: float = 30.0) -> int:
        """Finish operations whose process died mid-call (or whose lease ran out).

        Returns how many reached a final status. A failure leaves the operation pending for the
        next pass; Amazon answers the same key the same way, so repeating is always safe.
        """
        ops = await self.repository.claim_orphaned_operations(
            owner=self.instance_id, lease_s=deadline_s + _LEASE_MARGIN_S, limit=limit
        )
        finished = 0
        for op in ops:
            try:
                merchant = self.merchants.get(op.merchant)
            except LookupError:
                _log.error(
                    "pending operation for an unconfigured merchant",
                    extra={"merchant": op.merchant},
                )
                continue
            try:
                with _span(
                    f"payments.redrive.{op.operation}", op.merchant, op.operation, op.object_id
                ):
                    async with merchant.admission:
                        await self._drive(
                            merchant, op, source="recovery", deadline=time.monotonic() + deadline_s
                        )
                finished += 1
            except AmazonPayError as exc:
                if _is_definitive(exc) or isinstance(exc, AmazonPayRequestError):
                    finished += 1
                _log.warning(
                    "re-drive did not complete",
                    extra={
                        "operation": op.operation,
                        "http_status": exc.http_status,
                        "reason_code": exc.reason_code,
                    },
                )
            except Exception as exc:
                # One row never stops start-up or the reconciler: what `_drive` could set aside
                # it quarantined; anything else (the ledger failing) is retried next pass.
                _log.error(
                    "re-drive failed",
                    extra={"operation": op.operation, "error": type(exc).__name__},
                )
        if ops:
            _log.info(
                "re-drove pending operations", extra={"claimed": len(ops), "finished": finished}
            )
        return finished


def _from_ledger(stored: StoredObject, span: trace.Span) -> ReadResult:
    """A read answered by the ledger: the object as last recorded."""
    span.set_attribute("amazonpay.served_from", "ledger")
    return ReadResult(body=stored.snapshot, origin="ledger", as_of=stored.updated_at)


def _span(
    name: str,
    merchant: str,
    operation: str,
    object_id: str | None,
    *,
    extra: Mapping[str, str] | None = None,
) -> AbstractContextManager[trace.Span]:
    """A span of the payment path, carrying ids and names only (never buyer data or request
    bodies). Without a tracer that records spans (no exporter configured) a no-op span: no
    context attached and no attributes built on every call."""
    if not tracing_enabled():
        return nullcontext(trace.INVALID_SPAN)
    attributes = {"amazonpay.merchant": merchant or "default", "amazonpay.operation": operation}
    if object_id:
        attributes["amazonpay.object_id"] = object_id
    return _tracer.start_as_current_span(name, attributes={**attributes, **(extra or {})})


def _holds(requested: Any, current: Any) -> bool:
    """Whether `current` already carries every value `requested` sets (amounts compared as
    numbers: Amazon answers "14" as "14.00")."""
    if isinstance(requested, Mapping):
        return isinstance(current, Mapping) and all(
            _holds(value, current.get(name)) for name, value in requested.items()
        )
    if isinstance(requested, list):
        return (
            isinstance(current, list)
            and len(requested) == len(current)
            and all(_holds(a, b) for a, b in zip(requested, current, strict=True))
        )
    if isinstance(requested, bool) or isinstance(current, bool):
        return requested is current
    if requested == current:
        return True
    if isinstance(requested, str | int | float) and isinstance(current, str | int | float):
        try:
            return Decimal(str(requested)) == Decimal(str(current))
        except InvalidOperation:
            return False
    return False


def _canceled_failure(session: Mapping[str, Any], refusal: AmazonPayError) -> AmazonPayError:
    details = session.get("statusDetails")
    details = details if isinstance(details, Mapping) else {}
    reason = details.get("reasonCode") or "unknown reason"
    description = details.get("reasonDescription")
    return AmazonPayError(
        f"The Checkout Session was canceled ({reason})"
        + (f": {description}" if isinstance(description, str) and description else ""),
        http_status=422,
        reason_code="CheckoutSessionCanceled",
        request_id=refusal.request_id,
        operation=refusal.operation,
    )


def _replayed_failure(op: Operation) -> StoredFailure:
    error = op.error or {}
    return StoredFailure(
        str(error.get("message") or "Amazon Pay refused this request"),
        http_status=error.get("httpStatus"),
        reason_code=error.get("reasonCode"),
        request_id=error.get("requestId"),
        operation=error.get("operation") or op.operation,
    )


async def _shielded(awaitable: Awaitable[T]) -> T:
    return await asyncio.shield(asyncio.ensure_future(awaitable))
