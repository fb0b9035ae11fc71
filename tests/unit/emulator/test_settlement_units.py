"""Settlement rules that need no HTTP: the fee rule, date forms, state that survives a restart."""

from __future__ import annotations

import json
from decimal import Decimal

import pytest

from emulator.clock import Clock, parse_pay_date
from emulator.engine import Engine
from emulator.settlement import capture_fee, close_now, document_lines, parse_time
from emulator.validation import ApiError


@pytest.mark.parametrize(
    ("amount", "currency", "percentage", "fixed"),
    [
        ("100.00", "USD", "-2.90", "-0.30"),
        ("33.33", "USD", "-0.97", "-0.30"),
        ("5.00", "USD", "-0.15", "-0.30"),
        ("10.00", "EUR", "-0.29", "-0.35"),
        ("10.00", "GBP", "-0.29", "-0.20"),
        ("10000", "JPY", "-290", "-40"),
        ("10.00", "CHF", "-0.29", "-0.30"),
    ],
)
def test_the_capture_fee_is_percentage_half_up_plus_a_fixed_fee_per_currency(
    amount: str, currency: str, percentage: str, fixed: str
) -> None:

    assert capture_fee(Decimal(amount), currency) == (Decimal(percentage), Decimal(fixed))


@pytest.mark.parametrize(
    "value",
    [
        "20240301T224539Z",
        "2024-03-01T22:45:39Z",
        "2024-03-01T22:45:39.000Z",
        "2024-03-01T23:45:39+01:00",
        "2024-03-01T22-45-39Z",
    ],
)
def test_query_date_times_take_the_forms_amazons_pages_and_sdks_use(value: str) -> None:
    assert parse_time(value, "startTime") == parse_pay_date("20240301T224539Z")


@pytest.mark.parametrize("value", ["yesterday", "2024-03-01", "2024-13-01T00:00:00Z", ""])
def test_other_date_times_are_refused_naming_the_parameter(value: str) -> None:
    with pytest.raises(ApiError) as info:
        parse_time(value, "endTime")
    assert (info.value.status, info.value.reason_code) == (400, "InvalidParameterValue")
    assert "endTime" in info.value.message


def test_settlements_reports_and_documents_survive_a_snapshot_and_load() -> None:
    clock = Clock()
    engine = Engine(clock)
    closed = close_now(engine, "A2MERCHANT", "Sandbox")
    before = list(document_lines(engine, closed["reportDocumentId"]))
    restored = Engine(clock)
    restored.load(json.loads(json.dumps(engine.data)))
    assert list(document_lines(restored, closed["reportDocumentId"])) == before
    assert before[0] == b'"SellerId","SettlementStartDate","SettlementEndDate"\n'
    assert before[1].startswith(b'"A2MERCHANT","')
    restored.reset()
    assert restored.data["settlement"] == {}
