"""Settlement reconciliation: what Amazon paid out, line by line, against what the ledger recorded.

Amazon's settlement report lists, per settlement period, every capture, refund, chargeback, fee
and adjustment it booked. Each line is matched by the rule of its transaction type (`RULES`):

| rule | transaction types | ledger object | compared |
|---|---|---|---|
| capture | Capture | the charge named by AmazonTransactionId | the charge's captureAmount (else, when Captured, its chargeAmount) |
| refund | Refund | the refund named by AmazonTransactionId | refundAmount (0 if the ledger says Declined) |
| chargeback | Chargeback, A-to-z Guarantee Claim, Dispute | the dispute named by AmazonTransactionId, else the latest dispute of the charge it names | disputeAmount |
| fee | ...Fee, AuthExpired, AuthCancelled | the charge, refund or dispute it names, if any | nothing: fees are Amazon's, the ledger has no figure for them |
| adjustment | Adjustment, Reserve..., Transfer... | as fee | nothing |
| other | anything else | as fee | nothing |

Outcomes: `matched`; `missing_in_ledger` (a compared line whose object the ledger does not have,
or a charge the ledger does not know was captured; a fee or adjustment naming an unknown object);
`currency_mismatch` (checked first: amounts in two currencies do not compare);
`amount_mismatch`. Amazon writes captures positive and refunds and chargebacks negative while the
ledger keeps unsigned amounts, so magnitudes are compared. A fee or adjustment naming nothing is
`matched`: it is recorded and counted in the settlement's totals, there is nothing to compare.
The fee column of a capture line is recorded, never compared.

`missing_at_amazon` is found the other way round: a captured charge or settled refund whose
capture (or settlement) time plus the settlement window is before the end of the last reconciled
settlement period, while no line names it. Checked only once every report Amazon listed is
reconciled, and only for objects from the first reconciled period on.
"""

from __future__ import annotations

import logging
import re
import time
from collections import Counter
from collections.abc import AsyncIterable, Callable, Mapping, Sequence
from dataclasses import KW_ONLY, dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal, InvalidOperation
from functools import partial
from typing import Any

from service.amazonpay import (
    SETTLEMENT_REPORT_TYPES,
    SettlementLine,
    SettlementReportHeader,
    parse_settlement_report,
    parse_timestamp,
)
from service.ledger import (
    LINE_OUTCOMES,
    Disbursement,
    LedgerEntry,
    MissRecord,
    ReportRecord,
    Repository,
    SettlementLineRecord,
    StoredReport,
)

from ._merchants import Merchant, MerchantRegistry

__all__ = [
    "RULES",
    "SETTLEMENT_OUTCOMES",
    "MatchRule",
    "PeriodSummary",
    "RunSummary",
    "SettlementSettings",
    "Settlements",
    "match_line",
    "rule_for",
]

_log = logging.getLogger("service.core.settlement")

SETTLEMENT_OUTCOMES = (*LINE_OUTCOMES, "missing_at_amazon")
"""Every outcome: those of report lines, and ledger objects no line names."""


@dataclass(frozen=True)
class MatchRule:
    """How lines of some transaction types are matched."""

    name: str
    types: frozenset[str]
    """Transaction types, normalized: lower-case letters only ("A-to-z" -> "atoz")."""
    suffixes: tuple[str, ...] = ()
    """Normalized endings that also select the rule (any "...Fee")."""
    ledger_kind: str | None = None
    """Kind of the ledger object the line must name (None: any it names, if any)."""
    compares_amount: bool = False


RULES: tuple[MatchRule, ...] = (
    MatchRule("capture", frozenset({"capture"}), ledger_kind="charge", compares_amount=True),
    MatchRule("refund", frozenset({"refund"}), ledger_kind="refund", compares_amount=True),
    MatchRule(
        "chargeback",
        frozenset(
            {"chargeback", "chargebackreversal", "atozguaranteeclaim", "atozclaim", "dispute"}
        ),
        ledger_kind="dispute",
        compares_amount=True,
    ),
    MatchRule(
        "fee",
        frozenset({"authexpired", "authcancelled", "authorizationexpired"}),
        suffixes=("fee", "fees"),
    ),
    MatchRule("adjustment", frozenset()),
)
_OTHER = MatchRule("other", frozenset())
_ADJUSTMENT_PREFIXES = ("adjustment", "reserve", "transfer", "balance", "carryover")
_NORMALIZE = re.compile(r"[^a-z]")
_KIND_BY_ID_LETTER: Mapping[str, str] = {"C": "charge", "R": "refund", "B": "dispute"}


def rule_for(transaction_type: str) -> MatchRule:
    """The rule of a transaction type as Amazon writes it."""
    normalized = _NORMALIZE.sub("", transaction_type.lower())
    for rule in RULES:
        if normalized in rule.types or (rule.suffixes and normalized.endswith(rule.suffixes)):
            return rule
    if normalized.startswith(_ADJUSTMENT_PREFIXES):
        return RULES[-1]
    return _OTHER


def _kind_of_id(object_id: str) -> str | None:
    """Amazon ids end in `-C…` (charge), `-R…` (refund), `-B…` (dispute)."""
    tail = object_id.rsplit("-", 1)[-1]
    return _KIND_BY_ID_LETTER.get(tail[:1]) if len(object_id.split("-")) >= 4 else None


def _charge_permission_of(object_id: str | None) -> str | None:
    if object_id and _kind_of_id(object_id) is not None:
        return object_id.rsplit("-", 1)[0]
    return None


def _money(value: Any) -> Decimal | None:
    try:
        return None if value is None else Decimal(str(value))
    except InvalidOperation:
        return None


@dataclass(frozen=True)
class _Expected:
    amount: Decimal
    currency: str | None


def _expected(rule: MatchRule, entry: LedgerEntry) -> _Expected | None:
    """What Amazon should have settled for this object (None: the ledger knows of no such
    movement, e.g. a charge it never saw captured)."""
    if rule.name == "capture":
        captured = entry.capture_amount
        if isinstance(captured, Mapping) and _money(captured.get("amount")) is not None:
            amount = _money(captured.get("amount"))
            assert amount is not None
            currency = captured.get("currencyCode")
            return _Expected(amount, currency if isinstance(currency, str) else entry.currency_code)
        if entry.state != "Captured" or entry.amount is None:
            return None
        return _Expected(entry.amount, entry.currency_code)
    if rule.name == "refund" and entry.state == "Declined":
        return _Expected(Decimal(0), entry.currency_code)
    if entry.amount is None:
        return None
    return _Expected(entry.amount, entry.currency_code)


class LedgerIndex:
    """The ledger objects one batch of lines names, looked up by kind and id."""

    def __init__(self, entries: Sequence[LedgerEntry]) -> None:
        self._by_key = {(e.kind, e.object_id): e for e in entries}
        self._disputes_by_charge: dict[str, LedgerEntry] = {}
        for entry in sorted(
            (e for e in entries if e.kind == "dispute" and e.charge_id),
            key=lambda e: (e.created_at, e.object_id),
        ):
            assert entry.charge_id is not None
            self._disputes_by_charge[entry.charge_id] = entry

    @staticmethod
    def keys_for(lines: Sequence[SettlementLine]) -> tuple[list[tuple[str, str]], list[str]]:
        """(kind, id) pairs to read for these lines, and the charges whose disputes to read."""
        keys: set[tuple[str, str]] = set()
        charges: set[str] = set()
        for line in lines:
            tx = line.amazon_transaction_id
            if not tx:
                continue
            rule = rule_for(line.transaction_type)
            if rule.ledger_kind == "dispute":
                keys.add(("dispute", tx))
                charges.add(tx)
            elif rule.ledger_kind is not None:
                keys.add((rule.ledger_kind, tx))
            else:
                kind = _kind_of_id(tx)
                keys.update(
                    [(kind, tx)] if kind else [(k, tx) for k in _KIND_BY_ID_LETTER.values()]
                )
        return sorted(keys), sorted(charges)

    def find(self, rule: MatchRule, object_id: str) -> LedgerEntry | None:
        if rule.ledger_kind == "dispute":
            return self._by_key.get(("dispute", object_id)) or self._disputes_by_charge.get(
                object_id
            )
        if rule.ledger_kind is not None:
            return self._by_key.get((rule.ledger_kind, object_id))
        for kind in _KIND_BY_ID_LETTER.values():
            found = self._by_key.get((kind, object_id))
            if found is not None:
                return found
        return None


def match_line(
    merchant: str, report_id: str, line: SettlementLine, ledger: LedgerIndex
) -> SettlementLineRecord:
    """The outcome of one line against the ledger (pure: the same ledger, the same outcome)."""
    rule = rule_for(line.transaction_type)
    tx = line.amazon_transaction_id or None
    entry = ledger.find(rule, tx) if tx else None
    expected = _expected(rule, entry) if entry is not None and rule.compares_amount else None
    if entry is None:
        outcome = "matched" if tx is None and not rule.compares_amount else "missing_in_ledger"
    elif not rule.compares_amount:
        outcome = "matched"
    elif expected is None:
        outcome = "missing_in_ledger"
    elif expected.currency != line.currency:
        outcome = "currency_mismatch"
    elif abs(line.amount) != expected.amount:
        outcome = "amount_mismatch"
    else:
        outcome = "matched"
    return SettlementLineRecord(
        merchant=merchant,
        settlement_id=line.settlement_id,
        line_number=line.line_number,
        report_id=report_id,
        posted_at=line.posted_at,
        transaction_type=line.transaction_type,
        amazon_transaction_id=tx,
        seller_reference_id=line.seller_reference_id or None,
        amount=line.amount,
        fee=line.fee,
        net=line.net,
        currency_code=line.currency,
        outcome=outcome,
        match_rule=rule.name,
        ledger_kind=entry.kind if entry else None,
        ledger_object_id=entry.object_id if entry else None,
        charge_permission_id=(entry.charge_permission_id if entry else None)
        or _charge_permission_of(tx),
        expected_amount=expected.amount if expected else None,
        expected_currency=expected.currency if expected else None,
        raw=dict(line.raw),
    )


def _occurred_at(entry: LedgerEntry) -> datetime:
    """When the charge was captured (the refund settled): Amazon's lastUpdatedTimestamp of the
    final state, else the creation time."""
    return parse_timestamp(entry.last_updated) or entry.created_at


@dataclass(frozen=True)
class SettlementSettings:
    window_s: float = 72 * 3600.0
    """A capture or refund not in any settlement this long after it happened is missing at
    Amazon."""
    lookback_s: float = 30 * 86400.0
    """How far back the first fetch of reports and disbursements reaches."""
    batch: int = 500
    """Lines matched and written per transaction."""
    lease_s: float = 120.0
    """How long a replica owns a report (renewed while its lines stream) or a merchant's
    fetch."""
    max_attempts: int = 8
    """Failed reconciliations of one report before it is set aside as `failed`."""
    page_size: int = 100
    """Reports and disbursements asked for per Amazon page."""


def report_backoff_s(attempts: int) -> float:
    """1, 2, 4 ... minutes after each failed reconciliation of a report, at most 6 hours."""
    return float(min(60 * 2 ** max(attempts - 1, 0), 6 * 3600))


@dataclass
class RunSummary:
    """One reconciliation of one report."""

    merchant: str
    report_id: str
    settlement_id: str | None = None
    lines_seen: int = 0
    lines_recorded: int = 0
    outcomes_changed: int = 0
    recorded: Counter[str] = field(default_factory=Counter)
    """Lines recorded by this run, by outcome."""
    findings: Counter[str] = field(default_factory=Counter)
    """Findings this run recorded (new mismatches, changed outcomes), by outcome."""


@dataclass
class PeriodSummary:
    """A reconciliation of every settlement of a period (ReconcileSettlementPeriod)."""

    merchant: str
    reports: list[StoredReport] = field(default_factory=list)
    runs: list[RunSummary] = field(default_factory=list)
    misses_found: int = 0


Observer = Callable[[Mapping[str, int], Mapping[str, int]], None]
"""Told, after each batch, the lines it recorded and the findings it wrote, by outcome."""


_NO_DOCUMENT = frozenset({"FAILED", "CANCELLED"})
"""Report processing states that never get a document (an empty period is CANCELLED)."""


def _query_time(moment: datetime) -> str:
    """ISO 8601 in UTC, as the Reports and Disbursements APIs take their time filters."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass(eq=False)
class Settlements:
    """Fetches settlement reports and disbursements and reconciles them; shared by the worker
    (on its schedule) and the API (ReconcileSettlementPeriod)."""

    merchants: MerchantRegistry
    repository: Repository
    settings: SettlementSettings
    _: KW_ONLY
    owner: str
    """Who holds the leases taken here (the replica's instance id)."""
    observe: Observer | None = None

    # ------------------------------------------------------------------ fetching

    async def fetch(self, merchant: Merchant) -> tuple[int, int] | None:
        """New settlement reports and disbursements of `merchant` since the cursor (another
        replica fetching: None). Returns (new reports, new disbursements)."""
        repo = self.repository
        cursor = await repo.claim_cursor(
            merchant.alias, owner=self.owner, lease_s=self.settings.lease_s
        )
        if cursor is None:
            return None
        start = datetime.now(UTC) - timedelta(seconds=self.settings.lookback_s)
        try:
            reports, latest = await self._fetch_reports(
                merchant, cursor.reports_created_since or start
            )
            disbursements, paid = await self._fetch_disbursements(
                merchant, cursor.disbursements_since or start, until=latest
            )
        except Exception as exc:
            await repo.save_cursor(
                merchant.alias, owner=self.owner, error=type(exc).__name__, release=True
            )
            raise
        # Listings can lag behind creation: the next fetch re-reads the last hour (known
        # reports and disbursements are left as they are).
        overlap = timedelta(hours=1)
        await repo.save_cursor(
            merchant.alias,
            owner=self.owner,
            reports_created_since=latest - overlap if latest else None,
            disbursements_since=paid - overlap if paid else None,
            release=True,
        )
        return reports, disbursements

    async def _pages(
        self, merchant: Merchant, operation: str, query: dict[str, str], items_key: str
    ) -> list[Mapping[str, Any]]:
        found: list[Mapping[str, Any]] = []
        token: str | None = None
        while True:
            page_query = {**query, **({"nextToken": token} if token else {})}
            answer = await merchant.call(
                partial(
                    merchant.client.invoke,
                    operation,
                    query=page_query,
                    deadline=time.monotonic() + 30,
                )
            )
            raw = answer.raw
            items = raw.get(items_key)
            found.extend(
                i for i in (items if isinstance(items, list) else []) if isinstance(i, Mapping)
            )
            token = raw.get("nextToken") or None
            if not token:
                return found

    async def _fetch_reports(
        self, merchant: Merchant, since: datetime
    ) -> tuple[int, datetime | None]:
        """Settlement reports created since `since`; returns (new ones, where the next fetch
        starts: the newest creation time, or the oldest report still in progress)."""
        report_type = SETTLEMENT_REPORT_TYPES[merchant.account.effective_environment]
        listed = await self._pages(
            merchant,
            "GetReports",
            {
                "reportTypes": report_type,
                "createdSince": _query_time(since),
                "pageSize": str(self.settings.page_size),
            },
            "reports",
        )
        records = []
        waiting: list[datetime] = []
        for report in listed:
            report_id = report.get("reportId")
            status = report.get("processingStatus")
            if not isinstance(report_id, str) or not report_id or status in _NO_DOCUMENT:
                continue
            document = report.get("reportDocumentId")
            created = parse_timestamp(report.get("createdTime"))
            if status != "COMPLETED" and created is not None:
                waiting.append(created)  # listed again until it has its document
            records.append(
                ReportRecord(
                    merchant=merchant.alias,
                    report_id=report_id,
                    report_type=str(report.get("reportType") or report_type),
                    report_document_id=document if isinstance(document, str) else None,
                    amazon_created_at=created,
                    snapshot=dict(report),
                    data_start=parse_timestamp(
                        report.get("dataStartTime") or report.get("startTime")
                    ),
                    data_end=parse_timestamp(report.get("dataEndTime") or report.get("endTime")),
                )
            )
        created_times = [r.amazon_created_at for r in records if r.amazon_created_at]
        resume = min(waiting) if waiting else max(created_times, default=None)
        return await self.repository.add_reports(records), resume

    async def _fetch_disbursements(
        self, merchant: Merchant, since: datetime, *, until: datetime | None
    ) -> tuple[int, datetime | None]:
        # Amazon's clock can run ahead of ours (an emulator's does): ask up to the newest report.
        end = max(datetime.now(UTC), until or datetime.now(UTC)) + timedelta(minutes=5)
        listed = await self._pages(
            merchant,
            "GetDisbursements",
            {
                "startTime": _query_time(since),
                "endTime": _query_time(end),
                "pageSize": str(self.settings.page_size),
            },
            "disbursements",
        )
        items = []
        for entry in listed:
            amount = _money(entry.get("amount"))
            settlement = entry.get("settlementId")
            reference = entry.get("amazonDisbursementReferenceId") or settlement
            if amount is None or not isinstance(reference, str) or not reference:
                continue
            items.append(
                Disbursement(
                    merchant=merchant.alias,
                    disbursement_id=reference,
                    settlement_id=str(settlement) if settlement else None,
                    seller_id=entry.get("sellerId")
                    if isinstance(entry.get("sellerId"), str)
                    else None,
                    amount=amount,
                    currency_code=str(entry.get("currencyCode") or ""),
                    transaction_time=parse_timestamp(entry.get("transactionTime")),
                    snapshot=dict(entry),
                )
            )
        times = [d.transaction_time for d in items if d.transaction_time]
        return await self.repository.add_disbursements(items), max(times, default=None)

    # ------------------------------------------------------------------ reconciling

    async def reconcile_report(
        self, merchant: Merchant, report: StoredReport, *, trigger: str, leased: bool
    ) -> RunSummary:
        """Stream the report's document from Amazon and reconcile every line."""
        if not report.report_document_id:
            raise LookupError(f"report {report.report_id} has no document yet")
        document = await merchant.call(
            lambda: merchant.client.invoke(
                "GetReportDocument",
                path_params={"reportDocumentId": report.report_document_id or ""},
                deadline=time.monotonic() + 30,
            )
        )
        url = document.raw.get("url")
        if not isinstance(url, str) or not url:
            raise LookupError(f"report document {report.report_document_id} has no url")
        header, lines = await parse_settlement_report(merchant.client.stream_report_document(url))
        return await self.reconcile_lines(
            merchant.alias, report.report_id, header, lines, trigger=trigger, leased=leased
        )

    async def reconcile_lines(
        self,
        merchant: str,
        report_id: str,
        header: SettlementReportHeader,
        lines: AsyncIterable[SettlementLine],
        *,
        trigger: str = "schedule",
        leased: bool = False,
    ) -> RunSummary:
        """Match and record every line of one report, batch by batch; then mark the report
        reconciled. Idempotent: a second run records nothing unless the ledger changed."""
        repo = self.repository
        run_id = await repo.start_run(merchant, report_id, trigger=trigger, owner=self.owner)
        summary = RunSummary(merchant=merchant, report_id=report_id)
        batch: list[SettlementLine] = []
        renew_at = time.monotonic() + self.settings.lease_s / 3
        error: str | None = None
        try:
            async for line in lines:
                if summary.settlement_id is None:
                    summary.settlement_id = line.settlement_id
                if batch and (
                    len(batch) >= self.settings.batch
                    or batch[-1].settlement_id != line.settlement_id
                ):
                    await self._write_batch(merchant, report_id, batch, summary)
                    batch = []
                    if leased and time.monotonic() >= renew_at:
                        renew_at = time.monotonic() + self.settings.lease_s / 3
                        await repo.extend_report_lease(
                            merchant, report_id, owner=self.owner, lease_s=self.settings.lease_s
                        )
                batch.append(line)
            if batch:
                await self._write_batch(merchant, report_id, batch, summary)
            await repo.finish_report(
                merchant,
                report_id,
                owner=self.owner,
                settlement_id=summary.settlement_id,
                seller_id=header.seller_id or None,
                settlement_start=header.settlement_start,
                settlement_end=header.settlement_end,
                line_count=summary.lines_seen,
            )
        except BaseException as exc:
            error = type(exc).__name__
            raise
        finally:
            await repo.finish_run(
                run_id,
                settlement_id=summary.settlement_id,
                lines_seen=summary.lines_seen,
                lines_recorded=summary.lines_recorded,
                outcomes_changed=summary.outcomes_changed,
                error=error,
            )
        return summary

    async def _write_batch(
        self, merchant: str, report_id: str, batch: Sequence[SettlementLine], summary: RunSummary
    ) -> None:
        keys, charges = LedgerIndex.keys_for(batch)
        index = LedgerIndex(
            await self.repository.ledger_entries(merchant, keys, disputed_charges=charges)
        )
        records = [match_line(merchant, report_id, line, index) for line in batch]
        written = await self.repository.record_lines(merchant, records)
        recorded = Counter(r.outcome for r in written.recorded)
        findings = Counter(r.outcome for r in written.recorded if r.outcome != "matched")
        findings.update(r.outcome for r, before in written.changed if r.outcome != before)
        findings.update("matched" for _ in written.settled_misses)
        summary.lines_seen += len(batch)
        summary.lines_recorded += len(written.recorded)
        summary.outcomes_changed += len(written.changed)
        summary.recorded.update(recorded)
        summary.findings.update(findings)
        if self.observe is not None and (recorded or findings):
            self.observe(recorded, findings)

    async def check_misses(self, merchant: str) -> int:
        """Record the ledger captures and refunds no settlement named within the window (see
        the module docstring); returns how many were new."""
        covered = await self.repository.settled_through(merchant)
        if covered is None:
            return 0
        first_start, last_end, detected_in = covered
        window = timedelta(seconds=self.settings.window_s)
        # A capture happens within 30 days of its charge's creation (authorizations expire).
        created_after = first_start - timedelta(days=31)
        after: tuple[datetime, str, str] | None = None
        found = 0
        while True:
            entries = await self.repository.unsettled_entries(
                merchant, created_after=created_after, after=after, limit=self.settings.batch
            )
            if not entries:
                break
            last = entries[-1]
            after = (last.created_at, last.kind, last.object_id)
            misses = []
            for entry in entries:
                occurred = _occurred_at(entry)
                if occurred < first_start or occurred + window > last_end:
                    continue
                rule = RULES[0] if entry.kind == "charge" else RULES[1]
                expected = _expected(rule, entry)
                misses.append(
                    MissRecord(
                        merchant=merchant,
                        ledger_kind=entry.kind,
                        ledger_object_id=entry.object_id,
                        charge_permission_id=entry.charge_permission_id,
                        transaction_type="Capture" if entry.kind == "charge" else "Refund",
                        expected_amount=expected.amount if expected else entry.amount,
                        expected_currency=expected.currency if expected else entry.currency_code,
                        occurred_at=occurred,
                        settle_by=occurred + window,
                        detected_in=detected_in,
                    )
                )
            recorded = await self.repository.record_misses(merchant, misses)
            found += len(recorded)
            if recorded and self.observe is not None:
                self.observe(
                    {"missing_at_amazon": len(recorded)}, {"missing_at_amazon": len(recorded)}
                )
        return found

    async def reconcile_due(self, *, limit: int = 10) -> list[RunSummary]:
        """Reconcile reports waiting for it, one lease at a time (the worker's pass)."""
        done: list[RunSummary] = []
        for _ in range(limit):
            report = await self.repository.claim_due_report(
                owner=self.owner, lease_s=self.settings.lease_s
            )
            if report is None:
                break
            summary = await self._guarded(report, trigger="schedule", leased=True)
            if summary is not None:
                done.append(summary)
        return done

    async def _guarded(
        self, report: StoredReport, *, trigger: str, leased: bool
    ) -> RunSummary | None:
        """Reconcile one report; a failure is recorded on it and retried later (given up after
        `max_attempts`), never raised into the caller's loop."""
        try:
            merchant = self.merchants.get(report.merchant)
            return await self.reconcile_report(merchant, report, trigger=trigger, leased=leased)
        except Exception as exc:
            attempts = report.attempts
            given_up = attempts >= self.settings.max_attempts
            error = f"{type(exc).__name__}: {exc}"[:300]
            await self.repository.fail_report(
                report.merchant,
                report.report_id,
                owner=self.owner,
                error=error,
                retry_in_s=None if given_up else report_backoff_s(attempts),
            )
            log = _log.error if given_up else _log.warning
            log(
                "settlement report given up" if given_up else "settlement report not reconciled",
                extra={
                    "merchant": report.merchant,
                    "report_id": report.report_id,
                    "error": type(exc).__name__,
                    "attempts": attempts,
                },
            )
            return None

    async def reconcile_period(
        self,
        merchant_alias: str,
        *,
        start: datetime | None,
        end: datetime | None,
        settlement_id: str | None,
        fetch_first: bool = True,
    ) -> PeriodSummary:
        """ReconcileSettlementPeriod: fetch what Amazon listed since the last fetch, reconcile
        (again) every report of the period or settlement, then look for misses."""
        merchant = self.merchants.get(merchant_alias)
        if fetch_first:
            await self.fetch(merchant)
        if settlement_id is not None:
            report = await self.repository.get_report(merchant.alias, settlement_id=settlement_id)
            reports = [report] if report is not None else []
        else:
            if start is None or end is None:
                raise ValueError("a period needs its start and end")
            reports = await self.repository.reports_in_period(merchant.alias, start=start, end=end)
        summary = PeriodSummary(merchant=merchant.alias)
        for report in reports:
            if report.report_document_id is None:
                continue  # Amazon is still producing it: listed as pending
            run = await self.reconcile_report(merchant, report, trigger="request", leased=False)
            summary.runs.append(run)
        summary.misses_found = await self.check_misses(merchant.alias)
        for report in reports:
            fresh = await self.repository.get_report(merchant.alias, report_id=report.report_id)
            summary.reports.append(fresh or report)
        return summary
