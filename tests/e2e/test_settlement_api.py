"""SettlementService and DisputeService over real gRPC: settlements with their lines and match
results page by page, unmatched lines and misses, disbursements, disputes by charge and state,
disputes and settlement findings in WatchEvents, field-named validation errors and merchant scope.

The settlements here are reconciled from lines built as the report parser yields them; the whole
way from the emulator's reports is tests/e2e/test_settlement.py."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.protobuf.message import Message
from google.protobuf.timestamp_pb2 import Timestamp

from payments.amazonpay.v1 import (
    common_pb2,
    dispute_pb2,
    dispute_pb2_grpc,
    ledger_pb2,
    ledger_pb2_grpc,
    settlement_pb2,
    settlement_pb2_grpc,
)
from service.app import Application
from service.ledger import Disbursement, Ledger
from tests._emulator import EmulatorProcess
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
from tests.e2e._flows import failure
from tests.e2e.conftest import Keys, service_env
from tests.e2e.test_auth import running, sha256_hex

S = settlement_pb2
OTHER_SHOP = "other-shop-token-5c6d7e"


@dataclass
class Api:
    settlements: settlement_pb2_grpc.SettlementServiceAsyncStub
    disputes: dispute_pb2_grpc.DisputeServiceAsyncStub
    channel: grpc.aio.Channel


@pytest.fixture
async def api(app: Application) -> AsyncIterator[Api]:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{app.grpc_port}") as channel:
        yield Api(
            settlement_pb2_grpc.SettlementServiceStub(channel),
            dispute_pb2_grpc.DisputeServiceStub(channel),
            channel,
        )


def ledger_of(app: Application) -> Ledger:
    assert app.ledger is not None
    return app.ledger


async def reconcile_two_days(app: Application) -> None:
    """Day 1 (settlement 5001): everything matches. Day 2 (5002): one amount differs. A refund
    of day 1 is never settled."""
    ledger = ledger_of(app)
    await record(
        ledger,
        "charge",
        charge_json(1, "30.00", captured="30.00"),
        charge_json(2, "12.50", captured="12.50", at=START + DAY),
    )
    await record(ledger, "refund", refund_json(1, 1, "10.00", at=START + timedelta(hours=3)))
    await record(ledger, "dispute", dispute_json(1, 1, "30.00"))
    settlements = app.settlements
    assert settlements is not None
    await add_report(ledger, "R-1", START, START + DAY)
    await settlements.reconcile_lines(
        MERCHANT,
        "R-1",
        header(),
        stream(
            [
                line(1, "Capture", f"{CP}-C000001", "30.00", fee="-0.90"),
                line(2, "ServicesFee", None, "-1.00"),
                line(3, "Chargeback", f"{CP}-C000001", "-30.00"),
            ]
        ),
    )
    await add_report(ledger, "R-2", START + DAY, START + 5 * DAY)
    await settlements.reconcile_lines(
        MERCHANT,
        "R-2",
        header(START + DAY, START + 5 * DAY),
        stream(
            [line(1, "Capture", f"{CP}-C000002", "12.00", settlement="5002", posted=START + DAY)]
        ),
    )
    await ledger.repository.add_disbursements(
        [
            Disbursement(
                merchant=MERCHANT,
                disbursement_id="AMZN-DISB-1",
                settlement_id="5001",
                seller_id="A1SELLER",
                amount=Decimal("-1.90"),
                currency_code="USD",
                transaction_time=START + DAY + timedelta(hours=2),
                snapshot={"settlementId": "5001"},
            )
        ]
    )
    assert await settlements.check_misses(MERCHANT) == 1


def stamp(moment: datetime) -> Timestamp:
    value = Timestamp()
    value.FromDatetime(moment)
    return value


async def test_settlements_and_their_lines_are_read_page_by_page(
    app: Application, api: Api
) -> None:
    await reconcile_two_days(app)
    first = await api.settlements.ListSettlements(S.ListSettlementsRequest(page_size=1), timeout=10)
    second = await api.settlements.ListSettlements(
        S.ListSettlementsRequest(page_size=1, page_token=first.next_page_token), timeout=10
    )
    assert [s.settlement_id for s in (*first.settlements, *second.settlements)] == ["5002", "5001"]
    assert second.next_page_token == ""
    latest = first.settlements[0]
    assert latest.status == S.SETTLEMENT_STATUS_RECONCILED
    # The refund never settled was found when 5002 (the last settlement) was reconciled.
    assert {(o.outcome, o.lines) for o in latest.outcomes} == {
        (S.MATCH_OUTCOME_AMOUNT_MISMATCH, 1),
        (S.MATCH_OUTCOME_MISSING_AT_AMAZON, 1),
    }

    got = await api.settlements.GetSettlement(
        S.GetSettlementRequest(settlement_id="5001", page_size=2), timeout=10
    )
    summary = got.settlement
    assert (summary.report_id, summary.line_count, summary.seller_id) == ("R-1", 3, "A1SELLER")
    assert {(o.outcome, o.lines) for o in summary.outcomes} == {(S.MATCH_OUTCOME_MATCHED, 3)}
    assert [(t.currency_code, t.amount, t.fee, t.net) for t in summary.totals] == [
        ("USD", "-1.00", "-0.90", "-1.90")
    ]
    assert summary.disbursed_amount == "-1.90"
    assert [d.disbursement_id for d in got.disbursements] == ["AMZN-DISB-1"]
    assert [(ln.line_number, ln.match_rule) for ln in got.lines] == [(1, "capture"), (2, "fee")]
    rest = await api.settlements.GetSettlement(
        S.GetSettlementRequest(settlement_id="5001", page_size=2, page_token=got.next_page_token),
        timeout=10,
    )
    [chargeback] = rest.lines
    assert (chargeback.ledger_kind, chargeback.ledger_object_id) == ("dispute", f"{CP}-B000001")
    assert (chargeback.amount, chargeback.expected_amount) == ("-30.00", "30.00")
    by_report = await api.settlements.GetSettlement(
        S.GetSettlementRequest(report_id="R-2", outcome=S.MATCH_OUTCOME_AMOUNT_MISMATCH),
        timeout=10,
    )
    [mismatch] = by_report.lines
    assert (mismatch.amazon_transaction_id, mismatch.amount, mismatch.expected_amount) == (
        f"{CP}-C000002",
        "12.00",
        "12.50",
    )
    paid = await api.settlements.ListDisbursements(
        S.ListDisbursementsRequest(settlement_id="5001"), timeout=10
    )
    assert [(d.amount, d.currency_code) for d in paid.disbursements] == [("-1.90", "USD")]


async def test_unmatched_lines_and_misses_are_listed_newest_first(
    app: Application, api: Api
) -> None:
    await reconcile_two_days(app)
    first = await api.settlements.ListUnmatchedLines(
        S.ListUnmatchedLinesRequest(page_size=1), timeout=10
    )
    second = await api.settlements.ListUnmatchedLines(
        S.ListUnmatchedLinesRequest(page_size=1, page_token=first.next_page_token), timeout=10
    )
    found = [*first.lines, *second.lines]
    assert [(ln.outcome, ln.amazon_transaction_id, ln.line_number) for ln in found] == [
        (S.MATCH_OUTCOME_AMOUNT_MISMATCH, f"{CP}-C000002", 1),
        (S.MATCH_OUTCOME_MISSING_AT_AMAZON, f"{CP}-R000001", 0),
    ]
    assert second.next_page_token == ""
    miss = found[1]
    assert (miss.settlement_id, miss.expected_amount, miss.ledger_kind) == (
        "5002",
        "10.00",
        "refund",
    )
    assert miss.settle_by.ToDatetime() == (
        START + timedelta(hours=3) + timedelta(hours=72)
    ).replace(tzinfo=None)
    only = await api.settlements.ListUnmatchedLines(
        S.ListUnmatchedLinesRequest(outcome=S.MATCH_OUTCOME_MISSING_AT_AMAZON), timeout=10
    )
    assert [ln.ledger_object_id for ln in only.lines] == [f"{CP}-R000001"]
    with pytest.raises(grpc.aio.AioRpcError) as reused:
        await api.settlements.ListUnmatchedLines(
            S.ListUnmatchedLinesRequest(
                outcome=S.MATCH_OUTCOME_MISSING_IN_LEDGER, page_token=first.next_page_token
            ),
            timeout=10,
        )
    assert failure(reused.value).reason == "INVALID_PAGE_TOKEN"


@pytest.mark.parametrize(
    ("call", "field"),
    [
        ("GetSettlement", "settlement"),
        ("ReconcileSettlementPeriod", "period_start"),
        ("ReconcileSettlementPeriod/backwards", "period_end"),
        ("ReconcileSettlementPeriod/too-long", "period_end"),
        ("ReconcileSettlementPeriod/both", "settlement_id"),
        ("ListUnmatchedLines", "outcome"),
        ("GetSettlement/bad-id", "settlement_id"),
        ("GetDispute", "dispute_id"),
        ("GetTransaction", "kind"),
    ],
)
async def test_bad_requests_are_refused_naming_the_field(
    app: Application, api: Api, call: str, field: str
) -> None:
    requests: dict[str, tuple[Callable[..., Any], Message]] = {
        "GetSettlement": (api.settlements.GetSettlement, S.GetSettlementRequest()),
        "ReconcileSettlementPeriod": (
            api.settlements.ReconcileSettlementPeriod,
            S.ReconcileSettlementPeriodRequest(period_end=stamp(START)),
        ),
        "ReconcileSettlementPeriod/backwards": (
            api.settlements.ReconcileSettlementPeriod,
            S.ReconcileSettlementPeriodRequest(
                period_start=stamp(START), period_end=stamp(START - DAY)
            ),
        ),
        "ReconcileSettlementPeriod/too-long": (
            api.settlements.ReconcileSettlementPeriod,
            S.ReconcileSettlementPeriodRequest(
                period_start=stamp(START), period_end=stamp(START + 94 * DAY)
            ),
        ),
        "ReconcileSettlementPeriod/both": (
            api.settlements.ReconcileSettlementPeriod,
            S.ReconcileSettlementPeriodRequest(
                settlement_id="5001", period_start=stamp(START), period_end=stamp(START + DAY)
            ),
        ),
        "ListUnmatchedLines": (
            api.settlements.ListUnmatchedLines,
            S.ListUnmatchedLinesRequest(outcome=S.MATCH_OUTCOME_MATCHED),
        ),
        "GetSettlement/bad-id": (
            api.settlements.GetSettlement,
            S.GetSettlementRequest(settlement_id="50 01;"),
        ),
        "GetDispute": (api.disputes.GetDispute, dispute_pb2.GetDisputeRequest()),
        "GetTransaction": (
            ledger_pb2_grpc.LedgerServiceStub(api.channel).GetTransaction,
            ledger_pb2.GetTransactionRequest(
                kind=ledger_pb2.OBJECT_KIND_SETTLEMENT_LINE, object_id=f"{CP}-C000001"
            ),
        ),
    }
    method, request = requests[call]
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await method(request, timeout=10)
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    found = failure(refused.value)
    assert found.reason == "VALIDATION_FAILED"
    assert field in found.violations, found.violations


async def test_disputes_are_listed_by_charge_and_state_and_read_from_the_ledger(
    app: Application, api: Api
) -> None:
    ledger = ledger_of(app)
    closed = dispute_json(2, 2, "5.00")
    closed["statusDetails"] = {"state": "Closed", "resolution": "MerchantWon"}
    await record(ledger, "dispute", dispute_json(1, 1, "30.00"), closed)
    by_charge = await api.disputes.ListDisputes(
        dispute_pb2.ListDisputesRequest(charge_id=f"{CP}-C000001"), timeout=10
    )
    assert [d.dispute_id for d in by_charge.disputes] == [f"{CP}-B000001"]
    assert by_charge.disputes[0].status_details.state == dispute_pb2.DISPUTE_STATE_UNDER_REVIEW
    by_state = await api.disputes.ListDisputes(
        dispute_pb2.ListDisputesRequest(state="Closed"), timeout=10
    )
    [done] = by_state.disputes
    assert (done.dispute_id, done.status_details.resolution) == (f"{CP}-B000002", "MerchantWon")
    every = await api.disputes.ListDisputes(
        dispute_pb2.ListDisputesRequest(page_size=1), timeout=10
    )
    assert len(every.disputes) == 1
    assert every.next_page_token
    got = await api.disputes.GetDispute(
        dispute_pb2.GetDisputeRequest(
            dispute_id=f"{CP}-B000001", source=common_pb2.READ_SOURCE_LEDGER
        ),
        timeout=10,
    )
    assert got.served_from == common_pb2.DATA_ORIGIN_LEDGER
    assert (got.dispute.dispute_amount.amount, got.dispute.filing_reason) == (
        "30.00",
        "ProductNotReceived",
    )


async def test_watch_events_delivers_disputes_and_settlement_findings(
    app: Application, api: Api
) -> None:
    stream_call = ledger_pb2_grpc.LedgerServiceStub(api.channel).WatchEvents(
        ledger_pb2.WatchEventsRequest(), timeout=30
    )
    received: list[ledger_pb2.LedgerEvent] = []

    async def read() -> None:
        async for message in stream_call:
            received.append(message.event)
            if len(received) >= 2:
                return

    reader = asyncio.create_task(read())
    await asyncio.sleep(0.5)  # the stream subscribes before the writes below
    ledger = ledger_of(app)
    await record(ledger, "dispute", dispute_json(1, 1, "30.00"))
    await add_report(ledger, "R-1", START, START + DAY)
    assert app.settlements is not None
    await app.settlements.reconcile_lines(
        MERCHANT, "R-1", header(), stream([line(1, "Capture", f"{CP}-C000009", "9.00")])
    )
    await asyncio.wait_for(reader, 20)
    stream_call.cancel()
    dispute, finding = received
    assert (dispute.kind, dispute.WhichOneof("snapshot")) == (
        ledger_pb2.OBJECT_KIND_DISPUTE,
        "dispute",
    )
    assert dispute.dispute.status_details.raw_state == "UnderReview"
    assert (finding.kind, finding.source, finding.raw_state) == (
        ledger_pb2.OBJECT_KIND_SETTLEMENT_LINE,
        ledger_pb2.EVENT_SOURCE_SETTLEMENT,
        "missing_in_ledger",
    )
    assert finding.object_id == f"{CP}-C000009"
    assert finding.settlement_line.outcome == S.MATCH_OUTCOME_MISSING_IN_LEDGER
    assert (finding.settlement_line.settlement_id, finding.settlement_line.amount) == (
        "5001",
        "9.00",
    )
    listed = await ledger_pb2_grpc.LedgerServiceStub(api.channel).ListEvents(
        ledger_pb2.ListEventsRequest(
            kind=ledger_pb2.OBJECT_KIND_SETTLEMENT_LINE, source=ledger_pb2.EVENT_SOURCE_SETTLEMENT
        ),
        timeout=10,
    )
    assert [e.object_id for e in listed.events] == [f"{CP}-C000009"]


async def test_a_caller_limited_to_another_merchant_reads_no_settlement(
    database_url: str, clean_emulator: EmulatorProcess, keys: Keys, tmp_path: Path
) -> None:
    callers = tmp_path / "callers.toml"
    callers.write_text(
        "[callers.other-shop]\n"
        f'token_sha256 = "{sha256_hex(OTHER_SHOP)}"\n'
        'allow = ["payments.amazonpay.v1.*"]\n'
        'merchants = ["second"]\n'
    )
    env = {
        **service_env(database_url, clean_emulator, keys, tmp_path),
        "GRPC_CALLERS_FILE": str(callers),
    }
    metadata = (("authorization", f"Bearer {OTHER_SHOP}"),)
    async with running(env) as target, grpc.aio.insecure_channel(target) as channel:
        stub = settlement_pb2_grpc.SettlementServiceStub(channel)
        for merchant in ("", "default"):
            with pytest.raises(grpc.aio.AioRpcError) as denied:
                await stub.ListUnmatchedLines(
                    S.ListUnmatchedLinesRequest(merchant=merchant), metadata=metadata, timeout=10
                )
            assert denied.value.code() == grpc.StatusCode.PERMISSION_DENIED
            assert failure(denied.value).reason == "MERCHANT_NOT_ALLOWED"
        own = await stub.ListSettlements(
            S.ListSettlementsRequest(merchant="second"), metadata=metadata, timeout=10
        )
        assert list(own.settlements) == []
        disputes = dispute_pb2_grpc.DisputeServiceStub(channel)
        with pytest.raises(grpc.aio.AioRpcError) as other:
            await disputes.ListDisputes(
                dispute_pb2.ListDisputesRequest(merchant="default"), metadata=metadata, timeout=10
            )
        assert other.value.code() == grpc.StatusCode.PERMISSION_DENIED
