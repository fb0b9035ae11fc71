"""Ledger events fanned out to in-process subscribers from Postgres LISTEN/NOTIFY.

One listening connection per replica. Postgres delivers a notification when the inserting
transaction commits, on every replica, so a subscriber on any replica sees every committed event.
If the listening connection is lost (Postgres restart), the hub reconnects and tells every
subscriber to catch up from the ledger, because notifications sent meanwhile are gone.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from dataclasses import dataclass
from typing import Any

import asyncpg
from opentelemetry.instrumentation.utils import suppress_instrumentation

__all__ = ["CHANNEL", "EventHub", "Notice", "Subscription"]

_log = logging.getLogger("service.ledger.notify")

CHANNEL = "ledger_events"


@dataclass(frozen=True)
class Notice:
    """Routing fields of a committed event; read the event itself by id."""

    event_id: int
    merchant: str
    kind: str
    object_id: str
    charge_permission_id: str | None


class Subscription:
    """A bounded queue of notices. `None` in the queue means "catch up from the ledger"."""

    def __init__(self, hub: EventHub, capacity: int) -> None:
        self._hub = hub
        self.queue: asyncio.Queue[Notice | None] = asyncio.Queue(capacity)
        self.overflowed = False

    def _offer(self, item: Notice | None) -> None:
        try:
            self.queue.put_nowait(item)
        except asyncio.QueueFull:
            self.overflowed = True

    async def get(self) -> Notice | None:
        return await self.queue.get()

    def close(self) -> None:
        self._hub._subscribers.discard(self)

    def __enter__(self) -> Subscription:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()


class EventHub:
    def __init__(
        self, url: str, *, health_interval_s: float = 2.0, subscriber_capacity: int = 1000
    ) -> None:
        self._url = url
        self._health_interval_s = health_interval_s
        self._capacity = subscriber_capacity
        self._subscribers: set[Subscription] = set()
        self._conn: asyncpg.Connection | None = None
        self._task: asyncio.Task[None] | None = None
        self.connected = asyncio.Event()
        self.stopping = False

    async def start(self) -> None:
        await self._connect()
        self._task = asyncio.create_task(self._watch(), name="ledger-event-hub")

    async def _connect(self) -> None:
        conn = await asyncpg.connect(self._url)
        await conn.add_listener(CHANNEL, self._on_notify)
        self._conn = conn
        self.connected.set()

    def _on_notify(self, _conn: Any, _pid: int, _channel: str, payload: object) -> None:
        try:
            data = json.loads(str(payload))
            notice = Notice(int(data["id"]), data["m"], data["k"], data["o"], data.get("c"))
        except (ValueError, KeyError, TypeError):
            _log.warning("malformed ledger notification ignored")
            return
        for subscriber in list(self._subscribers):
            subscriber._offer(notice)

    async def _watch(self) -> None:
        """Detect a lost connection and reconnect with backoff; subscribers then catch up."""
        delay = 0.5
        while True:
            await asyncio.sleep(self._health_interval_s)
            conn = self._conn
            healthy = False
            if conn is not None and not conn.is_closed():
                with contextlib.suppress(Exception), suppress_instrumentation():  # untraced
                    await asyncio.wait_for(conn.fetchval("SELECT 1"), self._health_interval_s)
                    healthy = True
            if healthy:
                delay = 0.5
                continue
            self.connected.clear()
            if conn is not None:
                with contextlib.suppress(Exception):
                    conn.terminate()
            try:
                await self._connect()
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
                _log.warning(
                    "ledger listener reconnect failed", extra={"error": type(exc).__name__}
                )
                await asyncio.sleep(delay)
                delay = min(delay * 2, 10.0)
                continue
            _log.info("ledger listener reconnected")
            for subscriber in list(self._subscribers):
                subscriber._offer(None)

    def subscribe(self) -> Subscription:
        subscription = Subscription(self, self._capacity)
        self._subscribers.add(subscription)
        return subscription

    def close_subscribers(self) -> None:
        """Wake every subscriber with `stopping` set, so streams end before the server drains."""
        self.stopping = True
        for subscriber in list(self._subscribers):
            subscriber._offer(None)

    async def stop(self) -> None:
        self.close_subscribers()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        if self._conn is not None:
            conn, self._conn = self._conn, None
            with contextlib.suppress(Exception):
                await conn.close(timeout=2)
