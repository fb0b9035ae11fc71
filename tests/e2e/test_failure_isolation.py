"""No request, caller or message can crash, wedge or starve the service (issue 13).

Each test pins one failure found by attacking the service, through the real stack: gRPC, the
emulator over HTTP, and a fresh Postgres database. The emulator here is this module's own, with a
distinct Amazon MerchantID per key, so routing a notification by its MerchantID is observable.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import grpc
import pytest
from google.protobuf.message import Message
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader, NumberDataPoint

from payments.amazonpay.v1 import (
    button_pb2,
    buyer_pb2,
    charge_pb2,
    common_pb2,
    ledger_pb2,
)
from payments.amazonpay.v1 import checkout_session_pb2 as cs
from service.app import Application
from service.config import load_settings
from service.core import QUARANTINED, AmazonCall
from service.workers import IPN_ATTEMPTS, Reconciler, ReconcilerSettings
from tests._emulator import EmulatorProcess
from tests.e2e._flows import checkout, failure, key, usd
from tests.e2e.conftest import KEY_ID, SECOND_KEY_ID, Keys, Stubs, service_env, stubs_for

SECOND_MERCHANT_ID = "A2SECONDMERCHANT"
CHARGE_ID = "S01-0000000-0000000-C000009"
DEAD_OWNER = "424242"  # an instance id whose lock nobody holds


@pytest.fixture(scope="module")
async def emulator(
    tmp_path_factory: pytest.TempPathFactory, keys: Keys
) -> AsyncIterator[EmulatorProcess]:
    process = EmulatorProcess(tmp_path_factory.mktemp("emulator"), {KEY_ID: keys.public})
    await process.start()
    await process.control(
        "POST",
        "keys",
        {
            "publicKeyId": SECOND_KEY_ID,
            "publicKeyPem": keys.second_public.read_text(),
            "merchantId": SECOND_MERCHANT_ID,
        },
    )
    try:
        yield process
    finally:
        await process.stop()


async def _start(env: dict[str, str]) -> Application:
    app = Application(load_settings(env))
    await app.start()
    return app


@pytest.fixture
async def fragile(
    database_url: str, clean_emulator: EmulatorProcess, keys: Keys, tmp_path: Path
) -> AsyncIterator[tuple[Application, Stubs]]:
    """No client retries and a breaker that opens after two failures."""
    env = {
        **service_env(database_url, clean_emulator, keys, tmp_path),
        "AMAZON_MAX_RETRIES": "0",
        "AMAZON_CIRCUIT_FAILURES": "2",
        "AMAZON_CIRCUIT_OPEN_S": "30",
    }
    app = await _start(env)
    target = f"127.0.0.1:{app.grpc_port}"
    try:
        async with grpc.aio.insecure_channel(target) as channel:
            yield app, stubs_for(channel, target)
    finally:
        await app.stop()


async def _count(app: Application, sql: str, *args: Any) -> int:
    assert app.ledger is not None
    value: int = await app.ledger.pool.fetchval(sql, *args)
    return value


async def _pending(
    app: Application, operation: str, request: dict[str, Any], *, owner: str = DEAD_OWNER
) -> str:
    """A pending operation whose lease ran out, as a process that died mid-call leaves it."""
    assert app.ledger is not None
    caller_key = key()
    await app.ledger.repository.begin_operation(
        merchant="default",
        operation=operation,
        idempotency_key=caller_key,
        request_hash=hashlib.sha256(caller_key.encode()).digest(),
        amazon_idempotency_key=caller_key[:32],
        request=request,
        lease_owner=owner,
        lease_s=0.0,
    )
    return caller_key


async def _operation(app: Application, caller_key: str) -> tuple[str, dict[str, Any] | None]:
    assert app.ledger is not None
    row = await app.ledger.pool.fetchrow(
        "SELECT status, error FROM operations WHERE idempotency_key = $1", caller_key
    )
    assert row is not None
    return row["status"], row["error"]


# ------------------------------------------------------------------ 1. the poison pill


async def test_a_trailing_newline_or_control_character_is_refused_in_every_pattern_field(
    api: Stubs, app: Application
) -> None:
    attacks: list[tuple[Message, grpc.aio.UnaryUnaryMultiCallable[Any, Any], str]] = [
        (
            cs.CreateCheckoutSessionRequest(
                idempotency_key=key(),
                sandbox_simulation_code="Declined\n",
                web_checkout_details=cs.WebCheckoutDetails(
                    checkout_review_return_url="https://shop.example/review"
                ),
            ),
            api.sessions.CreateCheckoutSession,
            "sandbox_simulation_code",
        ),
        (
            charge_pb2.CreateChargeRequest(
                idempotency_key=key() + "\n",
                charge_permission_id="S01-1111111-2222222",
                charge_amount=usd("1.00"),
            ),
            api.charges.CreateCharge,
            "idempotency_key",
        ),
        (
            charge_pb2.CreateChargeRequest(
                idempotency_key=key(),
                charge_permission_id="S01-1111111-2222222\n",
                charge_amount=usd("1.00"),
            ),
            api.charges.CreateCharge,
            "charge_permission_id",
        ),
        (
            charge_pb2.CreateChargeRequest(
                idempotency_key=key(),
                charge_permission_id="S01-1111111-2222222",
                charge_amount=common_pb2.Price(amount="1.00\n", currency_code="USD"),
            ),
            api.charges.CreateCharge,
            "charge_amount.amount",
        ),
        (
            charge_pb2.CreateChargeRequest(
                idempotency_key=key(),
                charge_permission_id="S01-1111111-2222222",
                charge_amount=usd("1.00"),
                soft_descriptor="shop\r\nX-Evil: 1",
            ),
            api.charges.CreateCharge,
            "soft_descriptor",
        ),
    ]
    for request, rpc, field in attacks:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await rpc(request, timeout=10)
        info = failure(caught.value)
        assert info.code == grpc.StatusCode.INVALID_ARGUMENT, (field, caught.value.details())
        assert field in info.violations, info.violations
    assert await _count(app, "SELECT count(*) FROM operations") == 0


@pytest.fixture
async def measured(
    database_url: str, clean_emulator: EmulatorProcess, keys: Keys, tmp_path: Path
) -> AsyncIterator[tuple[Application, InMemoryMetricReader]]:
    reader = InMemoryMetricReader()
    app = Application(
        load_settings(service_env(database_url, clean_emulator, keys, tmp_path)),
        meter_provider=MeterProvider(metric_readers=[reader]),
    )
    await app.start()
    try:
        yield app, reader
    finally:
        await app.stop()


def _sum(reader: InMemoryMetricReader, name: str) -> dict[str, float]:
    data = reader.get_metrics_data()
    found: dict[str, float] = {}
    for resource in data.resource_metrics if data is not None else ():
        for scope in resource.scope_metrics:
            for metric in scope.metrics:
                if metric.name == name:
                    for point in metric.data.data_points:
                        assert isinstance(point, NumberDataPoint), f"{name} is not a sum"
                        if not point.value:
                            continue  # series started at zero (present from start-up)
                        label = str(dict(point.attributes or {}).get("operation"))
                        found[label] = found.get(label, 0) + point.value
    return found


async def test_a_re_drive_that_cannot_be_sent_is_quarantined_and_the_others_go_on(
    measured: tuple[Application, InMemoryMetricReader], caplog: pytest.LogCaptureFixture
) -> None:
    app, reader = measured
    # Left by a version that let "Declined\n" through: aiohttp refuses the header every time.
    poisoned = await _pending(
        app,
        "CreateCheckoutSession",
        AmazonCall(
            "CreateCheckoutSession",
            {"webCheckoutDetails": {"checkoutReviewReturnUrl": "https://shop.example/review"}},
            simulation_code="Declined\n",
        ).to_json(),
    )
    broken = await _pending(app, "CaptureCharge", {"operation": "CaptureCharge", "body": {}})
    healthy = await _pending(
        app,
        "CreateCheckoutSession",
        AmazonCall(
            "CreateCheckoutSession",
            {"webCheckoutDetails": {"checkoutReviewReturnUrl": "https://shop.example/review"}},
        ).to_json(),
    )
    assert app.payments is not None
    with caplog.at_level("ERROR", logger="service.core.operations"):
        await app.payments.redrive_orphans()
    for caller_key in (poisoned, broken):
        status, error = await _operation(app, caller_key)
        assert status == "failed"
        assert error is not None
        assert error["reasonCode"] == QUARANTINED
    assert (await _operation(app, healthy))[0] == "succeeded"
    quarantined = [r for r in caplog.records if r.getMessage().startswith("operation quarantined")]
    assert len(quarantined) == 2
    assert all("Declined" not in r.getMessage() for r in caplog.records)
    assert _sum(reader, "amazonpay.operations.quarantined") == {
        "CreateCheckoutSession": 1,
        "CaptureCharge": 1,
    }
    # Nothing is left for the next start-up to trip over.
    assert await _count(app, "SELECT count(*) FROM operations WHERE status = 'pending'") == 0


# ------------------------------------------------------------------ 2. the breaker


async def test_caller_deadlines_never_open_the_circuit(
    fragile: tuple[Application, Stubs], clean_emulator: EmulatorProcess
) -> None:
    app, api = fragile
    await clean_emulator.control(
        "POST", "faults", {"operation": "GetCharge", "latencyMs": 400, "count": None}
    )
    request = charge_pb2.GetChargeRequest(charge_id=CHARGE_ID, source=common_pb2.READ_SOURCE_AMAZON)
    for _ in range(6):
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await api.charges.GetCharge(request, timeout=0.05)
        assert caught.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    await clean_emulator.control("DELETE", "faults")
    with pytest.raises(grpc.aio.AioRpcError) as answer:
        await api.charges.GetCharge(request, timeout=10)
    assert failure(answer.value).reason == "ResourceNotFound"  # Amazon's answer, not CIRCUIT_OPEN
    assert app.metrics.circuit_states.get("default", 0) == 0


async def test_a_simulation_code_for_a_live_merchant_is_refused_before_anything_is_recorded(
    database_url: str, clean_emulator: EmulatorProcess, keys: Keys, tmp_path: Path
) -> None:
    env = service_env(database_url, clean_emulator, keys, tmp_path)
    merchants = Path(env["AMAZON_PAY_MERCHANTS_FILE"])
    live = (
        "\n[merchants.live]\n"
        'public_key_id = "LIVE-E2ELIVEMERCHANT000000000000"\n'
        f'private_key_file = "{keys.private}"\n'
        'region = "us"\n'
        'environment = "live"\n'
        # Never contacted: the refusal comes first (and a live endpoint must be https).
        'endpoint = "https://127.0.0.1:9"\n'
    )
    merchants.write_text(merchants.read_text() + live)  # noqa: ASYNC240 - before the start
    env.pop("IPN_EXTRA_CERT_HOSTS", None)  # refused in live mode
    app = await _start({**env, "ALLOW_INSECURE": "1"})
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{app.grpc_port}") as channel:
            api = stubs_for(channel, "")
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await api.charges.CreateCharge(
                    charge_pb2.CreateChargeRequest(
                        merchant="live",
                        idempotency_key=key(),
                        charge_permission_id="P01-1111111-2222222",
                        charge_amount=usd("1.00"),
                        sandbox_simulation_code="HardDeclined",
                    ),
                    timeout=10,
                )
        info = failure(caught.value)
        assert info.code == grpc.StatusCode.INVALID_ARGUMENT
        assert "sandbox_simulation_code" in info.violations
        assert await _count(app, "SELECT count(*) FROM operations") == 0
        assert app.metrics.circuit_states.get("live", 0) == 0
    finally:
        await app.stop()


async def test_get_buyer_goes_through_the_breaker(
    fragile: tuple[Application, Stubs], clean_emulator: EmulatorProcess
) -> None:
    _, api = fragile
    await clean_emulator.control(
        "POST", "faults", {"operation": "GetCharge", "status": 503, "count": None}
    )
    request = charge_pb2.GetChargeRequest(charge_id=CHARGE_ID, source=common_pb2.READ_SOURCE_AMAZON)
    for _ in range(2):
        with pytest.raises(grpc.aio.AioRpcError):
            await api.charges.GetCharge(request, timeout=10)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await api.buyers.GetBuyer(buyer_pb2.GetBuyerRequest(buyer_token="token-1"), timeout=10)
    assert failure(caught.value).reason == "CIRCUIT_OPEN"


# ------------------------------------------------------------------ 3. IPN retries and routing


async def _post(url: str, body: str) -> tuple[int, Any]:
    async with (
        aiohttp.ClientSession() as session,
        session.post(url, data=body, headers={"content-type": "text/plain"}) as response,
    ):
        return response.status, await response.json(content_type=None)


async def _junk(emulator: EmulatorProcess, n: int) -> list[dict[str, Any]]:
    return [
        await emulator.control(
            "POST",
            "ipn/envelope",
            {"objectType": "CHARGE", "objectId": f"S01-9999999-{i:07d}-C000001"},
        )
        for i in range(n)
    ]


async def _until(app: Application, sql: str, expected: int, *args: Any) -> None:
    for _ in range(200):
        if await _count(app, sql, *args) == expected:
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"never {expected}: {sql}")


async def test_junk_notifications_back_off_and_are_given_up_without_starving_a_genuine_one(
    app: Application, api: Stubs, clean_emulator: EmulatorProcess, caplog: pytest.LogCaptureFixture
) -> None:
    url = f"http://127.0.0.1:{app.ipn_port}/ipn"
    for envelope in await _junk(clean_emulator, 8):
        assert await _post(url, json.dumps(envelope)) == (200, {"status": "accepted"})
    # Each follow-up fails (Amazon answers 404) and is due again only after its backoff.
    await _until(app, "SELECT count(*) FROM ipn_messages WHERE attempts = 1", 8)
    later = "SELECT count(*) FROM ipn_messages WHERE due_at > now() + interval '20 seconds'"
    assert await _count(app, later) == 8
    assert app.ledger is not None
    assert app.payments is not None
    reconciler = Reconciler(
        app.payments, app.ledger.repository, app.metrics, ReconcilerSettings(), ipn=app.ipn
    )
    assert (await reconciler.run_once()).ipn_retried == 0  # nothing is due, however often

    # A genuine notification is processed at once, whatever junk is waiting.
    done = await checkout(api, clean_emulator)
    genuine = await clean_emulator.control(
        "POST",
        "ipn/envelope",
        {
            "objectType": "CHARGE",
            "objectId": done.charge_id,
            "chargePermissionId": done.charge_permission_id,
        },
    )
    assert await _post(url, json.dumps(genuine)) == (200, {"status": "accepted"})
    processed = (
        "SELECT count(*) FROM ipn_messages WHERE object_id = $1 AND processed_at IS NOT NULL"
    )
    await _until(app, processed, 1, done.charge_id)

    # At the cap, each junk notification is given up with an ERROR log, and never claimed again.
    await app.ledger.pool.execute(
        "UPDATE ipn_messages SET attempts = $1, due_at = now() WHERE processed_at IS NULL",
        IPN_ATTEMPTS - 1,
    )
    with caplog.at_level("ERROR", logger="service.workers.ipn"):
        assert (await reconciler.run_once()).ipn_retried == 8
    gave_up = "SELECT count(*) FROM ipn_messages WHERE given_up_at IS NOT NULL"
    assert await _count(app, gave_up) == 8
    assert len([r for r in caplog.records if r.getMessage().startswith("gave up an IPN")]) == 8
    await app.ledger.pool.execute("UPDATE ipn_messages SET due_at = now()")
    assert (await reconciler.run_once()).ipn_retried == 0


async def test_a_notification_the_ledger_cannot_place_is_routed_by_its_merchant_id(
    database_url: str,
    postgres_server_url: str,
    clean_emulator: EmulatorProcess,
    keys: Keys,
    tmp_path: Path,
    api: Stubs,
) -> None:
    # The charge exists at Amazon for merchant "second"; a second replica set with an empty
    # ledger (as when the IPN outruns the API answer) receives its notification.
    done = await checkout(api, clean_emulator, merchant="second")
    envelope = await clean_emulator.control(
        "POST",
        "ipn/envelope",
        {
            "objectType": "CHARGE",
            "objectId": done.charge_id,
            "chargePermissionId": done.charge_permission_id,
            "merchantId": SECOND_MERCHANT_ID,
        },
    )
    from tests._postgres import fresh_database

    async with fresh_database(postgres_server_url) as other_url:
        other = await _start(service_env(other_url, clean_emulator, keys, tmp_path / "other"))
        try:
            url = f"http://127.0.0.1:{other.ipn_port}/ipn"
            assert await _post(url, json.dumps(envelope)) == (200, {"status": "accepted"})
            done_sql = "SELECT count(*) FROM ipn_messages WHERE processed_at IS NOT NULL"
            await _until(other, done_sql, 1)
            assert other.ledger is not None
            row = await other.ledger.pool.fetchrow(
                "SELECT merchant, processed_at FROM ipn_messages"
            )
            assert row is not None
            assert row["processed_at"] is not None
            assert row["merchant"] == "second"
            stored = await other.ledger.repository.get_object("second", "charge", done.charge_id)
            assert stored is not None
            assert (
                await other.ledger.repository.get_object("default", "charge", done.charge_id)
                is None
            )
        finally:
            await other.stop()


# ------------------------------------------------------------------ 4. validation gaps


async def test_repeated_string_fields_have_a_count_limit(api: Stubs, app: Application) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await api.sessions.CreateCheckoutSession(
            cs.CreateCheckoutSessionRequest(
                idempotency_key=key(),
                web_checkout_details=cs.WebCheckoutDetails(
                    checkout_review_return_url="https://shop.example/review"
                ),
                scopes=["name"] * 10_000,
            ),
            timeout=10,
        )
    info = failure(caught.value)
    assert info.code == grpc.StatusCode.INVALID_ARGUMENT
    assert info.violations == {"scopes": "must have at most 100 entries"}
    assert await _count(app, "SELECT count(*) FROM operations") == 0


async def test_a_definitive_413_ends_the_operation_as_failed(
    api: Stubs, app: Application, clean_emulator: EmulatorProcess
) -> None:
    done = await checkout(api, clean_emulator)
    await clean_emulator.control(
        "POST",
        "faults",
        {"operation": "CreateCharge", "status": 413, "reasonCode": "RequestEntityTooLarge"},
    )
    request = charge_pb2.CreateChargeRequest(
        idempotency_key=key(),
        charge_permission_id=done.charge_permission_id,
        charge_amount=usd("1.00"),
    )
    for _ in range(2):  # the repeat replays the failure: the one-shot fault is not hit again
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await api.charges.CreateCharge(request, timeout=10)
        assert failure(caught.value).reason == "RequestEntityTooLarge"
    assert (await _operation(app, request.idempotency_key))[0] == "failed"
    assert app.payments is not None
    assert await app.payments.redrive_orphans() == 0


# ------------------------------------------------------------------ 5. INTERNAL on bad input


def _token(data: object) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).decode()


def _digest(*filters: object) -> str:
    return hashlib.sha256(repr(tuple(filters)).encode()).hexdigest()[:16]


async def test_forged_page_tokens_are_invalid_argument(api: Stubs) -> None:
    events = _digest("default", None, None, None, None, None, None)
    objects = _digest("default", None, None, None, None, None, None)
    forged: list[tuple[grpc.aio.UnaryUnaryMultiCallable[Any, Any], type[Message], str]] = [
        (
            api.ledger.ListEvents,
            ledger_pb2.ListEventsRequest,
            _token({"p": {"e": 10**30}, "f": events}),
        ),
        (
            api.ledger.ListEvents,
            ledger_pb2.ListEventsRequest,
            _token({"p": {"e": 1.5}, "f": events}),
        ),
        (api.ledger.ListEvents, ledger_pb2.ListEventsRequest, _token({"p": [1], "f": events})),
        (api.ledger.ListEvents, ledger_pb2.ListEventsRequest, _token([1, 2])),
        (
            api.ledger.ListEvents,
            ledger_pb2.ListEventsRequest,
            _token({"p": {"e": -1}, "f": events}),
        ),
        (
            api.ledger.ListTransactions,
            ledger_pb2.ListTransactionsRequest,
            _token({"p": {"c": 5, "k": "charge", "i": "x"}, "f": objects}),
        ),
        (
            api.ledger.ListTransactions,
            ledger_pb2.ListTransactionsRequest,
            _token({"p": {"c": "0001-01-01T00:00:00+14:00", "k": "c", "i": "x"}, "f": objects}),
        ),
        (
            api.ledger.ListTransactions,
            ledger_pb2.ListTransactionsRequest,
            _token({"p": {"c": "2024-01-01T00:00:00", "k": "c", "i": "x"}, "f": objects}),
        ),
        (
            api.ledger.ListTransactions,
            ledger_pb2.ListTransactionsRequest,
            base64.urlsafe_b64encode(b"[" * 760).decode(),
        ),
    ]
    for rpc, request_type, token in forged:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await rpc(request_type(page_token=token), timeout=10)
        info = failure(caught.value)
        assert (info.code, info.reason) == (
            grpc.StatusCode.INVALID_ARGUMENT,
            "INVALID_PAGE_TOKEN",
        ), (
            token,
            caught.value.details(),
        )
        assert "page_token" in info.violations


async def test_a_deeply_nested_button_payload_is_invalid_argument(api: Stubs) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await api.buttons.SignButtonPayload(
            button_pb2.SignButtonPayloadRequest(payload="[" * 5000 + "]" * 5000), timeout=10
        )
    info = failure(caught.value)
    assert info.code == grpc.StatusCode.INVALID_ARGUMENT
    assert "payload" in info.violations


async def test_a_malformed_protobuf_is_invalid_argument_naming_no_python_class(
    app: Application,
) -> None:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{app.grpc_port}") as channel:
        for path, garbage in (
            ("/payments.amazonpay.v1.ChargeService/GetCharge", b"\x0a\xff\xff\xff\xff\xff"),
            ("/payments.amazonpay.v1.ChargeService/CreateCharge", b"\xff" * 64),
            ("/payments.amazonpay.v1.LedgerService/WatchEvents", b"\x0a\x05ab"),
        ):
            call = channel.unary_unary(path, request_serializer=None, response_deserializer=None)
            if path.endswith("WatchEvents"):
                stream = channel.unary_stream(
                    path, request_serializer=None, response_deserializer=None
                )(garbage, timeout=10)
                with pytest.raises(grpc.aio.AioRpcError) as caught:
                    async for _ in stream:
                        pass
            else:
                with pytest.raises(grpc.aio.AioRpcError) as caught:
                    await call(garbage, timeout=10)
            info = failure(caught.value)
            assert info.code == grpc.StatusCode.INVALID_ARGUMENT, caught.value.details()
            assert info.violations
            details = caught.value.details() or ""
            assert "Error" not in details
            assert "<class" not in details
            assert "Traceback" not in details


# ------------------------------------------------------------------ 6. sparse answers


async def test_a_completed_session_in_the_ledger_keeps_its_payment_details(
    api: Stubs, clean_emulator: EmulatorProcess
) -> None:
    done = await checkout(api, clean_emulator, amount="42.00", reference="order-42")
    stored = await api.sessions.GetCheckoutSession(
        cs.GetCheckoutSessionRequest(
            checkout_session_id=done.session_id, source=common_pb2.READ_SOURCE_LEDGER
        ),
        timeout=10,
    )
    session = stored.checkout_session
    assert session.status_details.raw_state == "Completed"
    assert session.payment_details.charge_amount.amount == "42.00"
    assert session.merchant_metadata.merchant_reference_id == "order-42"
    assert session.charge_permission_id == done.charge_permission_id


# ------------------------------------------------------------------ 7. own expired operations


async def test_a_replica_re_drives_its_own_expired_operations(app: Application) -> None:
    assert app.payments is not None
    own = await _pending(
        app,
        "CreateCheckoutSession",
        AmazonCall(
            "CreateCheckoutSession",
            {"webCheckoutDetails": {"checkoutReviewReturnUrl": "https://shop.example/review"}},
        ).to_json(),
        owner=app.payments.instance_id,
    )
    assert await app.payments.redrive_orphans() == 1
    assert (await _operation(app, own))[0] == "succeeded"
