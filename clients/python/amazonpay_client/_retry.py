"""When and how long to wait before retrying a call (pure decisions, no I/O)."""

from __future__ import annotations

import random
from dataclasses import dataclass

import grpc

from ._errors import AmazonPayServiceError

__all__ = ["RetryEvent", "RetryPolicy"]


@dataclass(frozen=True, kw_only=True)
class RetryPolicy:
    """Exponential backoff with full jitter; RetryInfo from the service wins when present.

    Every retry re-sends the identical request, so a money-moving call carries the same
    idempotency key on each attempt and the service moves money at most once.
    """

    max_attempts: int = 5
    """Attempts in total, the first one included (1 disables retries)."""
    initial_backoff: float = 0.2
    """Ceiling of the first jittered wait, in seconds; it grows by `multiplier` per retry."""
    max_backoff: float = 5.0
    """Cap of the jittered wait, in seconds."""
    multiplier: float = 2.0
    """Growth of the ceiling per retry."""
    max_retry_delay: float = 30.0
    """Longest server-suggested RetryInfo delay honoured; longer ones are clamped."""

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ValueError("max_attempts must be >= 1")
        if min(self.initial_backoff, self.max_backoff, self.max_retry_delay) < 0:
            raise ValueError("retry delays must be >= 0")
        if self.multiplier < 1:
            raise ValueError("multiplier must be >= 1")

    def should_retry(self, error: AmazonPayServiceError, attempt: int) -> bool:
        """UNAVAILABLE always; RESOURCE_EXHAUSTED only when the service said when (RetryInfo).

        RESOURCE_EXHAUSTED without RetryInfo comes from gRPC itself (e.g. a message too large),
        which no retry can fix.
        """
        if attempt >= self.max_attempts:
            return False
        if error.code == grpc.StatusCode.UNAVAILABLE:
            return True
        return error.code == grpc.StatusCode.RESOURCE_EXHAUSTED and error.retry_delay is not None

    def delay(self, error: AmazonPayServiceError, attempt: int, rng: random.Random) -> float:
        """Seconds to wait after failed attempt number `attempt` (1-based)."""
        if error.retry_delay is not None:
            # Honour the server's hint, spread by up to 20% so callers do not return in lockstep.
            base = min(error.retry_delay, self.max_retry_delay)
            return base * (1.0 + 0.2 * rng.random())
        ceiling = min(self.max_backoff, self.initial_backoff * self.multiplier ** (attempt - 1))
        return ceiling * rng.random()


@dataclass(frozen=True)
class RetryEvent:
    """Handed to the client's `on_retry` hook before each wait (for logs and metrics)."""

    method: str
    """Full gRPC method name, e.g. "/payments.amazonpay.v1.ChargeService/CreateCharge"."""
    attempt: int
    """The attempt that failed (1 for the first)."""
    error: AmazonPayServiceError
    """Why it failed."""
    delay: float
    """Seconds the client waits before the next attempt."""
    idempotency_key: str
    """The key every attempt of this logical call carries (empty for reads)."""
