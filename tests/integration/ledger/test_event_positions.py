"""Events in a resumable order (migration 0008): a reader resuming after the last event it saw
never skips one that committed late."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable

import asyncpg
import pytest

from service.ledger import (
    Event,
    EventFilter,
    EventHub,
    Ledger,
    ObjectRecord,
    PiiKeyring,
    StreamLimitReached,
    load_migrations,
)

CP = "S01-7654321-7654321"


def refund(n: int, state: str = "Pending") -> ObjectRecord:
    return ObjectRecord(
        merchant="default",
        kind="refund",
        object_id=f"{CP}-R{n:06d}",
        state=state,
        is_final=False,
        charge_permission_id=CP,
        snapshot={"refundId": f"{CP}-R{n:06d}", "statusDetails": {"state": state}},
    )


async def _ids(ledger: Ledger, after_event_id: int = 0, settle_s: float = 1.0) -> list[int]:
    page = await ledger.repository.list_events(
        EventFilter(merchant="default", after_event_id=after_event_id),
        page_size=100,
        settle_s=settle_s,
    )
    return [e.event_id for e in page.items]


async def test_an_event_that_commits_late_is_not_skipped_by_a_reader_resuming_after_a_later_one(
    ledger: Ledger, database_url: str
) -> None:
    repo = ledger.repository
    slow = await asyncpg.connect(database_url)
    try:
        transaction = slow.transaction()
        await transaction.start()
        # The slow writer takes the lower event id, then the fast one commits first.
        await slow.execute(
            "INSERT INTO events (merchant, kind, object_id, state, source, snapshot)"
            " VALUES ('default', 'refund', $1, 'Pending', 'api', '{}')",
            f"{CP}-R000001",
        )
        [fast] = await repo.record([refund(2)], "api")
        # Held back while the slower transaction may still commit an event before it.
        assert await _ids(ledger, settle_s=0) == []
        await transaction.commit()
    finally:
        await slow.close()
    seen = await _ids(ledger)
    assert len(seen) == 2
    assert fast.event_id in seen
    # Today's callers resume "after the last event_id received"; that is exact.
    assert await _ids(ledger, after_event_id=seen[0]) == seen[1:]
    assert await _ids(ledger, after_event_id=seen[1]) == []


async def test_list_events_waits_briefly_for_a_running_transaction_so_callers_read_their_writes(
    ledger: Ledger, database_url: str
) -> None:
    blocker = await asyncpg.connect(database_url)
    try:
        transaction = blocker.transaction()
        await transaction.start()
        await blocker.fetchval("SELECT pg_current_xact_id()")
        [event] = await ledger.repository.record([refund(1)], "api")

        async def commit_soon() -> None:
            await asyncio.sleep(0.2)
            await transaction.commit()

        committer = asyncio.create_task(commit_soon())
        page = await ledger.repository.list_events(
            EventFilter(merchant="default"), page_size=10, settle_s=5.0
        )
        await committer
        assert [e.event_id for e in page.items] == [event.event_id]
    finally:
        await blocker.close()


async def test_an_object_whose_writer_took_its_transaction_id_early_keeps_its_events_in_order(
    ledger: Ledger,
) -> None:
    """A transaction whose id is older than the one that wrote an object's previous event still
    sorts after it: per object, delivery order is commit order."""
    repo = ledger.repository
    await repo.record([refund(1, "Pending")], "api")
    async with ledger.pool.acquire() as conn, conn.transaction():
        await conn.fetchval("SELECT pg_current_xact_id()")
        await repo.record([refund(1, "Refunded")], "ipn")  # a younger transaction, committed
        await repo._record(conn, [refund(1, "Declined")], "poll", timeout=None)
    page = await repo.list_events(EventFilter(merchant="default"), page_size=10)
    assert [e.state for e in page.items] == ["Pending", "Refunded", "Declined"]


def _refund_number(n: int) -> Callable[[Event], bool]:
    """A stream filter accepting the events of refund `n` only."""
    return lambda event: event.object_id.endswith(f"R{n:06d}")


async def test_one_hub_read_serves_every_stream_and_the_cap_is_enforced(
    ledger: Ledger, database_url: str
) -> None:
    hub = EventHub(database_url, ledger.repository, max_subscribers=3, idle_poll_s=0.05)
    await hub.start()
    try:
        subs = [hub.subscribe(_refund_number(n)) for n in (1, 2)]
        everything = hub.subscribe(lambda e: True)
        with pytest.raises(StreamLimitReached):
            hub.subscribe(lambda e: True)
        await ledger.repository.record([refund(1), refund(2), refund(3)], "api")
        got = [await asyncio.wait_for(everything.get(), 5) for _ in range(3)]
        assert [e.object_id[-7:] for e in got if e] == ["R000001", "R000002", "R000003"]
        for n, sub in zip((1, 2), subs, strict=True):
            first = await asyncio.wait_for(sub.get(), 5)
            assert first is not None
            assert first.object_id.endswith(f"R{n:06d}")
            assert sub.queue.empty()
    finally:
        await hub.stop()


async def test_events_written_before_the_migration_keep_their_order(database_url: str) -> None:
    ledger = await Ledger.connect(
        database_url, keyring=PiiKeyring({"t": os.urandom(32)}, "t"), min_size=1, max_size=2
    )
    try:
        async with ledger.pool.acquire() as conn:
            for migration in load_migrations():
                if migration.version >= 8:
                    break
                await conn.execute(migration.sql)
            await conn.execute(
                "INSERT INTO events (merchant, kind, object_id, state, source, snapshot)"
                " SELECT 'default', 'refund', 'R' || n, 'Pending', 'api', '{}'"
                " FROM generate_series(1, 3) n"
            )
            await conn.execute(next(m for m in load_migrations() if m.version == 8).sql)
            await conn.execute(
                "INSERT INTO events (merchant, kind, object_id, state, source, snapshot)"
                " VALUES ('default', 'refund', 'R4', 'Pending', 'api', '{}')"
            )
        page = await ledger.repository.list_events(EventFilter(merchant="default"), page_size=10)
        assert [e.object_id for e in page.items] == ["R1", "R2", "R3", "R4"]
        assert [e.tx for e in page.items][:3] == [1, 1, 1]
    finally:
        await ledger.close()


async def test_resuming_after_an_event_not_yet_delivered_misses_nothing_before_it(
    ledger: Ledger, database_url: str
) -> None:
    """An id read elsewhere (GetTransaction shows every committed event) while a transaction that
    sorts before it still runs: resuming after it must not skip that transaction's event."""
    repo = ledger.repository
    slow = await asyncpg.connect(database_url)
    try:
        transaction = slow.transaction()
        await transaction.start()
        await slow.execute(
            "INSERT INTO events (merchant, kind, object_id, state, source, snapshot)"
            " VALUES ('default', 'refund', $1, 'Pending', 'api', '{}')",
            f"{CP}-R000001",
        )
        [seen_elsewhere] = await repo.record([refund(2)], "api")
        resume_at = await repo.event_position("default", seen_elsewhere.event_id, settle_s=0)
        await transaction.commit()
    finally:
        await slow.close()
    page = await repo.list_events(EventFilter(merchant="default"), page_size=10, after=resume_at)
    assert [e.object_id[-7:] for e in page.items] == ["R000001", "R000002"]


async def test_a_failing_stream_filter_ends_that_stream_and_the_others_keep_flowing(
    ledger: Ledger, database_url: str
) -> None:
    hub = EventHub(database_url, ledger.repository, idle_poll_s=0.05)
    await hub.start()
    try:

        def broken(_event: object) -> bool:
            raise RuntimeError("a filter bug")

        failing = hub.subscribe(broken)
        healthy = hub.subscribe(lambda e: True)
        await ledger.repository.record([refund(1)], "api")
        assert await asyncio.wait_for(failing.get(), 5) is None
        assert failing.overflowed
        delivered = await asyncio.wait_for(healthy.get(), 5)
        assert delivered is not None
        assert delivered.object_id.endswith("R000001")
    finally:
        await hub.stop()


class CountingRepository:
    """The ledger's repository, counting the hub's event reads."""

    def __init__(self, inner: object) -> None:
        self._inner = inner
        self.event_reads = 0

    def __getattr__(self, name: str) -> object:
        return getattr(self._inner, name)

    async def stable_events(self, *args: object, **kwargs: object) -> object:
        self.event_reads += 1
        return await self._inner.stable_events(*args, **kwargs)  # type: ignore[attr-defined]


async def test_a_hub_without_streams_reads_no_events_and_a_later_stream_misses_none(
    ledger: Ledger, database_url: str
) -> None:
    repository = CountingRepository(ledger.repository)
    hub = EventHub(database_url, repository, idle_poll_s=0.05)  # type: ignore[arg-type]
    await hub.start()
    try:
        start = hub.position
        await ledger.repository.record([refund(11), refund(12)], "api")
        await asyncio.sleep(0.5)  # notifications arrived, the idle hub took the frontier twice
        assert repository.event_reads == 0
        assert hub.position > start  # it followed the frontier past those events
        stream = hub.subscribe(lambda e: True)
        await ledger.repository.record([refund(13)], "api")
        event = await asyncio.wait_for(stream.get(), 5)
        assert event is not None
        assert event.object_id.endswith("R000013")
        assert repository.event_reads >= 1
        stream.close()
    finally:
        await hub.stop()
