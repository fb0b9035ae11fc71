"""Acceptance of settlement reconciliation, end to end over real gRPC, Postgres and the emulator:
a week of emulator-clock traffic (captures, partial refunds, a dispute) reconciles with every
line matched; a capture deleted from the ledger, a refund the emulator never settles and an
amount changed at the emulator are each reported as the right mismatch; reconciling twice, or on
three replicas at once, records each line once."""

from __future__ import annotations

import asyncio
import io
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import grpc
import pytest
from amazonpay_client._cli import amain
from google.protobuf.timestamp_pb2 import Timestamp

from payments.amazonpay.v1 import (
    checkout_session_pb2,
    common_pb2,
    dispute_pb2,
    dispute_pb2_grpc,
    ledger_pb2,
    refund_pb2,
    settlement_pb2,
    settlement_pb2_grpc,
)
from service.app import Application
from service.config import load_settings
from service.workers import SettlementWorker
from tests._emulator import EmulatorProcess
from tests.e2e._flows import checkout, key, usd
from tests.e2e.conftest import KEY_ID, Keys, Stubs, service_env, stubs_for

S = settlement_pb2
DAY = 86_400.0
WINDOW_HOURS = 48


@pytest.fixture
async def emulator(tmp_path: Path, keys: Keys) -> AsyncIterator[EmulatorProcess]:
    """An emulator of its own: the session's one settles other tests' captures too."""
    process = EmulatorProcess(tmp_path / "emulator", {KEY_ID: keys.public})
    await process.start()
    try:
        yield process
    finally:
        await process.stop()


def env_for(
    database_url: str, emulator: EmulatorProcess, keys: Keys, tmp_path: Path
) -> dict[str, str]:
    env = service_env(database_url, emulator, keys, tmp_path)
    env.pop("AMAZON_PAY_MERCHANTS_FILE")  # one account: the emulator's merchant
    return {**env, "SETTLEMENT_WINDOW_HOURS": str(WINDOW_HOURS), "SETTLEMENT_ENABLED": "0"}


@dataclass
class Replica:
    app: Application
    api: Stubs
    settlements: settlement_pb2_grpc.SettlementServiceAsyncStub
    disputes: dispute_pb2_grpc.DisputeServiceAsyncStub
    target: str


@pytest.fixture
async def replicas(
    database_url: str, emulator: EmulatorProcess, keys: Keys, tmp_path: Path
) -> AsyncIterator[list[Replica]]:
    """Three replicas of the service on one ledger; the first receives the emulator's IPNs."""
    env = env_for(database_url, emulator, keys, tmp_path)
    async with AsyncExitStack() as stack:
        started: list[Replica] = []
        for _ in range(3):
            app = Application(load_settings(env))
            await app.start()
            stack.push_async_callback(app.stop)
            target = f"127.0.0.1:{app.grpc_port}"
            channel = await stack.enter_async_context(grpc.aio.insecure_channel(target))
            started.append(
                Replica(
                    app,
                    stubs_for(channel, target),
                    settlement_pb2_grpc.SettlementServiceStub(channel),
                    dispute_pb2_grpc.DisputeServiceStub(channel),
                    target,
                )
            )
        url = f"http://127.0.0.1:{started[0].app.ipn_port}/ipn"
        await emulator.control("POST", "ipn/subscriptions", {"url": url})
        yield started


async def emulator_now(emulator: EmulatorProcess) -> datetime:
    clock = await emulator.control("GET", "clock")
    return datetime.fromtimestamp(float(clock["epochSeconds"]), UTC)


def stamp(moment: datetime) -> Timestamp:
    value = Timestamp()
    value.FromDatetime(moment)
    return value


async def until(condition: Any, *, seconds: float = 20.0) -> None:
    """Wait for an IPN's effect (its follow-up read runs after the 200)."""
    give_up = asyncio.get_running_loop().time() + seconds
    while not await condition():
        assert asyncio.get_running_loop().time() < give_up, "timed out"
        await asyncio.sleep(0.1)


@dataclass
class Week:
    start: datetime
    end: datetime
    captures: list[str]
    refunds: list[str]
    dispute_id: str


async def a_week_of_traffic(
    api: Stubs, emulator: EmulatorProcess, *, refunds_each_day: int = 1
) -> Week:
    """Seven days on the emulator clock: two captured purchases a day, a partial refund a day,
    a dispute on day 3 (resolved for the buyer on day 5); each day ends a settlement period."""
    start = await emulator_now(emulator)
    captures: list[str] = []
    refunds: list[str] = []
    dispute_id = ""
    for day in range(7):
        for n in range(2):
            done = await checkout(
                api,
                emulator,
                intent=checkout_session_pb2.PAYMENT_INTENT_AUTHORIZE_WITH_CAPTURE,
                amount=f"{20 + day * 3 + n}.50",
                reference=f"week-{day}-{n}",
            )
            captures.append(done.charge_id)
        for _ in range(refunds_each_day):
            refund = await api.refunds.CreateRefund(
                refund_pb2.CreateRefundRequest(
                    idempotency_key=key(), charge_id=captures[-2], refund_amount=usd("5.00")
                ),
                timeout=10,
            )
            refunds.append(refund.refund.refund_id)
        if day == 3:
            opened = await emulator.control(
                "POST", "disputes", {"chargeId": captures[1], "reason": "ProductNotReceived"}
            )
            dispute_id = opened["disputeId"]
        if day == 5:
            await emulator.control(
                "POST", f"disputes/{dispute_id}", {"state": "Resolved", "resolution": "BuyerWon"}
            )
        await emulator.advance(DAY)
    return Week(start, await emulator_now(emulator), captures, refunds, dispute_id)


async def record_settled_refunds(api: Stubs, refunds: list[str]) -> None:
    """The refunds settled at the emulator; read so the ledger knows (an IPN does it too)."""
    for refund_id in refunds:
        await api.refunds.GetRefund(
            refund_pb2.GetRefundRequest(refund_id=refund_id, source=common_pb2.READ_SOURCE_AMAZON),
            timeout=10,
        )


async def emulator_lines(emulator: EmulatorProcess) -> int:
    view = await emulator.control("GET", "settlement")
    return sum(int(s["lines"]) for s in view["settlements"])


async def ledger_lines(database_url: str) -> tuple[int, int]:
    conn = await asyncpg.connect(database_url)
    try:
        lines = await conn.fetchval("SELECT count(*) FROM settlement_lines")
        distinct = await conn.fetchval(
            "SELECT count(DISTINCT (settlement_id, line_number)) FROM settlement_lines"
        )
        return int(lines), int(distinct)
    finally:
        await conn.close()


def outcomes(reply: S.ReconcileSettlementPeriodResponse) -> dict[int, int]:
    return {o.outcome: o.lines for o in reply.outcomes}


async def test_a_week_of_traffic_reconciles_with_every_line_matched(
    replicas: list[Replica], emulator: EmulatorProcess, database_url: str
) -> None:
    first = replicas[0]
    week = await a_week_of_traffic(first.api, emulator)
    await until(
        lambda: _has_dispute(first, week.dispute_id, "Resolved"),
    )
    await record_settled_refunds(first.api, week.refunds)
    period = S.ReconcileSettlementPeriodRequest(
        period_start=stamp(week.start - timedelta(days=1)), period_end=stamp(week.end)
    )
    reply = await first.settlements.ReconcileSettlementPeriod(period, timeout=120)
    expected = await emulator_lines(emulator)
    # 14 captures, 7 refunds, the chargeback and its reversal... over seven daily settlements.
    assert expected >= 14 + 7 + 1
    assert len(reply.settlements) == 7
    assert all(s.status == S.SETTLEMENT_STATUS_RECONCILED for s in reply.settlements)
    assert outcomes(reply) == {S.MATCH_OUTCOME_MATCHED: expected}
    assert (reply.lines_recorded, reply.missing_at_amazon_found) == (expected, 0)
    assert len(reply.disbursements) == 7
    [usd_total] = reply.totals
    assert usd_total.currency_code == "USD"
    assert sum(float(d.amount) for d in reply.disbursements) == pytest.approx(float(usd_total.net))
    chargebacks = [
        line
        for s in reply.settlements
        for line in (
            await first.settlements.GetSettlement(
                S.GetSettlementRequest(settlement_id=s.settlement_id, page_size=1000), timeout=10
            )
        ).lines
        if line.match_rule == "chargeback"
    ]
    assert [(c.ledger_kind, c.ledger_object_id) for c in chargebacks] == [
        ("dispute", week.dispute_id)
    ]

    again = await first.settlements.ReconcileSettlementPeriod(period, timeout=120)
    assert (again.lines_recorded, again.outcomes_changed) == (0, 0)
    assert outcomes(again) == outcomes(reply)
    assert await ledger_lines(database_url) == (expected, expected)
    unmatched = await first.settlements.ListUnmatchedLines(
        S.ListUnmatchedLinesRequest(), timeout=10
    )
    assert list(unmatched.lines) == []

    out, err = io.StringIO(), io.StringIO()
    code = await amain(
        [
            "reconcile",
            "--target",
            first.target,
            "--from",
            (week.start - timedelta(days=1)).isoformat(),
            "--to",
            week.end.isoformat(),
        ],
        out,
        err,
    )
    assert (code, err.getvalue()) == (0, "")
    printed = out.getvalue()
    assert "7 settlement(s): every line matched" in printed
    assert f"outcomes: matched {expected}" in printed
    assert "this run: 0 line(s) recorded, 0 outcome(s) changed" in printed


async def _has_dispute(replica: Replica, dispute_id: str, state: str) -> bool:
    found = await replica.disputes.ListDisputes(dispute_pb2.ListDisputesRequest(), timeout=5)
    return any(
        d.dispute_id == dispute_id and d.status_details.raw_state == state for d in found.disputes
    )


async def test_a_deleted_capture_an_unsettled_refund_and_an_altered_amount_are_each_reported(
    replicas: list[Replica], emulator: EmulatorProcess, database_url: str
) -> None:
    first = replicas[0]
    start = await emulator_now(emulator)
    kept = await checkout(
        first.api,
        emulator,
        intent=checkout_session_pb2.PAYMENT_INTENT_AUTHORIZE_WITH_CAPTURE,
        amount="40.00",
    )
    deleted = await checkout(
        first.api,
        emulator,
        intent=checkout_session_pb2.PAYMENT_INTENT_AUTHORIZE_WITH_CAPTURE,
        amount="25.00",
    )
    altered = await checkout(
        first.api,
        emulator,
        intent=checkout_session_pb2.PAYMENT_INTENT_AUTHORIZE_WITH_CAPTURE,
        amount="30.00",
    )
    unsettled = await first.api.refunds.CreateRefund(
        refund_pb2.CreateRefundRequest(
            idempotency_key=key(), charge_id=kept.charge_id, refund_amount=usd("7.00")
        ),
        timeout=10,
    )
    refund_id = unsettled.refund.refund_id
    await emulator.control("POST", "settlement/faults", {"skipRefund": refund_id})
    await emulator.control(
        "POST",
        "settlement/faults",
        {"alterAmount": {"transactionId": altered.charge_id, "amount": "29.00"}},
    )
    # Four days with a purchase each (every day ends a settlement period): the refund settles at
    # the emulator on day 1, but no settlement ever names it.
    for day in range(4):
        await checkout(
            first.api,
            emulator,
            intent=checkout_session_pb2.PAYMENT_INTENT_AUTHORIZE_WITH_CAPTURE,
            amount=f"1{day}.00",
            reference=f"day-{day}",
        )
        await emulator.advance(DAY)
    await record_settled_refunds(first.api, [refund_id])
    conn = await asyncpg.connect(database_url)
    try:
        await conn.execute(
            "DELETE FROM objects WHERE kind = 'charge' AND object_id = $1", deleted.charge_id
        )
    finally:
        await conn.close()

    # Three replicas run their settlement pass at the same moment.
    workers = [
        SettlementWorker(r.app.settlements, r.app.metrics, interval_s=60)
        for r in replicas
        if r.app.settlements is not None
    ]
    passes = await asyncio.gather(*(w.run_once() for w in workers))
    expected = await emulator_lines(emulator)
    assert sum(p.lines_recorded for p in passes) == expected
    assert sum(p.reports_found for p in passes) >= 1
    assert await ledger_lines(database_url) == (expected, expected)

    unmatched = await first.settlements.ListUnmatchedLines(
        S.ListUnmatchedLinesRequest(page_size=100), timeout=10
    )
    found = {(line.outcome, line.amazon_transaction_id) for line in unmatched.lines}
    assert found == {
        (S.MATCH_OUTCOME_MISSING_IN_LEDGER, deleted.charge_id),
        (S.MATCH_OUTCOME_AMOUNT_MISMATCH, altered.charge_id),
        (S.MATCH_OUTCOME_MISSING_AT_AMAZON, refund_id),
    }
    mismatch = next(ln for ln in unmatched.lines if ln.amazon_transaction_id == altered.charge_id)
    assert (mismatch.amount, mismatch.expected_amount) == ("29.00", "30.00")

    # The findings are ledger events, one each, whoever found them and however often.
    period = S.ReconcileSettlementPeriodRequest(
        period_start=stamp(start - timedelta(days=1)), period_end=stamp(start + timedelta(days=5))
    )
    again = await asyncio.gather(
        *(r.settlements.ReconcileSettlementPeriod(period, timeout=120) for r in replicas)
    )
    assert [(a.lines_recorded, a.outcomes_changed) for a in again] == [(0, 0)] * 3
    assert await ledger_lines(database_url) == (expected, expected)
    events = await first.api.ledger.ListEvents(
        ledger_pb2.ListEventsRequest(kind=ledger_pb2.OBJECT_KIND_SETTLEMENT_LINE), timeout=10
    )
    assert sorted((e.object_id, e.raw_state) for e in events.events) == sorted(
        [
            (deleted.charge_id, "missing_in_ledger"),
            (altered.charge_id, "amount_mismatch"),
            (refund_id, "missing_at_amazon"),
        ]
    )
    assert {e.source for e in events.events} == {ledger_pb2.EVENT_SOURCE_SETTLEMENT}
    assert sum(outcomes(again[0]).values()) == expected + 1  # every line, plus the miss
