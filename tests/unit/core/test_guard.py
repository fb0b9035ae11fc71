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
from service.core import Admission, BreakerSettings, CircuitBreaker, CircuitOpen, Overloaded


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


# --- half-open probes ------------------------------------------------------------------------

DOWN = AmazonPayError("down", http_status=503, retryable=True)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _opened(clock: Clock, changes: list[int] | None = None, failures: int = 1) -> CircuitBreaker:
    breaker = CircuitBreaker(
        "default",
        BreakerSettings(failures=failures, open_s=10, probes=1),
        clock=clock,
        on_change=None if changes is None else lambda merchant, state: changes.append(state),
    )
    _fail(breaker, DOWN, times=failures)
    assert breaker.state == CircuitBreaker.OPEN
    return breaker


def test_after_open_s_one_probe_goes_through_and_its_success_closes_the_circuit() -> None:
    clock = Clock()
    changes: list[int] = []
    breaker = _opened(clock, changes)
    clock.now += 9.5
    with pytest.raises(CircuitOpen) as early:
        breaker.before_call()
    assert early.value.retry_after_s == pytest.approx(0.5)
    clock.now += 0.5
    breaker.check()  # open_s has passed: no longer refuses, and lets no probe through itself
    assert breaker.state == CircuitBreaker.OPEN
    breaker.before_call()
    assert breaker.state == CircuitBreaker.HALF_OPEN
    with pytest.raises(CircuitOpen):
        breaker.before_call()  # one probe at a time
    breaker.record(None)
    assert breaker.state == CircuitBreaker.CLOSED
    breaker.before_call()
    assert changes == [CircuitBreaker.OPEN, CircuitBreaker.HALF_OPEN, CircuitBreaker.CLOSED]


def test_a_failed_probe_opens_the_circuit_again_at_once() -> None:
    clock = Clock()
    breaker = _opened(clock, failures=3)
    clock.now += 10
    breaker.before_call()
    breaker.record(DOWN)
    assert breaker.state == CircuitBreaker.OPEN
    with pytest.raises(CircuitOpen) as refused:
        breaker.check()
    assert refused.value.retry_after_s == pytest.approx(10)


def test_a_probe_that_says_nothing_about_amazon_frees_its_place_for_another() -> None:
    clock = Clock()
    breaker = _opened(clock)
    clock.now += 10
    breaker.before_call()
    breaker.record(asyncio.CancelledError())
    assert breaker.state == CircuitBreaker.HALF_OPEN
    breaker.before_call()  # the next probe may go
    breaker.record(AmazonPayError("no", http_status=404))  # an answer: Amazon is back
    assert breaker.state == CircuitBreaker.CLOSED


# --- admission -------------------------------------------------------------------------------


async def _hold(admission: Admission, entered: asyncio.Event, release: asyncio.Event) -> None:
    async with admission:
        entered.set()
        await release.wait()


async def test_admission_queues_up_to_max_queued_then_refuses_at_once() -> None:
    admission = Admission("default", max_concurrent=1, max_queued=1)
    release = asyncio.Event()
    running, queued = asyncio.Event(), asyncio.Event()
    holder = asyncio.create_task(_hold(admission, running, release))
    await asyncio.wait_for(running.wait(), 5)
    waiter = asyncio.create_task(_hold(admission, queued, release))
    await asyncio.sleep(0)
    assert not queued.is_set()
    with pytest.raises(Overloaded) as refused:
        async with asyncio.timeout(1), admission:  # refused at once, not queued
            pass
    assert refused.value.merchant == "default"
    release.set()
    await asyncio.wait_for(asyncio.gather(holder, waiter), 5)
    assert queued.is_set()
    async with admission:  # every place was given back
        pass


async def test_a_cancelled_waiter_gives_its_place_in_the_queue_back() -> None:
    admission = Admission("default", max_concurrent=1, max_queued=1)
    release = asyncio.Event()
    running = asyncio.Event()
    holder = asyncio.create_task(_hold(admission, running, release))
    await asyncio.wait_for(running.wait(), 5)
    gone = asyncio.create_task(_hold(admission, asyncio.Event(), release))
    await asyncio.sleep(0)
    gone.cancel()
    with pytest.raises(asyncio.CancelledError):
        await gone
    queued = asyncio.Event()
    waiter = asyncio.create_task(_hold(admission, queued, release))  # not Overloaded
    release.set()
    await asyncio.wait_for(asyncio.gather(holder, waiter), 5)
    assert queued.is_set()
