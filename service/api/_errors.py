"""Every failure becomes a gRPC status with machine-readable details.

Callers branch on `google.rpc.ErrorInfo.reason` (Amazon's reasonCode for Amazon's answers, or one
of `SERVICE_REASONS` for the service's own), never on the message text. `RetryInfo` is attached
wherever the same request may succeed later.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import grpc
from google.protobuf import any_pb2, duration_pb2
from google.rpc import error_details_pb2, status_pb2
from grpc_status import rpc_status

from service.amazonpay import AmazonPayDeadlineExceeded, AmazonPayError, AmazonPayRequestError
from service.core import (
    QUARANTINED,
    CircuitOpen,
    ObjectNotFound,
    Overloaded,
    StoredFailure,
    UnknownMerchant,
)
from service.ledger import ErasureRefused, InvalidPageToken, OperationConflict, is_unavailable

from ._validation import Violation

__all__ = ["AMAZON_DOMAIN", "SERVICE_DOMAIN", "SERVICE_REASONS", "RpcFailure", "to_status"]

_log = logging.getLogger("service.api.errors")

AMAZON_DOMAIN = "amazonpay"
SERVICE_DOMAIN = "payments.amazonpay.v1"

SERVICE_REASONS: Mapping[str, str] = {
    "VALIDATION_FAILED": "the request broke a rule; see BadRequest field violations",
    "IDEMPOTENCY_KEY_REUSED": "the idempotency key was first used with a different request",
    "UNKNOWN_MERCHANT": "the merchant alias is not configured",
    "NOT_IN_LEDGER": "the ledger has no such object",
    "LEDGER_UNAVAILABLE": "the ledger database could not be reached",
    "INVALID_PAGE_TOKEN": "the page token was not issued for this query",
    "AMAZON_UNREACHABLE": "Amazon Pay did not answer (connection failure or timeout)",
    "DEADLINE_EXCEEDED": "the call's deadline passed before Amazon Pay answered",
    "STREAM_OVERFLOW": "a WatchEvents reader fell behind; resume from its last event_id",
    "CHARGE_PERMISSION_OPEN": "buyer data of a charge permission that is not Closed is kept",
    "UNAUTHENTICATED": "no credentials, or credentials that identify no configured caller",
    "RPC_NOT_ALLOWED": "the caller's allowlist does not include this RPC",
    "CIRCUIT_OPEN": "Amazon Pay was failing for this merchant; calls fail fast for a while",
    "OVERLOADED": "too many Amazon Pay calls in flight and queued for this merchant",
    "OPERATION_QUARANTINED": "the stored request could not be sent to Amazon Pay; it was set aside",
}

_BY_HTTP_STATUS: Mapping[int, grpc.StatusCode] = {
    400: grpc.StatusCode.INVALID_ARGUMENT,
    401: grpc.StatusCode.INTERNAL,
    403: grpc.StatusCode.INTERNAL,
    404: grpc.StatusCode.NOT_FOUND,
    405: grpc.StatusCode.FAILED_PRECONDITION,
    408: grpc.StatusCode.UNAVAILABLE,
    409: grpc.StatusCode.FAILED_PRECONDITION,
    422: grpc.StatusCode.FAILED_PRECONDITION,
    425: grpc.StatusCode.UNAVAILABLE,
    429: grpc.StatusCode.RESOURCE_EXHAUSTED,
}


@dataclass
class RpcFailure(Exception):
    """A failure the service detected itself, with its status and reason."""

    code: grpc.StatusCode
    message: str
    reason: str
    violations: Sequence[Violation] = ()
    retry_after_s: float | None = None
    metadata: Mapping[str, str] | None = None

    @classmethod
    def invalid(
        cls, message: str, *violations: Violation, reason: str = "VALIDATION_FAILED"
    ) -> RpcFailure:
        """INVALID_ARGUMENT, naming each field and the rule it broke (`BadRequest`)."""
        return cls(grpc.StatusCode.INVALID_ARGUMENT, message, reason, violations=violations)


def _pack(message: object) -> any_pb2.Any:
    packed = any_pb2.Any()
    packed.Pack(message)  # type: ignore[arg-type]
    return packed


def _status(
    code: grpc.StatusCode,
    message: str,
    info: error_details_pb2.ErrorInfo,
    *,
    violations: Sequence[Violation] = (),
    retry_after_s: float | None = None,
) -> grpc.Status:
    details = [_pack(info)]
    if violations:
        details.append(
            _pack(
                error_details_pb2.BadRequest(
                    field_violations=[
                        error_details_pb2.BadRequest.FieldViolation(
                            field=v.field, description=v.description
                        )
                        for v in violations
                    ]
                )
            )
        )
    if retry_after_s is not None:
        delay = duration_pb2.Duration()
        delay.FromMilliseconds(int(retry_after_s * 1000))
        details.append(_pack(error_details_pb2.RetryInfo(retry_delay=delay)))
    numeric: int = code.value[0]
    return rpc_status.to_status(status_pb2.Status(code=numeric, message=message, details=details))


def _amazon_status(exc: AmazonPayError) -> grpc.Status:
    reason = exc.reason_code or (
        "DEADLINE_EXCEEDED"
        if isinstance(exc, AmazonPayDeadlineExceeded)
        else "AMAZON_UNREACHABLE"
        if exc.http_status is None
        else f"HTTP_{exc.http_status}"
    )
    metadata = {}
    if exc.http_status is not None:
        metadata["http_status"] = str(exc.http_status)
    if exc.request_id:
        metadata["amazon_request_id"] = exc.request_id
    if exc.operation:
        metadata["operation"] = exc.operation
    retry: float | None = None
    if isinstance(exc, AmazonPayDeadlineExceeded):
        code = grpc.StatusCode.DEADLINE_EXCEEDED
        retry = 1.0
    elif exc.http_status is None or exc.http_status >= 500:
        code = grpc.StatusCode.UNAVAILABLE
        retry = 1.0
    else:
        code = _BY_HTTP_STATUS.get(exc.http_status, grpc.StatusCode.FAILED_PRECONDITION)
        if code in (grpc.StatusCode.RESOURCE_EXHAUSTED, grpc.StatusCode.UNAVAILABLE):
            retry = 2.0
    if exc.http_status in (401, 403):
        _log.error(
            "Amazon Pay rejected our credentials; check the key id and private key",
            extra={"reason_code": exc.reason_code, "amazon_request_id": exc.request_id},
        )
    domain = AMAZON_DOMAIN if exc.reason_code else SERVICE_DOMAIN
    return _status(
        code,
        exc.message,
        error_details_pb2.ErrorInfo(reason=reason, domain=domain, metadata=metadata),
        retry_after_s=retry,
    )


def to_status(exc: BaseException) -> grpc.Status | None:
    """The status for an exception, or None when it is a bug (answered as INTERNAL upstream)."""
    failure = _refusal(exc)
    if failure is not None:
        return _status(
            failure.code,
            failure.message,
            error_details_pb2.ErrorInfo(
                reason=failure.reason, domain=SERVICE_DOMAIN, metadata=failure.metadata
            ),
            violations=failure.violations,
            retry_after_s=failure.retry_after_s,
        )
    if isinstance(exc, AmazonPayError):
        return _amazon_status(exc)
    return None


def _refusal(exc: BaseException) -> RpcFailure | None:
    """The service's own refusal `exc` stands for (None: Amazon's answer, or a bug)."""
    if isinstance(exc, RpcFailure):
        return exc
    if isinstance(exc, CircuitOpen):
        return RpcFailure(
            grpc.StatusCode.UNAVAILABLE,
            exc.message,
            "CIRCUIT_OPEN",
            retry_after_s=max(exc.retry_after_s, 0.1),
        )
    if isinstance(exc, Overloaded):
        return RpcFailure(
            grpc.StatusCode.RESOURCE_EXHAUSTED, str(exc), "OVERLOADED", retry_after_s=0.5
        )
    if isinstance(exc, StoredFailure) and exc.reason_code == QUARANTINED:
        return RpcFailure(grpc.StatusCode.FAILED_PRECONDITION, exc.message, QUARANTINED)
    if isinstance(exc, AmazonPayRequestError):
        return RpcFailure.invalid(exc.message)
    if isinstance(exc, OperationConflict):
        return RpcFailure(
            grpc.StatusCode.ALREADY_EXISTS,
            f"idempotency_key was already used for a different {exc.operation.operation} request",
            "IDEMPOTENCY_KEY_REUSED",
        )
    if isinstance(exc, UnknownMerchant):
        return RpcFailure.invalid(
            str(exc),
            Violation("merchant", "must name a configured merchant account"),
            reason="UNKNOWN_MERCHANT",
        )
    if isinstance(exc, ObjectNotFound):
        return RpcFailure(grpc.StatusCode.NOT_FOUND, str(exc), "NOT_IN_LEDGER")
    if isinstance(exc, ErasureRefused):
        return RpcFailure(
            grpc.StatusCode.FAILED_PRECONDITION,
            "close the charge permission before erasing its buyer data: "
            + ", ".join(exc.open_permissions),
            "CHARGE_PERMISSION_OPEN",
        )
    if isinstance(exc, InvalidPageToken):
        return RpcFailure.invalid(
            str(exc), Violation("page_token", str(exc)), reason="INVALID_PAGE_TOKEN"
        )
    if is_unavailable(exc):
        _log.warning("ledger unavailable", extra={"error": type(exc).__name__})
        return RpcFailure(
            grpc.StatusCode.UNAVAILABLE,
            "the ledger database is unavailable; retry with the same idempotency key",
            "LEDGER_UNAVAILABLE",
            retry_after_s=1.0,
        )
    return None
