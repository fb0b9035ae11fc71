"""The endpoint table: one row per Amazon operation, and every operation core sends is a row."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

from service.amazonpay import (
    ENDPOINTS,
    AmazonPayClient,
    AmazonPayRequestError,
    Endpoint,
    MerchantAccount,
    PrivateKey,
    _endpoints,
)
from service.core._operations import GETTERS, NOT_REPLAYED, SPECS

PRIVATE_PEM = Path(__file__).resolve().parents[2] / "data/signing-vectors/test-key-private.pem"
NOWHERE = "http://127.0.0.1:9"
"""Never reached: every call here is refused before it is sent."""


def test_every_operation_the_core_sends_is_in_the_table_exactly_once() -> None:
    used = [*SPECS, *GETTERS.values(), "GetBuyer"]
    assert set(used) <= set(ENDPOINTS)
    assert Counter(row.name for row in ENDPOINTS.values()) == Counter(set(ENDPOINTS))
    assert all(name == row.name for name, row in ENDPOINTS.items())
    assert len({(row.method, row.path) for row in ENDPOINTS.values()}) == len(ENDPOINTS)


def test_a_table_naming_an_operation_twice_is_refused() -> None:
    row = Endpoint("GetCharge", "GET", "/charges/{chargeId}", ENDPOINTS["GetCharge"].response)
    with pytest.raises(ValueError, match="GetCharge"):
        _endpoints._table(row, row)


def test_rows_derive_their_metric_label_and_path_parameters() -> None:
    capture = ENDPOINTS["CaptureCharge"]
    assert capture.label == "capture_charge"
    assert capture.path_params == ("chargeId",)
    assert ENDPOINTS["CreateDeliveryTracker"].label == "create_delivery_tracker"
    assert ENDPOINTS["CreateCharge"].path_params == ()


def test_what_amazon_does_not_replay_is_read_from_the_table() -> None:
    assert set(NOT_REPLAYED) == {
        name
        for name, row in ENDPOINTS.items()
        if name in SPECS and row.method != "GET" and not row.replayed_by_key
    }
    for name, (_kind, refusals) in NOT_REPLAYED.items():
        assert refusals == ENDPOINTS[name].refusals_once_applied
    assert all(
        row.refusals_once_applied == frozenset()
        for row in ENDPOINTS.values()
        if row.replayed_by_key or row.method == "GET"
    )


def test_only_posts_carry_idempotency_keys() -> None:
    for row in ENDPOINTS.values():
        assert row.takes_idempotency_key == (row.method == "POST")
        assert not (row.method == "GET" and row.takes_simulation_code)


async def _refusal(client: AmazonPayClient, **kwargs: object) -> str:
    with pytest.raises(AmazonPayRequestError) as info:
        await client.invoke(**kwargs)  # type: ignore[arg-type]
    return info.value.message


async def test_invoke_refuses_calls_that_do_not_fit_the_row() -> None:
    account = MerchantAccount(
        public_key_id="AHKEY", private_key=PrivateKey.from_file(PRIVATE_PEM), endpoint=NOWHERE
    )
    async with AmazonPayClient(account) as client:
        assert "unknown" in await _refusal(client, endpoint="GetNothing")
        assert "idempotency_key is required" in await _refusal(
            client, endpoint="CreateCharge", body={}
        )
        assert "takes no idempotency_key" in await _refusal(
            client, endpoint="GetCharge", path_params={"chargeId": "C1"}, idempotency_key="k"
        )
        assert "takes no simulation_code" in await _refusal(
            client, endpoint="GetCharge", path_params={"chargeId": "C1"}, simulation_code="X"
        )
        assert "needs chargeId" in await _refusal(client, endpoint="GetCharge")
        assert "no path parameter refundId" in await _refusal(
            client, endpoint="GetCharge", path_params={"chargeId": "C1", "refundId": "R"}
        )
        assert "chargeId must be" in await _refusal(
            client, endpoint="GetCharge", path_params={"chargeId": "../x"}
        )
        assert "takes no body" in await _refusal(
            client, endpoint="GetCharge", path_params={"chargeId": "C1"}, body={}
        )
