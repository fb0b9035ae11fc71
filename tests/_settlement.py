"""Settlement test data: Amazon-shaped charges, refunds and disputes for the ledger, and report
lines as the settlement report parser yields them."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterable
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from service.amazonpay import SettlementLine, SettlementReportHeader
from service.core import record_of
from service.ledger import Ledger, ReportRecord

MERCHANT = "default"
CP = "S01-1000001-2000002"
START = datetime(2026, 3, 2, tzinfo=UTC)
DAY = timedelta(days=1)


def stamp(moment: datetime) -> str:
    return moment.strftime("%Y%m%dT%H%M%SZ")


def charge_json(
    n: int, amount: str, *, captured: str | None = None, at: datetime = START
) -> dict[str, Any]:
    state = "Captured" if captured is not None else "Authorized"
    data: dict[str, Any] = {
        "chargeId": f"{CP}-C{n:06d}",
        "chargePermissionId": CP,
        "chargeAmount": {"amount": amount, "currencyCode": "USD"},
        "statusDetails": {"state": state, "lastUpdatedTimestamp": stamp(at)},
        "creationTimestamp": stamp(at - timedelta(hours=1)),
    }
    if captured is not None:
        data["captureAmount"] = {"amount": captured, "currencyCode": "USD"}
    return data


def refund_json(
    n: int, charge: int, amount: str, *, state: str = "Refunded", at: datetime = START
) -> dict[str, Any]:
    return {
        "refundId": f"{CP}-R{n:06d}",
        "chargeId": f"{CP}-C{charge:06d}",
        "refundAmount": {"amount": amount, "currencyCode": "USD"},
        "statusDetails": {"state": state, "lastUpdatedTimestamp": stamp(at)},
        "creationTimestamp": stamp(at),
    }


def dispute_json(n: int, charge: int, amount: str) -> dict[str, Any]:
    return {
        "disputeId": f"{CP}-B{n:06d}",
        "chargeId": f"{CP}-C{charge:06d}",
        "disputeType": "Chargeback",
        "disputeAmount": {"amount": amount, "currencyCode": "USD"},
        "filingReason": "ProductNotReceived",
        "statusDetails": {"state": "UnderReview", "lastUpdatedTimestamp": stamp(START)},
        "creationTimestamp": stamp(START),
    }


async def record(ledger: Ledger, kind: str, *objects: dict[str, Any]) -> None:
    records = [record_of(kind, data, MERCHANT) for data in objects]
    await ledger.repository.record([r for r in records if r is not None], "api")


def line(
    number: int,
    kind: str,
    tx: str | None,
    amount: str,
    *,
    fee: str = "0",
    currency: str = "USD",
    settlement: str = "5001",
    posted: datetime = START,
) -> SettlementLine:
    value, charge = Decimal(amount), Decimal(fee)
    return SettlementLine(
        line_number=number,
        settlement_id=settlement,
        posted_at=posted,
        transaction_type=kind,
        amazon_transaction_id=tx,
        seller_reference_id=None,
        amount=value,
        fee=charge,
        net=value + charge,
        currency=currency,
        raw={"TransactionType": kind, "TransactionAmount": amount},
    )


def header(start: datetime = START, end: datetime = START + DAY) -> SettlementReportHeader:
    return SettlementReportHeader(seller_id="A1SELLER", settlement_start=start, settlement_end=end)


async def stream(lines: Iterable[SettlementLine]) -> AsyncIterator[SettlementLine]:
    for item in lines:
        await asyncio.sleep(0)
        yield item


async def add_report(ledger: Ledger, report_id: str, start: datetime, end: datetime) -> None:
    await ledger.repository.add_reports(
        [
            ReportRecord(
                merchant=MERCHANT,
                report_id=report_id,
                report_type="_GET_FLAT_FILE_OFFAMAZONPAYMENTS_SANDBOX_SETTLEMENT_DATA_",
                report_document_id=f"doc-{report_id}",
                amazon_created_at=end,
                snapshot={"reportId": report_id},
                data_start=start,
                data_end=end,
            )
        ]
    )
