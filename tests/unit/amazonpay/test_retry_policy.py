"""Backoff schedule, Retry-After parsing and deadline arithmetic (pure, no I/O)."""

from __future__ import annotations

import random
from datetime import UTC, datetime

import pytest

from service.amazonpay import (
    DEFAULT_RETRYABLE_STATUSES,
    AmazonPayDeadlineExceeded,
    AmazonPayError,
    Deadline,
    RetryPolicy,
    parse_retry_after,
)


class FixedRandom(random.Random):
    def __init__(self, value: float) -> None:
        super().__init__(0)
        self.value = value

    def random(self) -> float:
        return self.value


def test_default_retryable_statuses_match_the_official_sdks() -> None:
    assert frozenset({408, 425, 429, 500, 502, 503, 504}) == DEFAULT_RETRYABLE_STATUSES
    assert RetryPolicy().max_retries == 3


def test_full_jitter_backoff_doubles_its_ceiling_and_respects_the_cap() -> None:
    policy = RetryPolicy(base_delay=1.0, max_delay=5.0)
    top = FixedRandom(0.999999)
    assert [round(policy.backoff(n, top), 3) for n in (1, 2, 3, 4, 5)] == [1.0, 2.0, 4.0, 5.0, 5.0]
    assert policy.backoff(3, FixedRandom(0.25)) == pytest.approx(1.0)
    assert policy.backoff(3, FixedRandom(0.0)) == 0.0


def test_retry_after_overrides_backoff_and_is_clamped() -> None:
    policy = RetryPolicy(base_delay=1.0, max_retry_after=30.0)
    assert policy.delay(1, FixedRandom(0.5), retry_after=7.0) == 7.0
    assert policy.delay(1, FixedRandom(0.5), retry_after=999.0) == 30.0
    assert policy.delay(1, FixedRandom(0.5), retry_after=None) == 0.5


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("3", 3.0),
        (" 1.5 ", 1.5),
        ("-4", 0.0),
        ("Wed, 21 Oct 2015 07:28:10 GMT", 10.0),
        ("Wed, 21 Oct 2015 07:27:00 GMT", 0.0),
        ("soon", None),
        ("", None),
        (None, None),
    ],
)
def test_retry_after_accepts_seconds_and_http_dates(
    header: str | None, expected: float | None
) -> None:
    now = datetime(2015, 10, 21, 7, 28, 0, tzinfo=UTC)
    assert parse_retry_after(header, now=now) == expected


def test_deadline_takes_the_earlier_of_timeout_and_absolute_deadline() -> None:
    now = [100.0]
    deadline = Deadline.resolve(5.0, 103.0, clock=lambda: now[0])
    assert deadline is not None
    assert deadline.at == 103.0
    assert deadline.remaining() == 3.0
    now[0] = 103.0
    assert deadline.expired()
    assert Deadline.resolve(None, None) is None


def test_deadline_error_is_an_amazon_pay_error_carrying_the_last_failure() -> None:
    last = AmazonPayError("busy", http_status=503, reason_code="ServiceUnavailable", retryable=True)
    error = AmazonPayDeadlineExceeded("deadline", last_error=last, operation="get_charge")
    assert isinstance(error, AmazonPayError)
    assert error.last_error is last
    assert error.http_status == 503
    assert error.reason_code == "ServiceUnavailable"
    assert not error.retryable
