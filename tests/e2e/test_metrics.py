"""Lag and IPN metrics, read through an in-memory OpenTelemetry reader."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import grpc
import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader, NumberDataPoint

from payments.amazonpay.v1 import checkout_session_pb2 as cs
from service.app import Application
from service.config import load_settings
from tests._emulator import EmulatorProcess
from tests.e2e._flows import key, record_completed_session_naming
from tests.e2e.conftest import Keys, service_env, stubs_for


def _points(reader: InMemoryMetricReader, name: str) -> list[tuple[dict[str, Any], float]]:
    data = reader.get_metrics_data()
    assert data is not None
    found = []
    for resource in data.resource_metrics:
        for scope in resource.scope_metrics:
            for metric in scope.metrics:
                if metric.name == name:
                    for point in metric.data.data_points:
                        assert isinstance(point, NumberDataPoint), f"{name} is not a sum or gauge"
                        found.append((dict(point.attributes or {}), point.value))
    return found


@pytest.fixture
async def measured(
    database_url: str, clean_emulator: EmulatorProcess, keys: Keys, tmp_path: Path
) -> AsyncIterator[tuple[Application, InMemoryMetricReader]]:
    reader = InMemoryMetricReader()
    env = {
        **service_env(database_url, clean_emulator, keys, tmp_path),
        "RECONCILER_ENABLED": "1",
        "RECONCILER_INTERVAL_S": "3600",
    }
    app = Application(load_settings(env), meter_provider=MeterProvider(metric_readers=[reader]))
    await app.start()
    try:
        yield app, reader
    finally:
        await app.stop()


async def test_ipn_outcomes_are_counted(
    measured: tuple[Application, InMemoryMetricReader],
) -> None:
    app, reader = measured
    async with aiohttp.ClientSession() as session:
        for body in ("{broken", '{"Type": "Notification"}'):
            async with session.post(f"http://127.0.0.1:{app.ipn_port}/ipn", data=body) as reply:
                assert reply.status == 400
    counts = {
        a.get("outcome"): v
        for a, v in _points(reader, "amazonpay.ipn.messages")
        if a.get("outcome") == "received"
    }
    rejected = sum(
        v for a, v in _points(reader, "amazonpay.ipn.messages") if a.get("outcome") == "rejected"
    )
    assert counts == {"received": 2}
    assert rejected == 2


async def test_the_oldest_pending_object_age_is_reported(
    measured: tuple[Application, InMemoryMetricReader],
) -> None:
    app, reader = measured
    target = f"127.0.0.1:{app.grpc_port}"
    async with grpc.aio.insecure_channel(target) as channel:
        api = stubs_for(channel, target)
        created = await api.sessions.CreateCheckoutSession(
            cs.CreateCheckoutSessionRequest(
                idempotency_key=key(),
                web_checkout_details=cs.WebCheckoutDetails(
                    checkout_review_return_url="https://shop.example/review"
                ),
            )
        )
    assert app.ledger is not None
    assert app.reconciler is not None
    await app.ledger.pool.execute(
        "UPDATE objects SET updated_at = now() - interval '1 hour' WHERE object_id = $1",
        created.checkout_session.checkout_session_id,
    )
    result = await app.reconciler.run_once()
    assert result.polled == 1
    [(_, age)] = _points(reader, "amazonpay.ledger.oldest_pending_object_age")
    assert 3600 <= age < 3700
    polls = _points(reader, "amazonpay.reconciler.polls")
    # The unlabelled series at zero exists from start-up, so the alert's rate() has a series.
    assert polls == [({}, 0), ({"kind": "checkout_session", "outcome": "unchanged"}, 1)]


async def test_every_counter_and_backlog_gauge_exists_at_zero_from_start_up(
    measured: tuple[Application, InMemoryMetricReader],
) -> None:
    _, reader = measured
    for name in (
        "amazonpay.amazon.calls",
        "amazonpay.amazon.retries",
        "amazonpay.reconciler.polls",
        "amazonpay.operations.redriven",
        "amazonpay.operations.quarantined",
        "amazonpay.operations.pending",
        "amazonpay.operations.oldest_pending_age",
        "amazonpay.ipn.backlog",
        "amazonpay.ipn.oldest_unprocessed_age",
    ):
        assert _points(reader, name), f"{name} has no series at start-up"
    outcomes = {a["outcome"] for a, _ in _points(reader, "amazonpay.ipn.messages")}
    assert outcomes == {"received", "verified", "duplicate", "rejected", "retry_later", "given_up"}
    calls = {(a["rpc"], a["code"]) for a, _ in _points(reader, "amazonpay.rpc.calls")}
    assert {("CreateCharge", "OK"), ("CreateRefund", "OK"), ("WatchEvents", "OK")} <= calls
    circuits = {a["merchant"]: v for a, v in _points(reader, "amazonpay.circuit.state")}
    assert circuits == {"default": 0, "second": 0}


async def test_pending_operations_and_the_ipn_backlog_are_gauges(
    measured: tuple[Application, InMemoryMetricReader],
) -> None:
    app, reader = measured
    assert app.ledger is not None
    assert app.reconciler is not None
    await app.ledger.pool.execute(
        """
        INSERT INTO ipn_messages (notification_id, message_id, merchant, object_type, object_id,
            notification_type, topic_arn, received_at, envelope)
        VALUES ('n-backlog', 'm-backlog', 'default', 'CHARGE', 'S01-0000000-0000404-C000404',
            'STATE_CHANGE',
            'arn:aws:sns:us-east-1:1:t', now() - interval '20 minutes', '{}')
        """
    )
    await app.ledger.pool.execute(
        """
        INSERT INTO operations (merchant, operation, idempotency_key, request_hash,
            amazon_idempotency_key, status, request, lease_owner, lease_expires_at, created_at)
        VALUES ('default', 'CreateRefund', 'k-backlog', '\\x00', 'a-backlog', 'pending',
            '{"operation": "CreateRefund", "body": {}}', $1, now() + interval '1 hour',
            now() - interval '15 minutes')
        """,
        app.payments.instance_id if app.payments else "",
    )
    # (leased by this live replica: the pass does not re-drive it; the IPN's charge is unknown
    # to Amazon, so its follow-up read fails and it stays in the backlog)
    await app.reconciler.run_once()
    [(_, ipns)] = _points(reader, "amazonpay.ipn.backlog")
    [(_, ipn_age)] = _points(reader, "amazonpay.ipn.oldest_unprocessed_age")
    [(_, ops)] = _points(reader, "amazonpay.operations.pending")
    [(_, op_age)] = _points(reader, "amazonpay.operations.oldest_pending_age")
    assert (ipns, ops) == (1, 1)
    assert 1200 <= ipn_age < 1300
    assert 900 <= op_age < 1000


async def test_owed_reads_that_keep_failing_are_a_gauge(
    measured: tuple[Application, InMemoryMetricReader],
) -> None:
    app, reader = measured
    assert app.ledger is not None
    assert app.reconciler is not None
    await record_completed_session_naming(
        app, "session-naming-an-unknown-charge", "S01-0000000-0000404-C000001"
    )
    gauge: dict[str, float] = {}
    for _ in range(20):  # the reconciler's own start-up pass may hold the claim for a moment
        await app.reconciler.run_once()  # the emulator answers 404: a failed attempt, backing off
        gauge = {a["state"]: v for a, v in _points(reader, "amazonpay.ledger.owed_reads")}
        if gauge.get("failing"):
            break
        await asyncio.sleep(0.1)
    assert gauge == {"due": 0, "failing": 1}
