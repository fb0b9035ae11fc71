"""Async client for the Amazon Pay API v2.

Signs every request (``AMZN-PAY-RSASSA-PSS-V2``), retries throttling, 5xx and connection failures
with full-jitter backoff inside the caller's deadline (same idempotency key, fresh signature each
attempt) and returns typed, frozen models that keep Amazon's raw JSON. Each operation is one row
of ``ENDPOINTS``; ``AmazonPayClient.invoke`` sends any of them. No gRPC, no SQL: it can be
released on its own.

Example::

    from service.amazonpay import AmazonPayClient, AmazonPayError, MerchantAccount, Price

    account = MerchantAccount.load(
        public_key_id="SANDBOX-AHXXXXXXXXXXXXXXXXXXXXXX",
        private_key_path="/run/secrets/amazonpay/private.pem",
        region="eu",
    )
    async with AmazonPayClient(account) as client:
        try:
            charge = await client.invoke(
                "CreateCharge",
                body={
                    "chargePermissionId": "S02-1234567-1234567",
                    "chargeAmount": Price.of("14.00", "EUR"),
                    "captureNow": True,
                },
                idempotency_key="order-4711-charge-1",
                timeout=10.0,
            )
            capture = await client.invoke(
                "CaptureCharge",
                path_params={"chargeId": charge.raw["chargeId"]},
                body={"captureAmount": {"amount": "14.00", "currencyCode": "EUR"}},
                idempotency_key="order-4711-capture-1",
            )
        except AmazonPayError as exc:
            print(exc.http_status, exc.reason_code, exc.request_id)
        else:
            print(capture.http_status, capture.raw["statusDetails"], capture.request_id)

Settlement reports are listed with a query, fetched from their pre-signed URL and parsed while
they stream::

    report_type = SETTLEMENT_REPORT_TYPES[account.effective_environment]
    reports = await client.invoke("GetReports", query={"reportTypes": report_type})
    for report in reports.reports:
        document = await client.invoke(
            "GetReportDocument", path_params={"reportDocumentId": report.report_document_id}
        )
        header, lines = await parse_settlement_report(client.stream_report_document(document.url))
        async for line in lines:
            print(line.transaction_type, line.amazon_transaction_id, line.amount, line.currency)
"""

from . import _models
from ._client import AmazonPayClient, ApiResponse, AttemptEvent, ButtonSignature
from ._config import SDK_VERSION, ClientConfig, Environment, MerchantAccount, Region
from ._endpoints import ENDPOINTS, Endpoint
from ._errors import (
    AmazonPayConnectionError,
    AmazonPayDeadlineExceeded,
    AmazonPayError,
    AmazonPayRequestError,
    AmazonPayTimeoutError,
)
from ._models import *  # noqa: F403 - the models, listed once in `_models.__all__`
from ._retry import DEFAULT_RETRYABLE_STATUSES, Deadline, RetryPolicy, parse_retry_after
from ._settlement_report import (
    BODY_COLUMNS,
    HEADER_COLUMNS,
    SETTLEMENT_REPORT_TYPES,
    SettlementLine,
    SettlementReportError,
    SettlementReportHeader,
    format_settlement_report,
    parse_settlement_report,
)
from ._signing import (
    Algorithm,
    AuthorizationHeader,
    CanonicalRequest,
    PrivateKey,
    RequestSigner,
    button_string_to_sign,
    canonical_path,
    canonical_query,
    canonical_request,
    canonical_uri,
    encode_rfc3986,
    parse_authorization_header,
    string_to_sign,
    verify_signature,
)
from ._transport import (
    AiohttpTransport,
    HttpRequest,
    HttpResponse,
    MockHandler,
    MockTransport,
    Transport,
)

__all__ = [
    "BODY_COLUMNS",
    "DEFAULT_RETRYABLE_STATUSES",
    "ENDPOINTS",
    "HEADER_COLUMNS",
    "SDK_VERSION",
    "SETTLEMENT_REPORT_TYPES",
    "AiohttpTransport",
    "Algorithm",
    "AmazonPayClient",
    "AmazonPayConnectionError",
    "AmazonPayDeadlineExceeded",
    "AmazonPayError",
    "AmazonPayRequestError",
    "AmazonPayTimeoutError",
    "ApiResponse",
    "AttemptEvent",
    "AuthorizationHeader",
    "ButtonSignature",
    "CanonicalRequest",
    "ClientConfig",
    "Deadline",
    "Endpoint",
    "Environment",
    "HttpRequest",
    "HttpResponse",
    "MerchantAccount",
    "MockHandler",
    "MockTransport",
    "PrivateKey",
    "Region",
    "RequestSigner",
    "RetryPolicy",
    "SettlementLine",
    "SettlementReportError",
    "SettlementReportHeader",
    "Transport",
    "button_string_to_sign",
    "canonical_path",
    "canonical_query",
    "canonical_request",
    "canonical_uri",
    "encode_rfc3986",
    "format_settlement_report",
    "parse_authorization_header",
    "parse_retry_after",
    "parse_settlement_report",
    "string_to_sign",
    "verify_signature",
]
__all__ += _models.__all__
