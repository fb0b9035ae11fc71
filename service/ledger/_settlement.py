"""Every SQL statement of settlement reconciliation: reports, their lines and outcomes, the ledger
objects Amazon never settled, disbursements, the per-merchant cursor and the runs.

Write rules:
- A line is keyed by (merchant, settlement, line number). The lines of one batch are written in
  one transaction under a transaction advisory lock of their settlement, after reading what is
  already recorded: whoever comes second (a re-run, another replica) writes only what changed,
  and a finding's event is appended exactly once per change.
- Findings (a line that did not match, an outcome that changed, a capture never settled) are
  ledger events of kind `settlement_line`, source `settlement`, in the same transaction.
- Nothing here is ever deleted (the serving role has no DELETE on these tables).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any, Generic, TypeVar

import asyncpg

from ._objects import InvalidPageToken, Page, _decode_token, _encode_token
from ._records import Conn, QueryBase, StoredObject, _decimal_text, _from_row, _stored

__all__ = [
    "FINDING_KIND",
    "LINE_OUTCOMES",
    "Disbursement",
    "LedgerEntry",
    "LinesWritten",
    "MissRecord",
    "ReportRecord",
    "SettlementCounts",
    "SettlementCursor",
    "SettlementLineRecord",
    "SettlementQueries",
    "SettlementRun",
    "StoredReport",
]

FINDING_KIND = "settlement_line"
"""Event kind of reconciliation findings (they have no `objects` row)."""

LINE_OUTCOMES = ("matched", "missing_in_ledger", "amount_mismatch", "currency_mismatch")
"""Outcomes a report line can have; `missing_at_amazon` belongs to ledger objects no line names."""

# Namespace of the transaction advisory locks that serialize writers of one settlement's lines
# (two-key form: its own key space, apart from the migration and instance locks).
_SETTLEMENT_LOCK_CLASS = 0x73746C6D  # "stlm"

_PENDING = ("pending", "reconciling")


@dataclass(frozen=True)
class SettlementLineRecord:
    """One settlement report line and the outcome of matching it against the ledger."""

    merchant: str
    settlement_id: str
    line_number: int
    report_id: str
    posted_at: datetime
    transaction_type: str
    amazon_transaction_id: str | None
    seller_reference_id: str | None
    amount: Decimal
    fee: Decimal
    net: Decimal
    currency_code: str
    outcome: str
    match_rule: str
    ledger_kind: str | None = None
    ledger_object_id: str | None = None
    charge_permission_id: str | None = None
    expected_amount: Decimal | None = None
    expected_currency: str | None = None
    raw: Mapping[str, str] = field(default_factory=dict)
    recorded_at: datetime | None = None
    outcome_changed_at: datetime | None = None

    @property
    def finding_object_id(self) -> str:
        """The id a finding's event carries: the Amazon transaction the line names."""
        return (
            self.amazon_transaction_id
            or self.ledger_object_id
            or f"{self.settlement_id}:{self.line_number}"
        )

    def as_json(self) -> dict[str, Any]:
        """camelCase JSON of the line (events' snapshot; the API's SettlementLine)."""
        data: dict[str, Any] = {
            "merchant": self.merchant,
            "settlementId": self.settlement_id,
            "lineNumber": self.line_number,
            "reportId": self.report_id,
            "postedAt": self.posted_at.isoformat(),
            "transactionType": self.transaction_type,
            "amazonTransactionId": self.amazon_transaction_id,
            "sellerReferenceId": self.seller_reference_id,
            "amount": _decimal_text(self.amount),
            "fee": _decimal_text(self.fee),
            "net": _decimal_text(self.net),
            "currencyCode": self.currency_code,
            "outcome": "".join(p.capitalize() for p in self.outcome.split("_")),
            "matchRule": self.match_rule,
            "ledgerKind": self.ledger_kind,
            "ledgerObjectId": self.ledger_object_id,
            "chargePermissionId": self.charge_permission_id,
            "expectedAmount": _decimal_text(self.expected_amount),
            "expectedCurrencyCode": self.expected_currency,
        }
        if self.recorded_at is not None:
            data["recordedAt"] = self.recorded_at.isoformat()
        return {k: v for k, v in data.items() if v is not None}


@dataclass(frozen=True)
class MissRecord:
    """A ledger capture or refund no settlement line names after the settlement window."""

    merchant: str
    ledger_kind: str
    ledger_object_id: str
    charge_permission_id: str | None
    transaction_type: str
    expected_amount: Decimal | None
    expected_currency: str | None
    occurred_at: datetime
    settle_by: datetime
    detected_in: str
    detected_at: datetime | None = None
    settled_in: str | None = None
    settled_line: int | None = None
    resolved_at: datetime | None = None

    def as_json(self) -> dict[str, Any]:
        """The miss as a SettlementLine (line number 0, nothing reported)."""
        data: dict[str, Any] = {
            "merchant": self.merchant,
            "settlementId": self.detected_in,
            "lineNumber": 0,
            "postedAt": self.occurred_at.isoformat(),
            "transactionType": self.transaction_type,
            "amazonTransactionId": self.ledger_object_id,
            "outcome": "MissingAtAmazon",
            "matchRule": self.transaction_type.lower(),
            "ledgerKind": self.ledger_kind,
            "ledgerObjectId": self.ledger_object_id,
            "chargePermissionId": self.charge_permission_id,
            "expectedAmount": _decimal_text(self.expected_amount),
            "expectedCurrencyCode": self.expected_currency,
            "settleBy": self.settle_by.isoformat(),
        }
        if self.detected_at is not None:
            data["recordedAt"] = self.detected_at.isoformat()
        return {k: v for k, v in data.items() if v is not None}


@dataclass(frozen=True)
class LedgerEntry:
    """What matching needs of one ledger object (no buyer data)."""

    kind: str
    object_id: str
    state: str
    amount: Decimal | None
    currency_code: str | None
    charge_permission_id: str | None
    charge_id: str | None
    capture_amount: Mapping[str, Any] | None
    """The charge's `captureAmount` as Amazon wrote it (charges only)."""
    last_updated: str | None
    """`statusDetails.lastUpdatedTimestamp`: when the object reached its state."""
    created_at: datetime


@dataclass(frozen=True)
class _ListedReport:
    """Which merchant's settlement report, as Get Reports names it."""

    merchant: str
    report_id: str
    report_type: str
    report_document_id: str | None
    amazon_created_at: datetime | None


@dataclass(frozen=True)
class ReportRecord(_ListedReport):
    """A settlement report as Get Reports lists it."""

    snapshot: Mapping[str, Any]
    data_start: datetime | None = None
    """The period Amazon listed the report for (replaced by the document's header once read)."""
    data_end: datetime | None = None


@dataclass(frozen=True)
class StoredReport(_ListedReport):
    """A report's row: what its document's header said, and how reconciling it went."""

    settlement_id: str | None
    seller_id: str | None
    settlement_start: datetime | None
    settlement_end: datetime | None
    status: str
    line_count: int
    attempts: int
    last_error: str | None
    snapshot: dict[str, Any]
    first_seen_at: datetime
    reconciled_at: datetime | None
    updated_at: datetime


@dataclass(frozen=True)
class SettlementCounts:
    """A settlement's lines by outcome, its totals per currency, and its misses."""

    outcomes: Mapping[str, int]
    totals: Sequence[tuple[str, Decimal, Decimal, Decimal]]
    """(currency, amount, fee, net)."""
    misses: int
    disbursed: Decimal | None = None
    """Sum of the settlement's disbursements (None: none known)."""


@dataclass(frozen=True)
class Disbursement:
    merchant: str
    disbursement_id: str
    settlement_id: str | None
    seller_id: str | None
    amount: Decimal
    currency_code: str
    transaction_time: datetime | None
    snapshot: Mapping[str, Any]
    first_seen_at: datetime | None = None


@dataclass(frozen=True)
class SettlementCursor:
    merchant: str
    reports_created_since: datetime | None
    disbursements_since: datetime | None
    misses_checked_through: datetime | None


@dataclass(frozen=True)
class LinesWritten:
    """What one batch changed: lines recorded for the first time, lines whose outcome changed
    (with the outcome before), and misses a matched line settled."""

    recorded: list[SettlementLineRecord]
    changed: list[tuple[SettlementLineRecord, str]]
    settled_misses: list[MissRecord]

    @property
    def findings(self) -> int:
        return (
            sum(1 for r in self.recorded if r.outcome != "matched")
            + len(self.changed)
            + len(self.settled_misses)
        )


@dataclass(frozen=True)
class SettlementRun:
    run_id: int
    merchant: str
    report_id: str
    settlement_id: str | None
    trigger: str
    owner: str
    started_at: datetime
    finished_at: datetime | None
    lines_seen: int
    lines_recorded: int
    outcomes_changed: int
    error: str | None


def _report(row: asyncpg.Record) -> StoredReport:
    return _from_row(StoredReport, row)


def _line(row: asyncpg.Record) -> SettlementLineRecord:
    return _from_row(SettlementLineRecord, row)


def _miss(row: asyncpg.Record) -> MissRecord:
    return _from_row(MissRecord, row)


def _disbursement(row: asyncpg.Record) -> Disbursement:
    return _from_row(Disbursement, row)


def _entries(rows: Sequence[asyncpg.Record]) -> list[LedgerEntry]:
    return [_from_row(LedgerEntry, r) for r in rows]


R = TypeVar("R")

# Missing times sort as the latest (a report not read yet) or the earliest (a disbursement
# without a time) instant, so every keyset position is a real timestamp.
_LATEST = datetime.max.replace(tzinfo=UTC)
_EARLIEST = datetime.min.replace(tzinfo=UTC)


def _page(
    rows: Sequence[asyncpg.Record],
    page_size: int,
    convert: Callable[[asyncpg.Record], R],
    position: Callable[[R], dict[str, Any]],
    filters: Sequence[object],
) -> Page[R]:
    """The first `page_size` of `rows` (one more was asked for) and the next page's token."""
    items = [convert(r) for r in rows[:page_size]]
    token = _encode_token(position(items[-1]), filters) if len(rows) > page_size else ""
    return Page(items, token)


def _position(token: str, filters: Sequence[object], keys: Sequence[str]) -> list[Any] | None:
    """The keyset position a page token holds, checked field by field (tokens are caller input)."""
    if not token:
        return None
    pos = _decode_token(token, filters)
    values = [pos.get(k) for k in keys]
    for key, value in zip(keys, values, strict=True):
        if key in ("n",) and not (type(value) is int and 0 <= value < 2**31):
            raise InvalidPageToken("page_token is not a token this service issued")
        shortest = 0 if key == "o" else 1  # a line's keyset has no object id
        if key not in ("n",) and not (isinstance(value, str) and shortest <= len(value) <= 256):
            raise InvalidPageToken("page_token is not a token this service issued")
    if "t" in keys:
        try:
            moment = datetime.fromisoformat(str(values[keys.index("t")]))
        except ValueError:
            raise InvalidPageToken("page_token is not a token this service issued") from None
        if moment.tzinfo is None:
            raise InvalidPageToken("page_token is not a token this service issued")
        values[keys.index("t")] = moment
    return values


# The finding events of one batch: $1 merchant, then one array per column. `tx` as in
# `_objects`: never before the previous event about the same id, so per id, commit order holds.
_FINDING_EVENTS = """
    INSERT INTO events (merchant, kind, object_id, charge_permission_id, state, reason_code,
        previous_state, source, snapshot, tx)
    SELECT $1, $2, f.object_id, f.charge_permission_id, f.state, f.reason_code,
        f.previous_state, 'settlement', f.snapshot,
        greatest(pg_current_xact_id(), (SELECT max(e.tx) FROM events e
            WHERE e.merchant = $1 AND e.kind = $2 AND e.object_id = f.object_id))
    FROM unnest($3::text[], $4::text[], $5::text[], $6::text[], $7::text[], $8::jsonb[])
        AS f(object_id, charge_permission_id, state, reason_code, previous_state, snapshot)
"""

_LINE_COLUMNS = (
    "settlement_id, line_number, report_id, posted_at, transaction_type, amazon_transaction_id,"
    " seller_reference_id, amount, fee, net, currency_code, outcome, match_rule, ledger_kind,"
    " ledger_object_id, charge_permission_id, expected_amount, expected_currency, raw"
)


def _arrays(items: Sequence[Any], attributes: str) -> list[list[Any]]:
    """One array per column for an `unnest` insert: each item's value of each of `attributes`
    (comma-separated), mappings as dicts (jsonb)."""
    return [
        [_column(getattr(item, name.strip())) for item in items] for name in attributes.split(",")
    ]


def _column(value: Any) -> Any:
    return dict(value) if isinstance(value, Mapping) else value


def _keyset(position: Sequence[Any] | None, size: int) -> list[Any]:
    """A page token's keyset position as query parameters (`size` NULLs on the first page)."""
    return list(position) if position is not None else [None] * size


_UNNEST_LINES = (
    "unnest($2::text[], $3::int[], $4::text[], $5::timestamptz[], $6::text[], $7::text[],"
    " $8::text[], $9::numeric[], $10::numeric[], $11::numeric[], $12::text[], $13::text[],"
    " $14::text[], $15::text[], $16::text[], $17::text[], $18::numeric[], $19::text[],"
    f" $20::jsonb[]) AS i({_LINE_COLUMNS})"
)


@dataclass(frozen=True)
class _Newest(Generic[R]):
    """A listing of one table newest first, keyset-paginated on (a time that may be missing, an
    id), filtered on one column: each is a column of the table and a field of its records."""

    table: str
    filter_column: str
    time_column: str
    id_column: str
    convert: Callable[[asyncpg.Record], R]
    keys: tuple[str, str]
    """The time's and the id's names in page tokens."""
    missing: datetime
    """The time a missing one sorts as."""

    @property
    def query(self) -> str:
        """$1 the merchant, $2 its filter, $3 and $4 the time range, $5 and $6 the keyset
        position, $7 the rows to read, $8 the time a missing one sorts as."""
        at, item_id = f"coalesce({self.time_column}, $8)", self.id_column
        return f"""
            SELECT * FROM {self.table}
            WHERE merchant = $1
              AND ($2::text IS NULL OR {self.filter_column} = $2)
              AND ($3::timestamptz IS NULL OR {self.time_column} >= $3)
              AND ($4::timestamptz IS NULL OR {self.time_column} < $4)
              AND ($5::timestamptz IS NULL OR ({at}, {item_id}) < ($5, $6))
            ORDER BY {at} DESC, {item_id} DESC
            LIMIT $7
            """  # noqa: S608 - fixed names; values are parameters

    def key(self, item: R) -> tuple[datetime | None, str]:
        """An item's keyset position: its time and id."""
        moment: datetime | None = getattr(item, self.time_column)
        item_id: str = getattr(item, self.id_column)
        return moment, item_id


_REPORTS = _Newest(
    table="settlement_reports",
    filter_column="status",
    time_column="settlement_end",
    id_column="report_id",
    convert=_report,
    keys=("t", "r"),
    missing=_LATEST,
)
_DISBURSEMENTS = _Newest(
    table="disbursements",
    filter_column="settlement_id",
    time_column="transaction_time",
    id_column="disbursement_id",
    convert=_disbursement,
    keys=("t", "d"),
    missing=_EARLIEST,
)


class SettlementQueries(QueryBase):
    """Settlement reports, lines and outcomes, misses, disbursements, cursors and runs."""

    # ------------------------------------------------------------------ reports

    async def add_reports(self, reports: Sequence[ReportRecord]) -> int:
        """Reports Amazon listed; those already known are left as they are. Returns how many
        were new."""
        if not reports:
            return 0
        rows = await self._pool.fetch(
            """
            INSERT INTO settlement_reports (merchant, report_id, report_type, report_document_id,
                amazon_created_at, snapshot, settlement_start, settlement_end)
            SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[],
                $5::timestamptz[], $6::jsonb[], $7::timestamptz[], $8::timestamptz[])
            ON CONFLICT (merchant, report_id) DO UPDATE
                SET report_document_id = coalesce(settlement_reports.report_document_id,
                        EXCLUDED.report_document_id),
                    updated_at = CASE WHEN settlement_reports.report_document_id IS NULL
                        THEN now() ELSE settlement_reports.updated_at END
                WHERE settlement_reports.report_document_id IS NULL
            RETURNING (xmax = 0) AS inserted
            """,
            *_arrays(
                reports,
                "merchant, report_id, report_type, report_document_id, amazon_created_at,"
                " snapshot, data_start, data_end",
            ),
        )
        return sum(1 for r in rows if r["inserted"])

    async def claim_due_report(self, *, owner: str, lease_s: float) -> StoredReport | None:
        """A report waiting to be reconciled, leased to `owner` (SKIP LOCKED plus the lease: one
        replica at a time per report; an expired lease is taken over)."""
        row = await self._pool.fetchrow(
            """
            UPDATE settlement_reports r
            SET status = 'reconciling', lease_owner = $1, attempts = r.attempts + 1,
                lease_expires_at = now() + make_interval(secs => $2), updated_at = now()
            FROM (
                SELECT merchant, report_id FROM settlement_reports
                WHERE status IN ('pending', 'reconciling') AND due_at <= now()
                  AND report_document_id IS NOT NULL
                  AND (lease_expires_at IS NULL OR lease_expires_at < now())
                ORDER BY due_at, amazon_created_at NULLS LAST, report_id
                LIMIT 1
                FOR UPDATE SKIP LOCKED
            ) due
            WHERE r.merchant = due.merchant AND r.report_id = due.report_id
            RETURNING r.*
            """,
            owner,
            lease_s,
        )
        return None if row is None else _report(row)

    async def extend_report_lease(
        self, merchant: str, report_id: str, *, owner: str, lease_s: float
    ) -> bool:
        """Keep a long report's lease while its lines stream; False when another took it."""
        done = await self._pool.fetchval(
            """
            UPDATE settlement_reports SET lease_expires_at = now() + make_interval(secs => $4)
            WHERE merchant = $1 AND report_id = $2 AND lease_owner = $3
            RETURNING true
            """,
            merchant,
            report_id,
            owner,
            lease_s,
        )
        return bool(done)

    async def finish_report(
        self,
        merchant: str,
        report_id: str,
        *,
        owner: str,
        settlement_id: str | None,
        seller_id: str | None,
        settlement_start: datetime | None,
        settlement_end: datetime | None,
        line_count: int,
    ) -> None:
        """Every line of the report is recorded: it is reconciled (the lease, if `owner` holds
        it, is released)."""
        await self._pool.execute(
            """
            UPDATE settlement_reports SET
                status = 'reconciled', settlement_id = coalesce($4, settlement_id),
                seller_id = coalesce($5, seller_id), settlement_start = $6, settlement_end = $7,
                line_count = $8, last_error = NULL, reconciled_at = now(), updated_at = now(),
                lease_owner = CASE WHEN lease_owner = $3 THEN NULL ELSE lease_owner END,
                lease_expires_at = CASE WHEN lease_owner = $3 THEN NULL ELSE lease_expires_at END
            WHERE merchant = $1 AND report_id = $2
            """,
            merchant,
            report_id,
            owner,
            settlement_id,
            seller_id,
            settlement_start,
            settlement_end,
            line_count,
        )

    async def fail_report(
        self,
        merchant: str,
        report_id: str,
        *,
        owner: str,
        error: str,
        retry_in_s: float | None,
    ) -> int:
        """Reconciling failed: retried after `retry_in_s` (None: given up, status `failed`).
        Returns the attempts so far."""
        attempts = await self._pool.fetchval(
            """
            UPDATE settlement_reports SET
                status = CASE WHEN $5::float8 IS NULL THEN 'failed'
                    WHEN status = 'reconciled' THEN 'reconciled' ELSE 'pending' END,
                due_at = now() + make_interval(secs => coalesce($5::float8, 0)),
                last_error = $4, updated_at = now(),
                lease_owner = NULL, lease_expires_at = NULL
            WHERE merchant = $1 AND report_id = $2 AND (lease_owner = $3 OR lease_owner IS NULL)
            RETURNING attempts
            """,
            merchant,
            report_id,
            owner,
            error[:500],
            retry_in_s,
        )
        return int(attempts or 0)

    async def get_report(
        self, merchant: str, *, report_id: str | None = None, settlement_id: str | None = None
    ) -> StoredReport | None:
        """A report by its id or by its settlement's id (the latest such report)."""
        row = await self._pool.fetchrow(
            """
            SELECT * FROM settlement_reports
            WHERE merchant = $1 AND ($2::text IS NULL OR report_id = $2)
              AND ($3::text IS NULL OR settlement_id = $3)
            ORDER BY amazon_created_at DESC NULLS LAST, report_id DESC
            LIMIT 1
            """,
            merchant,
            report_id,
            settlement_id,
        )
        return None if row is None else _report(row)

    async def reports_in_period(
        self, merchant: str, *, start: datetime, end: datetime
    ) -> list[StoredReport]:
        """Reports whose settlement period overlaps [start, end) (for a report not read yet: the
        period Amazon listed it for, else its creation time)."""
        rows = await self._pool.fetch(
            """
            SELECT * FROM settlement_reports
            WHERE merchant = $1
              AND coalesce(settlement_start, amazon_created_at) < $3
              AND coalesce(settlement_end, amazon_created_at) > $2
            ORDER BY settlement_start NULLS LAST, amazon_created_at, report_id
            """,
            merchant,
            start,
            end,
        )
        return [_report(r) for r in rows]

    async def list_reports(
        self,
        merchant: str,
        *,
        status: str | None,
        ended_after: datetime | None,
        ended_before: datetime | None,
        page_size: int,
        page_token: str = "",
    ) -> Page[StoredReport]:
        """Newest settlement first (reports not read yet first of all), keyset-paginated."""
        return await self._newest_first(
            _REPORTS,
            ["reports", merchant, status, ended_after, ended_before],
            page_size=page_size,
            page_token=page_token,
        )

    async def settlement_counts(
        self, merchant: str, reports: Sequence[StoredReport]
    ) -> dict[str, SettlementCounts]:
        """By report id: its lines by outcome, its totals per currency, the open misses its
        reconciliation found and what was disbursed for it (one query each for all reports)."""
        settlements = sorted({r.settlement_id for r in reports if r.settlement_id})
        detected = sorted({r.settlement_id or r.report_id for r in reports})
        outcome_rows = await self._pool.fetch(
            """
            SELECT settlement_id, outcome, count(*) AS lines FROM settlement_lines
            WHERE merchant = $1 AND settlement_id = ANY($2::text[])
            GROUP BY settlement_id, outcome
            """,
            merchant,
            settlements,
        )
        total_rows = await self._pool.fetch(
            """
            SELECT settlement_id, currency_code, sum(amount) AS amount, sum(fee) AS fee,
                sum(net) AS net
            FROM settlement_lines WHERE merchant = $1 AND settlement_id = ANY($2::text[])
            GROUP BY settlement_id, currency_code ORDER BY settlement_id, currency_code
            """,
            merchant,
            settlements,
        )
        miss_rows = await self._pool.fetch(
            """
            SELECT detected_in, count(*) AS misses FROM settlement_misses
            WHERE merchant = $1 AND detected_in = ANY($2::text[]) AND resolved_at IS NULL
            GROUP BY detected_in
            """,
            merchant,
            detected,
        )
        paid_rows = await self._pool.fetch(
            """
            SELECT settlement_id, sum(amount) AS amount FROM disbursements
            WHERE merchant = $1 AND settlement_id = ANY($2::text[]) GROUP BY settlement_id
            """,
            merchant,
            settlements,
        )
        outcomes: dict[str, dict[str, int]] = {}
        for row in outcome_rows:
            outcomes.setdefault(row["settlement_id"], {})[row["outcome"]] = int(row["lines"])
        totals: dict[str, list[tuple[str, Decimal, Decimal, Decimal]]] = {}
        for row in total_rows:
            totals.setdefault(row["settlement_id"], []).append(
                (row["currency_code"], row["amount"], row["fee"], row["net"])
            )
        misses = {r["detected_in"]: int(r["misses"]) for r in miss_rows}
        paid = {r["settlement_id"]: r["amount"] for r in paid_rows}
        return {
            r.report_id: SettlementCounts(
                outcomes=outcomes.get(r.settlement_id or "", {}),
                totals=totals.get(r.settlement_id or "", []),
                misses=misses.get(r.settlement_id or r.report_id, 0),
                disbursed=paid.get(r.settlement_id or ""),
            )
            for r in reports
        }

    async def list_disputes(
        self,
        merchant: str,
        *,
        charge_id: str | None,
        state: str | None,
        page_size: int,
        page_token: str = "",
    ) -> Page[StoredObject]:
        """The ledger's disputes, newest first, keyset-paginated on (created_at, id)."""
        filters = ["disputes", merchant, charge_id, state]
        after = _position(page_token, filters, ("t", "i")) if page_token else None
        rows = await self._pool.fetch(
            """
            SELECT * FROM objects
            WHERE merchant = $1 AND kind = 'dispute'
              AND ($2::text IS NULL OR charge_id = $2) AND ($3::text IS NULL OR state = $3)
              AND ($4::timestamptz IS NULL OR (created_at, object_id) < ($4, $5))
            ORDER BY created_at DESC, object_id DESC
            LIMIT $6
            """,
            merchant,
            charge_id,
            state,
            *_keyset(after, 2),
            page_size + 1,
        )
        items = await self._opened([_stored(r) for r in rows[:page_size]])
        token = ""
        if len(rows) > page_size:
            last = items[-1]
            token = _encode_token({"t": last.created_at.isoformat(), "i": last.object_id}, filters)
        return Page(items, token)

    # ------------------------------------------------------------------ lines

    async def ledger_entries(
        self,
        merchant: str,
        keys: Sequence[tuple[str, str]],
        *,
        disputed_charges: Sequence[str] = (),
    ) -> list[LedgerEntry]:
        """The ledger objects a batch of lines names, by (kind, id), plus the disputes of the
        charges a chargeback line names by charge id."""
        rows = await self._pool.fetch(
            """
            SELECT o.kind, o.object_id, o.state, o.amount, o.currency_code,
                o.charge_permission_id, o.charge_id, o.snapshot->'captureAmount' AS capture_amount,
                o.snapshot->'statusDetails'->>'lastUpdatedTimestamp' AS last_updated, o.created_at
            FROM unnest($2::text[], $3::text[]) AS k(kind, object_id)
            JOIN objects o ON o.merchant = $1 AND o.kind = k.kind AND o.object_id = k.object_id
            UNION ALL
            SELECT kind, object_id, state, amount, currency_code, charge_permission_id, charge_id,
                NULL, snapshot->'statusDetails'->>'lastUpdatedTimestamp', created_at
            FROM objects
            WHERE merchant = $1 AND kind = 'dispute' AND charge_id = ANY($4::text[])
            """,
            merchant,
            [k for k, _ in keys],
            [i for _, i in keys],
            list(disputed_charges),
        )
        return _entries(rows)

    async def record_lines(
        self, merchant: str, lines: Sequence[SettlementLineRecord]
    ) -> LinesWritten:
        """Record a batch of matched lines of ONE settlement; each line once, each change once.

        Under the settlement's transaction lock: lines not recorded yet are inserted; lines
        recorded before whose outcome (or matched object) differs are updated; the findings get their
        events; open misses a matched line settles are resolved. A concurrent or repeated batch
        waits for the lock, then finds nothing left to write.
        """
        if not lines:
            return LinesWritten([], [], [])
        settlements = {r.settlement_id for r in lines}
        if len(settlements) != 1:
            raise ValueError("one batch holds the lines of one settlement")
        [settlement_id] = settlements
        async with self._pool.acquire() as conn, conn.transaction():
            await conn.execute(
                "SELECT pg_advisory_xact_lock($1, hashtext($2))",
                _SETTLEMENT_LOCK_CLASS,
                f"{merchant}/{settlement_id}",
            )
            # Insert first: the arbiter index answers which lines are new, however stale the
            # table's statistics (a report's own lines fill it while they are written).
            inserted = {
                row["line_number"]
                for row in await conn.fetch(
                    f"""
                    INSERT INTO settlement_lines (merchant, {_LINE_COLUMNS})
                    SELECT $1, {_LINE_COLUMNS} FROM {_UNNEST_LINES}
                    ON CONFLICT (merchant, settlement_id, line_number) DO NOTHING
                    RETURNING line_number
                    """,  # noqa: S608 - fixed column lists; values are parameters
                    merchant,
                    *_arrays(lines, _LINE_COLUMNS),
                )
            }
            new = [r for r in lines if r.line_number in inserted]
            known = [r for r in lines if r.line_number not in inserted]
            existing = {
                row["line_number"]: row
                for row in (
                    await conn.fetch(
                        """
                        SELECT line_number, outcome, ledger_kind, ledger_object_id,
                            expected_amount, expected_currency
                        FROM settlement_lines
                        WHERE merchant = $1 AND settlement_id = $2
                          AND line_number = ANY($3::int[])
                        """,
                        merchant,
                        settlement_id,
                        [r.line_number for r in known],
                    )
                    if known
                    else []
                )
            }
            changed = [
                (r, str(existing[r.line_number]["outcome"]))
                for r in known
                if (
                    existing[r.line_number]["outcome"],
                    existing[r.line_number]["ledger_kind"],
                    existing[r.line_number]["ledger_object_id"],
                    existing[r.line_number]["expected_amount"],
                    existing[r.line_number]["expected_currency"],
                )
                != (
                    r.outcome,
                    r.ledger_kind,
                    r.ledger_object_id,
                    r.expected_amount,
                    r.expected_currency,
                )
            ]
            if changed:
                await conn.execute(
                    f"""
                    UPDATE settlement_lines l SET
                        outcome = i.outcome, match_rule = i.match_rule,
                        ledger_kind = i.ledger_kind, ledger_object_id = i.ledger_object_id,
                        charge_permission_id = i.charge_permission_id,
                        expected_amount = i.expected_amount,
                        expected_currency = i.expected_currency, outcome_changed_at = now()
                    FROM {_UNNEST_LINES}
                    WHERE l.merchant = $1 AND l.settlement_id = i.settlement_id
                      AND l.line_number = i.line_number
                    """,  # noqa: S608 - fixed column lists; values are parameters
                    merchant,
                    *_arrays([r for r, _ in changed], _LINE_COLUMNS),
                )
            settled = await self._settle_misses(
                conn, merchant, [r for r in lines if r.outcome == "matched" and r.ledger_object_id]
            )
            findings: list[tuple[str, str | None, str, str | None, str | None, dict[str, Any]]] = [
                (
                    r.finding_object_id,
                    r.charge_permission_id,
                    r.outcome,
                    r.match_rule,
                    None,
                    r.as_json(),
                )
                for r in new
                if r.outcome != "matched"
            ]
            findings += [
                (
                    r.finding_object_id,
                    r.charge_permission_id,
                    r.outcome,
                    r.match_rule,
                    before,
                    r.as_json(),
                )
                for r, before in changed
                if r.outcome != before
            ]
            findings += [
                (
                    m.ledger_object_id,
                    m.charge_permission_id,
                    "matched",
                    m.transaction_type.lower(),
                    "missing_at_amazon",
                    m.as_json() | {"outcome": "Matched", "settlementId": m.settled_in},
                )
                for m in settled
            ]
            await self._append_findings(conn, merchant, findings)
        return LinesWritten(new, changed, settled)

    async def _settle_misses(
        self, conn: Conn, merchant: str, matched: Sequence[SettlementLineRecord]
    ) -> list[MissRecord]:
        if not matched:
            return []
        rows = await conn.fetch(
            """
            UPDATE settlement_misses m SET settled_in = i.settlement_id,
                settled_line = i.line_number, resolved_at = now()
            FROM unnest($2::text[], $3::text[], $4::text[], $5::int[])
                AS i(ledger_kind, ledger_object_id, settlement_id, line_number)
            WHERE m.merchant = $1 AND m.ledger_kind = i.ledger_kind
              AND m.ledger_object_id = i.ledger_object_id AND m.resolved_at IS NULL
            RETURNING m.*
            """,
            merchant,
            [r.ledger_kind for r in matched],
            [r.ledger_object_id for r in matched],
            [r.settlement_id for r in matched],
            [r.line_number for r in matched],
        )
        return [_miss(r) for r in rows]

    async def _append_findings(
        self,
        conn: Conn,
        merchant: str,
        findings: Sequence[tuple[str, str | None, str, str | None, str | None, dict[str, Any]]],
    ) -> None:
        if not findings:
            return
        await conn.execute(
            _FINDING_EVENTS,
            merchant,
            FINDING_KIND,
            *[list(column) for column in zip(*findings, strict=True)],
        )

    async def settlement_lines(
        self,
        merchant: str,
        settlement_id: str,
        *,
        outcome: str | None,
        page_size: int,
        page_token: str = "",
    ) -> Page[SettlementLineRecord]:
        """A settlement's lines in line order."""
        filters = ["lines", merchant, settlement_id, outcome]
        after = _position(page_token, filters, ("n",)) if page_token else None
        rows = await self._pool.fetch(
            """
            SELECT * FROM settlement_lines
            WHERE merchant = $1 AND settlement_id = $2 AND ($3::text IS NULL OR outcome = $3)
              AND line_number > $4
            ORDER BY line_number
            LIMIT $5
            """,
            merchant,
            settlement_id,
            outcome,
            after[0] if after else 0,
            page_size + 1,
        )
        return _page(rows, page_size, _line, lambda r: {"n": r.line_number}, filters)

    async def unmatched_lines(
        self,
        merchant: str,
        *,
        outcome: str | None,
        posted_after: datetime | None,
        posted_before: datetime | None,
        page_size: int,
        page_token: str = "",
    ) -> Page[SettlementLineRecord | MissRecord]:
        """Lines that did not match and open misses, newest first, one keyset over both."""
        filters = ["unmatched", merchant, outcome, posted_after, posted_before]
        after = _position(page_token, filters, ("t", "s", "n", "o")) if page_token else None
        rows = await self._pool.fetch(
            f"""
            (SELECT 'line' AS source, posted_at AS at, settlement_id AS s, line_number AS n,
                 '' AS o, {_LINE_COLUMNS}, merchant, recorded_at, outcome_changed_at,
                 NULL::timestamptz AS settle_by
             FROM settlement_lines
             WHERE merchant = $1 AND outcome <> 'matched'
               AND ($2::text IS NULL OR outcome = $2)
               AND ($3::timestamptz IS NULL OR posted_at >= $3)
               AND ($4::timestamptz IS NULL OR posted_at < $4)
               AND ($5::timestamptz IS NULL
                    OR (posted_at, settlement_id, line_number, '') < ($5, $6, $7, $8))
             ORDER BY posted_at DESC, settlement_id DESC, line_number DESC
             LIMIT $9)
            UNION ALL
            (SELECT 'miss', occurred_at, detected_in, 0, ledger_object_id,
                 detected_in, 0, '', occurred_at, transaction_type, ledger_object_id, NULL,
                 NULL, NULL, NULL, expected_currency, 'missing_at_amazon', lower(transaction_type),
                 ledger_kind, ledger_object_id, charge_permission_id, expected_amount,
                 expected_currency, '{{}}'::jsonb, merchant, detected_at, NULL, settle_by
             FROM settlement_misses
             WHERE merchant = $1 AND resolved_at IS NULL
               AND ($2::text IS NULL OR $2 = 'missing_at_amazon')
               AND ($3::timestamptz IS NULL OR occurred_at >= $3)
               AND ($4::timestamptz IS NULL OR occurred_at < $4)
               AND ($5::timestamptz IS NULL
                    OR (occurred_at, detected_in, 0, ledger_object_id) < ($5, $6, $7, $8))
             ORDER BY occurred_at DESC, detected_in DESC, ledger_object_id DESC
             LIMIT $9)
            ORDER BY at DESC, s DESC, n DESC, o DESC
            LIMIT $9
            """,  # noqa: S608 - fixed column lists; values are parameters
            merchant,
            outcome,
            posted_after,
            posted_before,
            *_keyset(after, 4),
            page_size + 1,
        )
        items: list[SettlementLineRecord | MissRecord] = [
            _line(r) if r["source"] == "line" else _unmatched_miss(r) for r in rows[:page_size]
        ]
        token = ""
        if len(rows) > page_size:
            last = rows[page_size - 1]
            token = _encode_token(
                {"t": last["at"].isoformat(), "s": last["s"], "n": last["n"], "o": last["o"]},
                filters,
            )
        return Page(items, token)

    # ------------------------------------------------------------------ misses

    async def settled_through(self, merchant: str) -> tuple[datetime, datetime, str] | None:
        """(first settlement start, last settlement end, that last settlement's id) of the
        reconciled reports, when no report of the merchant still waits (an older period not
        read yet would otherwise look unsettled)."""
        row = await self._pool.fetchrow(
            """
            SELECT min(settlement_start) AS first_start, max(settlement_end) AS last_end,
                count(*) FILTER (WHERE status IN ('pending', 'reconciling')) AS waiting,
                (SELECT coalesce(settlement_id, report_id) FROM settlement_reports
                 WHERE merchant = $1 AND status = 'reconciled'
                 ORDER BY settlement_end DESC NULLS LAST, report_id DESC LIMIT 1) AS last_id
            FROM settlement_reports WHERE merchant = $1 AND status <> 'failed'
            """,
            merchant,
        )
        if row is None or row["waiting"] or row["first_start"] is None or row["last_end"] is None:
            return None
        return row["first_start"], row["last_end"], row["last_id"]

    async def unsettled_entries(
        self,
        merchant: str,
        *,
        created_after: datetime,
        after: tuple[datetime, str, str] | None,
        limit: int,
    ) -> list[LedgerEntry]:
        """Captured charges and settled refunds created after `created_after` that no line names
        and no miss records yet, oldest first (keyset `after` = created_at, kind, id)."""
        rows = await self._pool.fetch(
            """
            SELECT o.kind, o.object_id, o.state, o.amount, o.currency_code,
                o.charge_permission_id, o.charge_id,
                CASE WHEN o.kind = 'charge' THEN o.snapshot->'captureAmount' END AS capture_amount,
                o.snapshot->'statusDetails'->>'lastUpdatedTimestamp' AS last_updated, o.created_at
            FROM objects o
            WHERE o.merchant = $1 AND o.created_at >= $2
              AND ((o.kind = 'charge' AND o.state = 'Captured')
                   OR (o.kind = 'refund' AND o.state = 'Refunded'))
              AND ($3::timestamptz IS NULL OR (o.created_at, o.kind, o.object_id) > ($3, $4, $5))
              AND NOT EXISTS (SELECT 1 FROM settlement_lines l WHERE l.merchant = o.merchant
                  AND l.ledger_kind = o.kind AND l.ledger_object_id = o.object_id)
              AND NOT EXISTS (SELECT 1 FROM settlement_misses m WHERE m.merchant = o.merchant
                  AND m.ledger_kind = o.kind AND m.ledger_object_id = o.object_id)
            ORDER BY o.created_at, o.kind, o.object_id
            LIMIT $6
            """,
            merchant,
            created_after,
            *_keyset(after, 3),
            limit,
        )
        return _entries(rows)

    async def record_misses(self, merchant: str, misses: Sequence[MissRecord]) -> list[MissRecord]:
        """Record misses (each object once) and their finding events; the ones new here."""
        if not misses:
            return []
        async with self._pool.acquire() as conn, conn.transaction():
            rows = await conn.fetch(
                """
                INSERT INTO settlement_misses (merchant, ledger_kind, ledger_object_id,
                    charge_permission_id, transaction_type, expected_amount, expected_currency,
                    occurred_at, settle_by, detected_in)
                SELECT $1, * FROM unnest($2::text[], $3::text[], $4::text[], $5::text[],
                    $6::numeric[], $7::text[], $8::timestamptz[], $9::timestamptz[], $10::text[])
                ON CONFLICT (merchant, ledger_kind, ledger_object_id) DO NOTHING
                RETURNING *
                """,
                merchant,
                [m.ledger_kind for m in misses],
                [m.ledger_object_id for m in misses],
                [m.charge_permission_id for m in misses],
                [m.transaction_type for m in misses],
                [m.expected_amount for m in misses],
                [m.expected_currency for m in misses],
                [m.occurred_at for m in misses],
                [m.settle_by for m in misses],
                [m.detected_in for m in misses],
            )
            recorded = [_miss(r) for r in rows]
            await self._append_findings(
                conn,
                merchant,
                [
                    (
                        m.ledger_object_id,
                        m.charge_permission_id,
                        "missing_at_amazon",
                        m.transaction_type.lower(),
                        None,
                        m.as_json(),
                    )
                    for m in recorded
                ],
            )
        return recorded

    # ------------------------------------------------------------------ disbursements

    async def add_disbursements(self, items: Sequence[Disbursement]) -> int:
        """Disbursements Amazon listed; known ones are left as they are. How many were new."""
        if not items:
            return 0
        rows = await self._pool.fetch(
            """
            INSERT INTO disbursements (merchant, disbursement_id, settlement_id, seller_id,
                amount, currency_code, transaction_time, snapshot)
            SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::numeric[],
                $6::text[], $7::timestamptz[], $8::jsonb[])
            ON CONFLICT (merchant, disbursement_id) DO NOTHING
            RETURNING 1
            """,
            *_arrays(
                items,
                "merchant, disbursement_id, settlement_id, seller_id, amount, currency_code,"
                " transaction_time, snapshot",
            ),
        )
        return len(rows)

    async def list_disbursements(
        self,
        merchant: str,
        *,
        settlement_id: str | None,
        after_time: datetime | None,
        before_time: datetime | None,
        page_size: int,
        page_token: str = "",
    ) -> Page[Disbursement]:
        """Newest first, keyset-paginated on (transaction time, id)."""
        return await self._newest_first(
            _DISBURSEMENTS,
            ["disbursements", merchant, settlement_id, after_time, before_time],
            page_size=page_size,
            page_token=page_token,
        )

    async def _newest_first(
        self, listing: _Newest[R], filters: Sequence[Any], *, page_size: int, page_token: str
    ) -> Page[R]:
        """A page of `listing`; `filters` are what its page tokens are bound to, all but the
        first (the listing's name) its query's $1 to $4."""
        after = _position(page_token, filters, listing.keys) if page_token else None
        rows = await self._pool.fetch(
            listing.query, *filters[1:], *_keyset(after, 2), page_size + 1, listing.missing
        )

        def position(item: R) -> dict[str, Any]:
            moment, item_id = listing.key(item)
            return dict(
                zip(listing.keys, ((moment or listing.missing).isoformat(), item_id), strict=True)
            )

        return _page(rows, page_size, listing.convert, position, filters)

    # ------------------------------------------------------------------ cursors and runs

    async def claim_cursor(
        self, merchant: str, *, owner: str, lease_s: float
    ) -> SettlementCursor | None:
        """The merchant's fetch cursor, leased to `owner`; None while another replica holds it."""
        row = await self._pool.fetchrow(
            """
            INSERT INTO settlement_cursors AS c (merchant, lease_owner, lease_expires_at)
            VALUES ($1, $2, now() + make_interval(secs => $3))
            ON CONFLICT (merchant) DO UPDATE
                SET lease_owner = $2, lease_expires_at = now() + make_interval(secs => $3)
                WHERE c.lease_owner IS NULL OR c.lease_owner = $2 OR c.lease_expires_at < now()
            RETURNING *
            """,
            merchant,
            owner,
            lease_s,
        )
        if row is None:
            return None
        return _from_row(SettlementCursor, row)

    async def save_cursor(
        self,
        merchant: str,
        *,
        owner: str,
        reports_created_since: datetime | None = None,
        disbursements_since: datetime | None = None,
        error: str | None = None,
        release: bool = False,
    ) -> None:
        """Advance what was fetched (never backwards); `release` ends the lease."""
        await self._pool.execute(
            """
            UPDATE settlement_cursors SET
                reports_created_since = greatest(reports_created_since, $3),
                disbursements_since = greatest(disbursements_since, $4),
                last_error = $5, fetched_at = now(), updated_at = now(),
                lease_owner = CASE WHEN $6 THEN NULL ELSE lease_owner END,
                lease_expires_at = CASE WHEN $6 THEN NULL ELSE lease_expires_at END
            WHERE merchant = $1 AND lease_owner = $2
            """,
            merchant,
            owner,
            reports_created_since,
            disbursements_since,
            error,
            release,
        )

    async def start_run(self, merchant: str, report_id: str, *, trigger: str, owner: str) -> int:
        run_id: int = await self._pool.fetchval(
            "INSERT INTO settlement_runs (merchant, report_id, trigger, owner)"
            " VALUES ($1, $2, $3, $4) RETURNING run_id",
            merchant,
            report_id,
            trigger,
            owner,
        )
        return run_id

    async def finish_run(
        self,
        run_id: int,
        *,
        settlement_id: str | None,
        lines_seen: int,
        lines_recorded: int,
        outcomes_changed: int,
        error: str | None = None,
    ) -> None:
        await self._pool.execute(
            """
            UPDATE settlement_runs SET finished_at = now(), settlement_id = $2, lines_seen = $3,
                lines_recorded = $4, outcomes_changed = $5, error = $6
            WHERE run_id = $1
            """,
            run_id,
            settlement_id,
            lines_seen,
            lines_recorded,
            outcomes_changed,
            error,
        )

    async def runs_of(self, merchant: str, report_id: str) -> list[SettlementRun]:
        rows = await self._pool.fetch(
            "SELECT * FROM settlement_runs WHERE merchant = $1 AND report_id = $2 ORDER BY run_id",
            merchant,
            report_id,
        )
        return [_from_row(SettlementRun, r) for r in rows]

    async def settlement_backlog(self) -> tuple[int, float]:
        """Reports waiting to be reconciled, and the age in seconds of the oldest."""
        row = await self._pool.fetchrow(
            """
            SELECT count(*) AS waiting,
                coalesce(extract(epoch FROM now() - min(first_seen_at)), 0) AS age
            FROM settlement_reports WHERE status IN ('pending', 'reconciling')
            """
        )
        assert row is not None
        return int(row["waiting"]), float(row["age"])


_MISS_AS_LINE = {
    "occurred_at": "posted_at",
    "detected_in": "settlement_id",
    "detected_at": "recorded_at",
}
"""The columns of a line that the unmatched listing reads a miss's fields from."""


def _unmatched_miss(row: asyncpg.Record) -> MissRecord:
    """A miss as the unmatched listing reads it (in the columns of a line)."""
    return _from_row(
        MissRecord, row, **{field: row[column] for field, column in _MISS_AS_LINE.items()}
    )
