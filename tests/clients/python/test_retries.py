"""Retries: the same logical call re-sends the same idempotency key, so money moves once."""

from __future__ import annotations

import asyncpg
import grpc
import pytest
from amazonpay_client import (
    AmazonPayClient,
    RateLimitedError,
    RetryEvent,
    RetryPolicy,
    UnavailableError,
    ValidationError,
    price,
)

from tests._emulator import EmulatorProcess
from tests.clients.python._flows import checkout


async def _charges_of(emulator: EmulatorProcess, charge_permission_id: str) -> list[str]:
    return [
        c["chargeId"]
        for c in await emulator.objects("charges")
        if c.get("chargePermissionId") == charge_permission_id
    ]


async def test_unavailable_is_retried_with_the_same_key_and_charges_once(
    target: str, database_url: str, clean_emulator: EmulatorProcess
) -> None:
    events: list[RetryEvent] = []

    async def clear_faults(event: RetryEvent) -> None:
        events.append(event)
        await clean_emulator.control("DELETE", "faults")

    async with AmazonPayClient(target, on_retry=clear_faults) as client:
        done = await checkout(client, clean_emulator, intent="PAYMENT_INTENT_CONFIRM")
        await clean_emulator.control(
            "POST", "faults", {"operation": "CreateCharge", "status": 503, "count": 10}
        )
        charge = await client.charges.create(
            charge_permission_id=done.charge_permission_id,
            charge_amount=price("12.00", "USD"),
            capture_now=True,
        )

    assert len(events) == 1
    first = events[0]
    assert isinstance(first.error, UnavailableError)
    assert first.attempt == 1
    assert first.method == "/payments.amazonpay.v1.ChargeService/CreateCharge"
    assert len(first.idempotency_key) == 32
    assert charge.charge.status_details.raw_state == "Captured"
    assert await _charges_of(clean_emulator, done.charge_permission_id) == [charge.charge.charge_id]
    conn = await asyncpg.connect(database_url)
    try:
        keys = await conn.fetch(
            "SELECT idempotency_key, status FROM operations WHERE operation = 'CreateCharge'"
        )
    finally:
        await conn.close()
    assert [(r["idempotency_key"], r["status"]) for r in keys] == [
        (first.idempotency_key, "succeeded")
    ]


async def test_a_callers_own_key_is_the_one_every_retry_carries(
    target: str, clean_emulator: EmulatorProcess
) -> None:
    events: list[RetryEvent] = []

    async def clear_faults(event: RetryEvent) -> None:
        events.append(event)
        await clean_emulator.control("DELETE", "faults")

    async with AmazonPayClient(target, on_retry=clear_faults) as client:
        done = await checkout(client, clean_emulator)
        await clean_emulator.control(
            "POST", "faults", {"operation": "CaptureCharge", "status": 500, "count": 10}
        )
        captured = await client.charges.capture(
            done.charge_id, capture_amount=price("100.00", "USD"), idempotency_key="order-9-cap"
        )
        assert captured.charge.status_details.raw_state == "Captured"
        replay = await client.charges.capture(
            done.charge_id, capture_amount=price("100.00", "USD"), idempotency_key="order-9-cap"
        )
    assert [e.idempotency_key for e in events] == ["order-9-cap"]
    assert replay.idempotent_replay


async def test_rate_limiting_waits_at_least_the_servers_retry_info(
    target: str, clean_emulator: EmulatorProcess
) -> None:
    events: list[RetryEvent] = []

    async def clear_faults(event: RetryEvent) -> None:
        events.append(event)
        await clean_emulator.control("DELETE", "faults")

    async with AmazonPayClient(target, on_retry=clear_faults) as client:
        done = await checkout(client, clean_emulator)
        await clean_emulator.control(
            "POST",
            "faults",
            {"operation": "GetCharge", "status": 429, "reasonCode": "TooManyRequests", "count": 10},
        )
        charge = await client.charges.get(done.charge_id, source="amazon", timeout=30)
    assert charge.charge.charge_id == done.charge_id
    assert len(events) == 1
    error = events[0].error
    assert isinstance(error, RateLimitedError)
    assert error.reason == "TooManyRequests"
    assert error.retry_delay is not None
    assert events[0].delay >= error.retry_delay


async def test_retries_stop_after_max_attempts_with_the_last_typed_error(
    target: str, clean_emulator: EmulatorProcess
) -> None:
    events: list[RetryEvent] = []
    policy = RetryPolicy(max_attempts=2, initial_backoff=0.01, max_backoff=0.01)
    async with AmazonPayClient(target, retry=policy, on_retry=events.append) as client:
        done = await checkout(client, clean_emulator)
        await clean_emulator.control(
            "POST", "faults", {"operation": "GetCharge", "status": 503, "count": None}
        )
        with pytest.raises(UnavailableError) as caught:
            await client.charges.get(done.charge_id, source="amazon", timeout=60)
    assert [e.attempt for e in events] == [1]
    assert caught.value.retryable
    assert caught.value.reason == "InternalServerError"
    assert caught.value.from_amazon


async def test_errors_a_retry_cannot_fix_are_raised_at_once(
    target: str, clean_emulator: EmulatorProcess
) -> None:
    events: list[RetryEvent] = []
    async with AmazonPayClient(target, on_retry=events.append) as client:
        with pytest.raises(ValidationError):
            await client.charges.get("")
    assert events == []


async def test_a_service_that_is_down_is_retried_then_unavailable() -> None:
    events: list[RetryEvent] = []
    policy = RetryPolicy(max_attempts=3, initial_backoff=0.01, max_backoff=0.02)
    async with AmazonPayClient("127.0.0.1:1", retry=policy, on_retry=events.append) as client:
        with pytest.raises(UnavailableError) as caught:
            await client.charges.get("S01-0000000-0000000-C000001")
    assert [e.attempt for e in events] == [1, 2]
    assert caught.value.code == grpc.StatusCode.UNAVAILABLE
    assert caught.value.reason == ""
