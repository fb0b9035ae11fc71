"""Attacks on a running service process. After each, the process is alive, answers a genuine
caller, and stops cleanly (the `running` fixture checks the last two)."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import uuid
from typing import Any

import aiohttp
import grpc
import pytest
from google.protobuf import descriptor_pool
from grpc_health.v1 import health_pb2, health_pb2_grpc

from payments.amazonpay.v1 import button_pb2, charge_pb2, common_pb2, ledger_pb2
from payments.amazonpay.v1 import checkout_session_pb2 as cs
from service.api import discover_services
from service.api._servicers import SERVICERS
from tests.adversarial.conftest import SECOND_MERCHANT_ID, Running
from tests.e2e._flows import checkout, failure, key
from tests.e2e.conftest import Stubs, stubs_for

REVIEW_URL = "https://shop.example/review"
UNKNOWN_CHARGE = "S01-0000000-0000000-C000009"


def _internal_free(error: grpc.aio.AioRpcError) -> None:
    assert error.code() not in (grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN), (
        error.code(),
        error.details(),
    )
    details = error.details() or ""
    for leak in ("Traceback", "<class", "Error:", "Exception"):
        assert leak not in details, details


async def _still_serving(api: Stubs, running: Running) -> None:
    """A genuine caller is answered by Amazon (404 for a charge nobody created), not refused."""
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await api.charges.GetCharge(
            charge_pb2.GetChargeRequest(
                charge_id=UNKNOWN_CHARGE, source=common_pb2.READ_SOURCE_AMAZON
            ),
            timeout=10,
        )
    assert failure(caught.value).reason == "ResourceNotFound"
    async with grpc.aio.insecure_channel(running.target) as channel:
        health = await health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(), timeout=5
        )
    assert health.status == health_pb2.HealthCheckResponse.SERVING


async def test_the_poison_pill_is_refused_and_a_poisoned_row_cannot_crash_a_restart(
    running: Running, api: Stubs
) -> None:
    for code in ("Declined\n", "Declined\r\n", "HardDeclined\x00", "Hard\tDeclined"):
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await api.sessions.CreateCheckoutSession(
                cs.CreateCheckoutSessionRequest(
                    idempotency_key=key(),
                    sandbox_simulation_code=code,
                    web_checkout_details=cs.WebCheckoutDetails(
                        checkout_review_return_url=REVIEW_URL
                    ),
                ),
                timeout=10,
            )
        info = failure(caught.value)
        assert info.code == grpc.StatusCode.INVALID_ARGUMENT
        assert "sandbox_simulation_code" in info.violations
    conn = await running.ledger()
    try:
        assert await conn.fetchval("SELECT count(*) FROM operations") == 0
        # The row an older version left behind, on every replica's path at start-up.
        await conn.execute(
            """
            INSERT INTO operations (merchant, operation, idempotency_key, request_hash,
                amazon_idempotency_key, status, request, lease_owner, lease_expires_at)
            VALUES ('default', 'CreateCheckoutSession', 'poisoned', '\\x00', 'poisonedpoisoned',
                'pending', $1::jsonb, '424242', now() - interval '1 minute')
            """,
            json.dumps(
                {
                    "operation": "CreateCheckoutSession",
                    "body": {"webCheckoutDetails": {"checkoutReviewReturnUrl": REVIEW_URL}},
                    "pathId": None,
                    "simulationCode": "Declined\n",
                }
            ),
        )
    finally:
        await conn.close()
    await running.restart()
    conn = await running.ledger()
    try:
        row = await conn.fetchrow(
            "SELECT status, error FROM operations WHERE idempotency_key = 'poisoned'"
        )
    finally:
        await conn.close()
    assert row is not None
    assert row["status"] == "failed"
    assert json.loads(row["error"])["reasonCode"] == "OPERATION_QUARANTINED"
    assert any("operation quarantined" in line for line in running.process.log_lines)
    assert not any("Declined" in line for line in running.process.log_lines)
    async with grpc.aio.insecure_channel(running.target) as channel:
        await _still_serving(stubs_for(channel, running.target), running)
    await running.restart()  # and again: nothing is left to trip over


async def test_short_deadlines_from_one_caller_do_not_open_the_circuit_for_everyone(
    running: Running, api: Stubs
) -> None:
    await running.emulator.control(
        "POST", "faults", {"operation": "GetCharge", "latencyMs": 300, "count": None}
    )
    request = charge_pb2.GetChargeRequest(
        charge_id=UNKNOWN_CHARGE, source=common_pb2.READ_SOURCE_AMAZON
    )

    async def impatient() -> grpc.StatusCode:
        try:
            await api.charges.GetCharge(request, timeout=0.1)
        except grpc.aio.AioRpcError as exc:
            _internal_free(exc)
            return exc.code()
        return grpc.StatusCode.OK

    codes = [await impatient() for _ in range(10)]
    codes += await asyncio.gather(*(impatient() for _ in range(20)))
    assert set(codes) == {grpc.StatusCode.DEADLINE_EXCEEDED}
    await running.emulator.control("DELETE", "faults")
    await _still_serving(api, running)


async def _post(url: str, body: str | bytes) -> tuple[int, Any]:
    async with (
        aiohttp.ClientSession() as session,
        session.post(url, data=body, headers={"content-type": "text/plain"}) as response,
    ):
        return response.status, await response.json(content_type=None)


async def test_junk_notifications_do_not_delay_a_genuine_one(running: Running, api: Stubs) -> None:
    for i in range(40):
        junk = await running.emulator.control(
            "POST",
            "ipn/envelope",
            {"objectType": "CHARGE", "objectId": f"S01-9999999-{i:07d}-C000001"},
        )
        assert await _post(running.ipn_url, json.dumps(junk)) == (200, {"status": "accepted"})
    for garbage in (b"[" * 60_000, b"\x00\xff" * 100, json.dumps({"Type": "Notification"})):
        status, _ = await _post(running.ipn_url, garbage)
        assert status == 400
    done = await checkout(api, running.emulator, merchant="second")
    genuine = await running.emulator.control(
        "POST",
        "ipn/envelope",
        {
            "objectType": "CHARGE",
            "objectId": done.charge_id,
            "chargePermissionId": done.charge_permission_id,
            "merchantId": SECOND_MERCHANT_ID,
        },
    )
    assert await _post(running.ipn_url, json.dumps(genuine)) == (200, {"status": "accepted"})
    conn = await running.ledger()
    try:
        for _ in range(100):
            row = await conn.fetchrow(
                "SELECT merchant, processed_at FROM ipn_messages WHERE object_id = $1",
                done.charge_id,
            )
            if row is not None and row["processed_at"] is not None:
                break
            await asyncio.sleep(0.05)
        else:
            raise AssertionError("the genuine notification was not processed within 5 s")
        assert row["merchant"] == "second"
        # The junk waits out its backoff instead of being re-read on every pass (the reconciler
        # runs every 0.2 s here): once each follow-up failed, nothing touches it for a while.
        waiting = "SELECT attempts FROM ipn_messages WHERE processed_at IS NULL"
        for _ in range(100):
            if {r["attempts"] for r in await conn.fetch(waiting)} == {1}:
                break
            await asyncio.sleep(0.1)
        await asyncio.sleep(1.0)
        attempts = await conn.fetch(waiting)
        assert len(attempts) == 40
        assert {r["attempts"] for r in attempts} == {1}
    finally:
        await conn.close()
    await _still_serving(api, running)


def _token(data: object) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).decode()


async def test_forged_page_tokens_nesting_and_oversized_lists_are_invalid_argument(
    running: Running, api: Stubs
) -> None:
    digest = hashlib.sha256(repr(("default",) + (None,) * 6).encode()).hexdigest()[:16]
    for token in (
        _token({"p": {"e": 2**70}, "f": digest}),
        _token({"p": {"e": [1]}, "f": digest}),
        _token({"p": "x", "f": digest}),
        _token(None),
        "%%%",
        base64.urlsafe_b64encode(b"\xff\xfe").decode(),
    ):
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await api.ledger.ListEvents(ledger_pb2.ListEventsRequest(page_token=token), timeout=10)
        _internal_free(caught.value)
        assert failure(caught.value).reason == "INVALID_PAGE_TOKEN"
    for token in (
        _token({"p": {"c": 1, "k": 2, "i": 3}, "f": digest}),
        _token({"p": {"c": "9999-12-31T23:59:59-14:00", "k": "charge", "i": "x"}, "f": digest}),
        _token({"p": {"c": "2024-01-01T00:00:00+00:00", "k": "c\x00", "i": "x"}, "f": digest}),
    ):
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await api.ledger.ListTransactions(
                ledger_pb2.ListTransactionsRequest(page_token=token), timeout=10
            )
        _internal_free(caught.value)
        assert failure(caught.value).reason == "INVALID_PAGE_TOKEN"

    for payload in ("[" * 5000 + "]" * 5000, '{"a":' * 3000 + "1" + "}" * 3000):
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await api.buttons.SignButtonPayload(
                button_pb2.SignButtonPayloadRequest(payload=payload), timeout=10
            )
        _internal_free(caught.value)
        assert "payload" in failure(caught.value).violations

    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await api.sessions.CreateCheckoutSession(
            cs.CreateCheckoutSessionRequest(
                idempotency_key=key(),
                web_checkout_details=cs.WebCheckoutDetails(checkout_review_return_url=REVIEW_URL),
                scopes=[uuid.uuid4().hex for _ in range(50_000)],
            ),
            timeout=10,
        )
    assert failure(caught.value).violations == {"scopes": "must have at most 100 entries"}
    conn = await running.ledger()
    try:
        assert await conn.fetchval("SELECT count(*) FROM operations") == 0
    finally:
        await conn.close()
    await _still_serving(api, running)


async def test_malformed_protobufs_are_invalid_argument(running: Running, api: Stubs) -> None:
    async with grpc.aio.insecure_channel(running.target) as channel:
        for path in (
            "/payments.amazonpay.v1.ChargeService/CreateCharge",
            "/payments.amazonpay.v1.ChargeService/GetCharge",
            "/payments.amazonpay.v1.CheckoutSessionService/CreateCheckoutSession",
            "/payments.amazonpay.v1.LedgerService/ListEvents",
        ):
            for garbage in (
                b"\xff" * 32,
                b"\x0a\xff\xff\xff\xff\x0f",  # a length beyond the message
                b"\x0a\x02\xc3\x28",  # a string field that is not UTF-8
                b"\x1a\x80\x80\x80" * 1000,
            ):
                call = channel.unary_unary(
                    path, request_serializer=None, response_deserializer=None
                )
                with pytest.raises(grpc.aio.AioRpcError) as caught:
                    await call(garbage, timeout=10)
                _internal_free(caught.value)
                assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT, path
        stream = channel.unary_stream(
            "/payments.amazonpay.v1.LedgerService/WatchEvents",
            request_serializer=None,
            response_deserializer=None,
        )(b"\xff" * 8, timeout=10)
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            async for _ in stream:
                pass
        assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    await _still_serving(api, running)


async def _send_garbage(channel: grpc.aio.Channel, path: str, *, streaming: bool) -> None:
    if streaming:
        stream = channel.unary_stream(path, request_serializer=None, response_deserializer=None)
        async for _ in stream(b"\xff" * 8, timeout=10):
            pass
    else:
        call = channel.unary_unary(path, request_serializer=None, response_deserializer=None)
        await call(b"\xff" * 32, timeout=10)


async def test_every_method_of_every_servicer_answers_a_malformed_request_itself(
    running: Running, api: Stubs
) -> None:
    """Every service of `SERVICERS` (settlements and disputes included) is served from the one
    method table with the malformed-request guard: garbage is INVALID_ARGUMENT, not UNKNOWN or
    UNIMPLEMENTED."""
    services = {s.name: s for s in discover_services()}
    async with grpc.aio.insecure_channel(running.target) as channel:
        for servicer in SERVICERS:
            service = services[servicer.__name__]
            descriptor = descriptor_pool.Default().FindServiceByName(service.full_name)
            for method in descriptor.methods:
                path = f"/{service.full_name}/{method.name}"
                with pytest.raises(grpc.aio.AioRpcError) as caught:
                    await _send_garbage(channel, path, streaming=method.server_streaming)
                _internal_free(caught.value)
                assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT, path
    await _still_serving(api, running)
