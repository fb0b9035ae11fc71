"""Retry policy: which failures to retry, full-jitter backoff, ``Retry-After`` and deadlines.

Only the decisions live here (pure functions over injected randomness and clocks); the client
loop in ``_client.py`` applies them, re-signing each attempt with the same idempotency key.
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime

from ._errors import AmazonPayRequestError

__all__ = [
    "DEFAULT_RETRYABLE_STATUSES",
    "Deadline",
    "RetryPolicy",
    "parse_retry_after",
]

DEFAULT_RETRYABLE_STATUSES: frozenset[int] = frozenset({408, 425, 429, 500, 502, 503, 504})


@dataclass(frozen=True, kw_only=True)
class RetryPolicy:
    """Exponential backoff with full jitter, like the official SDKs (3 retries by default)."""

    max_retries: int = 3
    """Retries after the first attempt (so at most ``max_retries + 1`` attempts)."""
    base_delay: float = 0.5
    """Backoff ceiling before the first retry, in seconds; it doubles on every retry."""
    max_delay: float = 8.0
    """Cap of the exponential ceiling, in seconds."""
    max_retry_after: float = 60.0
    """Longest ``Retry-After`` honoured; a longer one is clamped to this."""
    retryable_statuses: frozenset[int] = DEFAULT_RETRYABLE_STATUSES
    """HTTP statuses worth another attempt; every other 4xx/5xx fails at once."""

    def __post_init__(self) -> None:
        if self.max_retries < 0:
            raise AmazonPayRequestError("max_retries must be >= 0")
        if self.base_delay < 0 or self.max_delay < 0 or self.max_retry_after < 0:
            raise AmazonPayRequestError("retry delays must be >= 0")

    def backoff(self, retry: int, rng: random.Random) -> float:
        """Full-jitter delay before retry number ``retry`` (1-based): U(0, min(cap, base*2^(n-1)))."""
        ceiling = min(self.max_delay, self.base_delay * math.pow(2, retry - 1))
        return ceiling * rng.random()

    def delay(
        self,
        retry: int,
        rng: random.Random,
        retry_after: float | None = None,
    ) -> float:
        """The wait before retry ``retry``: the server's ``Retry-After`` if any, else backoff."""
        if retry_after is not None:
            return min(max(retry_after, 0.0), self.max_retry_after)
        return self.backoff(retry, rng)


def parse_retry_after(value: str | None, *, now: datetime | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (delta-seconds or HTTP-date); None if absent
    or unreadable."""
    if value is None:
        return None
    text = value.strip()
    if not text:
        return None
    try:
        seconds = float(text)
    except ValueError:
        pass
    else:
        return max(seconds, 0.0) if math.isfinite(seconds) else None
    try:
        when = parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    reference = now or datetime.now(UTC)
    return max((when - reference).total_seconds(), 0.0)


@dataclass(frozen=True, slots=True)
class Deadline:
    """An absolute point on ``time.monotonic()``'s clock by which a whole call must end."""

    at: float
    """``time.monotonic()`` value at which the budget is spent."""
    clock: Callable[[], float] = time.monotonic
    """Monotonic clock the deadline is measured on (injectable for tests)."""

    @classmethod
    def resolve(
        cls,
        timeout: float | None,
        deadline: float | None,
        clock: Callable[[], float] = time.monotonic,
    ) -> Deadline | None:
        """Combine a relative ``timeout`` and an absolute ``deadline``: the earlier wins."""
        candidates = []
        if timeout is not None:
            candidates.append(clock() + timeout)
        if deadline is not None:
            candidates.append(deadline)
        if not candidates:
            return None
        return cls(at=min(candidates), clock=clock)

    def remaining(self) -> float:
        """Seconds left (negative once passed)."""
        return self.at - self.clock()

    def expired(self) -> bool:
        """True once no time is left."""
        return self.remaining() <= 0
