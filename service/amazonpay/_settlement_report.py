"""TEMPORARY copy of the records SETTLEMENT_CONTRACT.md says issue-18-amazon delivers: the ledger
side codes against these names until that branch is merged, which replaces this file."""

from __future__ import annotations

from collections.abc import AsyncIterable, AsyncIterator, Mapping
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

from ._errors import AmazonPayError

__all__ = [
    "SettlementLine",
    "SettlementReportError",
    "SettlementReportHeader",
    "parse_settlement_report",
]


@dataclass(frozen=True, slots=True)
class SettlementReportHeader:
    seller_id: str
    settlement_start: datetime
    settlement_end: datetime


@dataclass(frozen=True, slots=True)
class SettlementLine:
    line_number: int
    settlement_id: str
    posted_at: datetime
    transaction_type: str
    amazon_transaction_id: str | None
    seller_reference_id: str | None
    amount: Decimal
    fee: Decimal
    net: Decimal
    currency: str
    raw: Mapping[str, str]


class SettlementReportError(AmazonPayError):
    """A settlement report that cannot be read."""


async def parse_settlement_report(
    chunks: AsyncIterable[bytes],
) -> tuple[SettlementReportHeader, AsyncIterator[SettlementLine]]:
    """Delivered by issue-18-amazon."""
    raise SettlementReportError("the settlement report parser arrives with issue-18-amazon")
