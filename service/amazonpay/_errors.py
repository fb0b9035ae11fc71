"""Exceptions raised by the Amazon Pay client.

Everything derives from :class:`AmazonPayError`, so one ``except AmazonPayError`` catches every
failure the client can report. Reason codes stay plain strings: Amazon adds new ones over time
and an unknown code must travel through untouched instead of breaking a lookup table.
"""

from __future__ import annotations

import json
from typing import Any

__all__ = [
    "AmazonPayConnectionError",
    "AmazonPayDeadlineExceeded",
    "AmazonPayError",
    "AmazonPayRequestError",
    "AmazonPayTimeoutError",
]

_MAX_MESSAGE = 500


class AmazonPayError(Exception):
    """A failed Amazon Pay call: an HTTP error answer, a transport failure or a local refusal."""

    def __init__(
        self,
        message: str,
        *,
        http_status: int | None = None,
        reason_code: str | None = None,
        request_id: str | None = None,
        retryable: bool = False,
        operation: str | None = None,
        attempts: int = 0,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.http_status = http_status
        self.reason_code = reason_code
        self.request_id = request_id
        self.retryable = retryable
        self.operation = operation
        self.attempts = attempts

    def __str__(self) -> str:
        parts = [self.message]
        details = [
            f"{name}={value}"
            for name, value in (
                ("operation", self.operation),
                ("http_status", self.http_status),
                ("reason_code", self.reason_code),
                ("request_id", self.request_id),
            )
            if value is not None
        ]
        if details:
            parts.append(f"({', '.join(details)})")
        return " ".join(parts)

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(message={self.message!r}, http_status={self.http_status!r}, "
            f"reason_code={self.reason_code!r}, request_id={self.request_id!r}, "
            f"retryable={self.retryable!r}, operation={self.operation!r}, "
            f"attempts={self.attempts!r})"
        )

    @classmethod
    def from_response(
        cls,
        *,
        status: int,
        body: bytes,
        request_id: str | None,
        retryable: bool,
        operation: str | None = None,
    ) -> AmazonPayError:
        """Build the error from an Amazon error answer (``{"reasonCode", "message"}``).

        A body that is not the documented JSON (a proxy's HTML page, say) still yields an error:
        the reason code is then None and the message a short, printable excerpt.
        """
        reason_code: str | None = None
        message: str | None = None
        try:
            parsed: Any = json.loads(body) if body else None
        except ValueError:
            parsed = None
        if isinstance(parsed, dict):
            code = parsed.get("reasonCode")
            reason_code = str(code) if code is not None else None
            text = parsed.get("message")
            message = str(text) if text is not None else None
        if message is None:
            excerpt = body[:_MAX_MESSAGE].decode("utf-8", "replace")
            excerpt = "".join(ch if ch.isprintable() else " " for ch in excerpt).strip()
            message = excerpt or f"HTTP {status}"
        return cls(
            message[:_MAX_MESSAGE],
            http_status=status,
            reason_code=reason_code,
            request_id=request_id,
            retryable=retryable,
            operation=operation,
        )


class AmazonPayRequestError(AmazonPayError, ValueError):
    """The call was refused locally before anything was sent (bad argument or configuration)."""


class AmazonPayConnectionError(AmazonPayError):
    """No HTTP answer: connection refused or reset, server disconnected, TLS failure."""

    def __init__(
        self, message: str, *, retryable: bool = True, operation: str | None = None
    ) -> None:
        super().__init__(message, retryable=retryable, operation=operation)


class AmazonPayTimeoutError(AmazonPayConnectionError):
    """One attempt took longer than the time it was given."""

    cut_short: bool = False
    """The attempt had less than the client's own attempt timeout (the caller's deadline was
    nearer): its timing out says nothing about Amazon."""


class AmazonPayDeadlineExceeded(AmazonPayError):
    """The caller's deadline ran out; ``last_error`` is the failure of the last attempt, if any."""

    def __init__(
        self,
        message: str,
        *,
        last_error: AmazonPayError | None = None,
        operation: str | None = None,
        attempts: int = 0,
    ) -> None:
        super().__init__(
            message,
            http_status=last_error.http_status if last_error else None,
            reason_code=last_error.reason_code if last_error else None,
            request_id=last_error.request_id if last_error else None,
            retryable=False,
            operation=operation,
            attempts=attempts,
        )
        self.last_error = last_error
