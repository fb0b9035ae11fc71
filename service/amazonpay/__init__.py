"""Async client for the Amazon Pay API v2.

Signs every request (``AMZN-PAY-RSASSA-PSS-V2``), retries throttling, 5xx and connection failures
with full-jitter backoff inside the caller's deadline (same idempotency key, fresh signature each
attempt) and returns typed, frozen models that keep Amazon's raw JSON. No gRPC, no SQL: it can be
released on its own.

Example::

    from service.amazonpay import (
        AmazonPayClient, AmazonPayError, CreateChargeRequest, MerchantAccount, Price,
    )

    account = MerchantAccount.load(
        public_key_id="SANDBOX-AHXXXXXXXXXXXXXXXXXXXXXX",
        private_key_path="/run/secrets/amazonpay/private.pem",
        region="eu",
    )
    async with AmazonPayClient(account) as client:
        try:
            charge = await client.create_charge(
                CreateChargeRequest(
                    charge_permission_id="S02-1234567-1234567",
                    charge_amount=Price.of("14.00", "EUR"),
                    capture_now=True,
                ),
                idempotency_key="order-4711-charge-1",
                timeout=10.0,
            )
        except AmazonPayError as exc:
            print(exc.http_status, exc.reason_code, exc.request_id)
        else:
            print(charge.http_status, charge.state, charge.request_id)
"""

from ._client import AmazonPayClient, ApiResponse, AttemptEvent, ButtonSignature
from ._config import SDK_VERSION, ClientConfig, Environment, MerchantAccount, Region
from ._errors import (
    AmazonPayConnectionError,
    AmazonPayDeadlineExceeded,
    AmazonPayError,
    AmazonPayRequestError,
    AmazonPayTimeoutError,
)
from ._models import (
    Address,
    ApiObject,
    Buyer,
    CancelChargeRequest,
    CaptureChargeRequest,
    Charge,
    ChargePermission,
    CheckoutSession,
    CloseChargePermissionRequest,
    CompleteCheckoutSessionRequest,
    Constraint,
    CreateChargeRequest,
    CreateCheckoutSessionRequest,
    CreateDeliveryTrackerRequest,
    CreateRefundRequest,
    DeliveryDetail,
    DeliveryTracker,
    FinalizeCheckoutSessionRequest,
    Frequency,
    Limits,
    MerchantMetadata,
    Model,
    PaymentDetails,
    PaymentPreference,
    Price,
    ProviderMetadata,
    RecurringMetadata,
    Refund,
    RequestModel,
    StatusDetails,
    StatusReason,
    UpdateChargePermissionRequest,
    UpdateCheckoutSessionRequest,
    WebCheckoutDetails,
    format_timestamp,
    normalize_amount,
    parse_timestamp,
)
from ._retry import DEFAULT_RETRYABLE_STATUSES, Deadline, RetryPolicy, parse_retry_after
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
from ._transport import AiohttpTransport, HttpRequest, HttpResponse, Transport

__all__ = [
    "DEFAULT_RETRYABLE_STATUSES",
    "SDK_VERSION",
    "Address",
    "AiohttpTransport",
    "Algorithm",
    "AmazonPayClient",
    "AmazonPayConnectionError",
    "AmazonPayDeadlineExceeded",
    "AmazonPayError",
    "AmazonPayRequestError",
    "AmazonPayTimeoutError",
    "ApiObject",
    "ApiResponse",
    "AttemptEvent",
    "AuthorizationHeader",
    "ButtonSignature",
    "Buyer",
    "CancelChargeRequest",
    "CanonicalRequest",
    "CaptureChargeRequest",
    "Charge",
    "ChargePermission",
    "CheckoutSession",
    "ClientConfig",
    "CloseChargePermissionRequest",
    "CompleteCheckoutSessionRequest",
    "Constraint",
    "CreateChargeRequest",
    "CreateCheckoutSessionRequest",
    "CreateDeliveryTrackerRequest",
    "CreateRefundRequest",
    "Deadline",
    "DeliveryDetail",
    "DeliveryTracker",
    "Environment",
    "FinalizeCheckoutSessionRequest",
    "Frequency",
    "HttpRequest",
    "HttpResponse",
    "Limits",
    "MerchantAccount",
    "MerchantMetadata",
    "Model",
    "PaymentDetails",
    "PaymentPreference",
    "Price",
    "PrivateKey",
    "ProviderMetadata",
    "RecurringMetadata",
    "Refund",
    "Region",
    "RequestModel",
    "RequestSigner",
    "RetryPolicy",
    "StatusDetails",
    "StatusReason",
    "Transport",
    "UpdateChargePermissionRequest",
    "UpdateCheckoutSessionRequest",
    "WebCheckoutDetails",
    "button_string_to_sign",
    "canonical_path",
    "canonical_query",
    "canonical_request",
    "canonical_uri",
    "encode_rfc3986",
    "format_timestamp",
    "normalize_amount",
    "parse_authorization_header",
    "parse_retry_after",
    "parse_timestamp",
    "string_to_sign",
    "verify_signature",
]
