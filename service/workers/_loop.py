"""The loop every background worker runs: a pass, a pause, and a quiet back-off while the
ledger cannot be reached."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from service.ledger import is_unavailable

__all__ = ["repeat"]


async def repeat(
    run_once: Callable[[], Awaitable[object]],
    *,
    interval_s: float,
    max_backoff_s: float,
    log: logging.Logger,
    what: str,
) -> None:
    """Run `run_once` every `interval_s` until cancelled. A failure is logged with its traceback;
    Postgres restarting or unreachable is a warning and doubles the pause up to `max_backoff_s`
    (readiness already says so; an error every interval would tell nobody anything)."""
    pause = interval_s
    while True:
        try:
            await run_once()
            pause = interval_s
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            if not is_unavailable(exc):
                log.exception(f"{what} pass failed")
            else:
                pause = min(max(pause * 2, interval_s), max_backoff_s)
                log.warning(
                    f"{what} pass skipped: ledger unreachable",
                    extra={"error": type(exc).__name__, "retry_in_s": pause},
                )
        await asyncio.sleep(pause)
