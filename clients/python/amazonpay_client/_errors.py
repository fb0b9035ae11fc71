"""Typed exceptions for the service's rich gRPC errors.

Callers branch on the exception class and on `.reason` (Amazon's reasonCode or one of the
service's own reasons), never on the message text, exactly as the protos document.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

import grpc
from google.rpc import error_details_pb2, status_pb2

__all__ = [
    "AMAZON_DOMAIN",
    "DECLINE_REASONS",
    "SERVICE_DOMAIN",
    "AmazonPayServiceError",
    "AuthenticationError",
    "CallCancelledError",
    "DeadlineExceededError",
    "DeclinedError",
    "IdempotencyConflictError",
    "InternalError",
    "InvalidPageTokenError",
    "InvalidStateError",
    "NotFoundError",
    "PermissionDeniedError",
    "PreconditionFailedError",
    "RateLimitedError",
    "UnavailableError",
    "UnimplementedError",
    "UnknownMerchantError",
    "ValidationError",
    "error_from_rpc",
]

AMAZON_DOMAIN = "amazonpay"
"""ErrorInfo.domain of errors Amazon Pay answered (reason = Amazon's reasonCode)."""
SERVICE_DOMAIN = "payments.amazonpay.v1"
"""ErrorInfo.domain of errors the service detected itself (reason = e.g. VALIDATION_FAILED)."""

DECLINE_REASONS: frozenset[str] = frozenset(
    {
        "SoftDeclined",
        "HardDeclined",
        "AmazonRejected",
        "ProcessingFailure",
        "TransactionTimedOut",
        "MFANotCompleted",
        "PaymentMethodNotAllowed",
        "TransactionCountExceeded",
        "Declined",
    }
)
"""FAILED_PRECONDITION reasons that mean the payment itself was refused (not a state problem)."""

_STATE_REASONS: frozenset[str] = frozenset({"CHARGE_PERMISSION_OPEN"})
"""Service reasons (besides Amazon's Invalid*Status / *Canceled) meaning "wrong state"."""

_STATUS_DETAILS_KEY = "grpc-status-details-bin"


class AmazonPayServiceError(Exception):
    """Any failed call. Subclasses say what kind; `reason` says exactly which."""

    retryable: bool = False
    """True when the same call (same idempotency key) may succeed later."""

    def __init__(
        self,
        code: grpc.StatusCode,
        message: str,
        *,
        reason: str = "",
        domain: str = "",
        metadata: Mapping[str, str] | None = None,
        field_violations: Mapping[str, str] | None = None,
        retry_delay: float | None = None,
        method: str = "",
    ) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.reason = reason
        self.domain = domain
        self.metadata: Mapping[str, str] = MappingProxyType(dict(metadata or {}))
        self.field_violations: Mapping[str, str] = MappingProxyType(dict(field_violations or {}))
        self.retry_delay = retry_delay
        self.method = method

    @property
    def request_id(self) -> str:
        """Amazon's request id (for Amazon support), empty when Amazon was not reached."""
        return self.metadata.get("amazon_request_id", "")

    @property
    def http_status(self) -> int | None:
        """The HTTP status Amazon answered, when the error came from Amazon."""
        raw = self.metadata.get("http_status")
        return int(raw) if raw and raw.isdigit() else None

    @property
    def from_amazon(self) -> bool:
        """True when Amazon Pay answered with this error (reason is Amazon's reasonCode)."""
        return self.domain == AMAZON_DOMAIN

    def __str__(self) -> str:
        where = f"{self.method}: " if self.method else ""
        reason = f" [{self.reason}]" if self.reason else ""
        return f"{where}{self.code.name}{reason}: {self.message}"

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(code={self.code.name}, reason={self.reason!r}, "
            f"domain={self.domain!r}, message={self.message!r})"
        )


class ValidationError(AmazonPayServiceError):
    """INVALID_ARGUMENT: fix the request (see `field_violations`); retrying it cannot help."""


class UnknownMerchantError(ValidationError):
    """INVALID_ARGUMENT / UNKNOWN_MERCHANT: the `merchant` alias is not configured."""


class InvalidPageTokenError(ValidationError):
    """INVALID_ARGUMENT / INVALID_PAGE_TOKEN: a page token reused with different filters."""


class NotFoundError(AmazonPayServiceError):
    """NOT_FOUND: neither Amazon nor the ledger knows the object (ResourceNotFound, NOT_IN_LEDGER)."""


class IdempotencyConflictError(AmazonPayServiceError):
    """ALREADY_EXISTS / IDEMPOTENCY_KEY_REUSED: the key was first used for a different request."""


class PreconditionFailedError(AmazonPayServiceError):
    """FAILED_PRECONDITION: Amazon refused the operation (see the subclasses and `reason`)."""


class DeclinedError(PreconditionFailedError):
    """The payment was declined (SoftDeclined, HardDeclined, AmazonRejected, ...).

    SoftDeclined may succeed later or with another instrument; HardDeclined must not be retried
    with the same instrument.
    """


class InvalidStateError(PreconditionFailedError):
    """The object's state does not allow the operation (InvalidChargeStatus, ...): re-read it."""


class RateLimitedError(AmazonPayServiceError):
    """RESOURCE_EXHAUSTED: too many requests; wait `retry_delay` seconds and retry."""

    retryable = True


class UnavailableError(AmazonPayServiceError):
    """UNAVAILABLE: Amazon, the ledger or the service is down; retry with the same key."""

    retryable = True


class DeadlineExceededError(AmazonPayServiceError):
    """DEADLINE_EXCEEDED: the outcome is unknown; retry with the SAME idempotency key."""

    retryable = True


class AuthenticationError(AmazonPayServiceError):
    """UNAUTHENTICATED: the caller's token or certificate was missing or not accepted."""


class PermissionDeniedError(AmazonPayServiceError):
    """PERMISSION_DENIED: the caller is not allowed this RPC."""


class InternalError(AmazonPayServiceError):
    """INTERNAL: a service bug or its Amazon credentials are wrong; page the service owners."""


class UnimplementedError(AmazonPayServiceError):
    """UNIMPLEMENTED: the service (this version) does not offer the RPC."""


class CallCancelledError(AmazonPayServiceError):
    """CANCELLED: the call was cancelled before it finished."""


_BY_CODE: Mapping[grpc.StatusCode, type[AmazonPayServiceError]] = {
    grpc.StatusCode.INVALID_ARGUMENT: ValidationError,
    grpc.StatusCode.NOT_FOUND: NotFoundError,
    grpc.StatusCode.ALREADY_EXISTS: IdempotencyConflictError,
    grpc.StatusCode.FAILED_PRECONDITION: PreconditionFailedError,
    grpc.StatusCode.RESOURCE_EXHAUSTED: RateLimitedError,
    grpc.StatusCode.UNAVAILABLE: UnavailableError,
    grpc.StatusCode.DEADLINE_EXCEEDED: DeadlineExceededError,
    grpc.StatusCode.UNAUTHENTICATED: AuthenticationError,
    grpc.StatusCode.PERMISSION_DENIED: PermissionDeniedError,
    grpc.StatusCode.INTERNAL: InternalError,
    grpc.StatusCode.UNIMPLEMENTED: UnimplementedError,
    grpc.StatusCode.CANCELLED: CallCancelledError,
}


def _class_for(code: grpc.StatusCode, reason: str) -> type[AmazonPayServiceError]:
    if code == grpc.StatusCode.INVALID_ARGUMENT:
        if reason == "UNKNOWN_MERCHANT":
            return UnknownMerchantError
        if reason == "INVALID_PAGE_TOKEN":
            return InvalidPageTokenError
    if code == grpc.StatusCode.FAILED_PRECONDITION:
        if reason in DECLINE_REASONS:
            return DeclinedError
        if reason in _STATE_REASONS or reason.startswith("Invalid") or reason.endswith("Canceled"):
            return InvalidStateError
    return _BY_CODE.get(code, AmazonPayServiceError)


def _rich_status(trailing: Any) -> status_pb2.Status | None:
    for key, value in trailing or ():
        if key == _STATUS_DETAILS_KEY and isinstance(value, bytes):
            status = status_pb2.Status()
            status.ParseFromString(value)
            return status
    return None


def error_from_rpc(error: grpc.RpcError, method: str = "") -> AmazonPayServiceError:
    """The typed exception for a failed call, with ErrorInfo, BadRequest and RetryInfo unpacked."""
    code: grpc.StatusCode = error.code()
    message: str = error.details() or ""
    trailing = error.trailing_metadata()
    info = error_details_pb2.ErrorInfo()
    violations: dict[str, str] = {}
    retry_delay: float | None = None
    status = _rich_status(trailing)
    if status is not None and status.code == code.value[0]:
        for detail in status.details:
            if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
                detail.Unpack(info)
            elif detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
                bad = error_details_pb2.BadRequest()
                detail.Unpack(bad)
                violations.update({v.field: v.description for v in bad.field_violations})
            elif detail.Is(error_details_pb2.RetryInfo.DESCRIPTOR):
                retry = error_details_pb2.RetryInfo()
                detail.Unpack(retry)
                retry_delay = retry.retry_delay.ToMilliseconds() / 1000
    cls = _class_for(code, info.reason)
    return cls(
        code,
        message,
        reason=info.reason,
        domain=info.domain,
        metadata=dict(info.metadata),
        field_violations=violations,
        retry_delay=retry_delay,
        method=method,
    )
