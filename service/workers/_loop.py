"""What every background worker shares: a task that runs a pass, pauses, and backs off quietly
while the ledger cannot be reached; each pass one trace."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
from typing import Any, ClassVar, Generic, TypeVar

from opentelemetry import trace

from service.ledger import is_unavailable

__all__ = ["Worker"]

_tracer = trace.get_tracer(__name__)

P = TypeVar("P")


class Worker(Generic[P]):
    """Subclasses give their `name` and `max_backoff_s` in the class statement
    (``class Reconciler(Worker[PassResult], name="reconciler", max_backoff_s=30.0)``), set
    `interval_s`, and implement `_pass`, which returns a dataclass of counts (its fields become
    the pass span's attributes)."""

    name: ClassVar[str]
    """The task's name, the span's prefix and the logger's (`service.workers.<name>`)."""
    max_backoff_s: ClassVar[float]
    """The longest pause while the ledger cannot be reached."""
    log: ClassVar[logging.Logger]
    interval_s: float
    _task: asyncio.Task[None] | None = None

    def __init_subclass__(cls, *, name: str, max_backoff_s: float, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        cls.name, cls.max_backoff_s = name, max_backoff_s
        cls.log = logging.getLogger(f"service.workers.{name}")

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name=self.name)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _pass(self) -> P:
        raise NotImplementedError

    async def run_once(self) -> P:
        """One pass as one trace: every Amazon call and SQL statement of it is a child."""
        with _tracer.start_as_current_span(
            f"{self.name}.pass", kind=trace.SpanKind.INTERNAL
        ) as span:
            result = await self._pass()
            counts: dict[str, Any] = dataclasses.asdict(result)  # type: ignore[call-overload]
            span.set_attributes({f"{self.name}.{k}": v for k, v in counts.items()})
            return result

    async def _run(self) -> None:
        """Postgres restarting or unreachable is a warning and doubles the pause up to
        `max_backoff_s` (readiness already says so); any other failure is logged with its
        traceback and the next pass comes as usual."""
        pause = self.interval_s
        while True:
            try:
                await self.run_once()
                pause = self.interval_s
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                if not is_unavailable(exc):
                    self.log.exception(f"{self.name} pass failed")
                else:
                    pause = min(max(pause * 2, self.interval_s), self.max_backoff_s)
                    self.log.warning(
                        f"{self.name} pass skipped: ledger unreachable",
                        extra={"error": type(exc).__name__, "retry_in_s": pause},
                    )
            await asyncio.sleep(pause)
