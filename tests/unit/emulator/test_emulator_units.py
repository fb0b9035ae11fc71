"""Pure rules: amounts, refund ceiling, dates, SNS canonical string."""

from __future__ import annotations

from decimal import Decimal

import pytest

from emulator.clock import Clock, fmt, parse_pay_date
from emulator.ipn import sns_string_to_sign
from emulator.validation import ApiError, parse_amount, parse_price, refund_ceiling


def test_pay_date_accepts_compact_and_iso_forms() -> None:
    assert parse_pay_date("20191015T204313Z") == parse_pay_date("2019-10-15T20:43:13Z")
    assert parse_pay_date("2019-10-15 20:43:13") is None


def test_body_timestamps_use_compact_utc_form() -> None:
    assert fmt(1571172193) == "20191015T204313Z"


def test_clock_refuses_to_go_backwards() -> None:
    with pytest.raises(ValueError, match="backwards"):
        Clock().advance(-1)


@pytest.mark.parametrize(
    ("value", "currency"),
    [
        ("1.5", "JPY"),
        ("1.001", "USD"),
        ("0", "USD"),
        ("-1", "EUR"),
        ("150000.01", "USD"),
        ("10000001", "JPY"),
        (True, "USD"),
        ("abc", "USD"),
    ],
)
def test_invalid_amounts_are_rejected(value: object, currency: str) -> None:
    with pytest.raises(ApiError) as info:
        parse_amount(value, currency, "chargeAmount.amount")
    assert info.value.reason_code == "InvalidParameterValue"
    assert "chargeAmount.amount" in info.value.message


def test_numeric_amounts_are_accepted_like_strings() -> None:
    assert parse_amount(14, "USD", "x") == Decimal(14)
    assert parse_amount(10_000_000, "JPY", "x") == Decimal(10_000_000)


def test_currency_outside_the_region_is_a_currency_mismatch() -> None:
    with pytest.raises(ApiError) as info:
        parse_price({"amount": "1", "currencyCode": "EUR"}, "chargeAmount", "na")
    assert info.value.reason_code == "CurrencyMismatch"


@pytest.mark.parametrize(
    ("captured", "currency", "ceiling"),
    [
        ("100", "USD", "115"),
        ("1000", "EUR", "1075"),
        ("100000", "JPY", "108400"),
        ("10000", "JPY", "11500"),
    ],
)
def test_refund_ceiling_is_captured_plus_the_smaller_of_15_percent_and_the_cap(
    captured: str, currency: str, ceiling: str
) -> None:
    assert refund_ceiling(Decimal(captured), currency) == Decimal(ceiling)


def test_sns_string_to_sign_lists_present_keys_in_order() -> None:
    env = {
        "Type": "Notification",
        "MessageId": "m",
        "TopicArn": "t",
        "Message": "x",
        "Timestamp": "ts",
        "Signature": "ignored",
    }
    assert sns_string_to_sign(env) == (
        b"Message\nx\nMessageId\nm\nTimestamp\nts\nTopicArn\nt\nType\nNotification\n"
    )
