"""Disputes and settlements: typed methods over `DisputeService` and `SettlementService`."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from datetime import datetime
from typing import Any, Literal, Unpack

from payments.amazonpay.v1 import (
    dispute_pb2,
    dispute_pb2_grpc,
    settlement_pb2,
    settlement_pb2_grpc,
)

from ._services import _fields, _ReadOptions, _ReadsById, _rpc, _Service, _timestamp

__all__ = [
    "OUTCOMES",
    "STATUSES",
    "DisputeService",
    "Outcome",
    "SettlementService",
    "outcome_enum",
    "outcome_name",
]

Outcome = Literal[
    "matched", "missing_in_ledger", "missing_at_amazon", "amount_mismatch", "currency_mismatch"
]
OUTCOMES: Mapping[str, int] = {
    "matched": settlement_pb2.MATCH_OUTCOME_MATCHED,
    "missing_in_ledger": settlement_pb2.MATCH_OUTCOME_MISSING_IN_LEDGER,
    "missing_at_amazon": settlement_pb2.MATCH_OUTCOME_MISSING_AT_AMAZON,
    "amount_mismatch": settlement_pb2.MATCH_OUTCOME_AMOUNT_MISMATCH,
    "currency_mismatch": settlement_pb2.MATCH_OUTCOME_CURRENCY_MISMATCH,
}
_OUTCOME_NAMES: Mapping[int, str] = {v: k for k, v in OUTCOMES.items()}
STATUSES: Mapping[str, int] = {
    "pending": settlement_pb2.SETTLEMENT_STATUS_PENDING,
    "reconciling": settlement_pb2.SETTLEMENT_STATUS_RECONCILING,
    "reconciled": settlement_pb2.SETTLEMENT_STATUS_RECONCILED,
    "failed": settlement_pb2.SETTLEMENT_STATUS_FAILED,
}


def outcome_enum(outcome: Outcome | str | int | None) -> int:
    """MatchOutcome value of "amount_mismatch", "missing-in-ledger", ... (0 for None)."""
    if outcome is None or isinstance(outcome, int):
        return outcome or 0
    normalized = outcome.strip().lower().replace("-", "_")
    if normalized not in OUTCOMES:
        raise ValueError(f"unknown outcome {outcome!r}; expected one of {', '.join(OUTCOMES)}")
    return OUTCOMES[normalized]


def outcome_name(outcome: int) -> str:
    """ "amount_mismatch" for MATCH_OUTCOME_AMOUNT_MISMATCH; "" for unspecified."""
    return _OUTCOME_NAMES.get(outcome, "")


async def _every(page: Callable[[str], Awaitable[Any]], field: str) -> AsyncIterator[Any]:
    """Every item of a paginated listing: `page(token)` answers one page whose `field` holds
    the items, following next_page_token."""
    token = ""
    while True:
        answer = await page(token)
        for item in getattr(answer, field):
            yield item
        token = answer.next_page_token
        if not token:
            return


def _status(status: str | int | None) -> int:
    if status is None or isinstance(status, int):
        return status or 0
    if status not in STATUSES:
        raise ValueError(f"unknown status {status!r}; expected one of {', '.join(STATUSES)}")
    return STATUSES[status]


class DisputeService(_ReadsById[dispute_pb2.GetDisputeResponse]):
    """Disputes (chargebacks): by id from Amazon or the ledger, and the ledger's by charge or
    state."""

    _get = _rpc(dispute_pb2.GetDisputeResponse)
    _id_field = "dispute_id"

    _stub_class = dispute_pb2_grpc.DisputeServiceStub

    async def list(
        self,
        *,
        charge_id: str | None = None,
        state: str | None = None,
        page_size: int | None = None,
        page_token: str | None = None,
        **options: Unpack[_ReadOptions],
    ) -> dispute_pb2.ListDisputesResponse:
        """ListDisputes: one page, newest first."""
        return await self._call(_LIST_DISPUTES, _fields(locals()))

    async def iter(
        self,
        *,
        charge_id: str | None = None,
        state: str | None = None,
        **options: Unpack[_ReadOptions],
    ) -> AsyncIterator[dispute_pb2.Dispute]:
        """Every matching dispute, following next_page_token."""
        async for dispute in _every(
            lambda token: self.list(charge_id=charge_id, state=state, page_token=token, **options),
            "disputes",
        ):
            yield dispute


class _Period(_ReadOptions, total=False):
    """Time filters (timezone-aware datetimes) and the page size of a listing."""

    created_after: datetime | None
    created_before: datetime | None
    page_size: int | None


class SettlementService(_Service):
    """What Amazon paid out: settlements with their lines and match results, disbursements,
    unmatched lines, and reconciliation of a period on request."""

    _stub_class = settlement_pb2_grpc.SettlementServiceStub

    async def list(
        self,
        *,
        status: str | int | None = None,
        ended_after: datetime | None = None,
        ended_before: datetime | None = None,
        page_size: int | None = None,
        page_token: str | None = None,
        **options: Unpack[_ReadOptions],
    ) -> settlement_pb2.ListSettlementsResponse:
        """ListSettlements: one page, newest period first."""
        fields = {
            **_fields(locals()),
            "status": _status(status),
            "ended_after": _timestamp(ended_after),
            "ended_before": _timestamp(ended_before),
        }
        return await self._call(_LIST_SETTLEMENTS, fields)

    async def get(
        self,
        settlement_id: str | None = None,
        *,
        report_id: str | None = None,
        outcome: Outcome | str | int | None = None,
        page_size: int | None = None,
        page_token: str | None = None,
        **options: Unpack[_ReadOptions],
    ) -> settlement_pb2.GetSettlementResponse:
        """GetSettlement by settlement id (or `report_id`): counts, totals, a page of lines."""
        fields = {**_fields(locals()), "outcome": outcome_enum(outcome)}
        return await self._call(_GET_SETTLEMENT, fields)

    async def iter_lines(
        self,
        settlement_id: str,
        *,
        outcome: Outcome | str | int | None = None,
        **options: Unpack[_ReadOptions],
    ) -> AsyncIterator[settlement_pb2.SettlementLine]:
        """Every line of a settlement (optionally of one outcome), in line order."""
        async for line in _every(
            lambda token: self.get(settlement_id, outcome=outcome, page_token=token, **options),
            "lines",
        ):
            yield line

    async def list_disbursements(
        self,
        *,
        settlement_id: str | None = None,
        page_token: str | None = None,
        **query: Unpack[_Period],
    ) -> settlement_pb2.ListDisbursementsResponse:
        """ListDisbursements: one page, newest first."""
        return await self._call(_LIST_DISBURSEMENTS, self._query(locals(), query))

    async def list_unmatched(
        self,
        *,
        outcome: Outcome | str | int | None = None,
        page_token: str | None = None,
        **query: Unpack[_Period],
    ) -> settlement_pb2.ListUnmatchedLinesResponse:
        """ListUnmatchedLines: one page of lines that did not match (and misses), newest first."""
        fields = {**self._query(locals(), query), "outcome": outcome_enum(outcome)}
        return await self._call(_LIST_UNMATCHED_LINES, fields)

    async def iter_unmatched(
        self, *, outcome: Outcome | str | int | None = None, **query: Unpack[_Period]
    ) -> AsyncIterator[settlement_pb2.SettlementLine]:
        """Every unmatched line and miss, following next_page_token."""
        async for line in _every(
            lambda token: self.list_unmatched(outcome=outcome, page_token=token, **query), "lines"
        ):
            yield line

    async def reconcile(
        self,
        *,
        period_start: datetime | None = None,
        period_end: datetime | None = None,
        settlement_id: str | None = None,
        **options: Unpack[_ReadOptions],
    ) -> settlement_pb2.ReconcileSettlementPeriodResponse:
        """ReconcileSettlementPeriod: fetch, reconcile (again) and summarize a period (or one
        settlement). Safe to repeat: nothing is recorded twice."""
        fields = {
            **_fields(locals()),
            "period_start": _timestamp(period_start),
            "period_end": _timestamp(period_end),
        }
        return await self._call(_RECONCILE_SETTLEMENT_PERIOD, fields)

    @staticmethod
    def _query(arguments: Mapping[str, Any], query: Mapping[str, Any]) -> dict[str, Any]:
        fields = {k: v for k, v in _fields(arguments).items() if k != "query"}
        fields.update(query)
        fields["created_after"] = _timestamp(query.get("created_after"))
        fields["created_before"] = _timestamp(query.get("created_before"))
        return fields


_LIST_DISPUTES = _rpc(dispute_pb2.ListDisputesResponse)
_LIST_SETTLEMENTS = _rpc(settlement_pb2.ListSettlementsResponse)
_GET_SETTLEMENT = _rpc(settlement_pb2.GetSettlementResponse)
_LIST_DISBURSEMENTS = _rpc(settlement_pb2.ListDisbursementsResponse)
_LIST_UNMATCHED_LINES = _rpc(settlement_pb2.ListUnmatchedLinesResponse)
_RECONCILE_SETTLEMENT_PERIOD = _rpc(settlement_pb2.ReconcileSettlementPeriodResponse)
