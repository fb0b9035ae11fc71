"""Model parsing/serialisation: decimal-string amounts, timestamps, unknown fields kept."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from service.amazonpay import (
    AmazonPayRequestError,
    Buyer,
    Charge,
    ChargePermission,
    CheckoutSession,
    Disbursement,
    DisbursementList,
    Dispute,
    Price,
    Refund,
    Report,
    ReportDocument,
    ReportList,
    ReportSchedule,
    ReportScheduleList,
    format_timestamp,
    normalize_amount,
    parse_timestamp,
)

SESSION = {
    "checkoutSessionId": "bd504926-f659-4ad7-a1a9-9a747aaf5275",
    "webCheckoutDetail": {"checkoutReviewReturnUrl": "https://a.com/review"},
    "paymentDetails": {"chargeAmount": {"amount": "14.00", "currencyCode": "USD"}},
    "statusDetail": {
        "state": "Open",
        "reasonCode": None,
        "lastUpdatedTimestamp": "20191015T204327Z",
    },
    "constraints": [{"constraintId": "ChargeAmountNotSet", "description": "not set"}],
    "creationTimestamp": "20191015T204313Z",
    "brandNewAmazonField": {"nested": [1, 2, 3]},
}


def test_checkout_session_accepts_the_seed_singular_field_names() -> None:
    session = CheckoutSession.from_json(SESSION)
    assert session is not None
    assert session.state == "Open"
    assert session.web_checkout_details is not None
    assert session.web_checkout_details.checkout_review_return_url == "https://a.com/review"
    assert session.constraints[0].constraint_id == "ChargeAmountNotSet"
    assert session.creation_timestamp == datetime(2019, 10, 15, 20, 43, 13, tzinfo=UTC)


def test_unknown_fields_survive_in_raw_and_in_to_json() -> None:
    session = CheckoutSession.from_json(SESSION)
    assert session is not None
    assert session.raw["brandNewAmazonField"] == {"nested": [1, 2, 3]}
    out = session.to_json()
    assert out["brandNewAmazonField"] == {"nested": [1, 2, 3]}
    json.dumps(out)


def test_json_number_amounts_become_decimal_strings() -> None:
    charge = Charge.from_json({"chargeAmount": {"amount": 14.5, "currencyCode": "EUR"}})
    assert charge is not None
    assert charge.charge_amount is not None
    assert charge.charge_amount.amount == "14.5"
    assert isinstance(charge.charge_amount.amount, str)
    refund = Refund.from_json({"refundAmount": {"amount": 1000, "currencyCode": "JPY"}})
    assert refund is not None
    assert refund.refund_amount is not None
    assert refund.refund_amount.amount == "1000"


def test_unusable_price_is_dropped_but_kept_in_raw() -> None:
    charge = Charge.from_json({"chargeAmount": {"amount": "abc", "currencyCode": "EUR"}})
    assert charge is not None
    assert charge.charge_amount is None
    assert charge.raw["chargeAmount"]["amount"] == "abc"


def test_charge_permission_reasons_list_and_unknown_reason_codes_are_strings() -> None:
    permission = ChargePermission.from_json(
        {
            "chargePermissionId": "S01-5105180-3221187",
            "statusDetails": {
                "state": "NonChargeable",
                "reasons": [
                    {"reasonCode": "PaymentMethodInvalid", "reasonDescription": "x"},
                    {"reasonCode": "SomethingAmazonInventedTomorrow"},
                ],
            },
        }
    )
    assert permission is not None
    assert permission.status_details is not None
    assert permission.status_details.reason_codes == (
        "PaymentMethodInvalid",
        "SomethingAmazonInventedTomorrow",
    )


def test_price_refuses_floats_and_non_decimals_from_callers() -> None:
    with pytest.raises(AmazonPayRequestError):
        Price(amount=1.5, currency_code="USD")  # type: ignore[arg-type]
    with pytest.raises(AmazonPayRequestError):
        Price.of("1,50", "EUR")
    assert Price.of(Decimal("10.50"), "EUR").amount == "10.50"
    assert Price.of(7, "JPY").to_json() == {"amount": "7", "currencyCode": "JPY"}


@given(st.decimals(min_value=0, max_value=10_000_000, places=2, allow_nan=False))
def test_amount_normalisation_preserves_the_decimal_value(value: Decimal) -> None:
    assert Decimal(normalize_amount(value)) == value
    assert Decimal(normalize_amount(float(value), allow_float=True)) == Decimal(repr(float(value)))


@pytest.mark.parametrize(
    "text",
    [
        "20191015T204313Z",
        "2019-10-15T20:43:13Z",
        "2019-10-15T20:43:13.000Z",
        "2019-10-15T22:43:13+02:00",
    ],
)
def test_timestamps_in_compact_and_iso_forms_parse_to_the_same_aware_instant(text: str) -> None:
    assert parse_timestamp(text) == datetime(2019, 10, 15, 20, 43, 13, tzinfo=UTC)


@pytest.mark.parametrize("text", [None, "", "yesterday", "20191315T204313Z", 42])
def test_unreadable_timestamps_become_none(text: object) -> None:
    assert parse_timestamp(text) is None


@given(st.datetimes(min_value=datetime(2000, 1, 1), max_value=datetime(2100, 1, 1)))
def test_compact_timestamp_round_trips(value: datetime) -> None:
    value = value.replace(microsecond=0, tzinfo=UTC)
    assert parse_timestamp(format_timestamp(value)) == value


def test_buyer_and_address_reprs_hide_personal_data() -> None:
    buyer = Buyer.from_json(
        {
            "buyerId": "amzn1.account.B1",
            "name": "Susie Smith",
            "email": "susie@example.com",
            "shippingAddress": {"name": "Susie Smith", "city": "Chicago", "countryCode": "US"},
        }
    )
    assert buyer is not None
    session = CheckoutSession.from_json(
        {"buyer": buyer.raw, "shippingAddress": buyer.raw["shippingAddress"]}
    )
    for text in (repr(buyer), repr(buyer.shipping_address), repr(session)):
        assert "Susie" not in text
        assert "susie@example.com" not in text
        assert "Chicago" not in text
    assert buyer.name == "Susie Smith"


def test_get_disbursements_answer_from_amazons_example_reads_every_field() -> None:
    # amazon-pay-reports/request-disbursement-details.html, "Response"
    answer = DisbursementList.from_json(
        {
            "disbursements": [
                {
                    "sellerId": "A084390EXAMPLE",
                    "settlementId": "68973459224",
                    "amazonDisbursementReferenceId": "The Identifier used on your bank statement",
                    "amount": "1000.50",
                    "currencyCode": "USD",
                    "transactionTime": "2022-12-07T17:08:26.717Z",
                }
            ]
        }
    )
    assert answer is not None
    (disbursement,) = answer.disbursements
    assert (disbursement.settlement_id, disbursement.amount, disbursement.currency_code) == (
        "68973459224",
        "1000.50",
        "USD",
    )
    assert disbursement.transaction_time == datetime(2022, 12, 7, 17, 8, 26, 717000, tzinfo=UTC)
    assert answer.next_token is None
    negative = Disbursement.from_json({"amount": "-3.20"})
    assert negative is not None
    assert negative.amount == "-3.20"
    unusable = Disbursement.from_json({"amount": "1e9"})
    assert unusable is not None
    assert unusable.amount is None


def test_get_dispute_answer_reads_the_documented_dispute_object() -> None:
    # amazon-pay-api-v2/dispute.html, "Dispute object"
    dispute = Dispute.from_json(
        {
            "disputeId": "P01-1111111-1111111-B123456",
            "chargeId": "P01-1111111-1111111-C123456",
            "disputeType": "Chargeback",
            "disputeAmount": {"amount": "400", "currencyCode": "USD"},
            "filingReason": "Fraudulent",
            "statusDetails": {
                "state": "Resolved",
                "reasonCode": "InvestigatorResolved",
                "reasonDescription": "resolved",
                "resolution": "MerchantWon",
                "lastUpdatedTimestamp": "20250101T000000Z",
            },
            "merchantEvidences": [{"evidenceType": "TrackingNumber", "evidenceText": "1Z"}],
            "merchantResponseDeadline": "20250112T000000Z",
            "resolutionAuthority": "AmazonPay",
            "creationTimestamp": "20250101T000000Z",
            "releaseEnvironment": "Live",
        }
    )
    assert dispute is not None
    assert dispute.state == "Resolved"
    assert dispute.status_details is not None
    assert dispute.status_details.resolution == "MerchantWon"
    assert dispute.dispute_amount == Price.of("400", "USD")
    assert dispute.merchant_evidences[0].evidence_type == "TrackingNumber"
    assert dispute.to_json()["disputeAmount"] == {"amount": "400", "currencyCode": "USD"}


def test_report_answers_read_the_report_document_and_schedule_objects() -> None:
    page = ReportList.from_json(
        {
            "reports": [
                {
                    "reportId": "1234567890",
                    "reportType": "_GET_FLAT_FILE_OFFAMAZONPAYMENTS_SANDBOX_SETTLEMENT_DATA_",
                    "startTime": "20221114T074550Z",
                    "endTime": "20221115T074550Z",
                    "createdTime": "20221115T074550Z",
                    "processingStatus": "COMPLETED",
                    "processingStartTime": "20221115T074550Z",
                    "processingEndTime": "20221115T074650Z",
                    "reportDocumentId": "amzn1.tortuga.0.doc",
                }
            ],
            "nextToken": "page-2",
        }
    )
    assert page is not None
    assert page.next_token == "page-2"
    (report,) = page.reports
    assert (report.processing_status, report.report_document_id) == (
        "COMPLETED",
        "amzn1.tortuga.0.doc",
    )
    assert report.end_time == datetime(2022, 11, 15, 7, 45, 50, tzinfo=UTC)
    document = ReportDocument.from_json(
        {"reportDocumentId": "d", "url": "https://s3/x", "compressionAlgorithm": "N/A"}
    )
    assert document is not None
    assert document.compression_algorithm == "N/A"
    schedules = ReportScheduleList.from_json(
        {
            "reportSchedules": [
                {
                    "reportScheduleId": "9",
                    "reportType": "_GET_FLAT_FILE_OFFAMAZONPAYMENTS_SANDBOX_SETTLEMENT_DATA_",
                    "scheduleFrequency": "P1D",
                    "nextReportCreationTime": "20241001T000000Z",
                }
            ]
        }
    )
    assert schedules is not None
    assert schedules.report_schedules[0].schedule_frequency == "P1D"
    assert Report.from_json({"reportId": "42"}) == Report(report_id="42")
    assert ReportSchedule.from_json({"reportScheduleId": "7"}) == ReportSchedule(
        report_schedule_id="7"
    )
