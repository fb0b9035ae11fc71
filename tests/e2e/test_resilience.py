"""Outage and overload control, readiness, traces and log hygiene, through the real stack."""

from __future__ import annotations

import asyncio
import io
import json
import logging
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from payments.amazonpay.v1 import charge_pb2, common_pb2
from payments.amazonpay.v1 import checkout_session_pb2 as cs
from service.app import Application
from service.config import load_settings
from service.ledger import EmbeddedPostgres
from service.telemetry import JsonFormatter, instrument_libraries
from tests._emulator import EmulatorProcess
from tests._postgres import fresh_database
from tests._process import REPO
from tests.e2e._flows import checkout, failure, key, usd
from tests.e2e.conftest import Keys, Stubs, service_env, stubs_for

CHARGE_ID = "S01-0000000-0000000-C000009"


async def _app(env: dict[str, str]) -> Application:
    app = Application(load_settings(env))
    await app.start()
    return app


@pytest.fixture
async def fragile(
    database_url: str, clean_emulator: EmulatorProcess, keys: Keys, tmp_path: Path
) -> AsyncIterator[tuple[Application, Stubs]]:
    """No client retries, a breaker that opens after two failures, one call slot, no queue."""
    env = {
        **service_env(database_url, clean_emulator, keys, tmp_path),
        "AMAZON_MAX_RETRIES": "0",
        "AMAZON_CIRCUIT_FAILURES": "2",
        "AMAZON_CIRCUIT_OPEN_S": "1",
        "AMAZON_MAX_CONCURRENT_CALLS": "1",
        "AMAZON_MAX_QUEUED_CALLS": "0",
    }
    app = await _app(env)
    target = f"127.0.0.1:{app.grpc_port}"
    try:
        async with grpc.aio.insecure_channel(target) as channel:
            yield app, stubs_for(channel, target)
    finally:
        await app.stop()


async def _get(api: Stubs) -> charge_pb2.GetChargeResponse:
    return await api.charges.GetCharge(
        charge_pb2.GetChargeRequest(charge_id=CHARGE_ID, source=common_pb2.READ_SOURCE_AMAZON),
        timeout=10,
    )


async def test_the_breaker_opens_under_an_outage_and_closes_after_it(
    fragile: tuple[Application, Stubs], clean_emulator: EmulatorProcess
) -> None:
    app, api = fragile
    await clean_emulator.control(
        "POST",
        "faults",
        {
            "operation": "GetCharge",
            "status": 503,
            "reasonCode": "ServiceUnavailable",
            "count": None,
        },
    )
    for _ in range(2):
        with pytest.raises(grpc.aio.AioRpcError) as outage:
            await _get(api)
        assert failure(outage.value).reason == "ServiceUnavailable"
    with pytest.raises(grpc.aio.AioRpcError) as fast:
        await _get(api)
    info = failure(fast.value)
    assert (info.code, info.reason) == (grpc.StatusCode.UNAVAILABLE, "CIRCUIT_OPEN")
    assert info.retry_delay_s is not None
    assert app.metrics.circuit_states == {"default": 2, "second": 0}  # each merchant from start-up
    faults = (await clean_emulator.control("GET", "faults"))["faults"]
    assert faults  # the open circuit sent nothing: the fault is still armed

    await clean_emulator.control("DELETE", "faults")
    await asyncio.sleep(1.1)
    with pytest.raises(grpc.aio.AioRpcError) as probe:
        await _get(api)
    assert failure(probe.value).reason == "ResourceNotFound"  # Amazon answered: circuit closes
    assert app.metrics.circuit_states == {"default": 0, "second": 0}


async def test_calls_beyond_the_slots_and_queue_are_refused_without_a_trace_in_the_ledger(
    fragile: tuple[Application, Stubs], clean_emulator: EmulatorProcess
) -> None:
    app, api = fragile
    await clean_emulator.control(
        "POST", "faults", {"operation": "*", "latencyMs": 800, "count": None}
    )
    slow = asyncio.ensure_future(_get(api))
    await asyncio.sleep(0.3)
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await api.charges.CreateCharge(
            charge_pb2.CreateChargeRequest(
                idempotency_key=key(),
                charge_permission_id="S01-0000000-0000000",
                charge_amount=usd("1.00"),
            ),
            timeout=10,
        )
    info = failure(refused.value)
    assert (info.code, info.reason) == (grpc.StatusCode.RESOURCE_EXHAUSTED, "OVERLOADED")
    assert info.retry_delay_s is not None
    with pytest.raises(grpc.aio.AioRpcError):
        await slow
    assert app.ledger is not None
    assert await app.ledger.pool.fetchval("SELECT count(*) FROM operations") == 0


@pytest.mark.slow
async def test_readiness_follows_postgres_stop_and_start(
    clean_emulator: EmulatorProcess, keys: Keys, tmp_path: Path
) -> None:
    data = REPO / ".data" / f"readiness-{tmp_path.name}"
    server = EmbeddedPostgres(data / "postgres")
    admin_url = await server.start()
    try:
        async with fresh_database(admin_url) as url:
            app = await _app(service_env(url, clean_emulator, keys, tmp_path))
            target = f"127.0.0.1:{app.grpc_port}"
            try:
                async with grpc.aio.insecure_channel(target) as channel:
                    health = health_pb2_grpc.HealthStub(channel)

                    async def status(service: str = "") -> int:
                        reply = await health.Check(
                            health_pb2.HealthCheckRequest(service=service), timeout=5
                        )
                        return int(reply.status)

                    async def becomes(expected: int) -> None:
                        for _ in range(100):
                            if await status() == expected:
                                return
                            await asyncio.sleep(0.1)
                        raise AssertionError(f"health never became {expected}")

                    assert await status() == health_pb2.HealthCheckResponse.SERVING
                    await server.stop()
                    await becomes(health_pb2.HealthCheckResponse.NOT_SERVING)
                    assert await status("liveness") == health_pb2.HealthCheckResponse.SERVING
                    server = EmbeddedPostgres(data / "postgres")
                    await server.start()
                    await becomes(health_pb2.HealthCheckResponse.SERVING)
                    api = stubs_for(channel, target)
                    await api.sessions.CreateCheckoutSession(
                        cs.CreateCheckoutSessionRequest(
                            idempotency_key=key(),
                            web_checkout_details=cs.WebCheckoutDetails(
                                checkout_review_return_url="https://shop.example/review"
                            ),
                        ),
                        timeout=10,
                    )
            finally:
                await app.stop()
    finally:
        await server.stop()


@pytest.fixture(scope="module")
def spans() -> InMemorySpanExporter:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    trace.set_tracer_provider(provider)
    instrument_libraries()
    return exporter


async def test_one_trace_spans_grpc_server_amazon_http_and_sql(
    spans: InMemorySpanExporter, api: Stubs, clean_emulator: EmulatorProcess
) -> None:
    spans.clear()
    trace_id = "4bf92f3577b34da6a3ce929d0e0e4736"
    metadata = (("traceparent", f"00-{trace_id}-00f067aa0ba902b7-01"),)
    await api.sessions.CreateCheckoutSession(
        cs.CreateCheckoutSessionRequest(
            idempotency_key=key(),
            web_checkout_details=cs.WebCheckoutDetails(
                checkout_review_return_url="https://shop.example/review"
            ),
        ),
        metadata=metadata,
    )
    ours = [s for s in spans.get_finished_spans() if format(s.context.trace_id, "032x") == trace_id]
    kinds = {s.kind.name for s in ours}
    names = " ".join(s.name for s in ours)
    assert "SERVER" in kinds
    assert "CreateCheckoutSession" in names
    http = [
        s
        for s in ours
        if s.kind.name == "CLIENT"
        and ({"http.request.method", "http.method"} & set(s.attributes or {}))
    ]
    assert http, names
    assert any((s.attributes or {}).get("db.system") == "postgresql" for s in ours)


async def test_trace_attributes_carry_no_pii_or_secrets(
    spans: InMemorySpanExporter, api: Stubs, clean_emulator: EmulatorProcess, keys: Keys
) -> None:
    spans.clear()
    done = await checkout(api, clean_emulator, intent=cs.PAYMENT_INTENT_AUTHORIZE)
    await api.charges.CaptureCharge(
        charge_pb2.CaptureChargeRequest(
            charge_id=done.charge_id, idempotency_key=key(), capture_amount=usd("100.00")
        )
    )
    finished = spans.get_finished_spans()
    assert len(finished) > 10
    values = " ".join(str(value) for span in finished for value in (span.attributes or {}).values())
    assert done.charge_id in values  # ids are fine, and prove attributes were recorded
    private_key_body = keys.private.read_text().splitlines()[1]
    for secret in (
        "Susie Smith",
        "susie.smith@example.com",
        "Ditka Ave",
        private_key_body,
        "Signature=",
    ):
        assert secret not in values, secret


def _trace_of(spans: InMemorySpanExporter, span: ReadableSpan) -> list[ReadableSpan]:
    assert span.context is not None
    return [
        s
        for s in spans.get_finished_spans()
        if s.context is not None and s.context.trace_id == span.context.trace_id
    ]


def _roots(trace_spans: list[ReadableSpan]) -> list[ReadableSpan]:
    return [s for s in trace_spans if s.parent is None]


async def test_a_reconciler_pass_is_one_trace_under_one_parent_span(
    spans: InMemorySpanExporter,
    database_url: str,
    clean_emulator: EmulatorProcess,
    keys: Keys,
    tmp_path: Path,
) -> None:
    env = {
        **service_env(database_url, clean_emulator, keys, tmp_path),
        "RECONCILER_ENABLED": "1",
        "RECONCILER_INTERVAL_S": "3600",
    }
    spans.clear()
    app = await _app(env)
    try:
        await asyncio.sleep(2.5)  # one readiness check of the ledger (every 2 s) has run
        pings = [
            s
            for s in spans.get_finished_spans()
            if (s.attributes or {}).get("db.statement") == "SELECT 1"
        ]
        assert pings == [], "the ledger health checks' SELECT 1 are traced"
        target = f"127.0.0.1:{app.grpc_port}"
        async with grpc.aio.insecure_channel(target) as channel:
            created = await stubs_for(channel, target).sessions.CreateCheckoutSession(
                cs.CreateCheckoutSessionRequest(
                    idempotency_key=key(),
                    web_checkout_details=cs.WebCheckoutDetails(
                        checkout_review_return_url="https://shop.example/review"
                    ),
                )
            )
        session_id = created.checkout_session.checkout_session_id
        assert app.reconciler is not None
        spans.clear()
        result = await app.reconciler.run_once()
        assert result.polled >= 1
    finally:
        await app.stop()
    [read] = [
        s
        for s in spans.get_finished_spans()
        if s.name == "payments.read.checkout_session"
        and (s.attributes or {}).get("amazonpay.object_id") == session_id
    ]
    ours = _trace_of(spans, read)
    [root] = _roots(ours)
    assert root.name == "reconciler.pass"
    polled = (root.attributes or {})["reconciler.polled"]
    assert isinstance(polled, int)
    assert polled >= 1
    attributes = dict(read.attributes or {})
    assert attributes["amazonpay.merchant"] == "default"
    assert attributes["amazonpay.operation"] == "Get/checkout_session"
    assert attributes["amazonpay.read_source"] == "amazon"
    names = {s.name for s in ours}
    assert any(s.kind.name == "CLIENT" for s in ours), names  # the GET to Amazon
    assert len(ours) > 3, names  # SQL of the lease, the record and the finish are in it too


async def test_an_ipn_is_one_trace_from_receipt_to_the_recorded_read(
    spans: InMemorySpanExporter,
    database_url: str,
    clean_emulator: EmulatorProcess,
    keys: Keys,
    tmp_path: Path,
) -> None:
    app = await _app(service_env(database_url, clean_emulator, keys, tmp_path))
    url = f"http://127.0.0.1:{app.ipn_port}/ipn"
    await clean_emulator.control("POST", "ipn/subscriptions", {"url": url})
    try:
        target = f"127.0.0.1:{app.grpc_port}"
        async with grpc.aio.insecure_channel(target) as channel:
            api = stubs_for(channel, target)
            done = await checkout(api, clean_emulator, intent=cs.PAYMENT_INTENT_AUTHORIZE)
            await api.charges.CaptureCharge(
                charge_pb2.CaptureChargeRequest(
                    charge_id=done.charge_id, idempotency_key=key(), capture_amount=usd("100.00")
                )
            )
            processed: list[ReadableSpan] = []
            for _ in range(200):
                processed = [
                    s
                    for s in spans.get_finished_spans()
                    if s.name == "ipn.process"
                    and (s.attributes or {}).get("amazonpay.object_id") == done.charge_id
                ]
                if processed:
                    break
                await asyncio.sleep(0.05)
    finally:
        await clean_emulator.control("DELETE", "ipn/subscriptions", {"url": url})
        await app.stop()
    assert processed, "no IPN about the charge was processed"
    for span in processed:  # each IPN about the charge (authorized, captured): its own trace
        ours = _trace_of(spans, span)
        [root] = _roots(ours)
        assert root.name == "ipn.receive"
        assert (root.attributes or {})["http.response.status_code"] == 200
        [read] = [s for s in ours if s.name == "payments.read.charge"]
        assert (read.attributes or {})["amazonpay.object_id"] == done.charge_id
        assert (span.attributes or {})["amazonpay.merchant"] == "default"


async def test_payment_spans_name_merchant_operation_and_object_id(
    spans: InMemorySpanExporter, api: Stubs, clean_emulator: EmulatorProcess
) -> None:
    done = await checkout(api, clean_emulator, intent=cs.PAYMENT_INTENT_AUTHORIZE)
    spans.clear()
    await api.charges.CaptureCharge(
        charge_pb2.CaptureChargeRequest(
            charge_id=done.charge_id, idempotency_key=key(), capture_amount=usd("100.00")
        )
    )
    [capture] = [s for s in spans.get_finished_spans() if s.name == "payments.CaptureCharge"]
    attributes = dict(capture.attributes or {})
    assert attributes["amazonpay.merchant"] == "default"
    assert attributes["amazonpay.operation"] == "CaptureCharge"
    assert attributes["amazonpay.object_id"] == done.charge_id
    assert attributes["amazonpay.replayed"] is False
    [root] = _roots(_trace_of(spans, capture))
    assert root.kind.name == "SERVER"


async def test_no_secret_or_pii_reaches_the_logs_across_a_full_flow(
    api: Stubs, clean_emulator: EmulatorProcess, keys: Keys
) -> None:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    previous = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    try:
        done = await checkout(api, clean_emulator, intent=cs.PAYMENT_INTENT_AUTHORIZE)
        await api.charges.CaptureCharge(
            charge_pb2.CaptureChargeRequest(
                charge_id=done.charge_id, idempotency_key=key(), capture_amount=usd("100.00")
            )
        )
        with pytest.raises(grpc.aio.AioRpcError):
            await api.charges.CreateCharge(
                charge_pb2.CreateChargeRequest(
                    idempotency_key=key(),
                    charge_permission_id=done.charge_permission_id,
                    charge_amount=usd("5.00"),
                    sandbox_simulation_code="HardDeclined",
                )
            )
    finally:
        root.removeHandler(handler)
        root.setLevel(previous)
    output = stream.getvalue()
    assert output, "the flow logged nothing: the assertion below would prove nothing"
    for line in output.splitlines():
        json.loads(line)
    private_key_body = keys.private.read_text().splitlines()[1]
    forbidden = [
        private_key_body,
        "Signature=",
        "AMZN-PAY-RSASSA-PSS-V2 PublicKeyId",
        "Susie Smith",  # the emulator's default buyer and address name
        "susie.smith@example.com",
        "Ditka Ave",
        "BEGIN RSA PRIVATE KEY",
    ]
    for secret in forbidden:
        assert secret not in output, secret
