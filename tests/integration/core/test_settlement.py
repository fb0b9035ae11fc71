"""Settlement reconciliation in core against a real ledger: every line matched or reported with
the right outcome, each line and each finding recorded once however often or however many
replicas run it, and ledger captures Amazon never settled found after the settlement window.

Lines are built as the report parser yields them; reading them from Amazon is tested end to end
(tests/e2e/test_settlement.py)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from service.amazonpay import SettlementLine
from service.config import AmazonPaySettings
from service.core import MerchantRegistry, Settlements, SettlementSettings
from service.ledger import Event, EventFilter, Ledger
from tests._emulator import write_key_pair
from tests._settlement import (
    CP,
    DAY,
    MERCHANT,
    START,
    add_report,
    charge_json,
    dispute_json,
    header,
    line,
    record,
    refund_json,
    stream,
)


@pytest.fixture
async def registry(tmp_path: Path) -> AsyncIterator[MerchantRegistry]:
    private, _ = write_key_pair(tmp_path)
    merchants = await MerchantRegistry.from_settings(
        [
            AmazonPaySettings(
                public_key_id="SANDBOX-SETTLEMENTTEST0000000000",
                private_key_file=private,
                endpoint="http://127.0.0.1:9",
            )
        ]
    )
    try:
        yield merchants
    finally:
        await merchants.close()


def settlements_for(
    ledger: Ledger, registry: MerchantRegistry, owner: str = "replica-1", **settings: Any
) -> Settlements:
    return Settlements(
        registry,
        ledger.repository,
        SettlementSettings(**{"window_s": 2 * 86400.0, "batch": 3, **settings}),
        owner=owner,
    )


async def findings(ledger: Ledger) -> list[Event]:
    page = await ledger.repository.list_events(
        EventFilter(merchant=MERCHANT, kind="settlement_line"), page_size=1000, settle_s=10
    )
    return page.items


def week_report() -> list[SettlementLine]:
    return [
        line(1, "Capture", f"{CP}-C000001", "30.00", fee="-0.90"),
        line(2, "Capture", f"{CP}-C000002", "12.50", fee="-0.38"),
        line(3, "Refund", f"{CP}-R000001", "-10.00", fee="0.30"),
        line(4, "Chargeback", f"{CP}-B000001", "-12.50"),
        line(5, "ServicesFee", None, "-1.00"),
        line(6, "Adjustment", None, "0.25"),
        line(7, "Capture", f"{CP}-C000003", "20.00", fee="-0.60"),
    ]


async def seed_week(ledger: Ledger) -> None:
    await record(
        ledger,
        "charge",
        charge_json(1, "30.00", captured="30.00"),
        charge_json(2, "12.50", captured="12.50"),
        # partially captured: the capture amount is what Amazon settles
        charge_json(3, "25.00", captured="20.00"),
    )
    await record(ledger, "refund", refund_json(1, 1, "10.00"))
    await record(ledger, "dispute", dispute_json(1, 2, "12.50"))


async def test_every_line_of_a_reconciled_week_matches_the_ledger(
    ledger: Ledger, registry: MerchantRegistry
) -> None:
    await seed_week(ledger)
    await add_report(ledger, "R-1", START, START + DAY)
    run = await settlements_for(ledger, registry).reconcile_lines(
        MERCHANT, "R-1", header(), stream(week_report())
    )
    assert (run.settlement_id, run.lines_seen, run.lines_recorded) == ("5001", 7, 7)
    assert dict(run.recorded) == {"matched": 7}
    assert await findings(ledger) == []
    report = await ledger.repository.get_report(MERCHANT, settlement_id="5001")
    assert report is not None
    assert (report.status, report.line_count, report.seller_id) == ("reconciled", 7, "A1SELLER")
    counts = (await ledger.repository.settlement_counts(MERCHANT, [report]))["R-1"]
    assert counts.outcomes == {"matched": 7}
    assert counts.totals == [("USD", Decimal("39.25"), Decimal("-1.58"), Decimal("37.67"))]
    page = await ledger.repository.settlement_lines(MERCHANT, "5001", outcome=None, page_size=10)
    by_rule = {r.line_number: (r.match_rule, r.ledger_kind, r.ledger_object_id) for r in page.items}
    assert by_rule[3] == ("refund", "refund", f"{CP}-R000001")
    assert by_rule[4] == ("chargeback", "dispute", f"{CP}-B000001")
    assert by_rule[5] == ("fee", None, None)
    assert by_rule[6] == ("adjustment", None, None)
    assert page.items[6].expected_amount == Decimal("20.00")


async def test_each_kind_of_mismatch_is_reported_once_as_an_event(
    ledger: Ledger, registry: MerchantRegistry
) -> None:
    await record(
        ledger,
        "charge",
        charge_json(1, "30.00", captured="30.00"),
        charge_json(4, "8.00"),  # authorized: the ledger never saw it captured
    )
    await record(
        ledger,
        "refund",
        refund_json(1, 1, "10.00"),
        refund_json(2, 1, "5.00", state="Declined"),
    )
    lines = [
        line(1, "Capture", f"{CP}-C000001", "29.00"),  # Amazon settled another amount
        line(2, "Capture", f"{CP}-C000009", "40.00"),  # a charge the ledger lacks
        line(3, "Refund", f"{CP}-R000001", "-10.00", currency="EUR"),
        line(4, "Capture", f"{CP}-C000004", "8.00"),
        line(5, "Refund", f"{CP}-R000002", "-5.00"),  # the ledger says Declined
        line(6, "ServicesFee", f"{CP}-C000077", "-1.00"),  # a fee naming an unknown charge
    ]
    await add_report(ledger, "R-1", START, START + DAY)
    run = await settlements_for(ledger, registry).reconcile_lines(
        MERCHANT, "R-1", header(), stream(lines)
    )
    outcomes = {
        r.line_number: r.outcome
        for r in (
            await ledger.repository.settlement_lines(MERCHANT, "5001", outcome=None, page_size=9)
        ).items
    }
    assert outcomes == {
        1: "amount_mismatch",
        2: "missing_in_ledger",
        3: "currency_mismatch",
        4: "missing_in_ledger",
        5: "amount_mismatch",
        6: "missing_in_ledger",
    }
    assert dict(run.findings) == {
        "amount_mismatch": 2,
        "missing_in_ledger": 3,
        "currency_mismatch": 1,
    }
    events = await findings(ledger)
    assert sorted((e.object_id, e.state, e.source) for e in events) == sorted(
        [
            (f"{CP}-C000001", "amount_mismatch", "settlement"),
            (f"{CP}-C000009", "missing_in_ledger", "settlement"),
            (f"{CP}-R000001", "currency_mismatch", "settlement"),
            (f"{CP}-C000004", "missing_in_ledger", "settlement"),
            (f"{CP}-R000002", "amount_mismatch", "settlement"),
            (f"{CP}-C000077", "missing_in_ledger", "settlement"),
        ]
    )
    first = next(e for e in events if e.object_id == f"{CP}-C000001")
    assert first.charge_permission_id == CP
    assert first.snapshot["expectedAmount"] == "30.00"
    assert first.snapshot["amount"] == "29.00"


async def test_a_second_run_records_no_line_and_no_event(
    ledger: Ledger, registry: MerchantRegistry
) -> None:
    await record(ledger, "charge", charge_json(1, "30.00", captured="30.00"))
    lines = [line(1, "Capture", f"{CP}-C000001", "31.00"), line(2, "Capture", None, "3.00")]
    await add_report(ledger, "R-1", START, START + DAY)
    settlements = settlements_for(ledger, registry)
    first = await settlements.reconcile_lines(MERCHANT, "R-1", header(), stream(lines))
    again = await settlements.reconcile_lines(
        MERCHANT, "R-1", header(), stream(lines), trigger="request"
    )
    assert (first.lines_recorded, again.lines_recorded, again.outcomes_changed) == (2, 0, 0)
    assert len(await findings(ledger)) == 2
    runs = await ledger.repository.runs_of(MERCHANT, "R-1")
    assert [(r.trigger, r.lines_seen, r.lines_recorded) for r in runs] == [
        ("schedule", 2, 2),
        ("request", 2, 0),
    ]


async def test_three_replicas_reconciling_at_once_record_each_line_once(
    ledger: Ledger, registry: MerchantRegistry
) -> None:
    await seed_week(ledger)
    await record(ledger, "charge", charge_json(9, "9.00", captured="9.00"))
    lines = [*week_report(), line(8, "Capture", f"{CP}-C000009", "9.99")]
    await add_report(ledger, "R-1", START, START + DAY)
    runs = await asyncio.gather(
        *(
            settlements_for(ledger, registry, owner=f"replica-{n}", batch=2).reconcile_lines(
                MERCHANT, "R-1", header(), stream(lines)
            )
            for n in range(3)
        )
    )
    assert sum(r.lines_recorded for r in runs) == 8
    assert sum(r.outcomes_changed for r in runs) == 0
    page = await ledger.repository.settlement_lines(MERCHANT, "5001", outcome=None, page_size=50)
    assert [r.line_number for r in page.items] == list(range(1, 9))
    assert [(e.object_id, e.state) for e in await findings(ledger)] == [
        (f"{CP}-C000009", "amount_mismatch")
    ]


async def test_a_line_matched_after_its_object_reached_the_ledger_changes_outcome_once(
    ledger: Ledger, registry: MerchantRegistry
) -> None:
    lines = [line(1, "Capture", f"{CP}-C000001", "30.00")]
    await add_report(ledger, "R-1", START, START + DAY)
    settlements = settlements_for(ledger, registry)
    await settlements.reconcile_lines(MERCHANT, "R-1", header(), stream(lines))
    await record(ledger, "charge", charge_json(1, "30.00", captured="30.00"))
    rerun = await settlements.reconcile_lines(MERCHANT, "R-1", header(), stream(lines))
    third = await settlements.reconcile_lines(MERCHANT, "R-1", header(), stream(lines))
    assert (rerun.outcomes_changed, third.outcomes_changed) == (1, 0)
    assert [(e.state, e.previous_state) for e in await findings(ledger)] == [
        ("missing_in_ledger", None),
        ("matched", "missing_in_ledger"),
    ]
    unmatched = await ledger.repository.unmatched_lines(
        MERCHANT, outcome=None, posted_after=None, posted_before=None, page_size=10
    )
    assert unmatched.items == []


async def test_captures_and_refunds_never_settled_after_the_window_are_missing_at_amazon(
    ledger: Ledger, registry: MerchantRegistry
) -> None:
    await record(
        ledger,
        "charge",
        charge_json(1, "30.00", captured="30.00", at=START + timedelta(hours=2)),
        charge_json(2, "15.00", captured="15.00", at=START + timedelta(hours=3)),
        # captured late in the last period: still within the window
        charge_json(3, "5.00", captured="5.00", at=START + 3 * DAY + timedelta(hours=1)),
    )
    await record(ledger, "refund", refund_json(1, 1, "10.00", at=START + timedelta(hours=5)))
    settlements = settlements_for(ledger, registry)
    for day in range(4):
        report_id = f"R-{day}"
        await add_report(ledger, report_id, START + day * DAY, START + (day + 1) * DAY)
        day_lines = (
            [line(1, "Capture", f"{CP}-C000002", "15.00", settlement=f"500{day}")]
            if day == 0
            else []
        )
        await settlements.reconcile_lines(
            MERCHANT,
            report_id,
            header(START + day * DAY, START + (day + 1) * DAY),
            stream(day_lines),
        )
    assert await settlements.check_misses(MERCHANT) == 2
    assert await settlements.check_misses(MERCHANT) == 0
    unmatched = await ledger.repository.unmatched_lines(
        MERCHANT, outcome="missing_at_amazon", posted_after=None, posted_before=None, page_size=1
    )
    assert [getattr(i, "ledger_object_id", None) for i in unmatched.items] == [f"{CP}-R000001"]
    second = await ledger.repository.unmatched_lines(
        MERCHANT,
        outcome="missing_at_amazon",
        posted_after=None,
        posted_before=None,
        page_size=1,
        page_token=unmatched.next_page_token,
    )
    assert [getattr(i, "ledger_object_id", None) for i in second.items] == [f"{CP}-C000001"]
    assert second.next_page_token == ""
    missing = [e for e in await findings(ledger) if e.state == "missing_at_amazon"]
    assert sorted(e.object_id for e in missing) == [f"{CP}-C000001", f"{CP}-R000001"]
    assert missing[0].snapshot["settlementId"] == "R-3"
    # Settled after all (a day later than the window allowed): the miss is resolved, once.
    await add_report(ledger, "R-4", START + 4 * DAY, START + 5 * DAY)
    late = [line(1, "Capture", f"{CP}-C000001", "30.00", settlement="5004")]
    await settlements.reconcile_lines(
        MERCHANT, "R-4", header(START + 4 * DAY, START + 5 * DAY), stream(late)
    )
    resolved = [e for e in await findings(ledger) if e.previous_state == "missing_at_amazon"]
    assert [(e.object_id, e.state) for e in resolved] == [(f"{CP}-C000001", "matched")]
    still = await ledger.repository.unmatched_lines(
        MERCHANT, outcome=None, posted_after=None, posted_before=None, page_size=10
    )
    assert [getattr(i, "ledger_object_id", None) for i in still.items] == [f"{CP}-R000001"]


async def test_misses_wait_while_a_listed_report_is_not_reconciled(
    ledger: Ledger, registry: MerchantRegistry
) -> None:
    await record(ledger, "charge", charge_json(1, "30.00", captured="30.00"))
    settlements = settlements_for(ledger, registry)
    await add_report(ledger, "R-0", START, START + DAY)
    await add_report(ledger, "R-1", START + DAY, START + 5 * DAY)
    await settlements.reconcile_lines(
        MERCHANT, "R-1", header(START + DAY, START + 5 * DAY), stream([])
    )
    assert await settlements.check_misses(MERCHANT) == 0
