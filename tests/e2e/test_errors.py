"""Every Amazon error class and every validation failure reaches the caller as a rich status."""

from __future__ import annotations

import grpc
import pytest
from google.protobuf import descriptor_pool
from google.protobuf.message import Message
from google.protobuf.message_factory import GetMessageClass

from payments.amazonpay.v1 import buyer_pb2, charge_pb2, common_pb2, refund_pb2
from payments.amazonpay.v1 import checkout_session_pb2 as cs
from service.api import discover_services
from service.api._servicers import ADDRESSED
from service.app import Application
from tests._emulator import EmulatorProcess
from tests.e2e._flows import failure, key, usd
from tests.e2e.conftest import Stubs

CHARGE_ID = "S01-0000000-0000000-C000001"


@pytest.mark.parametrize(
    ("status", "reason", "code", "retryable"),
    [
        (400, "InvalidParameterValue", grpc.StatusCode.INVALID_ARGUMENT, False),
        (401, "UnauthorizedAccess", grpc.StatusCode.INTERNAL, False),
        (403, "InvalidRequestSignature", grpc.StatusCode.INTERNAL, False),
        (404, "ResourceNotFound", grpc.StatusCode.NOT_FOUND, False),
        (409, "AmountMismatch", grpc.StatusCode.FAILED_PRECONDITION, False),
        (422, "InvalidChargeStatus", grpc.StatusCode.FAILED_PRECONDITION, False),
        (429, "TooManyRequests", grpc.StatusCode.RESOURCE_EXHAUSTED, True),
        (500, "InternalServerError", grpc.StatusCode.UNAVAILABLE, True),
        (503, "ServiceUnavailable", grpc.StatusCode.UNAVAILABLE, True),
    ],
)
async def test_amazon_errors_map_to_grpc_status_with_the_reason(
    api: Stubs,
    clean_emulator: EmulatorProcess,
    status: int,
    reason: str,
    code: grpc.StatusCode,
    retryable: bool,
) -> None:
    await clean_emulator.control(
        "POST",
        "faults",
        {"operation": "GetCharge", "status": status, "reasonCode": reason, "count": None},
    )
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await api.charges.GetCharge(
            charge_pb2.GetChargeRequest(charge_id=CHARGE_ID, source=common_pb2.READ_SOURCE_AMAZON),
            timeout=20,
        )
    info = failure(caught.value)
    assert info.code == code
    assert (info.reason, info.domain) == (reason, "amazonpay")
    assert info.metadata["http_status"] == str(status)
    assert (info.retry_delay_s is not None) == retryable


async def test_a_slow_amazon_past_the_deadline_is_deadline_exceeded(
    api: Stubs, clean_emulator: EmulatorProcess
) -> None:
    await clean_emulator.control(
        "POST", "faults", {"operation": "GetCharge", "latencyMs": 3000, "count": None}
    )
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await api.charges.GetCharge(
            charge_pb2.GetChargeRequest(charge_id=CHARGE_ID, source=common_pb2.READ_SOURCE_AMAZON),
            timeout=1.0,
        )
    assert caught.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED


async def _written(app: Application) -> tuple[int, int, int]:
    assert app.ledger is not None
    async with app.ledger.pool.acquire() as conn:
        return (
            await conn.fetchval("SELECT count(*) FROM operations"),
            await conn.fetchval("SELECT count(*) FROM objects"),
            await conn.fetchval("SELECT count(*) FROM events"),
        )


@pytest.mark.parametrize(
    ("request_message", "method", "violations"),
    [
        (
            charge_pb2.CreateChargeRequest(charge_amount=usd("10.001")),
            "CreateCharge",
            {
                "idempotency_key": "is required",
                "charge_permission_id": "is required",
                "charge_amount.amount": "USD has at most 2 decimals",
            },
        ),
        (
            charge_pb2.CreateChargeRequest(
                idempotency_key="has spaces",
                charge_permission_id="S01-1234567-1234567",
                charge_amount=common_pb2.Price(amount="10", currency_code="JPY"),
                soft_descriptor="x" * 17,
            ),
            "CreateCharge",
            {
                "idempotency_key": "must be 1-64 characters of letters, digits, '-' or '_'",
                "soft_descriptor": "must be at most 16 characters (got 17)",
            },
        ),
        (
            refund_pb2.CreateRefundRequest(
                idempotency_key="k1",
                charge_id=CHARGE_ID,
                refund_amount=common_pb2.Price(amount="-5.00", currency_code="USD"),
            ),
            "CreateRefund",
            {"refund_amount.amount": 'must be a decimal string such as "14.00"'},
        ),
        (
            refund_pb2.CreateRefundRequest(
                idempotency_key="k1",
                charge_id=CHARGE_ID,
                refund_amount=common_pb2.Price(amount="0", currency_code="EUR"),
            ),
            "CreateRefund",
            {"refund_amount.amount": "must be greater than zero"},
        ),
        (
            cs.CreateCheckoutSessionRequest(
                idempotency_key="k2",
                web_checkout_details=cs.WebCheckoutDetails(checkout_review_return_url="not a url"),
                payment_details=cs.PaymentDetails(
                    charge_amount=common_pb2.Price(amount="1.5", currency_code="JPY")
                ),
            ),
            "CreateCheckoutSession",
            {
                "web_checkout_details.checkout_review_return_url": "must be an absolute https URL",
                "payment_details.charge_amount.amount": "JPY must be a whole number",
            },
        ),
        (
            # Percent-encoded into the path this would exceed any HTTP server's line limit.
            buyer_pb2.GetBuyerRequest(buyer_token="\u4e2d" * 1025),
            "GetBuyer",
            {"buyer_token": "must be printable ASCII without spaces, as Amazon issues it"},
        ),
    ],
)
async def test_invalid_requests_name_each_field_and_write_nothing(
    api: Stubs,
    app: Application,
    clean_emulator: EmulatorProcess,
    request_message: object,
    method: str,
    violations: dict[str, str],
) -> None:
    before = await _written(app)
    stub = {
        "CreateCharge": api.charges,
        "CreateRefund": api.refunds,
        "CreateCheckoutSession": api.sessions,
        "GetBuyer": api.buyers,
    }[method]
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await getattr(stub, method)(request_message)
    info = failure(caught.value)
    assert info.code == grpc.StatusCode.INVALID_ARGUMENT
    assert info.reason == "VALIDATION_FAILED"
    for field, rule in violations.items():
        assert info.violations.get(field) == rule, info.violations
    assert await _written(app) == before


async def test_every_rpc_addressing_an_object_refuses_a_request_without_its_id(
    api: Stubs, app: Application
) -> None:
    services = {name: stub.full_name for stub in discover_services() for name in stub.method_names}
    pool = descriptor_pool.Default()
    before = await _written(app)
    async with grpc.aio.insecure_channel(api.target) as channel:
        for name, (field,) in ADDRESSED.items():
            method = pool.FindMethodByName(f"{services[name]}.{name}")
            call = channel.unary_unary(
                f"/{services[name]}/{name}",
                request_serializer=Message.SerializeToString,
                response_deserializer=GetMessageClass(method.output_type).FromString,
            )
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await call(GetMessageClass(method.input_type)(), timeout=10)
            info = failure(caught.value)
            assert (info.code, info.reason) == (
                grpc.StatusCode.INVALID_ARGUMENT,
                "VALIDATION_FAILED",
            ), name
            assert info.violations.get(field) == "is required", (name, info.violations)
    assert await _written(app) == before


async def test_an_unknown_merchant_is_invalid_argument(api: Stubs) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await api.charges.GetCharge(
            charge_pb2.GetChargeRequest(merchant="nope", charge_id=CHARGE_ID)
        )
    info = failure(caught.value)
    assert info.code == grpc.StatusCode.INVALID_ARGUMENT
    assert info.reason == "UNKNOWN_MERCHANT"
    assert "merchant" in info.violations


async def test_a_definitive_refusal_is_replayed_for_the_same_key(
    api: Stubs, clean_emulator: EmulatorProcess
) -> None:
    request = charge_pb2.CaptureChargeRequest(
        charge_id=CHARGE_ID, idempotency_key=key(), capture_amount=usd("1.00")
    )
    with pytest.raises(grpc.aio.AioRpcError) as first:
        await api.charges.CaptureCharge(request)
    with pytest.raises(grpc.aio.AioRpcError) as second:
        await api.charges.CaptureCharge(request)
    assert failure(first.value).code == grpc.StatusCode.NOT_FOUND
    assert failure(second.value) == failure(first.value)
