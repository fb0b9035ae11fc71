"""Which refusals of a repeated call count as "already applied": pure logic of `_holds`."""

from __future__ import annotations

from typing import Any

import pytest

from service.core import _operations
from service.core._operations import NOT_REPLAYED, SPECS, _holds


@pytest.mark.parametrize(
    ("requested", "current"),
    [
        (
            {"chargeAmount": {"amount": "14", "currencyCode": "USD"}},
            {"chargeAmount": {"amount": "14.00", "currencyCode": "USD"}, "other": 1},
        ),
        (
            {"merchantMetadata": {"merchantReferenceId": "o-1"}},
            {"merchantMetadata": {"merchantReferenceId": "o-1", "noteToBuyer": None}},
        ),
        ({"list": [1, "2.0"]}, {"list": ["1", 2]}),
        ({}, {"anything": True}),
        ({"flag": None}, {}),
    ],
)
def test_a_body_already_carried_by_the_object_holds(requested: Any, current: Any) -> None:
    assert _holds(requested, current)


@pytest.mark.parametrize(
    ("requested", "current"),
    [
        (
            {"chargeAmount": {"amount": "14.00", "currencyCode": "USD"}},
            {"chargeAmount": {"amount": "14.01", "currencyCode": "USD"}},
        ),
        (
            {"chargeAmount": {"amount": "14.00", "currencyCode": "USD"}},
            {"chargeAmount": {"amount": "14.00", "currencyCode": "EUR"}},
        ),
        ({"chargeAmount": {"amount": "14.00", "currencyCode": "USD"}}, {"chargeAmount": None}),
        ({"paymentDetails": {"chargeAmount": {"amount": "1"}}}, {}),
        ({"flag": True}, {"flag": 1}),
        ({"name": "a\n"}, {"name": "a"}),
        ({"list": [1, 2]}, {"list": [1]}),
        ({"code": "abc"}, {"code": "abd"}),
    ],
)
def test_a_body_the_object_does_not_carry_does_not_hold(requested: Any, current: Any) -> None:
    assert not _holds(requested, current)


def test_every_call_amazon_does_not_replay_is_settled_by_reading_its_object() -> None:
    assert set(NOT_REPLAYED) == {
        "CompleteCheckoutSession",
        "FinalizeCheckoutSession",
        "UpdateCheckoutSession",
        "UpdateChargePermission",
        "CloseChargePermission",
        "CancelCharge",
    }
    for operation, (kind, refusals) in NOT_REPLAYED.items():
        assert SPECS[operation].kind == kind
        assert kind in _operations.GETTERS
        assert refusals
