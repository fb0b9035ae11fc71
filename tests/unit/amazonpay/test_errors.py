"""Error answers become AmazonPayError with plain-string reason codes."""

from __future__ import annotations

from service.amazonpay import (
    AmazonPayConnectionError,
    AmazonPayDeadlineExceeded,
    AmazonPayError,
    AmazonPayRequestError,
    AmazonPayTimeoutError,
)


def test_documented_error_body_is_parsed() -> None:
    error = AmazonPayError.from_response(
        status=422,
        body=b'{"reasonCode":"InvalidChargeStatus","message":"Charge is Captured"}',
        request_id="req-1",
        retryable=False,
        operation="cancel_charge",
    )
    assert (error.http_status, error.reason_code, error.message, error.request_id) == (
        422,
        "InvalidChargeStatus",
        "Charge is Captured",
        "req-1",
    )
    assert "InvalidChargeStatus" in str(error)
    assert "cancel_charge" in repr(error)


def test_unknown_reason_code_is_carried_verbatim() -> None:
    error = AmazonPayError.from_response(
        status=400, body=b'{"reasonCode":"BrandNewCode2031"}', request_id=None, retryable=False
    )
    assert error.reason_code == "BrandNewCode2031"


def test_non_json_error_body_still_yields_an_error_with_a_short_message() -> None:
    error = AmazonPayError.from_response(
        status=502, body=b"<html>\x00bad gateway" + b"x" * 5000, request_id=None, retryable=True
    )
    assert error.reason_code is None
    assert error.retryable
    assert len(error.message) <= 500
    assert "\x00" not in error.message


def test_every_client_error_is_an_amazon_pay_error() -> None:
    for cls in (
        AmazonPayConnectionError,
        AmazonPayTimeoutError,
        AmazonPayDeadlineExceeded,
        AmazonPayRequestError,
    ):
        assert issubclass(cls, AmazonPayError)
    assert AmazonPayConnectionError("reset").retryable
    assert not AmazonPayRequestError("bad").retryable
