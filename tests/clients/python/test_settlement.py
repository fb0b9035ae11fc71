"""The typed client's settlement and dispute methods against the real service: pages followed,
outcomes by name, disputes by charge and state."""

from __future__ import annotations

from amazonpay_client import AmazonPayClient, outcome_enum, outcome_name

from service.app import Application
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
    stream,
)


async def test_settlements_lines_and_disputes_through_the_typed_client(
    app: Application, client: AmazonPayClient
) -> None:
    assert app.ledger is not None
    assert app.settlements is not None
    await record(app.ledger, "charge", charge_json(1, "30.00", captured="30.00"))
    await record(app.ledger, "dispute", dispute_json(1, 1, "30.00"))
    await add_report(app.ledger, "R-1", START, START + DAY)
    lines = [
        line(1, "Capture", f"{CP}-C000001", "30.00", fee="-1.17"),
        line(2, "Chargeback", f"{CP}-B000001", "-30.00"),
        line(3, "Capture", f"{CP}-C000002", "5.00"),
    ]
    await app.settlements.reconcile_lines(MERCHANT, "R-1", header(), stream(lines))

    listed = await client.settlements.list(status="reconciled")
    assert [s.settlement_id for s in listed.settlements] == ["5001"]
    got = await client.settlements.get("5001", outcome="missing_in_ledger")
    assert [ln.line_number for ln in got.lines] == [3]
    by_report = await client.settlements.get(report_id="R-1", page_size=1)
    assert by_report.next_page_token
    every = [ln async for ln in client.settlements.iter_lines("5001")]
    assert [outcome_name(ln.outcome) for ln in every] == ["matched", "matched", "missing_in_ledger"]
    unmatched = [ln async for ln in client.settlements.iter_unmatched(page_size=1)]
    assert [ln.amazon_transaction_id for ln in unmatched] == [f"{CP}-C000002"]
    assert outcome_enum("missing-in-ledger") == unmatched[0].outcome
    paid = await client.settlements.list_disbursements(created_after=START)
    assert list(paid.disbursements) == []

    disputes = [d async for d in client.disputes.iter(charge_id=f"{CP}-C000001")]
    assert [d.dispute_id for d in disputes] == [f"{CP}-B000001"]
    assert [d async for d in client.disputes.iter(state="Closed")] == []
    read = await client.disputes.get(f"{CP}-B000001", source="ledger")
    assert read.dispute.dispute_amount.amount == "30.00"
    findings = [
        e async for e in client.ledger.iter_events(kind="settlement_line", source="settlement")
    ]
    assert [(e.object_id, e.raw_state) for e in findings] == [
        (f"{CP}-C000002", "missing_in_ledger")
    ]
