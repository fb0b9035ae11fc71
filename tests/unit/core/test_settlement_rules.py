"""Which rule matches a settlement line, and the outcome of matching it against what the ledger
holds (pure: the ledger is given as entries)."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest

from service.amazonpay import SettlementLine
from service.core import match_line, rule_for
from service.core._settlement import LedgerIndex
from service.ledger import LedgerEntry

CP = "S01-1000001-2000002"
AT = datetime(2026, 3, 2, tzinfo=UTC)


def entry(kind: str, number: int, amount: str, **fields: Any) -> LedgerEntry:
    letter = {"charge": "C", "refund": "R", "dispute": "B"}[kind]
    values: dict[str, Any] = {
        "kind": kind,
        "object_id": f"{CP}-{letter}{number:06d}",
        "state": {"charge": "Captured", "refund": "Refunded", "dispute": "UnderReview"}[kind],
        "amount": Decimal(amount),
        "currency_code": "USD",
        "charge_permission_id": CP,
        "charge_id": None,
        "capture_amount": None,
        "last_updated": None,
        "created_at": AT,
    }
    values.update(fields)
    return LedgerEntry(**values)


def line(kind: str, tx: str | None, amount: str, currency: str = "USD") -> SettlementLine:
    return SettlementLine(
        line_number=1,
        settlement_id="5001",
        posted_at=AT,
        transaction_type=kind,
        amazon_transaction_id=tx,
        seller_reference_id=None,
        amount=Decimal(amount),
        fee=Decimal(0),
        net=Decimal(amount),
        currency=currency,
        raw={},
    )


def outcome(settled: SettlementLine, *entries: LedgerEntry) -> tuple[str, str]:
    record = match_line("default", "R-1", settled, LedgerIndex(entries))
    return record.outcome, record.match_rule


@pytest.mark.parametrize(
    ("transaction_type", "rule"),
    [
        ("Capture", "capture"),
        ("Refund", "refund"),
        ("Chargeback", "chargeback"),
        ("A-to-z Guarantee Claim", "chargeback"),
        ("ChargebackReversal", "chargeback"),
        ("ServicesFee", "fee"),
        ("Fixed Fee", "fee"),
        ("AuthExpired", "fee"),
        ("Adjustment", "adjustment"),
        ("ReserveHold", "adjustment"),
        ("Transfer", "adjustment"),
        ("SomethingNew", "other"),
    ],
)
def test_each_transaction_type_has_its_rule(transaction_type: str, rule: str) -> None:
    assert rule_for(transaction_type).name == rule


def test_a_capture_is_compared_with_the_captured_amount_not_the_authorized_one() -> None:
    partial = entry("charge", 1, "25.00", capture_amount={"amount": "20.00", "currencyCode": "USD"})
    assert outcome(line("Capture", f"{CP}-C000001", "20.00"), partial) == ("matched", "capture")
    assert outcome(line("Capture", f"{CP}-C000001", "25.00"), partial)[0] == "amount_mismatch"


def test_a_charge_the_ledger_never_saw_captured_is_missing_in_the_ledger() -> None:
    authorized = entry("charge", 1, "25.00", state="Authorized")
    assert outcome(line("Capture", f"{CP}-C000001", "25.00"), authorized)[0] == (
        "missing_in_ledger"
    )


def test_refunds_and_chargebacks_compare_magnitudes_in_the_same_currency() -> None:
    refund = entry("refund", 1, "10.00")
    assert outcome(line("Refund", f"{CP}-R000001", "-10.00"), refund)[0] == "matched"
    assert outcome(line("Refund", f"{CP}-R000001", "-10.00", "EUR"), refund)[0] == (
        "currency_mismatch"
    )
    declined = entry("refund", 1, "10.00", state="Declined")
    assert outcome(line("Refund", f"{CP}-R000001", "-10.00"), declined)[0] == "amount_mismatch"


def test_a_chargeback_naming_the_charge_matches_its_latest_dispute() -> None:
    older = entry("dispute", 1, "5.00", charge_id=f"{CP}-C000001")
    newer = entry("dispute", 2, "30.00", charge_id=f"{CP}-C000001", created_at=AT.replace(day=3))
    record = match_line(
        "default", "R-1", line("Chargeback", f"{CP}-C000001", "-30.00"), LedgerIndex([older, newer])
    )
    assert (record.outcome, record.ledger_object_id) == ("matched", f"{CP}-B000002")


def test_fees_and_adjustments_are_recorded_not_compared() -> None:
    charge = entry("charge", 1, "30.00")
    assert outcome(line("ServicesFee", None, "-1.00")) == ("matched", "fee")
    assert outcome(line("ServicesFee", f"{CP}-C000001", "-999.00"), charge) == ("matched", "fee")
    assert outcome(line("ServicesFee", f"{CP}-C000002", "-1.00"), charge)[0] == (
        "missing_in_ledger"
    )
    assert outcome(line("Adjustment", None, "3.00")) == ("matched", "adjustment")


def test_a_capture_without_a_transaction_id_is_missing_in_the_ledger() -> None:
    assert outcome(line("Capture", None, "3.00"))[0] == "missing_in_ledger"


def test_the_lines_of_a_batch_name_the_objects_to_read() -> None:
    keys, charges = LedgerIndex.keys_for(
        [
            line("Capture", f"{CP}-C000001", "1"),
            line("Chargeback", f"{CP}-C000001", "-1"),
            line("ServicesFee", "12345", "-1"),
            line("Adjustment", None, "1"),
        ]
    )
    assert ("charge", f"{CP}-C000001") in keys
    assert ("dispute", f"{CP}-C000001") in keys
    assert {k for k, i in keys if i == "12345"} == {"charge", "refund", "dispute"}
    assert charges == [f"{CP}-C000001"]
