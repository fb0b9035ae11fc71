"""`python -m amazonpay_client reconcile`: reconcile a settlement period and print its summary."""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from typing import IO, Any

from ._client import AmazonPayClient
from ._format import table, to_dict
from ._services import outcome_name

__all__ = ["add_reconcile_command", "reconcile"]

SETTLEMENT_COLUMNS = (
    "SETTLEMENT",
    "REPORT",
    "PERIOD (UTC)",
    "STATUS",
    "LINES",
    "MATCHED",
    "NOT MATCHED",
    "NET",
    "DISBURSED",
)
LINE_COLUMNS = (
    "OUTCOME",
    "SETTLEMENT",
    "LINE",
    "TYPE",
    "TRANSACTION",
    "AMOUNT",
    "EXPECTED",
    "CURRENCY",
    "POSTED (UTC)",
)
_STATUS = {1: "pending", 2: "reconciling", 3: "reconciled", 4: "failed"}
RECONCILE_TIMEOUT_S = 120.0


def add_reconcile_command(
    commands: Any, common: argparse.ArgumentParser, when: Callable[[str], datetime]
) -> None:
    """The `reconcile` sub-command (`when` parses the CLI's ISO times)."""
    parser = commands.add_parser(
        "reconcile",
        parents=[common],
        help="reconcile a settlement period against the ledger and print its summary",
        description="Fetch the settlement reports Amazon listed, match every line of the "
        "period's settlements against the ledger (again: nothing is recorded twice) and print "
        "what matched, what did not, and the totals. Default period: the last 7 days.",
    )
    parser.add_argument(
        "--from", dest="period_start", type=when, help="ISO time, e.g. 2026-03-01T00:00Z"
    )
    parser.add_argument("--to", dest="period_end", type=when, help="ISO time (exclusive)")
    parser.add_argument("--days", type=int, default=7, help="without --from: the last N days")
    parser.add_argument("--settlement-id", help="instead of a period: one settlement")
    parser.add_argument(
        "--limit", type=int, default=50, help="most unmatched lines printed (%(default)s)"
    )


def _period(args: argparse.Namespace) -> tuple[datetime | None, datetime | None]:
    if args.settlement_id:
        return None, None
    end = args.period_end or datetime.now(UTC)
    start = args.period_start or end - timedelta(days=args.days)
    return start, end


def _time(stamp: Any) -> str:
    if not stamp.seconds and not stamp.nanos:
        return ""
    return str(stamp.ToDatetime().strftime("%Y-%m-%d %H:%M"))


def _counts(outcomes: Sequence[Any]) -> dict[str, int]:
    return {outcome_name(o.outcome): int(o.lines) for o in outcomes}


def _settlement_row(settlement: Any) -> list[str]:
    counts = _counts(settlement.outcomes)
    matched = counts.get("matched", 0)
    net = ", ".join(f"{t.net} {t.currency_code}" for t in settlement.totals)
    return [
        settlement.settlement_id,
        settlement.report_id,
        f"{_time(settlement.settlement_start)} .. {_time(settlement.settlement_end)}",
        _STATUS.get(settlement.status, "?"),
        str(settlement.line_count),
        str(matched),
        str(sum(counts.values()) - matched),
        net,
        settlement.disbursed_amount,
    ]


def _line_row(line: Any) -> list[str]:
    return [
        outcome_name(line.outcome),
        line.settlement_id,
        str(line.line_number),
        line.transaction_type,
        line.amazon_transaction_id,
        line.amount,
        line.expected_amount,
        line.currency_code or line.expected_currency_code,
        _time(line.posted_at),
    ]


async def reconcile(client: AmazonPayClient, args: argparse.Namespace, out: IO[str]) -> None:
    start, end = _period(args)
    # Reading and matching a large settlement takes a while: at least two minutes.
    summary = await client.settlements.reconcile(
        period_start=start,
        period_end=end,
        settlement_id=args.settlement_id,
        timeout=max(args.timeout, RECONCILE_TIMEOUT_S),
    )
    unmatched: list[Any] = []
    if args.settlement_id:
        for settlement in summary.settlements:
            async for line in client.settlements.iter_lines(settlement.settlement_id):
                if outcome_name(line.outcome) != "matched" and len(unmatched) < args.limit:
                    unmatched.append(line)
    else:
        async for line in client.settlements.iter_unmatched(
            created_after=start, created_before=end, page_size=min(max(args.limit, 1), 1000)
        ):
            unmatched.append(line)
            if len(unmatched) >= args.limit:
                break
    if args.json:
        print(
            json.dumps(
                {"summary": to_dict(summary), "unmatched": [to_dict(line) for line in unmatched]},
                indent=1,
                sort_keys=True,
            ),
            file=out,
        )
        return
    what = (
        f"settlement {args.settlement_id}"
        if args.settlement_id
        else (f"{start:%Y-%m-%d %H:%M} .. {end:%Y-%m-%d %H:%M} UTC" if start and end else "")
    )
    print(f"reconcile {what}  (merchant {args.merchant or 'default'})", file=out)
    counts = _counts(summary.outcomes)
    not_matched = sum(n for name, n in counts.items() if name != "matched")
    verdict = (
        "every line matched"
        if not not_matched
        else f"{not_matched} line{'s' if not_matched != 1 else ''} need attention"
    )
    print(f"  {len(summary.settlements)} settlement(s): {verdict}", file=out)
    print(
        "  outcomes: " + (", ".join(f"{name} {n}" for name, n in counts.items()) or "no lines"),
        file=out,
    )
    for total in summary.totals:
        print(
            f"  totals {total.currency_code}: amount {total.amount}, fee {total.fee}, "
            f"net {total.net}",
            file=out,
        )
    print(
        f"  this run: {summary.lines_recorded} line(s) recorded, {summary.outcomes_changed} "
        f"outcome(s) changed, {summary.missing_at_amazon_found} capture(s)/refund(s) found "
        "unsettled",
        file=out,
    )
    print("", file=out)
    print(table(SETTLEMENT_COLUMNS, [_settlement_row(s) for s in summary.settlements]), file=out)
    if unmatched:
        print(f"\nNot matched ({len(unmatched)}):", file=out)
        print(table(LINE_COLUMNS, [_line_row(line) for line in unmatched]), file=out)
