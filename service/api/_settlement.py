"""Servicers of settlement reconciliation and dispute reads, on the same `RequestPath` as every
RPC (merchant scope, validation, PII, errors, one log line)."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from decimal import Decimal
from typing import Any, cast

import grpc

from payments.amazonpay.v1 import (
    dispute_pb2,
    dispute_pb2_grpc,
    settlement_pb2,
    settlement_pb2_grpc,
)
from service.core import Settlements, SettlementSettings
from service.ledger import (
    Disbursement,
    MissRecord,
    SettlementCounts,
    SettlementLineRecord,
    StoredObject,
    StoredReport,
)

from ._convert import json_to_message
from ._errors import RpcFailure
from ._servicers import PageLimits, _listing, _row, _Servicer, _time, _timestamp, _unary

__all__ = ["DisputeService", "SettlementService"]

_SETTLEMENTS_PAGE = PageLimits(default=50, maximum=500)
_LINES_PAGE = PageLimits(default=100, maximum=1000)

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
            getattr(message, name).CopyFrom(_timestamp(value))
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
        message.transaction_time.CopyFrom(_timestamp(item.transaction_time))
    return message


class DisputeService(_Servicer, dispute_pb2_grpc.DisputeServiceServicer):
    """Disputes: from Amazon or the ledger by id (like every Get*), and the ledger's by charge or
    state."""

    GetDispute = _row("GetDispute")

    @_unary
    async def ListDisputes(
        self, req: dispute_pb2.ListDisputesRequest, deadline: float | None
    ) -> dispute_pb2.ListDisputesResponse:
        page = await self._repo.list_disputes(
            self._merchant(req.merchant),
            charge_id=req.charge_id or None,
            state=req.state or None,
            **_SETTLEMENTS_PAGE.of(req),
        )
        return _listing(dispute_pb2.ListDisputesResponse, page, disputes=dispute_of)


class SettlementService(_Servicer, settlement_pb2_grpc.SettlementServiceServicer):
    """Settlements and their lines from the ledger; reconciliation of a period on request."""

    def _settlements(self) -> Settlements:
        if self._path.settlements is None:
            payments = self._path.payments
            self._path.settlements = Settlements(
                payments.merchants,
                self._repo,
                SettlementSettings(),
                owner=payments.instance_id,
            )
        return self._path.settlements

    async def _disbursements(
        self, merchant: str, settlement_id: str
    ) -> list[settlement_pb2.Disbursement]:
        paid = await self._repo.list_disbursements(
            merchant,
            settlement_id=settlement_id,
            after_time=None,
            before_time=None,
            page_size=_SETTLEMENTS_PAGE.maximum,
        )
        return [disbursement_of(d) for d in paid.items]

    async def _summaries(
        self, merchant: str, reports: Sequence[StoredReport]
    ) -> list[settlement_pb2.Settlement]:
        counts = await self._repo.settlement_counts(merchant, reports)
        return [settlement_of(r, counts[r.report_id]) for r in reports]

    @_unary
    async def ListSettlements(
        self, req: settlement_pb2.ListSettlementsRequest, deadline: float | None
    ) -> settlement_pb2.ListSettlementsResponse:
        merchant = self._merchant(req.merchant)
        page = await self._repo.list_reports(
            merchant,
            status=STATUS_NAME.get(req.status),
            ended_after=_time(req, "ended_after"),
            ended_before=_time(req, "ended_before"),
            **_SETTLEMENTS_PAGE.of(req),
        )
        return settlement_pb2.ListSettlementsResponse(
            settlements=await self._summaries(merchant, page.items),
            next_page_token=page.next_page_token,
        )

    @_unary
    async def GetSettlement(
        self, req: settlement_pb2.GetSettlementRequest, deadline: float | None
    ) -> settlement_pb2.GetSettlementResponse:
        merchant = self._merchant(req.merchant)
        report = await self._repo.get_report(
            merchant,
            settlement_id=req.settlement_id or None,
            report_id=req.report_id or None,
        )
        if report is None:
            raise _not_in_ledger(req.settlement_id or req.report_id)
        [summary] = await self._summaries(merchant, [report])
        response = settlement_pb2.GetSettlementResponse(settlement=summary)
        if report.settlement_id:
            page = await self._repo.settlement_lines(
                merchant,
                report.settlement_id,
                outcome=OUTCOME_NAME.get(req.outcome),
                **_LINES_PAGE.of(req),
            )
            response.lines.extend(line_of(r) for r in page.items)
            response.next_page_token = page.next_page_token
            response.disbursements.extend(await self._disbursements(merchant, report.settlement_id))
        return response

    @_unary
    async def ListDisbursements(
        self, req: settlement_pb2.ListDisbursementsRequest, deadline: float | None
    ) -> settlement_pb2.ListDisbursementsResponse:
        page = await self._repo.list_disbursements(
            self._merchant(req.merchant),
            settlement_id=req.settlement_id or None,
            after_time=_time(req, "created_after"),
            before_time=_time(req, "created_before"),
            **_SETTLEMENTS_PAGE.of(req),
        )
        return _listing(
            settlement_pb2.ListDisbursementsResponse, page, disbursements=disbursement_of
        )

    @_unary
    async def ListUnmatchedLines(
        self, req: settlement_pb2.ListUnmatchedLinesRequest, deadline: float | None
    ) -> settlement_pb2.ListUnmatchedLinesResponse:
        page = await self._repo.unmatched_lines(
            self._merchant(req.merchant),
            outcome=OUTCOME_NAME.get(req.outcome),
            posted_after=_time(req, "created_after"),
            posted_before=_time(req, "created_before"),
            **_LINES_PAGE.of(req),
        )
        return _listing(settlement_pb2.ListUnmatchedLinesResponse, page, lines=line_of)

    @_unary
    async def ReconcileSettlementPeriod(
        self, req: settlement_pb2.ReconcileSettlementPeriodRequest, deadline: float | None
    ) -> settlement_pb2.ReconcileSettlementPeriodResponse:
        merchant = self._merchant(req.merchant)
        work = self._settlements().reconcile_period(
            merchant,
            start=_time(req, "period_start"),
            end=_time(req, "period_end"),
            settlement_id=req.settlement_id or None,
        )
        async with asyncio.timeout(None if deadline is None else deadline - time.monotonic()):
            summary = await work
        if req.settlement_id and not summary.reports:
            raise _not_in_ledger(req.settlement_id)
        counts = await self._repo.settlement_counts(merchant, summary.reports)
        outcomes: Counter[str] = Counter()
        totals: dict[str, tuple[Decimal, Decimal, Decimal]] = {}
        for report in summary.reports:
            found = counts[report.report_id]
            outcomes.update(found.outcomes)
            outcomes["missing_at_amazon"] += found.misses
            for currency, amount, fee, net in found.totals:
                was = totals.get(currency, (Decimal(0), Decimal(0), Decimal(0)))
                totals[currency] = (was[0] + amount, was[1] + fee, was[2] + net)
        response = settlement_pb2.ReconcileSettlementPeriodResponse(
            settlements=[settlement_of(r, counts[r.report_id]) for r in summary.reports],
            outcomes=_outcomes(outcomes),
            totals=_totals((c, *sums) for c, sums in sorted(totals.items())),
            lines_recorded=sum(run.lines_recorded for run in summary.runs),
            outcomes_changed=sum(run.outcomes_changed for run in summary.runs),
            missing_at_amazon_found=summary.misses_found,
        )
        for report in summary.reports:
            if report.settlement_id:
                response.disbursements.extend(
                    await self._disbursements(merchant, report.settlement_id)
                )
        return response


def _not_in_ledger(settlement: str) -> RpcFailure:
    return RpcFailure(
        grpc.StatusCode.NOT_FOUND, f"settlement {settlement} is not in the ledger", "NOT_IN_LEDGER"
    )
