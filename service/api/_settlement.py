"""Settlements, their lines, disbursements and disputes as the API shows them, from the ledger's
records (the servicers are in `_servicers.py`)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from decimal import Decimal
from typing import Any, cast

from payments.amazonpay.v1 import (
    dispute_pb2,
    settlement_pb2,
)
from service.core import PeriodSummary
from service.ledger import (
    Disbursement,
    MissRecord,
    SettlementCounts,
    SettlementLineRecord,
    StoredObject,
    StoredReport,
)

from ._convert import json_to_message, timestamp_of

__all__ = [
    "OUTCOME_NAME",
    "STATUS_NAME",
    "disbursement_of",
    "dispute_of",
    "line_of",
    "reconciled",
    "settlement_of",
]

OUTCOME_ENUM: Mapping[str, int] = {
    "matched": settlement_pb2.MATCH_OUTCOME_MATCHED,
    "missing_in_ledger": settlement_pb2.MATCH_OUTCOME_MISSING_IN_LEDGER,
    "missing_at_amazon": settlement_pb2.MATCH_OUTCOME_MISSING_AT_AMAZON,
    "amount_mismatch": settlement_pb2.MATCH_OUTCOME_AMOUNT_MISMATCH,
    "currency_mismatch": settlement_pb2.MATCH_OUTCOME_CURRENCY_MISMATCH,
}
OUTCOME_NAME: Mapping[int, str] = {v: k for k, v in OUTCOME_ENUM.items()}
STATUS_ENUM: Mapping[str, int] = {
    "pending": settlement_pb2.SETTLEMENT_STATUS_PENDING,
    "reconciling": settlement_pb2.SETTLEMENT_STATUS_RECONCILING,
    "reconciled": settlement_pb2.SETTLEMENT_STATUS_RECONCILED,
    "failed": settlement_pb2.SETTLEMENT_STATUS_FAILED,
}
STATUS_NAME: Mapping[int, str] = {v: k for k, v in STATUS_ENUM.items()}


def _text(value: Decimal | None) -> str:
    return "" if value is None else format(value, "f")


def line_of(item: SettlementLineRecord | MissRecord) -> settlement_pb2.SettlementLine:
    """A line (or a miss, line_number 0) as the API shows it; also what finding events carry."""
    return json_to_message(item.as_json(), settlement_pb2.SettlementLine())


def _outcomes(counts: Mapping[str, int]) -> list[settlement_pb2.OutcomeCount]:
    return [
        settlement_pb2.OutcomeCount(outcome=cast(Any, OUTCOME_ENUM[name]), lines=lines)
        for name, lines in sorted(counts.items(), key=lambda item: OUTCOME_ENUM[item[0]])
        if lines
    ]


def _totals(
    totals: Iterable[tuple[str, Decimal, Decimal, Decimal]],
) -> list[settlement_pb2.SettlementTotal]:
    return [
        settlement_pb2.SettlementTotal(
            currency_code=currency, amount=_text(amount), fee=_text(fee), net=_text(net)
        )
        for currency, amount, fee, net in totals
    ]


def settlement_of(report: StoredReport, counts: SettlementCounts) -> settlement_pb2.Settlement:
    message = settlement_pb2.Settlement(
        merchant=report.merchant,
        settlement_id=report.settlement_id or "",
        report_id=report.report_id,
        report_type=report.report_type,
        seller_id=report.seller_id or "",
        status=cast(Any, STATUS_ENUM[report.status]),
        line_count=report.line_count,
        outcomes=_outcomes({**counts.outcomes, "missing_at_amazon": counts.misses}),
        totals=_totals(counts.totals),
        last_error=report.last_error or "",
        disbursed_amount=_text(counts.disbursed),
    )
    for name, value in (
        ("settlement_start", report.settlement_start),
        ("settlement_end", report.settlement_end),
        ("created_at", report.amazon_created_at),
        ("reconciled_at", report.reconciled_at),
    ):
        if value is not None:
            getattr(message, name).CopyFrom(timestamp_of(value))
    return message


def dispute_of(stored: StoredObject) -> dispute_pb2.Dispute:
    return json_to_message(stored.snapshot, dispute_pb2.Dispute())


def disbursement_of(item: Disbursement) -> settlement_pb2.Disbursement:
    message = settlement_pb2.Disbursement(
        merchant=item.merchant,
        disbursement_id=item.disbursement_id,
        settlement_id=item.settlement_id or "",
        seller_id=item.seller_id or "",
        amount=_text(item.amount),
        currency_code=item.currency_code,
    )
    if item.transaction_time is not None:
        message.transaction_time.CopyFrom(timestamp_of(item.transaction_time))
    return message


def reconciled(
    summary: PeriodSummary, counts: Mapping[str, SettlementCounts]
) -> settlement_pb2.ReconcileSettlementPeriodResponse:
    """What a reconciliation of a period did, its reports' `counts` summed up (disbursements
    are the caller's to add)."""
    outcomes: Counter[str] = Counter()
    totals: dict[str, tuple[Decimal, Decimal, Decimal]] = {}
    for report in summary.reports:
        found = counts[report.report_id]
        outcomes.update(found.outcomes)
        outcomes["missing_at_amazon"] += found.misses
        for currency, amount, fee, net in found.totals:
            was = totals.get(currency, (Decimal(0), Decimal(0), Decimal(0)))
            totals[currency] = (was[0] + amount, was[1] + fee, was[2] + net)
    return settlement_pb2.ReconcileSettlementPeriodResponse(
        settlements=[settlement_of(r, counts[r.report_id]) for r in summary.reports],
        outcomes=_outcomes(outcomes),
        totals=_totals((c, *sums) for c, sums in sorted(totals.items())),
        lines_recorded=sum(run.lines_recorded for run in summary.runs),
        outcomes_changed=sum(run.outcomes_changed for run in summary.runs),
        missing_at_amazon_found=summary.misses_found,
    )
