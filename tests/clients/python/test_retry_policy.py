"""The retry decisions alone (pure functions, seeded randomness)."""

from __future__ import annotations

import random

import grpc
import pytest
from amazonpay_client import (
    AmazonPayServiceError,
    DeadlineExceededError,
    RateLimitedError,
    RetryPolicy,
    UnavailableError,
)
from hypothesis import given
from hypothesis import strategies as st


def _error(
    cls: type[AmazonPayServiceError], code: grpc.StatusCode, delay: float | None = None
) -> AmazonPayServiceError:
    return cls(code, "x", retry_delay=delay)


def test_unavailable_is_retried_until_the_attempt_budget_is_spent() -> None:
    policy = RetryPolicy(max_attempts=3)
    error = _error(UnavailableError, grpc.StatusCode.UNAVAILABLE)
    assert [policy.should_retry(error, n) for n in (1, 2, 3)] == [True, True, False]


def test_resource_exhausted_is_retried_only_when_the_server_said_when() -> None:
    policy = RetryPolicy()
    with_hint = _error(RateLimitedError, grpc.StatusCode.RESOURCE_EXHAUSTED, 2.0)
    without = _error(RateLimitedError, grpc.StatusCode.RESOURCE_EXHAUSTED)
    assert policy.should_retry(with_hint, 1)
    assert not policy.should_retry(without, 1)


def test_deadline_exceeded_is_not_retried_inside_the_same_deadline() -> None:
    error = _error(DeadlineExceededError, grpc.StatusCode.DEADLINE_EXCEEDED)
    assert not RetryPolicy().should_retry(error, 1)
    assert error.retryable  # ...but the caller may retry later with the same key


@given(attempt=st.integers(1, 30), seed=st.integers(0, 2**32))
def test_backoff_is_jittered_within_the_growing_capped_ceiling(attempt: int, seed: int) -> None:
    policy = RetryPolicy(initial_backoff=0.2, max_backoff=5.0, multiplier=2.0)
    delay = policy.delay(
        _error(UnavailableError, grpc.StatusCode.UNAVAILABLE), attempt, random.Random(seed)
    )
    assert 0 <= delay <= min(5.0, 0.2 * 2 ** (attempt - 1))


@given(hint=st.floats(0, 120), seed=st.integers(0, 2**32))
def test_retry_info_is_honoured_with_up_to_20_percent_spread_and_clamped(
    hint: float, seed: int
) -> None:
    policy = RetryPolicy(max_retry_delay=30.0)
    delay = policy.delay(
        _error(RateLimitedError, grpc.StatusCode.RESOURCE_EXHAUSTED, hint), 1, random.Random(seed)
    )
    base = min(hint, 30.0)
    assert base <= delay <= base * 1.2


def test_nonsense_policies_are_refused() -> None:
    with pytest.raises(ValueError, match="max_attempts"):
        RetryPolicy(max_attempts=0)
    with pytest.raises(ValueError, match="multiplier"):
        RetryPolicy(multiplier=0.5)
