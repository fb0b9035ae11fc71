"""`MockTransport`: the real client (signing, retries, error mapping) against a handler."""

from __future__ import annotations

import asyncio

import pytest

from service.amazonpay import (
    AmazonPayClient,
    AmazonPayConnectionError,
    AmazonPayDeadlineExceeded,
    AmazonPayTimeoutError,
    Charge,
    ClientConfig,
    HttpRequest,
    HttpResponse,
    MockTransport,
    RetryPolicy,
)
from tests._mock_amazon import account, answer, signature_holds

CHARGE_ID = "S01-1111111-2222222-C000001"
CHARGE = {"chargeId": CHARGE_ID, "statusDetails": {"state": "Authorized"}}


def _client(transport: MockTransport, config: ClientConfig | None = None) -> AmazonPayClient:
    return AmazonPayClient(account(), transport=transport, config=config)


async def test_the_handler_gets_the_signed_request_and_its_answer_is_parsed() -> None:
    seen: list[HttpRequest] = []

    def handler(request: HttpRequest) -> HttpResponse:
        seen.append(request)
        return answer(200, CHARGE, request_id="amzn-1")

    async with _client(MockTransport(handler)) as client:
        charge = await client.invoke("GetCharge", path_params={"chargeId": CHARGE_ID})
    assert isinstance(charge, Charge)
    assert (charge.state, charge.request_id, charge.http_status) == ("Authorized", "amzn-1", 200)
    [request] = seen
    assert (request.method, request.url) == (
        "GET",
        f"https://pay-api.amazon.test/sandbox/v2/charges/{CHARGE_ID}",
    )
    assert signature_holds(request)


async def test_a_lost_answer_is_retried_with_the_same_idempotency_key() -> None:
    keys: list[str] = []

    async def handler(request: HttpRequest) -> HttpResponse:
        keys.append(request.headers["x-amz-pay-idempotency-key"])
        if len(keys) == 1:
            raise AmazonPayConnectionError("connection reset")
        return answer(201, CHARGE)

    transport = MockTransport(handler)
    config = ClientConfig(retry=RetryPolicy(max_retries=1, base_delay=0))
    async with _client(transport, config) as client:
        await client.invoke("CreateCharge", body={}, idempotency_key="k-1")
    assert keys == ["k-1", "k-1"]


async def test_an_async_handler_slower_than_the_attempt_timeout_is_a_timeout() -> None:
    async def handler(request: HttpRequest) -> HttpResponse:
        await asyncio.sleep(5)
        return answer(200, CHARGE)

    transport = MockTransport(handler)
    config = ClientConfig(retry=RetryPolicy(max_retries=0), attempt_timeout=0.05)
    async with _client(transport, config) as client:
        with pytest.raises(AmazonPayTimeoutError) as caught:
            await client.invoke("GetCharge", path_params={"chargeId": "C1"})
    assert not caught.value.cut_short


async def test_an_async_handler_slower_than_the_deadline_is_cut_short() -> None:
    async def handler(request: HttpRequest) -> HttpResponse:
        await asyncio.sleep(5)
        return answer(200, CHARGE)

    async with _client(MockTransport(handler)) as client:
        with pytest.raises(AmazonPayDeadlineExceeded) as caught:
            await client.invoke("GetCharge", path_params={"chargeId": "C1"}, timeout=0.05)
    last = caught.value.last_error
    assert isinstance(last, AmazonPayTimeoutError)
    assert last.cut_short
