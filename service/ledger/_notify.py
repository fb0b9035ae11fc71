"""Ledger events fanned out to in-process subscribers: one shared read per replica.

Postgres LISTEN/NOTIFY only wakes the hub; what it delivers comes from one query per wake-up, over
every merchant, reading the stable events after the hub's own position (see `Position` and
migration 0008). Each subscriber filters that batch in memory, so a thousand streams cost one query,
not a thousand. Because the hub reads by position, a lost notification or a Postgres restart delays
events but cannot lose them: after reconnecting, the hub simply reads on from where it was. While
no stream is subscribed the hub reads no events at all: once a second it moves its position to
the frontier instead (one cheap query, not one read per commit on the hot path).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from dataclasses import KW_ONLY, dataclass, field
from typing import Any

import asyncpg
from opentelemetry.instrumentation.utils import suppress_instrumentation

from ._errors import is_unavailable
from ._records import Event, Position
from ._repository import Repository

__all__ = ["CHANNEL", "EventHub", "StreamLimitReached", "Subscription"]

_log = logging.getLogger("service.ledger.notify")

CHANNEL = "ledger_events"

_BATCH = 500
# While committed events wait behind a running transaction, read again this soon (doubling).
_HELD_FIRST_S = 0.002
_HELD_MAX_S = 0.01


async def _wait(event: asyncio.Event, timeout_s: float) -> None:
    """Until `event` is set or `timeout_s` passed. `asyncio.timeout`, not `wait_for`: on 3.11
    `wait_for` can swallow a cancellation that arrives as its wait ends, and the reader, which
    waits many times a second, would then outlive `stop()`."""
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(timeout_s):
            await event.wait()


class StreamLimitReached(Exception):
    """This replica already serves its maximum number of event streams."""


class Subscription:
    """A bounded queue of events accepted by the subscriber's filter, in position order.

    `None` in the queue only wakes the reader (the hub is stopping)."""

    def __init__(self, hub: EventHub, accept: Callable[[Event], bool], capacity: int) -> None:
        self._hub = hub
        self._accept = accept
        self.queue: asyncio.Queue[Event | None] = asyncio.Queue(capacity)
        self.overflowed = False

    def _consider(self, event: Event) -> None:
        try:
            accepted = self._accept(event)
        except Exception:
            _log.exception("event stream filter failed; ending the stream")
            accepted = False
            self._offer(None)  # wakes the stream, which then ends as overflowed and resumes
            self.overflowed = True
        if accepted:
            self._offer(event)

    def _offer(self, item: Event | None) -> None:
        if self.overflowed:
            return
        try:
            self.queue.put_nowait(item)
        except asyncio.QueueFull:
            self.overflowed = True

    async def get(self) -> Event | None:
        return await self.queue.get()

    def close(self) -> None:
        self._hub._subscribers.discard(self)

    def __enter__(self) -> Subscription:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()


@dataclass(eq=False, repr=False)
class EventHub:
    """The replica's one reader of stable events, and the subscriptions it offers them to."""

    url: str
    repository: Repository
    _: KW_ONLY
    health_interval_s: float = 2.0
    """How often the listening connection is checked (and, if lost, reconnected)."""
    subscriber_capacity: int = 1000
    """Events one subscription may hold unread before it overflows."""
    max_subscribers: int = 1000
    idle_poll_s: float = 1.0
    """How long the reader waits for a notification before it reads anyway."""
    connected: asyncio.Event = field(init=False, default_factory=asyncio.Event)
    stopping: bool = field(init=False, default=False)
    _subscribers: set[Subscription] = field(init=False, default_factory=set)
    _conn: asyncpg.Connection | None = field(init=False, default=None)
    _tasks: list[asyncio.Task[None]] = field(init=False, default_factory=list)
    _wake: asyncio.Event = field(init=False, default_factory=asyncio.Event)
    _subscribed: asyncio.Event = field(init=False, default_factory=asyncio.Event)
    _position: Position = field(init=False, default=(0, 0))

    @property
    def position(self) -> Position:
        """Every stable event up to here has been offered to the subscribers of that moment."""
        return self._position

    async def start(self) -> None:
        await self._connect()
        self._position = await self.repository.event_frontier()
        self._tasks = [
            asyncio.create_task(self._watch(), name="ledger-event-listener"),
            asyncio.create_task(self._read(), name="ledger-event-reader"),
        ]

    async def _connect(self) -> None:
        conn = await asyncpg.connect(self.url)
        await conn.add_listener(CHANNEL, self._on_notify)
        self._conn = conn
        self.connected.set()

    def _on_notify(self, _conn: Any, _pid: int, _channel: str, _payload: object) -> None:
        self._wake.set()

    async def _read(self) -> None:
        """The replica's one reader: wake on a notification (or a timer), read what is stable,
        offer each event to every subscriber whose filter accepts it."""
        held_delay = 0.0
        failures = 0
        while True:
            if not self._subscribers:
                self._subscribed.clear()
                await _wait(self._subscribed, self.idle_poll_s)
            if not self._subscribers:
                try:
                    frontier = await self.repository.event_frontier()
                except Exception as exc:
                    failures = self._read_failed(exc, failures)
                    continue
                failures = 0
                # Only if still nobody subscribed: a stream that subscribes from now on replays
                # the ledger up to a frontier taken after this one, so nothing falls in between.
                if not self._subscribers:
                    self._position = max(self._position, frontier)
                continue
            await _wait(self._wake, held_delay or self.idle_poll_s)
            self._wake.clear()
            try:
                batch = await self.repository.stable_events(
                    self._position, limit=_BATCH, timeout=10
                )
            except Exception as exc:
                failures = self._read_failed(exc, failures)
                held_delay = min(0.1 * 2**failures, 5.0)
                continue
            failures = 0
            for event in batch.items[:_BATCH]:
                self._position = event.position
                for subscriber in list(self._subscribers):
                    subscriber._consider(event)
            if len(batch.items) > _BATCH:
                self._wake.set()
                held_delay = 0.0
            elif batch.held_back:
                held_delay = min(held_delay * 2, _HELD_MAX_S) if held_delay else _HELD_FIRST_S
            else:
                held_delay = 0.0

    @staticmethod
    def _read_failed(exc: Exception, failures: int) -> int:
        """The one reader of every stream must outlive anything a read can throw; an
        unreachable or restarting ledger is expected, anything else is a bug."""
        failures += 1
        if not (is_unavailable(exc) or isinstance(exc, asyncpg.PostgresError)):
            _log.exception("ledger event read failed unexpectedly")
        elif failures == 1:
            _log.warning("ledger event read failed", extra={"error": type(exc).__name__})
        return failures

    async def _watch(self) -> None:
        """Detect a lost listening connection and reconnect with backoff."""
        delay = 0.5
        while True:
            await asyncio.sleep(self.health_interval_s)
            conn = self._conn
            healthy = False
            if conn is not None and not conn.is_closed():
                with contextlib.suppress(Exception), suppress_instrumentation():  # untraced
                    await asyncio.wait_for(conn.fetchval("SELECT 1"), self.health_interval_s)
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
            self._wake.set()

    def subscribe(self, accept: Callable[[Event], bool]) -> Subscription:
        """A subscription to events `accept` admits, from the hub's current position on."""
        if len(self._subscribers) >= self.max_subscribers:
            raise StreamLimitReached(f"at most {self.max_subscribers} event streams per replica")
        subscription = Subscription(self, accept, self.subscriber_capacity)
        self._subscribers.add(subscription)
        self._subscribed.set()
        return subscription

    def close_subscribers(self) -> None:
        """Wake every subscriber with `stopping` set, so streams end before the server drains."""
        self.stopping = True
        for subscriber in list(self._subscribers):
            subscriber._offer(None)

    async def stop(self) -> None:
        self.close_subscribers()
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks = []
        if self._conn is not None:
            conn, self._conn = self._conn, None
            with contextlib.suppress(Exception):
                await conn.close(timeout=2)
