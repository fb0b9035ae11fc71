"""Settlement periods, reports, schedules, disbursements and disputes, over signed HTTP."""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

from emulator import RunningEmulator
from emulator.clock import DAY
from emulator.settlement import BODY_COLUMNS as EMULATOR_BODY_COLUMNS
from emulator.settlement import HEADER_COLUMNS as EMULATOR_HEADER_COLUMNS
from emulator.settlement import LIVE_SETTLEMENT
from emulator.testing import SignedClient
from service.amazonpay import BODY_COLUMNS, HEADER_COLUMNS, SETTLEMENT_REPORT_TYPES, Environment

from ._flows import advance, purchase, usd

SANDBOX_SETTLEMENT = "_GET_FLAT_FILE_OFFAMAZONPAYMENTS_SANDBOX_SETTLEMENT_DATA_"
SPAN = "startTime=20000101T000000Z&endTime=20991231T000000Z"


LONG_PERIOD = 31 * DAY


@pytest.fixture
async def manual(client: SignedClient) -> None:
    """Periods as long as they go, so no period ends on its own inside a test that closes them
    by hand (a daily boundary could otherwise fall inside a 31 s clock advance)."""
    reply = await client.control("POST", "/settlement", {"periodSeconds": LONG_PERIOD})
    assert reply.status == 200


async def _captured(client: SignedClient, amount: str = "100.00") -> dict[str, Any]:
    return await purchase(client, intent="AuthorizeWithCapture", amount=usd(amount))


async def _close(client: SignedClient, **body: Any) -> dict[str, Any]:
    reply = await client.control("POST", "/settlement/close", body)
    assert reply.status == 200, reply.body
    result: dict[str, Any] = reply.body
    return result


async def _rows(client: SignedClient, emu: RunningEmulator, doc_id: str) -> list[dict[str, str]]:
    """The document's body rows, read with the emulator's own column line (no service code)."""
    reply = await client.call("GET", f"/report-documents/{doc_id}")
    assert reply.status == 200, reply.body
    async with client.session.get(reply.body["url"]) as resp:
        assert resp.status == 200
        assert resp.headers["content-type"].startswith("text/csv")
        text = await resp.text()
    lines = text.splitlines()
    names = json.loads("[" + lines[2] + "]")
    return [dict(zip(names, json.loads("[" + line + "]"), strict=True)) for line in lines[3:]]


def test_the_emulator_writes_the_columns_and_report_types_the_service_reads() -> None:
    assert EMULATOR_HEADER_COLUMNS == HEADER_COLUMNS
    assert EMULATOR_BODY_COLUMNS == BODY_COLUMNS
    assert SETTLEMENT_REPORT_TYPES == {
        Environment.SANDBOX: SANDBOX_SETTLEMENT,
        Environment.LIVE: LIVE_SETTLEMENT,
    }


async def test_periods_close_on_the_emulator_clock_and_settle_each_transaction_once(
    client: SignedClient, emu: RunningEmulator
) -> None:
    first = await _captured(client)
    await advance(client, DAY)
    settlements = (await client.control("GET", "/settlement")).body["settlements"]
    assert len(settlements) == 1
    (period,) = settlements
    rows = await _rows(client, emu, period["reportDocumentId"])
    assert [(r["TransactionType"], r["AmazonTransactionId"]) for r in rows] == [
        ("Capture", first["chargeId"])
    ]
    await advance(client, 3 * DAY)
    assert len((await client.control("GET", "/settlement")).body["settlements"]) == 1
    second = await _captured(client, "50.00")
    closed = await _close(client)
    assert closed["lines"] == 1
    rows = await _rows(client, emu, closed["reportDocumentId"])
    assert [r["AmazonTransactionId"] for r in rows] == [second["chargeId"]]
    assert closed["startTime"] <= closed["endTime"]
    assert (await _close(client))["lines"] == 0


async def test_the_fee_rule_is_percentage_plus_fixed_per_capture_and_none_on_refunds(
    client: SignedClient, emu: RunningEmulator, manual: None
) -> None:
    done = await _captured(client, "33.33")
    refund = await client.call(
        "POST", "/refunds", {"chargeId": done["chargeId"], "refundAmount": usd("3.33")}
    )
    await advance(client, 31)
    closed = await _close(client)
    capture, refunded = await _rows(client, emu, closed["reportDocumentId"])
    assert capture["TransactionPercentageFee"] == "-0.97"
    assert capture["TransactionFixedFee"] == "-0.30"
    assert (capture["TotalTransactionFee"], capture["NetTransactionAmount"]) == ("-1.27", "32.06")
    assert refunded["AmazonTransactionId"] == refund.body["refundId"]
    assert (refunded["TransactionAmount"], refunded["TotalTransactionFee"]) == ("-3.33", "0.00")
    disbursements = closed["disbursements"]
    assert [(d["amount"], d["currencyCode"]) for d in disbursements] == [("28.73", "USD")]


async def test_a_refund_still_pending_at_the_close_settles_in_the_next_period(
    client: SignedClient, emu: RunningEmulator, manual: None
) -> None:
    done = await _captured(client)
    refund = await client.call(
        "POST", "/refunds", {"chargeId": done["chargeId"], "refundAmount": usd("5.00")}
    )
    first = await _close(client)
    await advance(client, 31)
    second = await _close(client)
    rows = await _rows(client, emu, second["reportDocumentId"])
    assert first["lines"] == 1
    assert [r["AmazonTransactionId"] for r in rows] == [refund.body["refundId"]]


async def test_faults_skip_a_refund_and_alter_an_amount(
    client: SignedClient, emu: RunningEmulator, manual: None
) -> None:
    done = await _captured(client)
    skipped, kept = [
        (
            await client.call(
                "POST", "/refunds", {"chargeId": done["chargeId"], "refundAmount": usd(amount)}
            )
        ).body["refundId"]
        for amount in ("5.00", "6.00")
    ]
    assert (
        await client.control("POST", "/settlement/faults", {"skipRefund": skipped})
    ).status == 201
    altered = {"alterAmount": {"transactionId": done["chargeId"], "amount": "99.00"}}
    assert (await client.control("POST", "/settlement/faults", altered)).status == 201
    await advance(client, 31)
    rows = await _rows(client, emu, (await _close(client))["reportDocumentId"])
    by_id = {r["AmazonTransactionId"]: r for r in rows}
    assert set(by_id) == {done["chargeId"], kept}
    assert (
        by_id[done["chargeId"]]["TransactionAmount"],
        by_id[done["chargeId"]]["NetTransactionAmount"],
    ) == (
        "99.00",
        "95.80",
    )
    later = await _close(client)
    assert later["lines"] == 0
    faults = (await client.control("GET", "/settlement/faults")).body
    assert faults == {"skipRefund": [skipped], "alterAmount": {done["chargeId"]: "99.00"}}
    bad = await client.control(
        "POST", "/settlement/faults", {"alterAmount": {"transactionId": "x", "amount": "ten"}}
    )
    assert bad.status == 400


async def test_periods_are_per_merchant_and_environment(
    client: SignedClient,
    emu: RunningEmulator,
    key_pair: tuple[rsa.RSAPrivateKey, str],
    manual: None,
) -> None:
    await _captured(client)
    emu.emulator.add_key("OTHER-KEY", key_pair[1], "A3OTHERMERCHANT")
    other = SignedClient(client.session, emu.url, key_pair[0], "OTHER-KEY")
    await _captured(other, "7.00")
    mine = await _close(client)
    theirs = await _close(client, merchantId="A3OTHERMERCHANT")
    assert (mine["lines"], theirs["lines"]) == (1, 1)
    reply = await other.call("GET", f"/reports/{mine['reportId']}")
    assert (reply.status, reply.body["reasonCode"]) == (404, "ResourceNotFound")
    live = SignedClient(client.session, emu.url, key_pair[0], "OTHER-KEY", prefix="/live/v2")
    assert (await live.call("GET", f"/reports/{theirs['reportId']}")).status == 404


async def test_get_reports_filters_and_refuses_bad_parameters(
    client: SignedClient, emu: RunningEmulator
) -> None:
    closed = await _close(client)
    query = f"reportTypes={SANDBOX_SETTLEMENT}&processingStatuses=COMPLETED,FAILED"
    reply = await client.call("GET", "/reports", query=query)
    assert [r["reportId"] for r in reply.body["reports"]] == [closed["reportId"]]
    assert reply.body["reports"][0]["processingStatus"] == "COMPLETED"
    none = await client.call("GET", "/reports", query="processingStatuses=FAILED")
    assert none.body == {"reports": []}
    future = await client.call("GET", "/reports", query="createdSince=2099-01-01T00:00:00Z")
    assert future.body == {"reports": []}
    for bad in (
        "reportTypes=_NOPE_",
        "pageSize=0",
        "createdSince=yesterday",
        "nextToken=garbage",
        "unknown=1",
        "pageSize=1&pageSize=2",
    ):
        refused = await client.call("GET", "/reports", query=bad)
        assert (refused.status, refused.body["reasonCode"]) == (400, "InvalidParameterValue"), bad
    java = await client.call("GET", "/reports/", query=query)
    assert java.status == 200


async def test_a_query_signed_for_other_parameters_is_refused(client: SignedClient) -> None:
    from emulator.testing import sign_headers

    headers = sign_headers(
        client.private_key, client.public_key_id, "GET", "/sandbox/v2/reports", query="pageSize=5"
    )
    async with client.session.get(
        f"{client.base_url}/sandbox/v2/reports?pageSize=6", headers=headers
    ) as resp:
        body = await resp.json()
    assert (resp.status, body["reasonCode"]) == (403, "InvalidRequestSignature")


async def test_create_report_validates_and_cancels_a_span_without_data(
    client: SignedClient, emu: RunningEmulator
) -> None:
    span = {"startTime": "20000101T000000Z", "endTime": "20000102T000000Z"}
    created = await client.call("POST", "/reports", {"reportType": SANDBOX_SETTLEMENT, **span})
    assert created.status == 201
    await advance(client, 30)
    report = await client.call("GET", f"/reports/{created.body['reportId']}")
    assert (report.body["processingStatus"], report.body["reportDocumentId"]) == ("CANCELLED", None)
    for body, code in (
        ({"reportType": "_GET_FLAT_FILE_OFFAMAZONPAYMENTS_SETTLEMENT_DATA_", **span}, 400),
        (
            {
                "reportType": SANDBOX_SETTLEMENT,
                "startTime": "20000102T000000Z",
                "endTime": "20000101T000000Z",
            },
            400,
        ),
        ({"reportType": SANDBOX_SETTLEMENT, **span, "extra": 1}, 400),
        ({"reportType": SANDBOX_SETTLEMENT}, 400),
    ):
        assert (await client.call("POST", "/reports", body)).status == code, body
    assert (await client.call("GET", "/reports/50000000999")).status == 404
    assert (await client.call("GET", "/report-documents/amzn1.nothing")).status == 404


async def test_a_schedule_creates_reports_on_the_clock_until_cancelled(
    client: SignedClient, emu: RunningEmulator
) -> None:
    body = {"reportType": SANDBOX_SETTLEMENT, "scheduleFrequency": "P1D"}
    created = await client.call("POST", "/report-schedules", body)
    assert created.status == 201
    schedule_id = created.body["reportScheduleId"]
    duplicate = await client.call("POST", "/report-schedules", body)
    assert duplicate.status == 409
    replaced = await client.call(
        "POST", "/report-schedules", {**body, "deleteExistingSchedule": True}
    )
    assert replaced.status == 201
    assert (await client.call("GET", f"/report-schedules/{schedule_id}")).status == 404
    schedule_id = replaced.body["reportScheduleId"]
    listed = await client.call(
        "GET", "/report-schedules", query=f"reportTypes={SANDBOX_SETTLEMENT}"
    )
    assert [s["reportScheduleId"] for s in listed.body["reportSchedules"]] == [schedule_id]
    await advance(client, 1)
    await _captured(client)
    await advance(client, 2 * DAY + 60)
    reports = (await client.call("GET", "/reports", query="pageSize=100")).body["reports"]
    periods = {
        s["reportId"] for s in (await client.control("GET", "/settlement")).body["settlements"]
    }
    runs = sorted(
        (r for r in reports if r["reportId"] not in periods), key=lambda r: r["createdTime"]
    )
    assert len(periods) == 1
    assert [r["processingStatus"] for r in runs] == ["COMPLETED", "CANCELLED"]
    assert all(r["reportType"] == SANDBOX_SETTLEMENT for r in runs)
    rows = await _rows(client, emu, runs[0]["reportDocumentId"])
    assert [r["TransactionType"] for r in rows] == ["Capture"]
    (schedule,) = (await client.call("GET", "/report-schedules")).body["reportSchedules"]
    assert schedule["nextReportCreationTime"] > runs[1]["createdTime"]
    cancelled = await client.call("DELETE", f"/report-schedules/{schedule_id}")
    assert (cancelled.status, cancelled.body) == (200, {})
    assert (await client.call("GET", f"/report-schedules/{schedule_id}")).status == 404
    bad = await client.call("POST", "/report-schedules", {**body, "scheduleFrequency": "P2W"})
    assert bad.status == 400


async def test_get_disbursements_pages_and_reads_amazons_sample_date_form(
    client: SignedClient,
    manual: None,
) -> None:
    settlement_ids = []
    for _ in range(3):
        await _captured(client, "10.00")
        settlement_ids.append((await _close(client))["settlementId"])
    missing = await client.call("GET", "/disbursements", query="startTime=20000101T000000Z")
    assert (missing.status, missing.body["reasonCode"]) == (400, "MissingParameterValue")
    seen: list[str] = []
    page = await client.call("GET", "/disbursements", query=SPAN + "&pageSize=2")
    while True:
        assert page.status == 200, page.body
        seen.extend(d["settlementId"] for d in page.body["disbursements"])
        token = page.body.get("nextToken")
        if token is None:
            break
        page = await client.call("GET", "/disbursements", query=f"nextToken={token}")
    assert seen == settlement_ids
    sample = await client.call(
        "GET", "/disbursements", query="startTime=2000-08-04T00-00-00Z&endTime=2099-08-04T23-59-59Z"
    )
    assert [d["settlementId"] for d in sample.body["disbursements"]] == settlement_ids
    (first, *_) = sample.body["disbursements"]
    assert set(first) == {
        "sellerId",
        "settlementId",
        "amazonDisbursementReferenceId",
        "amount",
        "currencyCode",
        "transactionTime",
    }
    assert Decimal(first["amount"]) == Decimal("9.41")


async def _ipn_deliveries(client: SignedClient) -> list[dict[str, Any]]:
    deliveries: list[dict[str, Any]] = (await client.control("GET", "/ipn")).body["deliveries"]
    return [d for d in deliveries if d["objectType"] == "CHARGEBACK"]


async def test_a_dispute_opens_updates_and_closes_with_chargeback_ipns_and_lines(
    client: SignedClient, emu: RunningEmulator, manual: None
) -> None:
    await client.control("POST", "/ipn", {"enabled": False})
    await client.control("POST", "/ipn/subscriptions", {"url": "http://127.0.0.1:9/ipn"})
    done = await _captured(client)
    opened = await client.control(
        "POST",
        "/disputes",
        {"chargeId": done["chargeId"], "amount": "40.00", "reason": "ProductNotReceived"},
    )
    assert opened.status == 201, opened.body
    dispute_id = opened.body["disputeId"]
    assert dispute_id.startswith(done["chargePermissionId"] + "-B")
    read = await client.call("GET", f"/disputes/{dispute_id}")
    assert read.status == 200
    assert read.body["statusDetails"]["state"] == "ActionRequired"
    assert read.body["statusDetails"]["reasonCode"] == "MerchantResponseRequired"
    assert (read.body["disputeType"], read.body["filingReason"]) == (
        "Chargeback",
        "ProductNotReceived",
    )
    assert read.body["disputeAmount"] == usd("40.00")
    assert not any(key.startswith("_") for key in read.body)
    (first,) = await _ipn_deliveries(client)
    message = json.loads(first["envelope"]["Message"])
    assert (message["ObjectType"], message["ObjectId"], message["ChargePermissionId"]) == (
        "CHARGEBACK",
        dispute_id,
        done["chargePermissionId"],
    )
    under = await client.control("POST", f"/disputes/{dispute_id}", {"state": "UnderReview"})
    assert under.body["statusDetails"]["state"] == "UnderReview"
    same = await client.control("POST", f"/disputes/{dispute_id}", {"state": "UnderReview"})
    assert same.status == 200
    assert len(await _ipn_deliveries(client)) == 2
    no_resolution = await client.control("POST", f"/disputes/{dispute_id}", {"state": "Resolved"})
    assert no_resolution.status == 400
    won = await client.control(
        "POST", f"/disputes/{dispute_id}", {"state": "Resolved", "resolution": "MerchantWon"}
    )
    assert won.body["statusDetails"]["resolution"] == "MerchantWon"
    closed = await client.control("POST", f"/disputes/{dispute_id}", {"state": "Closed"})
    assert closed.body["statusDetails"] == {
        **closed.body["statusDetails"],
        "state": "Closed",
        "resolution": "MerchantWon",
    }
    final = await client.control("POST", f"/disputes/{dispute_id}", {"state": "ActionRequired"})
    assert (final.status, final.body["reasonCode"]) == (422, "InvalidDisputeStatus")
    assert len(await _ipn_deliveries(client)) == 4
    rows = await _rows(client, emu, (await _close(client))["reportDocumentId"])
    assert [
        (r["TransactionType"], r["AmazonTransactionId"], r["TransactionAmount"]) for r in rows
    ] == [
        ("Capture", done["chargeId"], "100.00"),
        ("Chargeback", dispute_id, "-40.00"),
        ("Adjustment", dispute_id, "40.00"),
    ]


@pytest.mark.parametrize(
    ("body", "status"),
    [
        ({"chargeId": "S01-0000000-0000000-C000000"}, 404),
        ({"chargeId": "{charge}", "amount": "100.01"}, 400),
        ({"chargeId": "{charge}", "amount": "0"}, 400),
        ({"chargeId": "{charge}", "reason": "Bored"}, 400),
        ({"chargeId": "{authorized}"}, 422),
    ],
)
async def test_a_dispute_needs_a_captured_charge_and_a_valid_amount_and_reason(
    client: SignedClient, body: dict[str, str], status: int
) -> None:
    captured = await _captured(client)
    authorized = await purchase(client, intent="Authorize")
    ids = {"{charge}": captured["chargeId"], "{authorized}": authorized["chargeId"]}
    filled = {key: ids.get(value, value) for key, value in body.items()}
    assert (await client.control("POST", "/disputes", filled)).status == status


async def test_a_dispute_is_scoped_to_its_merchant(
    client: SignedClient, emu: RunningEmulator, key_pair: tuple[rsa.RSAPrivateKey, str]
) -> None:
    done = await _captured(client)
    dispute_id = (await client.control("POST", "/disputes", {"chargeId": done["chargeId"]})).body[
        "disputeId"
    ]
    emu.emulator.add_key("OTHER-KEY", key_pair[1], "A3OTHERMERCHANT")
    other = SignedClient(client.session, emu.url, key_pair[0], "OTHER-KEY")
    reply = await other.call("GET", f"/disputes/{dispute_id}")
    assert (reply.status, reply.body["reasonCode"]) == (404, "ResourceNotFound")


async def test_the_settlement_period_is_configurable(client: SignedClient) -> None:
    view = await client.control("POST", "/settlement", {"periodSeconds": 3600})
    assert view.body["periodSeconds"] == 3600
    await _captured(client)
    await advance(client, 3600)
    assert len((await client.control("GET", "/settlement")).body["settlements"]) == 1
    assert (await client.control("POST", "/settlement", {"periodSeconds": 1})).status == 400
