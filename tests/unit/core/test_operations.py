"""The exactly-once path of `Payments`: the real `AmazonPayClient` (signing included) against a
`MockTransport` playing Amazon, and the real ledger on Postgres.

Each test scripts what Amazon answers and checks what the caller gets, what the ledger keeps and
how often Amazon was asked.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import pytest

from service.amazonpay import (
    AmazonPayClient,
    AmazonPayConnectionError,
    AmazonPayError,
    AmazonPayRequestError,
    ClientConfig,
    HttpRequest,
    HttpResponse,
    MockHandler,
    MockTransport,
    RetryPolicy,
)
from service.core import (
    GETTERS,
    QUARANTINED,
    Admission,
    AmazonCall,
    BreakerSettings,
    CircuitBreaker,
    CircuitOpen,
    Merchant,
    MerchantRegistry,
    Outcome,
    Overloaded,
    Payments,
    StoredFailure,
    amazon_idempotency_key,
)
from service.core._operations import NOT_REPLAYED
from service.ledger import Ledger, Operation, OperationConflict
from tests._mock_amazon import Amazon, Call, account, answer, refusal

PERMISSION = "S01-1111111-2222222"
CHARGE = f"{PERMISSION}-C000001"
SESSION = "6f1b4a52-0c1e-4d3e-9a57-000000000001"
USD14 = {"amount": "14.00", "currencyCode": "USD"}
CREATE_CHARGE = AmazonCall(
    "CreateCharge", body={"chargePermissionId": PERMISSION, "chargeAmount": USD14}
)
COMPLETE = AmazonCall("CompleteCheckoutSession", body={"chargeAmount": USD14}, path_id=SESSION)


def charge(state: str) -> dict[str, Any]:
    return {
        "chargeId": CHARGE,
        "chargePermissionId": PERMISSION,
        "chargeAmount": USD14,
        "statusDetails": {"state": state},
    }


def permission(state: str, **fields: Any) -> dict[str, Any]:
    return {
        "chargePermissionId": PERMISSION,
        "limits": {"amountLimit": USD14},
        "statusDetails": {"state": state},
        **fields,
    }


def session(state: str, *, reason: str | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {
        "checkoutSessionId": SESSION,
        "paymentDetails": {"chargeAmount": USD14},
        "statusDetails": {"state": state, "reasonCode": reason},
    }
    if state == "Completed":
        body |= {"chargePermissionId": PERMISSION, "chargeId": CHARGE}
    return body


def digest(call: AmazonCall) -> bytes:
    return hashlib.sha256(json.dumps(call.to_json(), sort_keys=True).encode()).digest()


@asynccontextmanager
async def serving(
    ledger: Ledger,
    handler: MockHandler,
    *,
    instance_id: str = "replica-a",
    breaker: BreakerSettings | None = None,
    admission: Admission | None = None,
    public_key_id: str = "AHMOCKKEY0000000000000",
    on_quarantine: Callable[[str], None] | None = None,
) -> AsyncIterator[Payments]:
    """`Payments` of one replica: one merchant whose client sends to `handler` (no retries, so
    each test decides every answer)."""
    client = AmazonPayClient(
        account(public_key_id),
        transport=MockTransport(handler),
        config=ClientConfig(retry=RetryPolicy(max_retries=0)),
    )
    merchant = Merchant(
        alias="default",
        client=client,
        breaker=CircuitBreaker("default", breaker or BreakerSettings()),
        admission=admission,
    )
    try:
        yield Payments(
            merchants=MerchantRegistry([merchant], "default"),
            repository=ledger.repository,
            instance_id=instance_id,
            on_quarantine=on_quarantine,
        )
    finally:
        await client.close()


async def execute(payments: Payments, call: AmazonCall, key: str | None = "order-1") -> Outcome:
    return await payments.execute(
        merchant_alias="default",
        call=call,
        idempotency_key=key,
        request_hash=digest(call),
        deadline=None,
    )


async def operation(ledger: Ledger, name: str, key: str = "order-1") -> Operation:
    op = await ledger.repository.get_operation("default", name, key)
    assert op is not None, f"no {name} operation under {key}"
    return op


class Charges:
    """CreateCharge as Amazon does it: one charge per idempotency key, its first answer replayed
    to every repeat. `lose_answers` drops that many answers after the charge was made."""

    def __init__(self, amazon: Amazon) -> None:
        self.amazon = amazon
        self.made: dict[str | None, HttpResponse] = {}
        self.lose_answers = 0
        amazon.on("CreateCharge", self.create)

    def create(self, call: Call) -> HttpResponse:
        if call.idempotency_key not in self.made:
            body = charge("Authorized")
            self.made[call.idempotency_key] = answer(201, body, request_id=self.amazon.request_id())
        if self.lose_answers:
            self.lose_answers -= 1
            raise AmazonPayConnectionError("connection reset before the answer arrived")
        return self.made[call.idempotency_key]


class Checkout:
    """A checkout session the buyer confirmed: Complete applies once; Amazon does not replay it,
    a repeat is refused as a state error."""

    def __init__(self, amazon: Amazon, *, state: str = "Open", reason: str | None = None) -> None:
        self.state = state
        self.reason = reason
        self.completed = 0
        self.lose_answer = False
        amazon.on("CompleteCheckoutSession", self.complete)
        amazon.on("GetCheckoutSession", lambda call: answer(200, self.body()))
        amazon.on("GetChargePermission", lambda call: answer(200, permission("Chargeable")))
        amazon.on("GetCharge", lambda call: answer(200, charge("Authorized")))

    def body(self) -> dict[str, Any]:
        return session(self.state, reason=self.reason)

    def complete(self, call: Call) -> HttpResponse:
        if self.state != "Open":
            return refusal(422, "InvalidCheckoutSessionStatus")
        self.state = "Completed"
        self.completed += 1
        if self.lose_answer:
            raise AmazonPayConnectionError("connection reset before the answer arrived")
        return answer(200, self.body())


# ------------------------------------------------------------------ record, complete, replay


async def test_a_repeat_with_the_same_key_is_answered_from_the_ledger_not_by_amazon(
    ledger: Ledger,
) -> None:
    amazon = Amazon()
    charges = Charges(amazon)
    async with serving(ledger, amazon) as payments:
        first = await execute(payments, CREATE_CHARGE)
        again = await execute(payments, CREATE_CHARGE)
    assert (first.replayed, again.replayed) == (False, True)
    assert again.response == first.response
    assert first.body["chargeId"] == CHARGE
    [sent] = amazon.calls
    assert sent.idempotency_key == amazon_idempotency_key("default", "CreateCharge", "order-1")
    assert len(charges.made) == 1
    op = await operation(ledger, "CreateCharge")
    assert (op.status, op.object_kind, op.object_id) == ("succeeded", "charge", CHARGE)
    stored = await ledger.repository.get_object("default", "charge", CHARGE)
    assert stored is not None
    assert stored.state == "Authorized"
    assert [(e.state, e.source) for e in first.events] == [("Authorized", "api")]


async def test_the_same_key_for_another_request_is_a_conflict_and_amazon_is_not_asked(
    ledger: Ledger,
) -> None:
    amazon = Amazon()
    Charges(amazon)
    other = AmazonCall(
        "CreateCharge",
        body={"chargePermissionId": PERMISSION, "chargeAmount": {**USD14, "amount": "15.00"}},
    )
    async with serving(ledger, amazon) as payments:
        await execute(payments, CREATE_CHARGE)
        with pytest.raises(OperationConflict):
            await execute(payments, other)
    assert len(amazon.calls) == 1


async def test_a_call_without_a_key_is_recorded_but_each_one_is_new_at_amazon(
    ledger: Ledger,
) -> None:
    amazon = Amazon()
    charges = Charges(amazon)
    async with serving(ledger, amazon) as payments:
        await execute(payments, CREATE_CHARGE, key=None)
        second = await execute(payments, CREATE_CHARGE, key=None)
    assert not second.replayed
    keys = [call.idempotency_key for call in amazon.calls]
    assert len(set(keys)) == 2
    assert len(charges.made) == 2
    assert await ledger.repository.get_object("default", "charge", CHARGE) is not None


async def test_a_definitive_refusal_is_stored_and_replayed_without_asking_amazon_again(
    ledger: Ledger,
) -> None:
    amazon = Amazon()
    amazon.on(
        "CreateCharge",
        lambda call: refusal(422, "InvalidChargePermissionStatus", request_id="amzn-refusal"),
    )
    async with serving(ledger, amazon) as payments:
        with pytest.raises(AmazonPayError) as first:
            await execute(payments, CREATE_CHARGE)
        with pytest.raises(StoredFailure) as again:
            await execute(payments, CREATE_CHARGE)
    assert not isinstance(first.value, StoredFailure)
    for error in (first.value, again.value):
        assert (error.http_status, error.reason_code, error.request_id) == (
            422,
            "InvalidChargePermissionStatus",
            "amzn-refusal",
        )
    assert len(amazon.calls) == 1
    assert (await operation(ledger, "CreateCharge")).status == "failed"


def _unavailable(call: Call) -> HttpResponse:
    return refusal(503, "ServiceUnavailable")


def _no_answer(call: Call) -> HttpResponse:
    raise AmazonPayConnectionError("connection refused")


def _our_credentials(call: Call) -> HttpResponse:
    return refusal(403, "UnauthorizedAccess")


@pytest.mark.parametrize(
    "failure", [_unavailable, _no_answer, _our_credentials], ids=["503", "no-answer", "403"]
)
async def test_a_failure_that_is_no_answer_leaves_the_operation_pending_and_a_repeat_re_drives_it(
    ledger: Ledger, failure: Callable[[Call], HttpResponse]
) -> None:
    amazon = Amazon()
    amazon.on("CreateCharge", failure)
    async with serving(ledger, amazon) as payments:
        with pytest.raises(AmazonPayError):
            await execute(payments, CREATE_CHARGE)
        assert (await operation(ledger, "CreateCharge")).status == "pending"
        Charges(amazon)
        outcome = await execute(payments, CREATE_CHARGE)
    assert not outcome.replayed
    assert outcome.body["chargeId"] == CHARGE
    first, second = amazon.calls
    assert first.idempotency_key == second.idempotency_key
    assert first.body == second.body
    assert (await operation(ledger, "CreateCharge")).status == "succeeded"


# ------------------------------------------------------------------ re-drive after a crash


async def test_an_operation_left_pending_by_a_dead_replica_is_re_driven_with_its_stored_call(
    ledger: Ledger,
) -> None:
    amazon = Amazon()
    charges = Charges(amazon)
    charges.lose_answers = 1  # Amazon charged; the process never heard back, then died
    async with serving(ledger, amazon, instance_id="replica-a") as crashed:
        with pytest.raises(AmazonPayConnectionError):
            await execute(crashed, CREATE_CHARGE)
    async with serving(ledger, amazon, instance_id="replica-b") as survivor:
        assert await survivor.redrive_orphans() == 1
        retry = await execute(survivor, CREATE_CHARGE)
    assert retry.replayed
    assert len(charges.made) == 1, "Amazon replayed the first charge rather than charging again"
    first, redriven = amazon.calls
    assert (redriven.idempotency_key, redriven.body) == (first.idempotency_key, first.body)
    op = await operation(ledger, "CreateCharge")
    assert (op.status, op.attempts) == ("succeeded", 1)
    events = await ledger.repository.object_events("default", "charge", CHARGE)
    assert [(e.state, e.source) for e in events] == [("Authorized", "recovery")]


async def test_a_re_drive_finds_nothing_to_do_while_the_owner_is_driving_it(
    ledger: Ledger,
) -> None:
    amazon = Amazon()
    charges = Charges(amazon)
    charges.lose_answers = 1
    async with serving(ledger, amazon, instance_id="replica-a") as payments:
        with pytest.raises(AmazonPayConnectionError):
            await execute(payments, CREATE_CHARGE)
        # Its own lease has not run out: the call that holds it may still finish.
        assert await payments.redrive_orphans() == 0
    assert len(amazon.calls) == 1


# ------------------------------------------------------------------ calls Amazon does not replay


async def test_a_repeated_complete_after_crash_is_a_success(ledger: Ledger) -> None:
    amazon = Amazon()
    checkout = Checkout(amazon)
    checkout.lose_answer = True  # Amazon completed the session; the process died before it heard
    async with serving(ledger, amazon, instance_id="replica-a") as crashed:
        with pytest.raises(AmazonPayConnectionError):
            await execute(crashed, COMPLETE)
    async with serving(ledger, amazon, instance_id="replica-b") as survivor:
        assert await survivor.redrive_orphans() == 1
        retry = await execute(survivor, COMPLETE)
    assert checkout.completed == 1
    assert len(amazon.calls_to("CompleteCheckoutSession")) == 2  # the repeat was refused (422)
    assert retry.replayed
    assert retry.body["statusDetails"]["state"] == "Completed"
    assert (await operation(ledger, "CompleteCheckoutSession")).status == "succeeded"
    for kind, object_id, state in (
        ("checkout_session", SESSION, "Completed"),
        ("charge_permission", PERMISSION, "Chargeable"),
        ("charge", CHARGE, "Authorized"),
    ):
        stored = await ledger.repository.get_object("default", kind, object_id)
        assert stored is not None, kind
        assert stored.state == state


async def test_a_repeated_complete_of_a_canceled_session_fails_with_amazons_reason(
    ledger: Ledger,
) -> None:
    amazon = Amazon()
    Checkout(amazon, state="Canceled", reason="BuyerCanceled")
    async with serving(ledger, amazon) as payments:
        with pytest.raises(AmazonPayError) as first:
            await execute(payments, COMPLETE)
        with pytest.raises(StoredFailure) as again:
            await execute(payments, COMPLETE)
    for error in (first.value, again.value):
        assert (error.http_status, error.reason_code) == (422, "CheckoutSessionCanceled")
        assert "BuyerCanceled" in error.message
    assert len(amazon.calls_to("CompleteCheckoutSession")) == 1
    assert (await operation(ledger, "CompleteCheckoutSession")).status == "failed"


async def test_a_complete_refused_for_a_session_completed_for_another_amount_stays_refused(
    ledger: Ledger,
) -> None:
    amazon = Amazon()
    Checkout(amazon, state="Completed")
    twenty = AmazonCall(
        "CompleteCheckoutSession",
        body={"chargeAmount": {**USD14, "amount": "20.00"}},
        path_id=SESSION,
    )
    async with serving(ledger, amazon) as payments:
        with pytest.raises(AmazonPayError) as refused:
            await execute(payments, twenty)
    assert refused.value.reason_code == "InvalidCheckoutSessionStatus"
    assert (await operation(ledger, "CompleteCheckoutSession")).status == "failed"


CLOSE = AmazonCall("CloseChargePermission", body={"closureReason": "done"}, path_id=PERMISSION)
CANCEL = AmazonCall("CancelCharge", body={"cancellationReason": "oops"}, path_id=CHARGE)
UPDATE = AmazonCall(
    "UpdateChargePermission",
    body={"merchantMetadata": {"merchantReferenceId": "order-7"}},
    path_id=PERMISSION,
)
CLOSED_ALREADY = "InvalidChargePermissionStatus"


def _referenced(reference: str) -> dict[str, Any]:
    return permission("Chargeable", merchantMetadata={"merchantReferenceId": reference})


@pytest.mark.parametrize(
    ("call", "reason", "current", "settled"),
    [
        pytest.param(CLOSE, CLOSED_ALREADY, permission("Closed"), True, id="close-closed"),
        pytest.param(CLOSE, CLOSED_ALREADY, permission("NonChargeable"), False, id="close-open"),
        pytest.param(CANCEL, "InvalidChargeStatus", charge("Canceled"), True, id="cancel-canceled"),
        pytest.param(
            CANCEL, "InvalidChargeStatus", charge("Captured"), False, id="cancel-captured"
        ),
        pytest.param(
            UPDATE,
            "ChargePermissionNotModifiable",
            _referenced("order-7"),
            True,
            id="update-carried",
        ),
        pytest.param(
            UPDATE,
            "ChargePermissionNotModifiable",
            _referenced("order-6"),
            False,
            id="update-other",
        ),
    ],
)
async def test_a_state_refusal_of_a_repeat_succeeds_only_if_the_object_shows_the_call_applied(
    ledger: Ledger, call: AmazonCall, reason: str, current: dict[str, Any], settled: bool
) -> None:
    kind = NOT_REPLAYED[call.operation][0]
    amazon = Amazon()
    amazon.on(call.operation, lambda sent: refusal(422, reason))
    amazon.on(GETTERS[kind], lambda sent: answer(200, current))
    async with serving(ledger, amazon) as payments:
        if settled:
            outcome = await execute(payments, call)
            assert outcome.body == current
        else:
            with pytest.raises(AmazonPayError) as refused:
                await execute(payments, call)
            assert refused.value.reason_code == reason
    [read] = amazon.calls_to(GETTERS[kind])
    assert read.path_ids == (call.path_id,)
    op = await operation(ledger, call.operation)
    assert op.status == ("succeeded" if settled else "failed")
    stored = await ledger.repository.get_object("default", kind, str(call.path_id))
    assert (stored is not None) == settled


async def test_a_refusal_for_another_reason_is_not_settled_by_reading_the_object(
    ledger: Ledger,
) -> None:
    close = AmazonCall("CloseChargePermission", body={"closureReason": "x"}, path_id=PERMISSION)
    amazon = Amazon()
    amazon.on("CloseChargePermission", lambda call: refusal(400, "InvalidParameterValue"))
    amazon.on("GetChargePermission", lambda call: answer(200, permission("Closed")))
    async with serving(ledger, amazon) as payments:
        with pytest.raises(AmazonPayError) as refused:
            await execute(payments, close)
    assert refused.value.reason_code == "InvalidParameterValue"
    assert [call.operation for call in amazon.calls] == ["CloseChargePermission"]


# ------------------------------------------------------------------ quarantine


async def _pending(ledger: Ledger, key: str, request: dict[str, Any], operation: str) -> None:
    """An operation a replica recorded before it died, with `request` as stored."""
    await ledger.repository.begin_operation(
        merchant="default",
        operation=operation,
        idempotency_key=key,
        request_hash=digest(AmazonCall.from_json(request)) if "operation" in request else b"?",
        amazon_idempotency_key=amazon_idempotency_key("default", operation, key),
        request=request,
        lease_owner="replica-dead",
    )


async def test_a_stored_request_the_client_refuses_is_quarantined_and_the_others_go_on(
    ledger: Ledger,
) -> None:
    poison = AmazonCall("CaptureCharge", body={"captureAmount": USD14}, path_id="../refunds")
    await _pending(ledger, "poison", poison.to_json(), "CaptureCharge")
    await _pending(ledger, "order-1", CREATE_CHARGE.to_json(), "CreateCharge")
    amazon = Amazon()
    Charges(amazon)
    quarantined: list[str] = []
    async with serving(ledger, amazon, on_quarantine=quarantined.append) as payments:
        assert await payments.redrive_orphans() == 2
        with pytest.raises(StoredFailure) as replayed:
            await execute(payments, poison, key="poison")
    assert quarantined == ["CaptureCharge"]
    assert replayed.value.reason_code == QUARANTINED
    assert [call.operation for call in amazon.calls] == ["CreateCharge"]
    op = await operation(ledger, "CaptureCharge", "poison")
    assert op.status == "failed"
    assert op.error is not None
    assert (op.error["reasonCode"], op.error["internal"]) == (QUARANTINED, "AmazonPayRequestError")
    assert (await operation(ledger, "CreateCharge")).status == "succeeded"


async def test_a_stored_request_that_cannot_be_read_is_quarantined(ledger: Ledger) -> None:
    await _pending(ledger, "unreadable", {"body": {}}, "CreateCharge")
    amazon = Amazon()
    quarantined: list[str] = []
    async with serving(ledger, amazon, on_quarantine=quarantined.append) as payments:
        await payments.redrive_orphans()
        await payments.redrive_orphans()
    assert quarantined == ["CreateCharge"], "set aside once, then never claimed again"
    assert amazon.calls == []
    op = await operation(ledger, "CreateCharge", "unreadable")
    assert op.status == "failed"
    assert op.error is not None
    assert (op.error["reasonCode"], op.error["internal"]) == (QUARANTINED, "KeyError")


async def test_a_re_drive_refused_because_the_client_is_closing_is_left_pending(
    ledger: Ledger,
) -> None:
    await _pending(ledger, "order-1", CREATE_CHARGE.to_json(), "CreateCharge")
    amazon = Amazon()
    quarantined: list[str] = []
    async with serving(ledger, amazon, on_quarantine=quarantined.append) as payments:
        await payments.merchants.get("default").client.close()  # shutdown under way
        await payments.redrive_orphans()
    assert quarantined == []
    assert amazon.calls == []
    assert (await operation(ledger, "CreateCharge")).status == "pending"


async def test_a_simulation_code_for_a_live_merchant_is_refused_before_anything_is_recorded(
    ledger: Ledger,
) -> None:
    amazon = Amazon()
    Charges(amazon)
    declined = AmazonCall("CreateCharge", body=CREATE_CHARGE.body, simulation_code="HardDeclined")
    async with serving(ledger, amazon, public_key_id="LIVE-AHMOCKKEY0000000") as payments:
        with pytest.raises(AmazonPayRequestError, match="sandbox"):
            await execute(payments, declined)
    assert amazon.calls == []
    assert await ledger.repository.get_operation("default", "CreateCharge", "order-1") is None


# ------------------------------------------------------------------ breaker and admission


async def test_an_open_circuit_refuses_before_the_ledger_records_and_pauses_re_drives(
    ledger: Ledger,
) -> None:
    amazon = Amazon()
    amazon.on("CreateCharge", _unavailable)
    async with serving(ledger, amazon, breaker=BreakerSettings(failures=1, open_s=60)) as payments:
        with pytest.raises(AmazonPayError):
            await execute(payments, CREATE_CHARGE, key="order-1")
        with pytest.raises(CircuitOpen):
            await execute(payments, CREATE_CHARGE, key="order-2")
        await _pending(ledger, "order-3", CREATE_CHARGE.to_json(), "CreateCharge")
        await payments.redrive_orphans()
    assert len(amazon.calls) == 1
    assert await ledger.repository.get_operation("default", "CreateCharge", "order-2") is None
    assert (await operation(ledger, "CreateCharge", "order-3")).status == "pending"


async def test_a_call_beyond_admission_is_refused_at_once_and_records_nothing(
    ledger: Ledger,
) -> None:
    amazon = Amazon()
    Charges(amazon)
    arrived = asyncio.Event()
    release = asyncio.Event()

    async def slow_amazon(request: HttpRequest) -> HttpResponse:
        arrived.set()
        await release.wait()
        return amazon(request)

    admission = Admission("default", max_concurrent=1, max_queued=0)
    async with serving(ledger, slow_amazon, admission=admission) as payments:
        first = asyncio.create_task(execute(payments, CREATE_CHARGE, key="order-1"))
        await asyncio.wait_for(arrived.wait(), 5)
        try:
            with pytest.raises(Overloaded):
                async with asyncio.timeout(5):
                    await execute(payments, CREATE_CHARGE, key="order-2")
        finally:
            release.set()
        outcome = await first
    assert outcome.body["chargeId"] == CHARGE
    assert len(amazon.calls) == 1
    assert await ledger.repository.get_operation("default", "CreateCharge", "order-2") is None
