"""Async Amazon Pay API v2 client (work in progress: signing is ready)."""

from ._errors import (
    AmazonPayConnectionError,
    AmazonPayDeadlineExceeded,
    AmazonPayError,
    AmazonPayRequestError,
    AmazonPayTimeoutError,
)
from ._signing import (
    Algorithm,
    PrivateKey,
    RequestSigner,
    button_string_to_sign,
    canonical_request,
    parse_authorization_header,
    string_to_sign,
    verify_signature,
)

__all__ = [
    "Algorithm",
    "AmazonPayConnectionError",
    "AmazonPayDeadlineExceeded",
    "AmazonPayError",
    "AmazonPayRequestError",
    "AmazonPayTimeoutError",
    "PrivateKey",
    "RequestSigner",
    "button_string_to_sign",
    "canonical_request",
    "parse_authorization_header",
    "string_to_sign",
    "verify_signature",
]
