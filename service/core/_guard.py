"""Overload and outage control in front of Amazon, per merchant account (= key and region).

- `CircuitBreaker`: after `failures` consecutive failures that show Amazon failing (no answer to a
  request sent within the service's own timeout, 5xx, 429 after retries) it opens and calls fail
  fast for `open_s`; then a limited number of half-open probes decide whether to close it again.
  Refusals (other 4xx) are answers; a caller's short deadline or cancellation counts for nothing.
- `Admission`: at most `max_concurrent` calls to Amazon at once and at most `max_queued` waiting;
  beyond that a call is refused at once instead of piling up behind a slow Amazon.

Both act before the ledger records anything, so a refused call leaves nothing to re-drive.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass

from service.amazonpay import (
    AmazonPayConnectionError,
    AmazonPayDeadlineExceeded,
    AmazonPayError,
    AmazonPayRequestError,
    AmazonPayTimeoutError,
)

__all__ = ["Admission", "BreakerSettings", "CircuitBreaker", "CircuitOpen", "Overloaded"]


class CircuitOpen(AmazonPayError):
    """Amazon was failing for this merchant; calls fail fast until a probe succeeds."""

    def __init__(self, merchant: str, retry_after_s: float) -> None:
        super().__init__(
            f"Amazon Pay is failing for merchant {merchant!r}; calls are paused",
            retryable=True,
            operation=None,
        )
        self.retry_after_s = retry_after_s


class Overloaded(Exception):
    """Too many calls to Amazon are in flight and waiting for this merchant."""

    def __init__(self, merchant: str) -> None:
        super().__init__(f"too many Amazon Pay calls in flight for merchant {merchant!r}")
        self.merchant = merchant


@dataclass(frozen=True)
class BreakerSettings:
    failures: int = 5
    """Consecutive failures showing Amazon failing (see `is_outage`) that open the circuit."""
    open_s: float = 10.0
    """How long an open circuit fails fast before letting probes through."""
    probes: int = 1
    """Calls allowed at once while half-open."""


def is_outage(exc: BaseException) -> bool | None:
    """Whether a failure is evidence that Amazon itself is failing: True for 5xx, 408, 429 after
    the client's retries, and connection failures and timeouts of a request that was sent within
    the service's own per-attempt timeout; False for Amazon's other answers. None when the failure
    says nothing about Amazon: the caller's deadline ran out first (a caller choosing 30 ms must
    not open the circuit for everyone), the caller went away, or the call was refused locally."""
    if isinstance(exc, AmazonPayDeadlineExceeded):
        return None if exc.last_error is None else is_outage(exc.last_error)
    if isinstance(exc, CircuitOpen | AmazonPayRequestError) or not isinstance(exc, AmazonPayError):
        return None
    if isinstance(exc, AmazonPayTimeoutError) and exc.cut_short:
        return None
    if isinstance(exc, AmazonPayConnectionError):
        return True
    if exc.http_status is None:
        return None
    return exc.http_status >= 500 or exc.http_status in (408, 429)


class CircuitBreaker:
    CLOSED, HALF_OPEN, OPEN = 0, 1, 2

    def __init__(
        self,
        merchant: str,
        settings: BreakerSettings,
        *,
        clock: Callable[[], float] = time.monotonic,
        on_change: Callable[[str, int], None] | None = None,
    ) -> None:
        self.merchant = merchant
        self._settings = settings
        self._clock = clock
        self._on_change = on_change
        self.state = self.CLOSED
        self._failures = 0
        self._opened_at = 0.0
        self._probes = 0

    def _set(self, state: int) -> None:
        if state != self.state:
            self.state = state
            if self._on_change is not None:
                self._on_change(self.merchant, state)

    def check(self) -> None:
        """Raise `CircuitOpen` while open; changes nothing (the call itself goes through
        `before_call`)."""
        if self.state == self.OPEN:
            waited = self._clock() - self._opened_at
            if waited < self._settings.open_s:
                raise CircuitOpen(self.merchant, self._settings.open_s - waited)

    def before_call(self) -> None:
        """Raise `CircuitOpen` unless a call may go to Amazon now."""
        if self.state == self.OPEN:
            waited = self._clock() - self._opened_at
            if waited < self._settings.open_s:
                raise CircuitOpen(self.merchant, self._settings.open_s - waited)
            self._set(self.HALF_OPEN)
            self._probes = 0
        if self.state == self.HALF_OPEN:
            if self._probes >= self._settings.probes:
                raise CircuitOpen(self.merchant, 1.0)
            self._probes += 1

    def record(self, error: BaseException | None) -> None:
        """The outcome of a call that `before_call` let through."""
        if self.state == self.HALF_OPEN:
            self._probes = max(0, self._probes - 1)
        outage = False if error is None else is_outage(error)
        if outage is None:
            return
        if not outage:
            self._failures = 0
            self._set(self.CLOSED)
            return
        self._failures += 1
        if self.state == self.HALF_OPEN or self._failures >= self._settings.failures:
            self._opened_at = self._clock()
            self._set(self.OPEN)


class Admission:
    """A semaphore with a bounded queue."""

    def __init__(self, merchant: str, max_concurrent: int, max_queued: int) -> None:
        self.merchant = merchant
        self._slots = asyncio.Semaphore(max_concurrent)
        self._max_queued = max_queued
        self._waiting = 0

    async def __aenter__(self) -> None:
        if self._slots.locked():
            if self._waiting >= self._max_queued:
                raise Overloaded(self.merchant)
            self._waiting += 1
            try:
                await self._slots.acquire()
            finally:
                self._waiting -= 1
        else:
            await self._slots.acquire()

    async def __aexit__(self, *exc_info: object) -> None:
        self._slots.release()
