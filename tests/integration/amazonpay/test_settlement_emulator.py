"""Settlement over real HTTPS: the client lists reports, fetches the pre-signed document,
streams and parses it, pages through reports and reads disbursements and disputes."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import aiohttp
import pytest
from cryptography.hazmat.primitives import serialization

from emulator import EmulatorConfig, RunningEmulator, run_emulator
from emulator.testing import SignedClient, generate_key
from service.amazonpay import (
    AmazonPayClient,
    AmazonPayError,
    DisbursementList,
    Dispute,
    MerchantAccount,
    PrivateKey,
    Report,
    ReportDocument,
    ReportList,
    parse_settlement_report,
)
from tests.integration.emulator._flows import advance, purchase, usd

KEY_ID = "AHSETTLEMENTKEY"
SANDBOX_SETTLEMENT = "_GET_FLAT_FILE_OFFAMAZONPAYMENTS_SANDBOX_SETTLEMENT_DATA_"
SPAN = {"startTime": "20000101T000000Z", "endTime": "20991231T000000Z"}


@dataclass
class Setup:
    emulator: RunningEmulator
    client: AmazonPayClient
    signed: SignedClient
    """The emulator's own signer over plain HTTP, and its control plane, to make traffic."""


@pytest.fixture
async def setup() -> AsyncIterator[Setup]:
    key, public_pem = generate_key()
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    async with run_emulator(EmulatorConfig(keys={KEY_ID: public_pem}), tls_port=0) as running:
        assert running.tls_url is not None
        account = MerchantAccount(
            public_key_id=KEY_ID,
            private_key=PrivateKey.from_pem(pem),
            endpoint=running.tls_url,
            ca_file=str(running.ca_file),
        )
        async with aiohttp.ClientSession() as http, AmazonPayClient(account) as client:
            signed = SignedClient(http, running.url, key, KEY_ID)
            # Periods closed by hand only: no boundary of its own inside a test's clock advance.
            longest = await signed.control("POST", "/settlement", {"periodSeconds": 31 * 86_400})
            assert longest.status == 200
            yield Setup(running, client, signed)


async def _close(setup: Setup) -> dict[str, Any]:
    reply = await setup.signed.control("POST", "/settlement/close", {})
    assert reply.status == 200, reply.body
    body: dict[str, Any] = reply.body
    return body


async def test_a_closed_period_streams_and_parses_over_https_with_the_documented_fees(
    setup: Setup,
) -> None:
    done = await purchase(setup.signed, intent="AuthorizeWithCapture")
    refund = await setup.signed.call(
        "POST", "/refunds", {"chargeId": done["chargeId"], "refundAmount": usd("10.00")}
    )
    dispute = await setup.signed.control(
        "POST", "/disputes", {"chargeId": done["chargeId"], "amount": "20.00"}
    )
    await advance(setup.signed, 31)
    closed = await _close(setup)

    listed = await setup.client.invoke("GetReports", query={"reportTypes": SANDBOX_SETTLEMENT})
    assert isinstance(listed, ReportList)
    (report,) = listed.reports
    assert (report.report_id, report.processing_status) == (closed["reportId"], "COMPLETED")
    assert report.report_document_id is not None
    document = await setup.client.invoke(
        "GetReportDocument", path_params={"reportDocumentId": report.report_document_id}
    )
    assert isinstance(document, ReportDocument)
    assert document.url is not None
    assert document.url.startswith(f"{setup.emulator.tls_url}/")
    header, lines = await parse_settlement_report(
        setup.client.stream_report_document(document.url, chunk_size=64)
    )
    rows = [line async for line in lines]

    assert header.seller_id == setup.emulator.emulator.config.merchant_id
    by_type = {line.transaction_type: line for line in rows}
    assert set(by_type) == {"Capture", "Refund", "Chargeback"}
    capture = by_type["Capture"]
    assert (capture.amazon_transaction_id, capture.amount, capture.fee, capture.net) == (
        done["chargeId"],
        Decimal("100.00"),
        Decimal("-3.20"),
        Decimal("96.80"),
    )
    assert (capture.raw["TransactionPercentageFee"], capture.raw["TransactionFixedFee"]) == (
        "-2.90",
        "-0.30",
    )
    assert capture.raw["AmazonOrderReferenceId"] == done["chargePermissionId"]
    assert (by_type["Refund"].amazon_transaction_id, by_type["Refund"].amount) == (
        refund.body["refundId"],
        Decimal("-10.00"),
    )
    assert (by_type["Chargeback"].amazon_transaction_id, by_type["Chargeback"].net) == (
        dispute.body["disputeId"],
        Decimal("-20.00"),
    )
    assert {line.settlement_id for line in rows} == {closed["settlementId"]}
    assert all(header.settlement_start <= line.posted_at <= header.settlement_end for line in rows)

    paid = await setup.client.invoke("GetDisbursements", query=SPAN)
    assert isinstance(paid, DisbursementList)
    (disbursement,) = paid.disbursements
    assert disbursement.settlement_id == closed["settlementId"]
    assert disbursement.amount is not None
    assert Decimal(disbursement.amount) == sum((line.net for line in rows), Decimal(0))

    read = await setup.client.invoke(
        "GetDispute", path_params={"disputeId": dispute.body["disputeId"]}
    )
    assert isinstance(read, Dispute)
    assert (read.charge_id, read.state, read.dispute_amount) == (
        done["chargeId"],
        "ActionRequired",
        read.dispute_amount,
    )
    assert read.dispute_amount is not None
    assert read.dispute_amount.amount == "20.00"


async def test_the_document_url_is_valid_for_30_seconds_of_the_emulator_clock(
    setup: Setup,
) -> None:
    closed = await _close(setup)
    document = await setup.client.invoke(
        "GetReportDocument", path_params={"reportDocumentId": closed["reportDocumentId"]}
    )
    assert isinstance(document, ReportDocument)
    assert document.url is not None
    tampered = document.url[:-4] + ("0000" if not document.url.endswith("0000") else "1111")
    with pytest.raises(AmazonPayError) as forged:
        await anext(setup.client.stream_report_document(tampered))
    assert (forged.value.http_status, forged.value.reason_code) == (403, "SignatureDoesNotMatch")
    await advance(setup.signed, 31)
    with pytest.raises(AmazonPayError) as expired:
        await anext(setup.client.stream_report_document(document.url))
    assert (expired.value.http_status, expired.value.reason_code) == (403, "AccessDenied")
    assert "X-Amz-Signature" not in str(expired.value)
    fresh = await setup.client.invoke(
        "GetReportDocument", path_params={"reportDocumentId": closed["reportDocumentId"]}
    )
    assert isinstance(fresh, ReportDocument)
    assert fresh.url is not None
    header, lines = await parse_settlement_report(setup.client.stream_report_document(fresh.url))
    assert [line async for line in lines] == []
    assert header.seller_id


async def test_get_reports_pages_with_next_token_newest_first(setup: Setup) -> None:
    ids = [(await _close(setup))["reportId"] for _ in range(5)]
    seen: list[str] = []
    page = await setup.client.invoke("GetReports", query={"pageSize": "2"})
    while True:
        assert isinstance(page, ReportList)
        assert len(page.reports) <= 2
        seen.extend(report.report_id or "" for report in page.reports)
        if page.next_token is None:
            break
        page = await setup.client.invoke("GetReports", query={"nextToken": page.next_token})
    assert sorted(seen) == sorted(ids)
    assert seen == sorted(ids, key=int, reverse=True)
    with pytest.raises(AmazonPayError) as refused:
        await setup.client.invoke("GetReports", query={"pageSize": "101"})
    assert (refused.value.http_status, refused.value.reason_code) == (400, "InvalidParameterValue")


async def test_a_requested_report_is_in_progress_until_processed_then_completed(
    setup: Setup,
) -> None:
    await purchase(setup.signed, intent="AuthorizeWithCapture")
    await _close(setup)
    created = await setup.client.invoke(
        "CreateReport",
        body={"reportType": SANDBOX_SETTLEMENT, **SPAN},
        idempotency_key="create-report-1",
    )
    assert isinstance(created, Report)
    assert created.report_id is not None
    again = await setup.client.invoke(
        "CreateReport",
        body={"reportType": SANDBOX_SETTLEMENT, **SPAN},
        idempotency_key="create-report-1",
    )
    assert isinstance(again, Report)
    assert again.report_id == created.report_id
    first = await setup.client.invoke("GetReportById", path_params={"reportId": created.report_id})
    assert isinstance(first, Report)
    assert (first.processing_status, first.report_document_id) == ("IN_PROGRESS", None)
    await advance(setup.signed, 30)
    done = await setup.client.invoke("GetReportById", path_params={"reportId": created.report_id})
    assert isinstance(done, Report)
    assert done.processing_status == "COMPLETED"
    assert done.report_document_id is not None
    with pytest.raises(AmazonPayError) as refused:
        await setup.client.invoke(
            "CreateReport",
            body={"reportType": "_GET_FLAT_FILE_OFFAMAZONPAYMENTS_CAPTURE_DATA_", **SPAN},
            idempotency_key="create-report-2",
        )
    assert refused.value.http_status == 400
