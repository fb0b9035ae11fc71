"""The settlement worker: a background task in every replica that keeps the ledger reconciled
with what Amazon paid out.

Each pass:
1. per merchant, under a lease on its cursor (one replica fetches at a time), lists the settlement
   reports and disbursements Amazon created since the last fetch;
2. reconciles waiting reports, each leased to one replica (SKIP LOCKED): streams the document and
   matches every line (`service.core.Settlements`); a failure backs the report off and is given
   up after a bounded number of attempts;
3. looks for ledger captures and refunds no settlement named within the settlement window;
4. refreshes the backlog gauges.

Safe on every replica: leases share the work, and every line and finding is written once
whoever writes it (the ledger's per-settlement lock).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from opentelemetry import trace

from service.amazonpay import AmazonPayError
from service.core import Overloaded, Settlements
from service.telemetry import Metrics

from ._loop import Worker

__all__ = ["SettlementPass", "SettlementWorker"]

_log = logging.getLogger("service.workers.settlement")
_tracer = trace.get_tracer(__name__)


@dataclass(frozen=True)
class SettlementPass:
    reports_found: int
    disbursements_found: int
    reports_reconciled: int
    lines_recorded: int
    misses_found: int


class SettlementWorker(Worker[SettlementPass], name="settlement", max_backoff_s=300.0):
    def __init__(self, settlements: Settlements, metrics: Metrics, *, interval_s: float) -> None:
        self._settlements = settlements
        self._metrics = metrics
        self.interval_s = interval_s

    async def _pass(self) -> SettlementPass:
        settlements = self._settlements
        reports = disbursements = 0
        for merchant in settlements.merchants:
            try:
                fetched = await settlements.fetch(merchant)
            except (AmazonPayError, Overloaded, OSError, TimeoutError) as exc:
                # Amazon failing for one merchant must not stop the others or the matching.
                _log.warning(
                    "settlement reports not fetched",
                    extra={
                        "merchant": merchant.alias,
                        "error": type(exc).__name__,
                        "http_status": getattr(exc, "http_status", None),
                    },
                )
                continue
            if fetched is not None:
                reports += fetched[0]
                disbursements += fetched[1]
        runs = await settlements.reconcile_due()
        misses = 0
        for merchant in settlements.merchants:
            misses += await settlements.check_misses(merchant.alias)
        self._metrics.settlement_backlog = await settlements.repository.settlement_backlog()
        if reports or runs or misses:
            _log.info(
                "settlement pass",
                extra={
                    "reports_found": reports,
                    "disbursements_found": disbursements,
                    "reports_reconciled": len(runs),
                    "lines_recorded": sum(r.lines_recorded for r in runs),
                    "misses_found": misses,
                },
            )
        return SettlementPass(
            reports_found=reports,
            disbursements_found=disbursements,
            reports_reconciled=len(runs),
            lines_recorded=sum(r.lines_recorded for r in runs),
            misses_found=misses,
        )
