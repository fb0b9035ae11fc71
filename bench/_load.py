"""A bounded load generator: closed loop (N workers) or open loop (fixed rate), never unbounded.

Every run stops by itself at ``max_calls`` or ``max_seconds``, whichever comes first. A call is an
``async`` function of its sequence number; its latency is measured around the await, and a raised
``grpc.aio.AioRpcError`` is counted by status code (other exceptions by class name).
"""

from __future__ import annotations

import asyncio
import math
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import grpc

Call = Callable[[int], Awaitable[Any]]


@dataclass
class Run:
    latencies: list[float] = field(default_factory=list)
    errors: Counter[str] = field(default_factory=Counter)
    seconds: float = 0.0
    started: int = 0

    @property
    def ok(self) -> int:
        return len(self.latencies)

    @property
    def throughput(self) -> float:
        return self.ok / self.seconds if self.seconds > 0 else 0.0

    def percentile_ms(self, q: float) -> float:
        return percentile(self.latencies, q) * 1000

    def summary(self) -> dict[str, Any]:
        return {
            "calls_ok": self.ok,
            "calls_failed": sum(self.errors.values()),
            "errors": dict(self.errors),
            "seconds": round(self.seconds, 3),
            "throughput_per_s": round(self.throughput, 1),
            "p50_ms": round(self.percentile_ms(0.50), 2),
            "p95_ms": round(self.percentile_ms(0.95), 2),
            "p99_ms": round(self.percentile_ms(0.99), 2),
            "max_ms": round(max(self.latencies, default=0.0) * 1000, 2),
        }


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (no interpolation): the value q of the calls were at or under."""
    if not values:
        return 0.0
    ordered = sorted(values)
    rank = max(1, math.ceil(q * len(ordered)))
    return ordered[rank - 1]


async def _timed(call: Call, index: int, run: Run) -> None:
    started = time.perf_counter()
    try:
        await call(index)
    except grpc.aio.AioRpcError as exc:
        run.errors[exc.code().name] += 1
        return
    except Exception as exc:
        run.errors[type(exc).__name__] += 1
        return
    run.latencies.append(time.perf_counter() - started)


async def closed_loop(call: Call, *, concurrency: int, max_calls: int, max_seconds: float) -> Run:
    """``concurrency`` workers, each starting its next call when the previous one answered."""
    run = Run()
    counter = iter(range(max_calls))
    started = time.perf_counter()
    stop_at = started + max_seconds

    async def worker() -> None:
        for index in counter:
            if time.perf_counter() >= stop_at:
                return
            run.started += 1
            await _timed(call, index, run)

    await asyncio.gather(*(worker() for _ in range(max(1, min(concurrency, max_calls)))))
    run.seconds = time.perf_counter() - started
    return run


async def open_loop(
    call: Call, *, rate: float, max_calls: int, max_seconds: float, max_in_flight: int = 256
) -> Run:
    """Start calls at a fixed rate regardless of answers (at most ``max_in_flight`` at once)."""
    run = Run()
    interval = 1.0 / rate
    started = time.perf_counter()
    gate = asyncio.Semaphore(max_in_flight)
    tasks: set[asyncio.Task[None]] = set()

    async def one(index: int) -> None:
        try:
            await _timed(call, index, run)
        finally:
            gate.release()

    for index in range(max_calls):
        due = started + index * interval
        if due - started >= max_seconds:
            break
        delay = due - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        await gate.acquire()
        run.started += 1
        task = asyncio.create_task(one(index))
        tasks.add(task)
        task.add_done_callback(tasks.discard)
    if tasks:
        await asyncio.wait(tasks, timeout=max_seconds + 60)
    run.seconds = time.perf_counter() - started
    return run
