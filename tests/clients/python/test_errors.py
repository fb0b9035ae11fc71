"""Failures arrive as typed exceptions carrying the reason, domain and details."""

from __future__ import annotations

import grpc
import pytest
from amazonpay_client import (
    AMAZON_DOMAIN,
    SERVICE_DOMAIN,
    AmazonPayClient,
    DeclinedError,
    IdempotencyConflictError,
    InvalidPageTokenError,
    InvalidStateError,
    NotFoundError,
    ValidationError,
    price,
)

from tests._emulator import EmulatorProcess
from tests.clients.python._flows import checkout


async def test_a_hard_decline_is_a_declined_error_with_amazons_reason(
    client: AmazonPayClient, clean_emulator: EmulatorProcess
) -> None:
    done = await checkout(client, clean_emulator, intent="PAYMENT_INTENT_CONFIRM")
    with pytest.raises(DeclinedError) as caught:
        await client.charges.create(
            charge_permission_id=done.charge_permission_id,
            charge_amount=price("10.00", "USD"),
            sandbox_simulation_code="HardDeclined",
        )
    error = caught.value
    assert error.code == grpc.StatusCode.FAILED_PRECONDITION
    assert error.reason == "HardDeclined"
    assert error.domain == AMAZON_DOMAIN
    assert error.from_amazon
    assert error.http_status is not None
    assert not error.retryable


async def test_invalid_request_is_a_validation_error_with_field_violations(
    client: AmazonPayClient, clean_emulator: EmulatorProcess
) -> None:
    with pytest.raises(ValidationError) as caught:
        await client.charges.create(
            charge_permission_id="S01-0000000-0000000", charge_amount=price("1.001", "USD")
        )
    error = caught.value
    assert error.code == grpc.StatusCode.INVALID_ARGUMENT
    assert error.reason == "VALIDATION_FAILED"
    assert error.domain == SERVICE_DOMAIN
    assert "charge_amount.amount" in error.field_violations
    assert error.method.endswith("ChargeService/CreateCharge")


async def test_unknown_object_is_a_not_found_error(
    client: AmazonPayClient, clean_emulator: EmulatorProcess
) -> None:
    with pytest.raises(NotFoundError) as caught:
        await client.ledger.get_transaction("refund", "S01-0000000-0000000-R000001")
    assert caught.value.reason == "NOT_IN_LEDGER"
    with pytest.raises(NotFoundError) as from_amazon:
        await client.charges.get("S01-0000000-0000000-C000001", source="amazon")
    assert from_amazon.value.reason == "ResourceNotFound"


async def test_a_key_reused_for_another_request_is_an_idempotency_conflict(
    client: AmazonPayClient, clean_emulator: EmulatorProcess
) -> None:
    done = await checkout(client, clean_emulator)
    await client.charges.capture(
        done.charge_id, capture_amount=price("50.00", "USD"), idempotency_key="order-7-capture"
    )
    with pytest.raises(IdempotencyConflictError) as caught:
        await client.charges.capture(
            done.charge_id, capture_amount=price("60.00", "USD"), idempotency_key="order-7-capture"
        )
    assert caught.value.reason == "IDEMPOTENCY_KEY_REUSED"
    assert caught.value.code == grpc.StatusCode.ALREADY_EXISTS


async def test_an_operation_the_state_forbids_is_an_invalid_state_error(
    client: AmazonPayClient, clean_emulator: EmulatorProcess
) -> None:
    done = await checkout(client, clean_emulator)
    await client.charges.cancel(done.charge_id)
    with pytest.raises(InvalidStateError) as caught:
        await client.charges.capture(done.charge_id, capture_amount=price("100.00", "USD"))
    assert caught.value.reason == "InvalidChargeStatus"
    assert caught.value.request_id


async def test_a_page_token_from_another_query_is_an_invalid_page_token_error(
    client: AmazonPayClient, clean_emulator: EmulatorProcess
) -> None:
    await checkout(client, clean_emulator)
    page = await client.ledger.list_transactions(page_size=1)
    assert page.next_page_token
    with pytest.raises(InvalidPageTokenError) as caught:
        await client.ledger.list_transactions(
            kind="charge", page_size=1, page_token=page.next_page_token
        )
    assert isinstance(caught.value, ValidationError)
    assert caught.value.field_violations.keys() == {"page_token"}


async def test_a_float_amount_is_refused_before_anything_is_sent() -> None:
    with pytest.raises(TypeError):
        price(10.0, "USD")  # type: ignore[arg-type]


async def test_a_misspelled_field_is_a_client_side_validation_error(
    client: AmazonPayClient,
) -> None:
    with pytest.raises(ValidationError) as caught:
        await client.charges.create(
            charge_permission_id="S01-0000000-0000000",
            charge_amount={"amount": "1.00", "currency": "USD"},
        )
    assert caught.value.reason == "CLIENT_VALIDATION"
