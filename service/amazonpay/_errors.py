"""Exceptions raised by the Amazon Pay client.

Everything derives from :class:`AmazonPayError`, so one ``except AmazonPayError`` catches every
failure the client can report. Reason codes stay plain strings: Amazon adds new ones over time
and an unknown code must travel through untouched instead of breaking a lookup table.
"""

from __future__ import annotations

import json
from dataclasses import KW_ONLY, dataclass, field
from typing import Any

__all__ = [
    "AmazonPayConnectionError",
    "AmazonPayDeadlineExceeded",
    "AmazonPayError",
    "AmazonPayRequestError",
    "AmazonPayTimeoutError",
]

_MAX_MESSAGE = 500


@dataclass(eq=False)
class AmazonPayError(Exception):
    """A failed Amazon Pay call: an HTTP error answer, a transport failure or a local refusal."""

    message: str
    _: KW_ONLY
    http_status: int | None = None
    reason_code: str | None = None
    request_id: str | None = None
    retryable: bool = False
    operation: str | None = None
    attempts: int = 0

    def __post_init__(self) -> None:
        super().__init__(self.message)

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


@dataclass(eq=False, kw_only=True)
class AmazonPayDeadlineExceeded(AmazonPayError):
    """The caller's deadline ran out; ``last_error`` is the failure of the last attempt, if any
    (its status, reason and request id are this error's too). Never retryable."""

    last_error: AmazonPayError | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        super().__post_init__()
        self.retryable = False
        if self.last_error is not None:
            self.http_status = self.last_error.http_status
            self.reason_code = self.last_error.reason_code
            self.request_id = self.last_error.request_id
