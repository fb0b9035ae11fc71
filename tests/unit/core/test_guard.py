"""What the circuit breaker counts: only evidence that Amazon itself is failing."""

from __future__ import annotations

import asyncio

import pytest

from service.amazonpay import (
    AmazonPayConnectionError,
    AmazonPayDeadlineExceeded,
    AmazonPayError,
    AmazonPayRequestError,
    AmazonPayTimeoutError,
)
from service.core import BreakerSettings, CircuitBreaker, CircuitOpen


def _cut_short() -> AmazonPayTimeoutError:
    exc = AmazonPayTimeoutError("no complete answer within 0.030s")
    exc.cut_short = True
    return exc


def _breaker() -> CircuitBreaker:
    return CircuitBreaker("default", BreakerSettings(failures=2, open_s=60))


def _fail(breaker: CircuitBreaker, error: BaseException, times: int = 5) -> None:
    for _ in range(times):
        breaker.before_call()
        breaker.record(error)


@pytest.mark.parametrize(
    "error",
    [
        AmazonPayDeadlineExceeded("deadline exceeded after 0 attempt(s)"),
        AmazonPayDeadlineExceeded("deadline exceeded", last_error=_cut_short()),
        _cut_short(),
        AmazonPayRequestError("simulation codes are only accepted in sandbox"),
        AmazonPayError("answer body is not a JSON object"),
        asyncio.CancelledError(),
        ValueError("a bug"),
    ],
    ids=["deadline", "deadline-cut-short", "cut-short", "local", "no-status", "cancel", "bug"],
)
def test_failures_that_say_nothing_about_amazon_never_open_the_circuit(
    error: BaseException,
) -> None:
    breaker = _breaker()
    _fail(breaker, error)
    assert breaker.state == CircuitBreaker.CLOSED


@pytest.mark.parametrize(
    "error",
    [
        AmazonPayError("down", http_status=503, retryable=True),
        AmazonPayError("throttled", http_status=429, retryable=True),
        AmazonPayConnectionError("connection failed"),
        AmazonPayTimeoutError("no complete answer within 10.000s"),
        AmazonPayDeadlineExceeded(
            "deadline", last_error=AmazonPayError("down", http_status=500, retryable=True)
        ),
    ],
    ids=["5xx", "429", "connection", "own-timeout", "deadline-after-5xx"],
)
def test_amazon_failing_opens_the_circuit(error: BaseException) -> None:
    breaker = _breaker()
    _fail(breaker, error, times=2)
    assert breaker.state == CircuitBreaker.OPEN
    with pytest.raises(CircuitOpen):
        breaker.check()


def test_a_cancelled_call_neither_counts_nor_closes_an_open_circuit() -> None:
    breaker = _breaker()
    down = AmazonPayError("down", http_status=503, retryable=True)
    _fail(breaker, down, times=1)
    _fail(breaker, asyncio.CancelledError(), times=3)
    _fail(breaker, down, times=1)
    assert breaker.state == CircuitBreaker.OPEN
    breaker.record(asyncio.CancelledError())  # a call let through before it opened
    assert breaker.state == CircuitBreaker.OPEN


def test_a_refusal_is_an_answer_and_resets_the_count() -> None:
    breaker = _breaker()
    _fail(breaker, AmazonPayError("down", http_status=503, retryable=True), times=1)
    _fail(breaker, AmazonPayError("no", http_status=404), times=1)
    _fail(breaker, AmazonPayError("down", http_status=503, retryable=True), times=1)
    assert breaker.state == CircuitBreaker.CLOSED
