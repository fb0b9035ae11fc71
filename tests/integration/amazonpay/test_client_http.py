"""AmazonPayClient against a real aiohttp server on 127.0.0.1 (no mocked HTTP client)."""

from __future__ import annotations

import asyncio
import logging
import random
import socket
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from service.amazonpay import (
    AmazonPayClient,
    AmazonPayConnectionError,
    AmazonPayDeadlineExceeded,
    AmazonPayError,
    AmazonPayRequestError,
    AmazonPayTimeoutError,
    AttemptEvent,
    Buyer,
    Charge,
    CheckoutSession,
    ClientConfig,
    MerchantAccount,
    Price,
    PrivateKey,
    RetryPolicy,
    button_string_to_sign,
    verify_signature,
)

from ._server import PRIVATE_KEY_FILE, PUBLIC_PEM, ScriptedServer, hang, reply, reset

KEY = PrivateKey.from_file(PRIVATE_KEY_FILE)
CHARGE = {
    "chargeId": "S01-5105180-3221187-C056351",
    "chargePermissionId": "S01-5105180-3221187",
    "chargeAmount": {"amount": "14.00", "currencyCode": "USD"},
    "statusDetails": {"state": "Authorized", "lastUpdatedTimestamp": "20190714T155300Z"},
    "creationTimestamp": "20190714T155300Z",
    "fieldFromTheFuture": {"x": [1, 2]},
}
RETRYABLE = [408, 425, 429, 500, 502, 503, 504]


class FixedRandom(random.Random):
    """Deterministic jitter: ``random()`` is always the given fraction."""

    def __init__(self, value: float) -> None:
        super().__init__(0)
        self.value = value

    def random(self) -> float:
        return self.value


class RecordingSleep:
    def __init__(self) -> None:
        self.delays: list[float] = []

    async def __call__(self, delay: float) -> None:
        self.delays.append(delay)


def ticking_clock(start: datetime) -> Callable[[], datetime]:
    """Wall clock that moves one second per reading (distinct x-amz-pay-date per attempt)."""
    state = {"now": start}

    def clock() -> datetime:
        state["now"] += timedelta(seconds=1)
        return state["now"]

    return clock


@pytest.fixture
async def server() -> AsyncIterator[ScriptedServer]:
    srv = ScriptedServer()
    await srv.start()
    try:
        yield srv
    finally:
        await srv.stop()


def make_client(
    srv: ScriptedServer | str,
    *,
    public_key_id: str = "AHTESTKEYID",
    policy: RetryPolicy | None = None,
    sleep: RecordingSleep | None = None,
    jitter: float = 0.5,
    clock: Callable[[], datetime] | None = None,
    **config: Any,
) -> AmazonPayClient:
    endpoint = srv if isinstance(srv, str) else srv.endpoint
    account = MerchantAccount(
        public_key_id=public_key_id, private_key=KEY, endpoint=endpoint, store_id="amzn1.store"
    )
    return AmazonPayClient(
        account,
        config=ClientConfig(retry=policy or RetryPolicy(base_delay=1.0, max_delay=30.0), **config),
        sleep=sleep or RecordingSleep(),
        rng=FixedRandom(jitter),
        clock=clock or ticking_clock(datetime(2024, 1, 1, tzinfo=UTC)),
    )


def charge_request() -> dict[str, Any]:
    return {
        "chargePermissionId": "S01-5105180-3221187",
        "chargeAmount": Price.of("14.00", "USD"),
        "captureNow": False,
    }


async def test_create_charge_is_signed_sent_and_parsed(server: ScriptedServer) -> None:
    server.script = [reply(201, CHARGE, {"x-amz-pay-request-id": "req-abc"})]
    async with make_client(server) as client:
        charge = await client.invoke("CreateCharge", body=charge_request(), idempotency_key="key-1")
    assert charge.http_status == 201
    assert charge.request_id == "req-abc"
    assert isinstance(charge, Charge)
    assert charge.state == "Authorized"
    assert charge.charge_amount == Price.of("14.00", "USD")
    assert charge.raw["fieldFromTheFuture"] == {"x": [1, 2]}
    [seen] = server.seen
    assert seen.verified
    assert seen.method == "POST"
    assert seen.path == "/sandbox/v2/charges"
    assert seen.json() == {
        "chargePermissionId": "S01-5105180-3221187",
        "chargeAmount": {"amount": "14.00", "currencyCode": "USD"},
        "captureNow": False,
    }
    assert seen.headers["x-amz-pay-idempotency-key"] == "key-1"
    assert seen.headers["x-amz-pay-host"] == seen.headers["host"] == f"127.0.0.1:{server.port}"
    assert seen.headers["x-amz-pay-region"] == "na"
    assert seen.headers["x-amz-pay-date"] == "20240101T000001Z"
    assert seen.headers["authorization"].startswith(
        "AMZN-PAY-RSASSA-PSS-V2 PublicKeyId=AHTESTKEYID, SignedHeaders="
    )
    assert set(seen.signed_headers) >= {
        "accept",
        "content-type",
        "user-agent",
        "x-amz-pay-date",
        "x-amz-pay-host",
        "x-amz-pay-idempotency-key",
        "x-amz-pay-region",
    }


async def test_get_sends_no_idempotency_key_and_signs_an_empty_body(server: ScriptedServer) -> None:
    server.script = [reply(200, CHARGE)]
    async with make_client(server) as client:
        charge = await client.invoke(
            "GetCharge", path_params={"chargeId": "S01-5105180-3221187-C056351"}
        )
    assert isinstance(charge, Charge)
    assert charge.charge_id == "S01-5105180-3221187-C056351"
    [seen] = server.seen
    assert seen.verified
    assert seen.method == "GET"
    assert seen.path == "/sandbox/v2/charges/S01-5105180-3221187-C056351"
    assert "x-amz-pay-idempotency-key" not in seen.headers
    assert seen.body == b""


async def test_unified_key_id_uses_the_path_without_environment(server: ScriptedServer) -> None:
    server.script = [reply(200, {"buyerId": "amzn1.account.X", "name": "Susie"})]
    async with make_client(server, public_key_id="SANDBOX-AHKEY") as client:
        buyer = await client.invoke("GetBuyer", path_params={"buyerToken": "token-1"})
    assert isinstance(buyer, Buyer)
    assert buyer.buyer_id == "amzn1.account.X"
    assert server.seen[0].path == "/v2/buyers/token-1"
    assert server.seen[0].verified


@pytest.mark.parametrize(
    ("call", "method", "path", "body"),
    [
        (
            lambda c: c.invoke(
                "CloseChargePermission",
                path_params={"chargePermissionId": "S01-1"},
                body={"closureReason": "done"},
            ),
            "DELETE",
            "/sandbox/v2/chargePermissions/S01-1/close",
            {"closureReason": "done"},
        ),
        (
            lambda c: c.invoke(
                "CancelCharge",
                path_params={"chargeId": "S01-1-C1"},
                body={"cancellationReason": "oos"},
            ),
            "DELETE",
            "/sandbox/v2/charges/S01-1-C1/cancel",
            {"cancellationReason": "oos"},
        ),
        (
            lambda c: c.invoke(
                "UpdateCheckoutSession",
                path_params={"checkoutSessionId": "cs-1"},
                body={"merchantMetadata": {"noteToBuyer": "hi"}},
            ),
            "PATCH",
            "/sandbox/v2/checkoutSessions/cs-1",
            {"merchantMetadata": {"noteToBuyer": "hi"}},
        ),
        (
            lambda c: c.invoke(
                "CaptureCharge",
                path_params={"chargeId": "S01-1-C1"},
                body={"captureAmount": {"amount": "1.00", "currencyCode": "USD"}},
                idempotency_key="cap-1",
            ),
            "POST",
            "/sandbox/v2/charges/S01-1-C1/capture",
            {"captureAmount": {"amount": "1.00", "currencyCode": "USD"}},
        ),
        (
            lambda c: c.invoke(
                "CreateDeliveryTracker",
                body={"chargePermissionId": "S01-1", "deliveryDetails": [{"trackingNumber": "1Z"}]},
                idempotency_key="dt-1",
            ),
            "POST",
            "/sandbox/v2/deliveryTrackers",
            {"chargePermissionId": "S01-1", "deliveryDetails": [{"trackingNumber": "1Z"}]},
        ),
    ],
    ids=["close-permission", "cancel-charge", "update-session", "capture", "delivery-tracker"],
)
async def test_operations_use_the_documented_method_path_and_signed_body(
    server: ScriptedServer, call: Any, method: str, path: str, body: dict[str, Any]
) -> None:
    server.script = [reply(200, {})]
    async with make_client(server) as client:
        result = await call(client)
    assert result.http_status == 200
    [seen] = server.seen
    assert (seen.method, seen.path, seen.json()) == (method, path, body)
    assert seen.verified
    assert ("x-amz-pay-idempotency-key" in seen.headers) == (method == "POST")


async def test_create_checkout_session_fills_the_store_id(server: ScriptedServer) -> None:
    server.script = [reply(201, {"checkoutSessionId": "cs-1"})]
    async with make_client(server) as client:
        session = await client.invoke(
            "CreateCheckoutSession",
            body={"webCheckoutDetails": {"checkoutReviewReturnUrl": "https://a/r"}},
            idempotency_key="cs-key",
            simulation_code="Declined",
        )
    assert isinstance(session, CheckoutSession)
    assert session.checkout_session_id == "cs-1"
    seen = server.seen[0]
    assert seen.json()["storeId"] == "amzn1.store"
    assert seen.headers["x-amz-pay-simulation-code"] == "Declined"
    assert "x-amz-pay-simulation-code" in seen.signed_headers
    assert seen.verified


async def test_pending_authorization_202_status_is_exposed(server: ScriptedServer) -> None:
    server.script = [
        reply(
            202,
            {
                "checkoutSessionId": "cs-1",
                "statusDetails": {"state": "Completed"},
                "chargeId": "S01-1-C1",
            },
        )
    ]
    async with make_client(server) as client:
        session = await client.invoke(
            "CompleteCheckoutSession",
            path_params={"checkoutSessionId": "cs-1"},
            body={"chargeAmount": {"amount": "14.00", "currencyCode": "USD"}},
            idempotency_key="complete-1",
        )
    assert session.http_status == 202
    assert isinstance(session, CheckoutSession)
    assert session.charge_id == "S01-1-C1"


@pytest.mark.parametrize("status", RETRYABLE)
async def test_retryable_status_follows_the_full_jitter_schedule_with_one_key(
    server: ScriptedServer, status: int
) -> None:
    server.script = [reply(status, {"reasonCode": "Busy"})] * 3 + [reply(201, CHARGE)]
    sleep = RecordingSleep()
    async with make_client(server, sleep=sleep, jitter=0.5) as client:
        charge = await client.invoke(
            "CreateCharge", body=charge_request(), idempotency_key="same-key"
        )
    assert charge.http_status == 201
    assert sleep.delays == [0.5, 1.0, 2.0]
    assert len(server.seen) == 4
    assert {s.headers["x-amz-pay-idempotency-key"] for s in server.seen} == {"same-key"}
    assert all(s.verified for s in server.seen)
    assert len({s.headers["x-amz-pay-date"] for s in server.seen}) == 4
    assert len({s.signature for s in server.seen}) == 4


async def test_retries_stop_after_max_retries_with_the_last_error(server: ScriptedServer) -> None:
    server.script = [reply(503, {"reasonCode": "ServiceUnavailable", "message": "down"})]
    sleep = RecordingSleep()
    async with make_client(server, sleep=sleep) as client:
        with pytest.raises(AmazonPayError) as info:
            await client.invoke("GetRefund", path_params={"refundId": "S01-1-R1"})
    assert info.value.http_status == 503
    assert info.value.reason_code == "ServiceUnavailable"
    assert info.value.retryable
    assert info.value.attempts == 4
    assert info.value.operation == "get_refund"
    assert len(server.seen) == 4
    assert len(sleep.delays) == 3


@pytest.mark.parametrize("status", [400, 401, 403, 404, 409, 422])
async def test_non_retryable_errors_fail_at_once_with_their_reason(
    server: ScriptedServer, status: int
) -> None:
    server.script = [reply(status, {"reasonCode": "InvalidChargeStatus", "message": "nope"})]
    sleep = RecordingSleep()
    async with make_client(server, sleep=sleep) as client:
        with pytest.raises(AmazonPayError) as info:
            await client.invoke("CreateCharge", body=charge_request(), idempotency_key="k")
    assert info.value.http_status == status
    assert info.value.reason_code == "InvalidChargeStatus"
    assert not info.value.retryable
    assert len(server.seen) == 1
    assert sleep.delays == []


async def test_unknown_reason_code_arrives_as_a_plain_string(server: ScriptedServer) -> None:
    server.script = [reply(422, {"reasonCode": "CodeInventedIn2031", "message": "?"})]
    async with make_client(server) as client:
        with pytest.raises(AmazonPayError) as info:
            await client.invoke("GetChargePermission", path_params={"chargePermissionId": "S01-1"})
    assert info.value.reason_code == "CodeInventedIn2031"


async def test_retry_after_seconds_replaces_the_backoff(server: ScriptedServer) -> None:
    server.script = [reply(429, {"reasonCode": "TooManyRequests"}, {"Retry-After": "7"})]
    server.script.append(reply(200, CHARGE))
    sleep = RecordingSleep()
    async with make_client(server, sleep=sleep) as client:
        await client.invoke("GetCharge", path_params={"chargeId": "S01-1-C1"})
    assert sleep.delays == [7.0]


async def test_retry_after_http_date_is_measured_against_the_client_clock(
    server: ScriptedServer,
) -> None:
    now = datetime(2015, 10, 21, 7, 28, 0, tzinfo=UTC)
    server.script = [
        reply(503, {}, {"Retry-After": "Wed, 21 Oct 2015 07:28:04 GMT"}),
        reply(200, CHARGE),
    ]
    sleep = RecordingSleep()
    async with make_client(server, sleep=sleep, clock=lambda: now) as client:
        await client.invoke("GetCharge", path_params={"chargeId": "S01-1-C1"})
    assert sleep.delays == [4.0]


async def test_slow_server_hits_the_deadline_and_no_attempt_starts_after_it(
    server: ScriptedServer,
) -> None:
    release = asyncio.Event()
    server.script = [hang(release)]
    sleep = RecordingSleep()
    client = make_client(server, sleep=sleep)
    try:
        with pytest.raises(AmazonPayDeadlineExceeded) as info:
            await client.invoke("GetCharge", path_params={"chargeId": "S01-1-C1"}, timeout=0.3)
        assert isinstance(info.value.last_error, AmazonPayTimeoutError)
        assert info.value.operation == "get_charge"
        await asyncio.sleep(0.3)
        assert len(server.seen) == 1
        assert sleep.delays == []
    finally:
        release.set()
        await client.close()


async def test_backoff_that_would_outlive_the_deadline_is_not_slept(server: ScriptedServer) -> None:
    server.script = [reply(503, {"reasonCode": "ServiceUnavailable"})]
    sleep = RecordingSleep()
    policy = RetryPolicy(base_delay=120.0, max_delay=120.0)
    async with make_client(server, sleep=sleep, policy=policy) as client:
        with pytest.raises(AmazonPayDeadlineExceeded) as info:
            await client.invoke("GetCharge", path_params={"chargeId": "S01-1-C1"}, timeout=30.0)
    assert sleep.delays == []
    assert len(server.seen) == 1
    assert info.value.last_error is not None
    assert info.value.last_error.http_status == 503
    assert isinstance(info.value, AmazonPayError)


async def test_absolute_monotonic_deadline_already_passed_sends_nothing(
    server: ScriptedServer,
) -> None:
    server.script = [reply(200, CHARGE)]
    async with make_client(server) as client:
        with pytest.raises(AmazonPayDeadlineExceeded):
            await client.invoke("GetCharge", path_params={"chargeId": "S01-1-C1"}, deadline=0.0)
    assert server.seen == []


async def test_connection_reset_mid_request_is_retried_with_the_same_key(
    server: ScriptedServer,
) -> None:
    server.script = [reset(), reply(201, CHARGE)]
    sleep = RecordingSleep()
    async with make_client(server, sleep=sleep) as client:
        charge = await client.invoke(
            "CreateCharge", body=charge_request(), idempotency_key="reset-key"
        )
    assert charge.http_status == 201
    assert len(server.seen) == 2
    assert [s.headers["x-amz-pay-idempotency-key"] for s in server.seen] == ["reset-key"] * 2
    assert server.seen[0].signature != server.seen[1].signature
    assert sleep.delays == [0.5]


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


async def test_connection_refused_is_retried_then_reported() -> None:
    sleep = RecordingSleep()
    async with make_client(f"http://127.0.0.1:{_closed_port()}", sleep=sleep) as client:
        with pytest.raises(AmazonPayConnectionError) as info:
            await client.invoke("GetCharge", path_params={"chargeId": "S01-1-C1"})
    assert info.value.attempts == 4
    assert info.value.http_status is None
    assert len(sleep.delays) == 3


async def test_invalid_idempotency_keys_are_refused_before_sending(server: ScriptedServer) -> None:
    server.script = [reply(201, CHARGE)]
    async with make_client(server) as client:
        for key in ("", "x" * 33, "has space", "ümlaut"):
            with pytest.raises(AmazonPayRequestError):
                await client.invoke("CreateCharge", body=charge_request(), idempotency_key=key)
        with pytest.raises(AmazonPayRequestError):
            await client.invoke("GetCharge", path_params={"chargeId": "a/b"})
    assert server.seen == []


async def test_concurrent_calls_are_bounded_per_merchant(server: ScriptedServer) -> None:
    release = asyncio.Event()
    server.script = [hang(release)]
    async with make_client(server, max_concurrency=2) as client:
        calls = [
            asyncio.create_task(client.invoke("GetCharge", path_params={"chargeId": f"C{i}"}))
            for i in range(5)
        ]
        for _ in range(500):
            if server.in_flight == 2:
                break
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.1)
        assert server.in_flight == 2
        release.set()
        await asyncio.gather(*calls)
    assert len(server.seen) == 5
    assert server.max_in_flight == 2


class RecordingExecutor(ThreadPoolExecutor):
    def __init__(self) -> None:
        super().__init__(max_workers=1)
        self.calls = 0

    def submit(self, fn: Any, /, *args: Any, **kwargs: Any) -> Any:
        self.calls += 1
        return super().submit(fn, *args, **kwargs)


async def test_signing_runs_in_the_signing_executor(server: ScriptedServer) -> None:
    server.script = [reply(200, CHARGE)]
    executor = RecordingExecutor()
    account = MerchantAccount(public_key_id="AH1", private_key=KEY, endpoint=server.endpoint)
    try:
        async with AmazonPayClient(account, signing_executor=executor) as client:
            await client.invoke("GetCharge", path_params={"chargeId": "C1"})
            button = await client.sign_button_payload({"storeId": "amzn1.store"})
        assert executor.calls == 2
        assert button.payload == '{"storeId":"amzn1.store"}'
        assert verify_signature(PUBLIC_PEM, button_string_to_sign(button.payload), button.signature)
    finally:
        executor.shutdown()


async def test_attempt_hook_sees_every_attempt(server: ScriptedServer) -> None:
    server.script = [reply(500, {"reasonCode": "InternalServerError"}), reply(200, CHARGE)]
    events: list[AttemptEvent] = []
    client = make_client(server)
    client._on_attempt = events.append
    async with client:
        await client.invoke("GetCharge", path_params={"chargeId": "C1"})
    assert [(e.attempt, e.http_status, e.reason_code, e.retry, e.delay) for e in events] == [
        (1, 500, "InternalServerError", True, 0.5),
        (2, 200, None, False, None),
    ]


async def test_logs_name_the_failure_but_never_a_secret(
    server: ScriptedServer, caplog: pytest.LogCaptureFixture
) -> None:
    server.script = [
        reply(503, {"reasonCode": "ServiceUnavailable"}, {"x-amz-pay-request-id": "r9"})
    ]
    caplog.set_level(logging.DEBUG, logger="service.amazonpay")
    async with make_client(server) as client:
        with pytest.raises(AmazonPayError) as info:
            await client.invoke("GetCharge", path_params={"chargeId": "C1"})
    text = caplog.text + repr(info.value) + str(info.value)
    assert "ServiceUnavailable" in caplog.text
    assert "r9" in caplog.text
    assert "Signature=" not in text
    for seen in server.seen:
        assert seen.signature not in text
    assert PRIVATE_KEY_FILE.read_text().splitlines()[1] not in text


async def test_closed_client_refuses_calls(server: ScriptedServer) -> None:
    client = make_client(server)
    await client.close()
    with pytest.raises(AmazonPayRequestError):
        await client.invoke("GetCharge", path_params={"chargeId": "C1"})


async def test_an_untyped_answer_carries_the_json_status_and_request_id(
    server: ScriptedServer,
) -> None:
    server.script = [reply(201, CHARGE, {"x-amz-pay-request-id": "req-raw"})]
    async with make_client(server) as client:
        answer = await client.invoke(
            "CreateCharge", body=charge_request(), idempotency_key="k-raw", typed=False
        )
    assert not isinstance(answer, Charge)
    assert (answer.http_status, answer.request_id) == (201, "req-raw")
    assert answer.raw == CHARGE
