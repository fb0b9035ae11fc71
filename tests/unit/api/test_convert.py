from __future__ import annotations

from datetime import UTC, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from payments.amazonpay.v1 import (
    charge_pb2,
    charge_permission_pb2,
    checkout_session_pb2,
    common_pb2,
)
from service.amazonpay import parse_timestamp
from service.api._convert import (
    enum_from_amazon,
    enum_to_amazon,
    json_to_message,
    message_to_json,
)

CHARGE_JSON = {
    "chargeId": "S01-1234567-1234567-C123456",
    "chargePermissionId": "S01-1234567-1234567",
    "chargeAmount": {"amount": 14, "currencyCode": "USD"},
    "captureAmount": {"amount": "14.00", "currencyCode": "USD"},
    "softDescriptor": "SHOP",
    "chargeInitiator": "CITU",
    "statusDetails": {
        "state": "AuthorizationInitiated",
        "reasonCode": None,
        "lastUpdatedTimestamp": "20191015T204313Z",
    },
    "creationTimestamp": "20191015T204313Z",
    "expirationTimestamp": "2019-11-14T20:43:13Z",
    "releaseEnvironment": "Sandbox",
    "someFieldAmazonAddsNextYear": {"x": 1},
}


def test_amazon_charge_becomes_a_typed_charge() -> None:
    charge = json_to_message(CHARGE_JSON, charge_pb2.Charge())
    assert charge.charge_id == "S01-1234567-1234567-C123456"
    assert charge.charge_amount.amount == "14"
    assert charge.capture_amount.amount == "14.00"
    assert charge.charge_initiator == charge_pb2.CHARGE_INITIATOR_CITU
    assert charge.raw_charge_initiator == "CITU"
    assert charge.status_details.state == charge_pb2.CHARGE_STATE_AUTHORIZATION_INITIATED
    assert charge.status_details.raw_state == "AuthorizationInitiated"
    assert charge.status_details.last_updated_timestamp.ToDatetime(tzinfo=UTC) == datetime(
        2019, 10, 15, 20, 43, 13, tzinfo=UTC
    )
    assert charge.expiration_timestamp.ToDatetime(tzinfo=UTC).day == 14


def test_an_unknown_state_keeps_the_raw_string_and_an_unspecified_enum() -> None:
    charge = json_to_message(
        {"statusDetails": {"state": "PartiallyCapturedSomeday", "reasonCode": "NewReason"}},
        charge_pb2.Charge(),
    )
    assert charge.status_details.state == charge_pb2.CHARGE_STATE_UNSPECIFIED
    assert charge.status_details.raw_state == "PartiallyCapturedSomeday"
    assert charge.status_details.reason_code == common_pb2.REASON_CODE_UNSPECIFIED
    assert charge.status_details.raw_reason_code == "NewReason"


def test_singular_detail_spellings_from_the_seed_pages_are_read() -> None:
    session = json_to_message(
        {"statusDetail": {"state": "Open"}, "webCheckoutDetail": {"amazonPayRedirectUrl": "u"}},
        checkout_session_pb2.CheckoutSession(),
    )
    assert session.status_details.state == checkout_session_pb2.CHECKOUT_SESSION_STATE_OPEN
    assert session.web_checkout_details.amazon_pay_redirect_url == "u"


def test_charge_permission_reasons_map_each_code() -> None:
    cp = json_to_message(
        {
            "statusDetails": {
                "state": "NonChargeable",
                "reasons": [{"reasonCode": "MFAFailed", "reasonDescription": "d"}],
            },
            "limits": {"amountLimit": {"amount": "10.00", "currencyCode": "EUR"}},
        },
        charge_permission_pb2.ChargePermission(),
    )
    assert cp.status_details.reasons[0].reason_code == common_pb2.REASON_CODE_MFA_FAILED
    assert cp.limits.amount_limit.currency_code == "EUR"


def test_a_request_becomes_amazon_json_without_envelope_fields() -> None:
    request = charge_pb2.CreateChargeRequest(
        merchant="eu",
        idempotency_key="k",
        charge_permission_id="S01-1234567-1234567",
        charge_amount=common_pb2.Price(amount="10.00", currency_code="USD"),
        capture_now=False,
        charge_initiator=charge_pb2.CHARGE_INITIATOR_MITU,
    )
    body = message_to_json(request, skip={"merchant", "idempotency_key"})
    assert body == {
        "chargePermissionId": "S01-1234567-1234567",
        "chargeAmount": {"amount": "10.00", "currencyCode": "USD"},
        "captureNow": False,
        "chargeInitiator": "MITU",
    }


def test_an_update_mask_keeps_only_named_fields() -> None:
    request = checkout_session_pb2.UpdateCheckoutSessionRequest(
        checkout_session_id="x",
        payment_details=checkout_session_pb2.PaymentDetails(
            payment_intent=checkout_session_pb2.PAYMENT_INTENT_AUTHORIZE_WITH_CAPTURE
        ),
        merchant_metadata=common_pb2.MerchantMetadata(merchant_reference_id="order-1"),
    )
    assert message_to_json(request, only={"payment_details"}) == {
        "paymentDetails": {"paymentIntent": "AuthorizeWithCapture"}
    }


@given(st.sampled_from(list(charge_pb2.ChargeState.values())[1:]))
def test_every_known_state_round_trips_through_its_amazon_spelling(number: int) -> None:
    descriptor = charge_pb2.DESCRIPTOR.enum_types_by_name["ChargeState"]
    text = enum_to_amazon(descriptor, number)
    assert text is not None
    assert enum_from_amazon(descriptor, text) == number


@given(st.sampled_from(list(common_pb2.ReasonCode.values())[1:]))
def test_every_reason_code_round_trips(number: int) -> None:
    descriptor = common_pb2.DESCRIPTOR.enum_types_by_name["ReasonCode"]
    text = enum_to_amazon(descriptor, number)
    assert text is not None
    assert enum_from_amazon(descriptor, text) == number


@given(st.datetimes(min_value=datetime(2000, 1, 1), max_value=datetime(2100, 1, 1)))
def test_compact_timestamps_round_trip(moment: datetime) -> None:
    moment = moment.replace(microsecond=0, tzinfo=UTC)
    assert parse_timestamp(moment.strftime("%Y%m%dT%H%M%SZ")) == moment
    assert parse_timestamp(moment.strftime("%Y-%m-%dT%H:%M:%SZ")) == moment
    charge = json_to_message(
        {"chargeId": "C1", "creationTimestamp": moment.strftime("%Y%m%dT%H%M%SZ")},
        charge_pb2.Charge(),
    )
    assert charge.creation_timestamp.ToDatetime(tzinfo=UTC) == moment


@pytest.mark.parametrize("value", ["20191301T000000Z", "yesterday", "2019-10-15T25:00:00Z", 7])
def test_an_unreadable_amazon_timestamp_leaves_the_field_unset(value: object) -> None:
    charge = json_to_message({"chargeId": "C1", "creationTimestamp": value}, charge_pb2.Charge())
    assert charge.charge_id == "C1"
    assert not charge.HasField("creation_timestamp")


def test_compact_timestamp_with_milliseconds_is_read() -> None:
    charge = json_to_message(
        {"chargeId": "C1", "creationTimestamp": "20191015T204313.250Z"}, charge_pb2.Charge()
    )
    assert charge.creation_timestamp.ToDatetime(tzinfo=UTC) == datetime(
        2019, 10, 15, 20, 43, 13, 250000, tzinfo=UTC
    )


@given(
    st.datetimes(
        min_value=datetime(1, 1, 1),
        max_value=datetime(9999, 12, 31, 23, 59, 59, 999999),
        timezones=st.just(UTC),
    )
)
def test_a_timestamp_converts_as_timestamp_from_datetime_does(moment: datetime) -> None:
    """The cached conversion (seconds and nanos set directly) agrees with protobuf's own
    `FromDatetime` over the whole range, before 1970 included, in the compact and ISO forms."""
    for text, meant in (
        (f"{moment.year:04d}{moment:%m%dT%H%M%S}Z", moment.replace(microsecond=0)),
        (moment.isoformat().replace("+00:00", "Z"), moment),
    ):
        expected = charge_pb2.Charge()
        expected.creation_timestamp.FromDatetime(meant)
        charge = json_to_message({"creationTimestamp": text}, charge_pb2.Charge())
        assert charge.creation_timestamp == expected.creation_timestamp, text


@pytest.mark.parametrize(
    "text", ["not a time", "2019-13-40T99:99:99Z", "2" * 65, "20191015T2043Zx"]
)
def test_text_that_is_no_timestamp_leaves_the_field_unset(text: str) -> None:
    charge = json_to_message({"creationTimestamp": text}, charge_pb2.Charge())
    assert not charge.HasField("creation_timestamp")
