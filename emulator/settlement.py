"""After the charge: settlement periods, settlement reports, disbursements and disputes.

The emulator settles its own captures, refunds and chargebacks into settlement periods on its
clock (periods end at multiples of `Engine.settlement_period_seconds`, daily by default, and
whenever `POST /_emulator/settlement/close` says so). Each closed period gets a settlement id, a
Sandbox Settlement report (`_GET_FLAT_FILE_OFFAMAZONPAYMENTS_SANDBOX_SETTLEMENT_DATA_`; in Live
`_GET_FLAT_FILE_OFFAMAZONPAYMENTS_SETTLEMENT_DATA_`) in Amazon's documented flat-file layout and
a disbursement per currency. Fee rule, per capture: 2.9 % of the captured amount (rounded half
up to the currency's precision) plus a fixed fee per currency (`FIXED_FEES`); refunds,
chargebacks and their reversals carry no fee. Everything lives in `engine.data["settlement"]`,
so it is persisted, reset and scoped (merchant, environment) like every other object.

The signed API's answers are the methods of `SettlementApi`, which `Engine` inherits (each
declared with `@route`); the control plane (`/_emulator/settlement…`, `/_emulator/disputes…`) and
the pre-signed document downloads are `control`'s, over the functions here. Amazon's pages: amazon-pay-api-v2/reports.html, amazon-pay-reports/*.html,
amazon-pay-api-v2/dispute.html (see FIDELITY.md §6).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import math
import re
import secrets
from collections.abc import Callable, Iterator, Mapping
from datetime import UTC, datetime
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation
from typing import Any
from urllib.parse import quote

from . import validation
from .clock import DAY, Clock, fmt, fmt_iso_ms, parse_pay_date
from .routing import Ctx, route
from .validation import ApiError, Obj, check_object, money, opt_str, price, quantum, req_str

SANDBOX_SETTLEMENT = "_GET_FLAT_FILE_OFFAMAZONPAYMENTS_SANDBOX_SETTLEMENT_DATA_"
LIVE_SETTLEMENT = "_GET_FLAT_FILE_OFFAMAZONPAYMENTS_SETTLEMENT_DATA_"
REPORT_TYPES = frozenset(
    {
        LIVE_SETTLEMENT,
        SANDBOX_SETTLEMENT,
        "_GET_FLAT_FILE_OFFAMAZONPAYMENTS_ORDER_REFERENCE_DATA_",
        "_GET_FLAT_FILE_OFFAMAZONPAYMENTS_BILLING_AGREEMENT_DATA_",
        "_GET_FLAT_FILE_OFFAMAZONPAYMENTS_AUTHORIZATION_DATA_",
        "_GET_FLAT_FILE_OFFAMAZONPAYMENTS_CAPTURE_DATA_",
        "_GET_FLAT_FILE_OFFAMAZONPAYMENTS_REFUND_DATA_",
        "_GET_CSV_CUSTOM_OFFAMAZONPAYMENTS_MULTI_CURRENCY_PAYMENTS_DATA_",
    }
)
PROCESSING_STATUSES = frozenset({"IN_PROGRESS", "COMPLETED", "FAILED", "CANCELLED"})
SCHEDULE_FREQUENCIES: dict[str, float] = {
    "PT5M": 300.0,
    "PT15M": 900.0,
    "PT30M": 1800.0,
    "PT1H": 3600.0,
    "PT2H": 7200.0,
    "PT4H": 14_400.0,
    "PT8H": 28_800.0,
    "PT12H": 43_200.0,
    "PT24H": DAY,
    "PT84H": 3.5 * DAY,
    "P1D": DAY,
    "P2D": 2 * DAY,
    "P3D": 3 * DAY,
    "P7D": 7 * DAY,
    "P14D": 14 * DAY,
    "P15D": 15 * DAY,
    "P18D": 18 * DAY,
    "P30D": 30 * DAY,
}
REPORT_RETENTION = 90 * DAY
DOCUMENT_URL_SECONDS = 30
MAX_PAGE_SIZE = 100
MAX_SCHEDULED_RUNS = 100
"""Reports one schedule creates in one tick at most (a clock jumped years ahead skips the rest)."""

PERCENTAGE_FEE = Decimal("0.029")
FIXED_FEES: dict[str, Decimal] = {
    "USD": Decimal("0.30"),
    "EUR": Decimal("0.35"),
    "GBP": Decimal("0.20"),
    "JPY": Decimal("40"),
}
DEFAULT_FIXED_FEE = Decimal("0.30")

DISPUTE_STATES = ("UnderReview", "ActionRequired", "Resolved", "Closed")
DISPUTE_REASON_CODES = frozenset(
    {
        "MerchantResponseRequired",
        "MerchantAdditionalEvidencesRequired",
        "BuyerAdditionalEvidencesRequired",
        "MerchantAcceptedDispute",
        "MerchantResponseDeadlineExpired",
        "BuyerCancelled",
        "InvestigatorResolved",
        "AutoResolved",
        "ChargebackFiled",
    }
)
DEFAULT_REASONS: dict[str, str | None] = {
    "UnderReview": None,
    "ActionRequired": "MerchantResponseRequired",
    "Resolved": "InvestigatorResolved",
    "Closed": "InvestigatorResolved",
}
RESOLUTIONS = frozenset({"BuyerWon", "MerchantWon", "NoFault"})
FILING_REASONS = frozenset(
    {
        "ProductNotReceived",
        "ProductUnacceptable",
        "ProductNoLongerNeeded",
        "CreditNotProcessed",
        "Overcharged",
        "DuplicateCharge",
        "SubscriptionCancelled",
        "Unrecognized",
        "Fraudulent",
        "Other",
    }
)
CHARGEBACK_RESPONSE_WINDOW = 11 * DAY
"""Amazon: evidence within the Dispute Window, 11 days for a chargeback."""

HEADER_COLUMNS = ("SellerId", "SettlementStartDate", "SettlementEndDate")
BODY_COLUMNS = (
    "TransactionPostedDate",
    "SettlementId",
    "AmazonTransactionId",
    "SellerReferenceId",
    "TransactionType",
    "AmazonOrderReferenceId",
    "SellerOrderId",
    "StoreName",
    "CurrencyCode",
    "TransactionAmount",
    "TransactionPercentageFee",
    "TransactionFixedFee",
    "TotalTransactionFee",
    "NetTransactionAmount",
    "TransactionDescription",
)
"""The flat file's columns as Amazon's "Settlement Report Details" names them (the emulator
writes its own; `service.amazonpay` reads them with its own table, which a test compares)."""

_ISO_TIME = re.compile(
    r"(\d{4})-(\d{2})-(\d{2})T(\d{2})[:-](\d{2})[:-](\d{2})(\.\d{1,9})?(Z|[+-]\d{2}:?\d{2})"
)
_SECRET = secrets.token_bytes(32)
"""Signs document URLs; a restarted emulator invalidates them (they live 30 s anyway)."""


def state_of(engine: SettlementApi) -> Obj:
    """This engine's settlement state, created on first use."""
    state: Obj = engine.data.setdefault("settlement", {})
    if "seq" not in state:
        state.update(
            {
                "seq": 0,
                "periodSeconds": None,
                "nextBoundary": None,
                "openSince": {},
                "settled": {},
                "settlements": {},
                "reports": {},
                "documents": {},
                "schedules": {},
                "disbursements": [],
                "disputes": {},
                "faults": {"skipRefund": [], "alterAmount": {}},
            }
        )
    return state


def period_seconds(engine: SettlementApi) -> float:
    override = state_of(engine)["periodSeconds"]
    return float(override) if override else engine.settlement_period_seconds


def _next_id(state: Obj, base: int) -> str:
    state["seq"] += 1
    return str(base + state["seq"])


def _book(ctx_or_obj: Ctx | Obj) -> str:
    if isinstance(ctx_or_obj, Ctx):
        return f"{ctx_or_obj.merchant_id}|{ctx_or_obj.environment}"
    return f"{ctx_or_obj['_merchant']}|{ctx_or_obj['_env']}"


def _epoch(compact: str) -> float:
    parsed = parse_pay_date(compact)
    if parsed is None:  # pragma: no cover - the engine writes every timestamp with `fmt`
        raise ValueError(f"unreadable timestamp {compact!r}")
    return parsed


def _iso_offset(epoch: float) -> str:
    """The flat file's date-time form, `2015-05-18T15:48:50-0000` (UTC; Amazon's sample)."""
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%dT%H:%M:%S-0000")


def parse_time(value: str, name: str) -> float:
    """A query or body date-time: `20240301T224539Z`, ISO 8601, or the form in Amazon's Get
    Disbursements sample (`2022-08-04T00-00-00Z`)."""
    compact = parse_pay_date(value.strip())
    if compact is not None:
        return compact
    match = _ISO_TIME.fullmatch(value.strip())
    if match is not None:
        year, month, day, hour, minute, second, fraction, offset = match.groups()
        iso = f"{year}-{month}-{day}T{hour}:{minute}:{second}{fraction or ''}"
        iso += "+00:00" if offset == "Z" else f"{offset[:3]}:{offset[-2:]}"
        try:
            return datetime.fromisoformat(iso).timestamp()
        except ValueError:
            pass
    raise ApiError(400, "InvalidParameterValue", f"'{name}' is not a valid date-time")


# ------------------------------------------------------------------------------- transactions


def capture_fee(amount: Decimal, currency: str) -> tuple[Decimal, Decimal]:
    """(percentage fee, fixed fee) of a capture, both negative: the documented fee rule."""
    percentage = (amount * PERCENTAGE_FEE).quantize(quantum(currency), rounding=ROUND_HALF_UP)
    return -percentage, -FIXED_FEES.get(currency, DEFAULT_FIXED_FEE)


def _reference(engine: SettlementApi, charge: Obj) -> str:
    for holder in (charge, engine.data["chargePermissions"].get(charge["chargePermissionId"])):
        metadata = (holder or {}).get("merchantMetadata") or {}
        if metadata.get("merchantReferenceId"):
            return str(metadata["merchantReferenceId"])
    return ""


def _store_name(engine: SettlementApi, charge: Obj) -> str:
    cp = engine.data["chargePermissions"].get(charge["chargePermissionId"]) or {}
    metadata = cp.get("merchantMetadata") or {}
    return str(metadata.get("merchantStoreName") or "")


def _transaction(
    engine: SettlementApi,
    charge: Obj,
    *,
    kind: str,
    tx_id: str,
    posted: float,
    amount: Decimal,
    description: str,
) -> Obj:
    currency = charge["chargeAmount"]["currencyCode"]
    percentage, fixed = (
        capture_fee(amount, currency) if kind == "Capture" else (Decimal(0), Decimal(0))
    )
    reference = _reference(engine, charge)
    return {
        "key": f"{kind}:{tx_id}",
        "book": _book(charge),
        "posted": posted,
        "TransactionType": kind,
        "AmazonTransactionId": tx_id,
        "SellerReferenceId": reference,
        "AmazonOrderReferenceId": charge["chargePermissionId"],
        "SellerOrderId": reference,
        "StoreName": _store_name(engine, charge),
        "CurrencyCode": currency,
        "amount": amount,
        "percentage": percentage,
        "fixed": fixed,
        "TransactionDescription": description,
    }


def _transactions(engine: SettlementApi, state: Obj) -> list[Obj]:
    """Every capture, refund, chargeback and reversal not settled yet (faults excluded)."""
    settled: Mapping[str, str] = state["settled"]
    skipped = set(state["faults"]["skipRefund"])
    charges: Mapping[str, Obj] = engine.data["charges"]
    found: list[Obj] = []
    for charge in charges.values():
        details = charge["statusDetails"]
        if details["state"] == "Captured" and f"Capture:{charge['chargeId']}" not in settled:
            found.append(
                _transaction(
                    engine,
                    charge,
                    kind="Capture",
                    tx_id=charge["chargeId"],
                    posted=_epoch(details["lastUpdatedTimestamp"]),
                    amount=Decimal(charge["captureAmount"]["amount"]),
                    description="Capture",
                )
            )
    for refund in engine.data["refunds"].values():
        details = refund["statusDetails"]
        rid = refund["refundId"]
        if details["state"] == "Refunded" and f"Refund:{rid}" not in settled and rid not in skipped:
            found.append(
                _transaction(
                    engine,
                    charges[refund["chargeId"]],
                    kind="Refund",
                    tx_id=rid,
                    posted=_epoch(details["lastUpdatedTimestamp"]),
                    amount=-Decimal(refund["refundAmount"]["amount"]),
                    description="Refund",
                )
            )
    for dispute in state["disputes"].values():
        did = dispute["disputeId"]
        amount = Decimal(dispute["disputeAmount"]["amount"])
        # The chargeback takes the amount back; a reversal (MerchantWon) returns it.
        moves = [
            ("Chargeback", dispute["_created"], -amount, f"Chargeback: {dispute['filingReason']}")
        ]
        if dispute.get("_reversedAt") is not None:
            moves.append(
                ("Adjustment", dispute["_reversedAt"], amount, "Chargeback reversed: MerchantWon")
            )
        for kind, posted, signed, description in moves:
            if f"{kind}:{did}" not in settled:
                found.append(
                    _transaction(
                        engine,
                        charges[dispute["chargeId"]],
                        kind=kind,
                        tx_id=did,
                        posted=float(posted),
                        amount=signed,
                        description=description,
                    )
                )
    return found


def _line(tx: Obj, settlement_id: str, altered: Mapping[str, str]) -> dict[str, str]:
    """A body row of the flat file, as text; an `alterAmount` fault replaces the amount."""
    currency = tx["CurrencyCode"]
    amount = (
        Decimal(altered[tx["AmazonTransactionId"]])
        if tx["AmazonTransactionId"] in altered
        else tx["amount"]
    )
    total = tx["percentage"] + tx["fixed"]

    def text(value: Decimal) -> str:
        return money(value, currency) if value else ""

    return {
        "TransactionPostedDate": _iso_offset(tx["posted"]),
        "SettlementId": settlement_id,
        "AmazonTransactionId": tx["AmazonTransactionId"],
        "SellerReferenceId": tx["SellerReferenceId"],
        "TransactionType": tx["TransactionType"],
        "AmazonOrderReferenceId": tx["AmazonOrderReferenceId"],
        "SellerOrderId": tx["SellerOrderId"],
        "StoreName": tx["StoreName"],
        "CurrencyCode": currency,
        "TransactionAmount": money(amount, currency),
        "TransactionPercentageFee": text(tx["percentage"]),
        "TransactionFixedFee": text(tx["fixed"]),
        "TotalTransactionFee": money(total, currency),
        "NetTransactionAmount": money(amount + total, currency),
        "TransactionDescription": tx["TransactionDescription"],
        "_posted": str(tx["posted"]),
    }


# ------------------------------------------------------------------------------- settlement


def _settle(engine: SettlementApi, book: str, start: float, end: float, txs: list[Obj]) -> Obj:
    """Close one period of one book: settlement, report, document and disbursements."""
    state = state_of(engine)
    merchant, env = book.split("|", 1)
    sid = _next_id(state, 5_000_000_000)
    altered = state["faults"]["alterAmount"]
    lines = [_line(tx, sid, altered) for tx in sorted(txs, key=lambda t: (t["posted"], t["key"]))]
    for tx in txs:
        state["settled"][tx["key"]] = sid
    report = _new_report(
        state,
        merchant=merchant,
        env=env,
        report_type=SANDBOX_SETTLEMENT if env == "Sandbox" else LIVE_SETTLEMENT,
        span=(start, end),
        created=end,
        lines=lines,
    )
    totals: dict[str, Decimal] = {}
    for line in lines:
        totals[line["CurrencyCode"]] = totals.get(line["CurrencyCode"], Decimal(0)) + Decimal(
            line["NetTransactionAmount"]
        )
    disbursements = []
    for currency, total in sorted(totals.items()):
        disbursement = {
            "sellerId": merchant,
            "settlementId": sid,
            "amazonDisbursementReferenceId": f"AMZNDISB{secrets.token_hex(6).upper()}",
            "amount": money(total, currency),
            "currencyCode": currency,
            "transactionTime": fmt_iso_ms(end),
            "_merchant": merchant,
            "_env": env,
            "_time": end,
        }
        state["disbursements"].append(disbursement)
        disbursements.append(disbursement)
    settlement = {
        "settlementId": sid,
        "merchantId": merchant,
        "environment": env,
        "startTime": fmt(start),
        "endTime": fmt(end),
        "reportId": report["reportId"],
        "reportDocumentId": report["reportDocumentId"],
        "lines": len(lines),
        "disbursements": [_public(d) for d in disbursements],
    }
    state["settlements"][sid] = settlement
    state["openSince"][book] = end
    return settlement


def close_due(engine: SettlementApi, now: float) -> int:
    """Settle every period that ended by `now` (the engine's tick hook), then run the report
    schedules that are due (their reports see the settlements just made)."""
    return _close_periods(engine, now) + _run_schedules(engine, now)


def _close_periods(engine: SettlementApi, now: float) -> int:
    state = state_of(engine)
    period = period_seconds(engine)
    if state["nextBoundary"] is None:
        earliest = min((tx["posted"] for tx in _transactions(engine, state)), default=now)
        state["nextBoundary"] = (math.floor(earliest / period) + 1) * period
    if now < state["nextBoundary"]:
        return 0
    last = math.floor(now / period) * period
    groups: dict[tuple[float, str], list[Obj]] = {}
    for tx in _transactions(engine, state):
        if tx["posted"] < last:
            boundary = (math.floor(tx["posted"] / period) + 1) * period
            groups.setdefault((boundary, tx["book"]), []).append(tx)
    for (boundary, book), txs in sorted(groups.items()):
        start = max(float(state["openSince"].get(book, boundary - period)), boundary - period)
        _settle(engine, book, start, boundary, txs)
    state["nextBoundary"] = last + period
    return len(groups)


def close_now(engine: SettlementApi, merchant: str, env: str) -> Obj:
    """`POST /_emulator/settlement/close`: settle the book's open period up to now."""
    now = engine.clock.now()
    close_due(engine, now)
    state = state_of(engine)
    book = f"{merchant}|{env}"
    period = period_seconds(engine)
    start = float(state["openSince"].get(book, math.floor(now / period) * period))
    txs = [tx for tx in _transactions(engine, state) if tx["book"] == book and tx["posted"] <= now]
    return _settle(engine, book, min(start, now), now, txs)


# ------------------------------------------------------------------------------- reports


def _new_report(
    state: Obj,
    *,
    merchant: str,
    env: str,
    report_type: str,
    span: tuple[float, float],
    created: float,
    lines: list[dict[str, str]],
    ready_at: float | None = None,
    cancel_if_empty: bool = False,
) -> Obj:
    """A report; one requested or scheduled over a span without data ends CANCELLED (Amazon:
    "an automatic cancellation if there is no data to return"), a period's report never."""
    rid = _next_id(state, 50_000_000_000)
    report: Obj = {
        "reportId": rid,
        "reportType": report_type,
        "startTime": fmt(span[0]),
        "endTime": fmt(span[1]),
        "createdTime": fmt(created),
        "processingStatus": "IN_PROGRESS",
        "processingStartTime": fmt(created),
        "processingEndTime": None,
        "reportDocumentId": None,
        "_merchant": merchant,
        "_env": env,
        "_created": created,
        "_readyAt": created if ready_at is None else ready_at,
        "_span": list(span),
        "_lines": lines,
        "_cancelIfEmpty": cancel_if_empty,
    }
    state["reports"][rid] = report
    _finish(state, report, created)
    return report


def _finish(state: Obj, report: Obj, now: float) -> None:
    """A report is processed once the clock reaches its ready time; no data: CANCELLED."""
    if report["processingStatus"] != "IN_PROGRESS" or now < report["_readyAt"]:
        return
    report["processingEndTime"] = fmt(report["_readyAt"])
    if not report["_lines"] and report["_cancelIfEmpty"]:
        report["processingStatus"] = "CANCELLED"
        return
    doc_id = f"amzn1.tortuga.4.na.{secrets.token_hex(16)}.{report['reportId']}"
    state["documents"][doc_id] = {"reportId": report["reportId"]}
    report["reportDocumentId"] = doc_id
    report["processingStatus"] = "COMPLETED"


def _public(obj: Obj) -> Obj:
    return {k: v for k, v in obj.items() if not k.startswith("_")}


def _visible(engine: SettlementApi, ctx: Ctx, report: Obj) -> bool:
    return (
        _book(report) == _book(ctx)
        and engine.clock.now() - float(report["_created"]) <= REPORT_RETENTION
    )


def _find_report(engine: SettlementApi, ctx: Ctx, rid: str) -> Obj:
    report: Obj | None = state_of(engine)["reports"].get(rid)
    if report is None or not _visible(engine, ctx, report):
        raise ApiError(404, "ResourceNotFound", f"Report '{rid}' was not found")
    _finish(state_of(engine), report, engine.clock.now())
    return report


def _query(ctx: Ctx, allowed: frozenset[str]) -> dict[str, str]:
    params: dict[str, str] = {}
    for name, value in ctx.query:
        if name not in allowed:
            raise ApiError(400, "InvalidParameterValue", f"Unknown query parameter '{name}'")
        if name in params:
            raise ApiError(400, "InvalidParameterValue", f"Query parameter '{name}' given twice")
        params[name] = value
    return params


def _list_param(params: Mapping[str, str], name: str, allowed: frozenset[str]) -> set[str] | None:
    if name not in params:
        return None
    values = {v.strip() for v in params[name].split(",") if v.strip()}
    unknown = sorted(values - allowed)
    if not values or unknown:
        raise ApiError(
            400,
            "InvalidParameterValue",
            f"'{name}' value '{(unknown or [''])[0]}' is invalid",
        )
    return values


def _page_size(params: Mapping[str, str], default: int) -> int:
    raw = params.get("pageSize")
    if raw is None:
        return default
    if not raw.isdigit() or not 1 <= int(raw) <= MAX_PAGE_SIZE:
        raise ApiError(
            400, "InvalidParameterValue", f"'pageSize' must be between 1 and {MAX_PAGE_SIZE}"
        )
    return int(raw)


def _token(position: list[Any], filters: Obj) -> str:
    raw = json.dumps({"p": position, "f": filters}, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _untoken(value: str, keys: frozenset[str]) -> tuple[list[Any], Obj]:
    """The position and filters (page size included) a `nextToken` carries: Amazon asks for the
    token alone on the next call."""
    try:
        data = json.loads(base64.urlsafe_b64decode(value + "=" * (-len(value) % 4)))
        position, filters = list(data["p"]), dict(data["f"])
    except (ValueError, KeyError, TypeError, binascii.Error):
        position, filters = [], {}
    if not position or set(filters) != keys:
        raise ApiError(400, "InvalidParameterValue", "'nextToken' is invalid")
    return position, filters


def _report_type(value: str, ctx: Ctx, *, scheduled: bool) -> str:
    if value not in REPORT_TYPES:
        raise ApiError(400, "InvalidParameterValue", f"'reportType' value '{value}' is invalid")
    if value == LIVE_SETTLEMENT:
        raise ApiError(
            400,
            "InvalidParameterValue",
            "Settlement reports are created with each settlement; they cannot be "
            + ("scheduled" if scheduled else "requested"),
        )
    if value != SANDBOX_SETTLEMENT:
        raise ApiError(
            400,
            "InvalidParameterValue",
            f"'{value}' is not available here: the emulator produces settlement data only",
        )
    if ctx.environment != "Sandbox":
        raise ApiError(400, "InvalidParameterValue", f"'{value}' is only available in Sandbox")
    return value


def _lines_between(state: Obj, book: str, start: float, end: float) -> list[dict[str, str]]:
    lines: list[dict[str, str]] = []
    for settlement in state["settlements"].values():
        if f"{settlement['merchantId']}|{settlement['environment']}" != book:
            continue
        report = state["reports"][settlement["reportId"]]
        lines.extend(line for line in report["_lines"] if start <= float(line["_posted"]) < end)
    return sorted(lines, key=lambda line: (float(line["_posted"]), line["AmazonTransactionId"]))


def _sign_url(doc_id: str, date: str) -> str:
    message = f"{doc_id}\n{date}\n{DOCUMENT_URL_SECONDS}".encode()
    return hmac.new(_SECRET, message, hashlib.sha256).hexdigest()


def document_lines(engine: SettlementApi, doc_id: str) -> Iterator[bytes]:
    """The flat file of a document, one line at a time."""
    state = state_of(engine)
    report = state["reports"][state["documents"][doc_id]["reportId"]]
    start, end = report["_span"]

    def row(values: list[str]) -> bytes:
        return (",".join('"' + v.replace('"', '""') + '"' for v in values) + "\n").encode()

    yield row(list(HEADER_COLUMNS))
    yield row([report["_merchant"], _iso_offset(start), _iso_offset(end)])
    yield row(list(BODY_COLUMNS))
    for line in report["_lines"]:
        yield row([line[name] for name in BODY_COLUMNS])


# ------------------------------------------------------------------------------- schedules


def _find_schedule(engine: SettlementApi, ctx: Ctx, schedule_id: str) -> Obj:
    schedule: Obj | None = state_of(engine)["schedules"].get(schedule_id)
    if schedule is None or _book(schedule) != _book(ctx):
        raise ApiError(404, "ResourceNotFound", f"Report schedule '{schedule_id}' was not found")
    return schedule


def _run_schedules(engine: SettlementApi, now: float) -> int:
    state = state_of(engine)
    done = 0
    for schedule in state["schedules"].values():
        runs = 0
        step = SCHEDULE_FREQUENCIES[schedule["scheduleFrequency"]]
        while schedule["_next"] <= now:
            due = float(schedule["_next"])
            if runs < MAX_SCHEDULED_RUNS:
                book = _book(schedule)
                _new_report(
                    state,
                    merchant=schedule["_merchant"],
                    env=schedule["_env"],
                    report_type=schedule["reportType"],
                    span=(float(schedule["_last"]), due),
                    created=due,
                    lines=_lines_between(state, book, float(schedule["_last"]), due),
                    cancel_if_empty=True,
                )
                runs += 1
                schedule["_last"] = due
            schedule["_next"] = due + step
            if runs >= MAX_SCHEDULED_RUNS and schedule["_next"] <= now:
                skipped = math.floor((now - schedule["_next"]) / step) + 1
                schedule["_next"] += skipped * step
                schedule["_last"] = schedule["_next"] - step
        schedule["nextReportCreationTime"] = fmt(schedule["_next"])
        done += runs
    return done


# ------------------------------------------------------------------------------- disbursements


# ------------------------------------------------------------------------------- disputes


def render_dispute(dispute: Obj) -> Obj:
    return _public(dispute)


def _dispute_id(engine: SettlementApi, cp_id: str) -> str:
    disputes = state_of(engine)["disputes"]
    while True:
        candidate = f"{cp_id}-B{secrets.randbelow(1_000_000):06d}"
        if candidate not in disputes:
            return candidate


def _status(state: str, reason: str | None, resolution: str | None, at: float) -> Obj:
    return {
        "state": state,
        "reasonCode": reason,
        "reasonDescription": None if reason is None else f"Dispute {state}: {reason}",
        "resolution": resolution,
        "lastUpdatedTimestamp": fmt(at),
    }


def open_dispute(engine: SettlementApi, raw: Obj) -> Obj:
    """A buyer's chargeback on a captured charge: ActionRequired, 11 days to respond; IPN."""
    body = check_object(raw, frozenset({"chargeId", "amount", "reason"}), "")
    charge_id = req_str(body, "chargeId", "", 64)
    charge = engine.data["charges"].get(charge_id)
    if charge is None:
        raise ApiError(404, "ResourceNotFound", f"Charge '{charge_id}' was not found")
    if charge["statusDetails"]["state"] != "Captured":
        raise ApiError(
            422,
            "InvalidChargeStatus",
            f"The Charge is {charge['statusDetails']['state']}; only a Captured charge can be disputed",
        )
    currency = charge["captureAmount"]["currencyCode"]
    captured = Decimal(charge["captureAmount"]["amount"])
    amount = captured
    if body.get("amount") is not None:
        try:
            amount = Decimal(str(body["amount"]))
        except InvalidOperation:
            raise ApiError(400, "InvalidParameterValue", "'amount' is not a decimal") from None
        if not amount.is_finite() or not Decimal(0) < amount <= captured:
            raise ApiError(
                400,
                "InvalidParameterValue",
                f"'amount' must be > 0 and <= {money(captured, currency)}",
            )
    reason = opt_str(body, "reason", "", 64) or "Fraudulent"
    if reason not in FILING_REASONS:
        raise ApiError(
            400, "InvalidParameterValue", f"'reason' must be one of {sorted(FILING_REASONS)}"
        )
    now = engine.clock.now()
    dispute_id = _dispute_id(engine, charge["chargePermissionId"])
    dispute: Obj = {
        "disputeId": dispute_id,
        "chargeId": charge_id,
        "disputeType": "Chargeback",
        "disputeAmount": price(amount, currency),
        "filingReason": reason,
        "statusDetails": _status("ActionRequired", "MerchantResponseRequired", None, now),
        "merchantEvidences": [],
        "merchantResponseDeadline": fmt(now + CHARGEBACK_RESPONSE_WINDOW),
        "resolutionAuthority": "AmazonPay",
        "creationTimestamp": fmt(now),
        "releaseEnvironment": charge["_env"],
        "_merchant": charge["_merchant"],
        "_env": charge["_env"],
        "_chargePermissionId": charge["chargePermissionId"],
        "_created": now,
        "_reversedAt": None,
    }
    state_of(engine)["disputes"][dispute_id] = dispute
    engine.notify("CHARGEBACK", dispute_id, charge["chargePermissionId"], charge["_merchant"])
    return render_dispute(dispute)


def update_dispute(engine: SettlementApi, dispute_id: str, raw: Obj) -> Obj:
    """Move a dispute on (Closed is final; Resolved and Closed carry a resolution); IPN."""
    dispute: Obj | None = state_of(engine)["disputes"].get(dispute_id)
    if dispute is None:
        raise ApiError(404, "ResourceNotFound", f"Dispute '{dispute_id}' was not found")
    body = check_object(
        raw, frozenset({"state", "reasonCode", "reasonDescription", "resolution"}), ""
    )
    state = req_str(body, "state", "", 32)
    if state not in DISPUTE_STATES:
        raise ApiError(
            400, "InvalidParameterValue", f"'state' must be one of {list(DISPUTE_STATES)}"
        )
    current = dispute["statusDetails"]
    if current["state"] == "Closed":
        raise ApiError(422, "InvalidDisputeStatus", "The Dispute is Closed")
    reason = opt_str(body, "reasonCode", "", 64) or DEFAULT_REASONS[state]
    if reason is not None and reason not in DISPUTE_REASON_CODES:
        raise ApiError(400, "InvalidParameterValue", f"'reasonCode' value '{reason}' is invalid")
    resolution = opt_str(body, "resolution", "", 32)
    if resolution is not None and resolution not in RESOLUTIONS:
        raise ApiError(
            400, "InvalidParameterValue", f"'resolution' must be one of {sorted(RESOLUTIONS)}"
        )
    if state in ("Resolved", "Closed"):
        resolution = resolution or current.get("resolution")
        if resolution is None:
            raise ApiError(400, "MissingParameterValue", f"'resolution' is required for {state}")
    elif resolution is not None:
        raise ApiError(
            400, "InvalidParameterCombination", "'resolution' applies to Resolved and Closed"
        )
    description = opt_str(body, "reasonDescription", "", 255)
    now = engine.clock.now()
    status = _status(state, reason, resolution, now)
    if description is not None:
        status["reasonDescription"] = description
    unchanged = {k: v for k, v in status.items() if k != "lastUpdatedTimestamp"} == {
        k: v for k, v in current.items() if k != "lastUpdatedTimestamp"
    }
    if unchanged:
        return render_dispute(dispute)
    dispute["statusDetails"] = status
    if resolution == "MerchantWon" and dispute["_reversedAt"] is None:
        dispute["_reversedAt"] = now
    engine.notify("CHARGEBACK", dispute_id, dispute["_chargePermissionId"], dispute["_merchant"])
    return render_dispute(dispute)


# ------------------------------------------------------------------------------- the API


class SettlementApi:
    """The Engine's answers to the Reports API, Get Disbursements and Get Dispute (`Engine`
    inherits them, so each is an Engine method declared with `@route`), and what of the Engine
    they use."""

    clock: Clock
    data: Obj
    notify: Callable[[str, str, str, str], None]
    pending_seconds: float
    settlement_period_seconds: float

    @route("GetReports", "GET", "/reports")
    def get_reports(self, ctx: Ctx) -> tuple[int, Obj]:
        """Newest first; `nextToken` carries the filters and the last report sent (keyset)."""
        now = self.clock.now()
        close_due(self, now)
        params = _query(
            ctx,
            frozenset(
                {
                    "reportTypes",
                    "processingStatuses",
                    "createdSince",
                    "createdUntil",
                    "pageSize",
                    "nextToken",
                }
            ),
        )
        after: list[Any] | None = None
        if "nextToken" in params:
            after, filters = _untoken(
                params["nextToken"], frozenset({"types", "statuses", "since", "until", "size"})
            )
        else:
            types = _list_param(params, "reportTypes", REPORT_TYPES)
            statuses = _list_param(params, "processingStatuses", PROCESSING_STATUSES)
            since = (
                parse_time(params["createdSince"], "createdSince")
                if "createdSince" in params
                else now - REPORT_RETENTION
            )
            until = (
                parse_time(params["createdUntil"], "createdUntil")
                if "createdUntil" in params
                else now
            )
            filters = {
                "types": sorted(types) if types is not None else None,
                "statuses": sorted(statuses) if statuses is not None else None,
                "since": since,
                "until": until,
                "size": _page_size(params, 10),
            }
        size = int(filters["size"])
        state = state_of(self)
        matching = []
        for report in state["reports"].values():
            if not _visible(self, ctx, report):
                continue
            _finish(state, report, now)
            if filters["types"] is not None and report["reportType"] not in filters["types"]:
                continue
            if (
                filters["statuses"] is not None
                and report["processingStatus"] not in filters["statuses"]
            ):
                continue
            if not filters["since"] <= report["_created"] <= filters["until"]:
                continue
            matching.append(report)
        matching.sort(key=lambda r: (-r["_created"], int(r["reportId"])))
        if after is not None:
            matching = [
                r for r in matching if (-r["_created"], int(r["reportId"])) > (after[0], after[1])
            ]
        page = matching[:size]
        body: Obj = {"reports": [_public(r) for r in page]}
        if len(matching) > size:
            last = page[-1]
            body["nextToken"] = _token([-last["_created"], int(last["reportId"])], filters)
        return 200, body

    @route("GetReportById", "GET", "/reports/{reportId}")
    def get_report(self, ctx: Ctx, rid: str) -> tuple[int, Obj]:
        close_due(self, self.clock.now())
        return 200, _public(_find_report(self, ctx, rid))

    @route("CreateReport", "POST", "/reports")
    def create_report(self, ctx: Ctx, raw: Obj) -> tuple[int, Obj]:
        body = check_object(raw, frozenset({"reportType", "startTime", "endTime"}), "")
        report_type = _report_type(req_str(body, "reportType", "", 128), ctx, scheduled=False)
        start = parse_time(req_str(body, "startTime", "", 64), "startTime")
        end = parse_time(req_str(body, "endTime", "", 64), "endTime")
        if end <= start:
            raise ApiError(400, "InvalidParameterValue", "'endTime' must be after 'startTime'")
        now = self.clock.now()
        close_due(self, now)
        state = state_of(self)
        report = _new_report(
            state,
            merchant=ctx.merchant_id,
            env=ctx.environment,
            report_type=report_type,
            span=(start, end),
            created=now,
            lines=_lines_between(state, _book(ctx), start, end),
            ready_at=now + self.pending_seconds,
            cancel_if_empty=True,
        )
        return 201, {"reportId": report["reportId"]}

    @route("GetReportDocument", "GET", "/report-documents/{reportDocumentId}")
    def get_report_document(self, ctx: Ctx, doc_id: str) -> tuple[int, Obj]:
        state = state_of(self)
        document = state["documents"].get(doc_id)
        if document is None:
            raise ApiError(404, "ResourceNotFound", f"Report document '{doc_id}' was not found")
        _find_report(self, ctx, document["reportId"])
        date = fmt(self.clock.now())
        signature = _sign_url(doc_id, date)
        url = (
            f"{ctx.base_url}/_emulator/report-documents/{quote(doc_id, safe='')}"
            f"?X-Amz-Date={date}&X-Amz-Expires={DOCUMENT_URL_SECONDS}&X-Amz-Signature={signature}"
        )
        return 200, {"reportDocumentId": doc_id, "url": url, "compressionAlgorithm": "N/A"}

    @route("GetReportSchedules", "GET", "/report-schedules")
    def get_schedules(self, ctx: Ctx) -> tuple[int, Obj]:
        params = _query(ctx, frozenset({"reportTypes"}))
        types = _list_param(params, "reportTypes", REPORT_TYPES)
        schedules = [
            _public(s)
            for s in state_of(self)["schedules"].values()
            if _book(s) == _book(ctx) and (types is None or s["reportType"] in types)
        ]
        return 200, {"reportSchedules": schedules}

    @route("GetReportScheduleById", "GET", "/report-schedules/{reportScheduleId}")
    def get_schedule(self, ctx: Ctx, schedule_id: str) -> tuple[int, Obj]:
        return 200, _public(_find_schedule(self, ctx, schedule_id))

    @route("CreateReportSchedule", "POST", "/report-schedules")
    def create_schedule(self, ctx: Ctx, raw: Obj) -> tuple[int, Obj]:
        allowed = frozenset(
            {"reportType", "scheduleFrequency", "nextReportCreationTime", "deleteExistingSchedule"}
        )
        body = check_object(raw, allowed, "")
        report_type = _report_type(req_str(body, "reportType", "", 128), ctx, scheduled=True)
        frequency = req_str(body, "scheduleFrequency", "", 8)
        if frequency not in SCHEDULE_FREQUENCIES:
            raise ApiError(
                400, "InvalidParameterValue", f"'scheduleFrequency' value '{frequency}' is invalid"
            )
        now = self.clock.now()
        first = opt_str(body, "nextReportCreationTime", "", 64)
        next_time = (
            parse_time(first, "nextReportCreationTime")
            if first
            else now + SCHEDULE_FREQUENCIES[frequency]
        )
        replace = validation.opt_bool(body, "deleteExistingSchedule", "") or False
        state = state_of(self)
        existing = [
            sid
            for sid, s in state["schedules"].items()
            if _book(s) == _book(ctx) and s["reportType"] == report_type
        ]
        if existing and not replace:
            raise ApiError(
                409,
                "DuplicateRequest",
                f"A schedule for {report_type} exists; set deleteExistingSchedule to replace it",
            )
        for sid in existing:
            del state["schedules"][sid]
        schedule_id = _next_id(state, 70_000_000_000)
        state["schedules"][schedule_id] = {
            "reportScheduleId": schedule_id,
            "reportType": report_type,
            "scheduleFrequency": frequency,
            "nextReportCreationTime": fmt(next_time),
            "_merchant": ctx.merchant_id,
            "_env": ctx.environment,
            "_next": next_time,
            "_last": next_time - SCHEDULE_FREQUENCIES[frequency],
        }
        return 201, {"reportScheduleId": schedule_id}

    @route("CancelReportSchedule", "DELETE", "/report-schedules/{reportScheduleId}")
    def cancel_schedule(self, ctx: Ctx, schedule_id: str, raw: Obj) -> tuple[int, Obj]:
        _find_schedule(self, ctx, schedule_id)
        del state_of(self)["schedules"][schedule_id]
        return 200, {}

    @route("GetDisbursements", "GET", "/disbursements")
    def get_disbursements(self, ctx: Ctx) -> tuple[int, Obj]:
        """Disbursements whose `transactionTime` lies in [startTime, endTime], oldest first."""
        close_due(self, self.clock.now())
        params = _query(ctx, frozenset({"startTime", "endTime", "pageSize", "nextToken"}))
        after: int | None = None
        if "nextToken" in params:
            position, filters = _untoken(params["nextToken"], frozenset({"start", "end", "size"}))
            after = int(position[0])
        else:
            for name in ("startTime", "endTime"):
                if not params.get(name):
                    raise ApiError(400, "MissingParameterValue", f"'{name}' is required")
            filters = {
                "start": parse_time(params["startTime"], "startTime"),
                "end": parse_time(params["endTime"], "endTime"),
                "size": _page_size(params, MAX_PAGE_SIZE),
            }
        size = int(filters["size"])
        found = [
            (index, d)
            for index, d in enumerate(state_of(self)["disbursements"])
            if _book(d) == _book(ctx)
            and filters["start"] <= d["_time"] <= filters["end"]
            and (after is None or index > after)
        ]
        page = found[:size]
        body: Obj = {"disbursements": [_public(d) for _, d in page]}
        if len(found) > size:
            body["nextToken"] = _token([page[-1][0]], filters)
        return 200, body

    @route("GetDispute", "GET", "/disputes/{disputeId}")
    def get_dispute(self, ctx: Ctx, dispute_id: str) -> tuple[int, Obj]:
        dispute: Obj | None = state_of(self)["disputes"].get(dispute_id)
        if dispute is None or _book(dispute) != _book(ctx):
            raise ApiError(404, "ResourceNotFound", f"Dispute '{dispute_id}' was not found")
        return 200, render_dispute(dispute)


def document_refusal(
    engine: SettlementApi, doc_id: str, *, date: str, signature: str
) -> tuple[int, str, str] | None:
    """Why a pre-signed document URL is refused (HTTP status, S3 error code, message), or None:
    no Amazon signature, valid 30 s on the emulator clock."""
    issued = parse_pay_date(date)
    if issued is None or not hmac.compare_digest(signature, _sign_url(doc_id, date)):
        return 403, "SignatureDoesNotMatch", "The request signature does not match"
    if engine.clock.now() > issued + DOCUMENT_URL_SECONDS:
        return 403, "AccessDenied", "Request has expired"
    if doc_id not in state_of(engine)["documents"]:
        return 404, "NoSuchKey", "The specified key does not exist."
    return None
