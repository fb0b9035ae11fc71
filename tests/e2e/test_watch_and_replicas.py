"""WatchEvents, and several replicas sharing one database."""

from __future__ import annotations

import asyncio
import logging
import random
from pathlib import Path

import asyncpg
import grpc
import pytest

from payments.amazonpay.v1 import checkout_session_pb2 as cs
from payments.amazonpay.v1 import ledger_pb2, ledger_pb2_grpc
from service.app import Application
from service.config import load_settings
from service.ledger import ObjectRecord
from tests._emulator import EmulatorProcess
from tests._process import ServiceProcess, free_port
from tests.e2e._flows import checkout, failure, key
from tests.e2e.conftest import Keys, Stubs, service_env, stubs_for

FAST_RECONCILER = {
    "RECONCILER_ENABLED": "1",
    "RECONCILER_INTERVAL_S": "0.1",
    "RECONCILER_POLL_BASE_S": "0.1",
    "RECONCILER_POLL_MAX_S": "0.3",
}


async def _create_session(api: Stubs) -> str:
    created = await api.sessions.CreateCheckoutSession(
        cs.CreateCheckoutSessionRequest(
            idempotency_key=key(),
            web_checkout_details=cs.WebCheckoutDetails(
                checkout_review_return_url="https://shop.example/review"
            ),
        )
    )
    return created.checkout_session.checkout_session_id


async def _next_event(
    stream: grpc.aio.UnaryStreamCall[ledger_pb2.WatchEventsRequest, ledger_pb2.WatchEventsResponse],
    seconds: float = 10,
) -> ledger_pb2.LedgerEvent:
    message = await asyncio.wait_for(stream.read(), seconds)
    assert isinstance(message, ledger_pb2.WatchEventsResponse)  # not grpc.aio.EOF
    return message.event


async def test_watch_streams_new_events_and_resumes_from_an_event_id(api: Stubs) -> None:
    live = api.ledger.WatchEvents(ledger_pb2.WatchEventsRequest())
    await asyncio.sleep(0.3)
    first = await _create_session(api)
    second = await _create_session(api)
    a = await _next_event(live)
    b = await _next_event(live)
    assert [a.object_id, b.object_id] == [first, second]
    assert a.kind == ledger_pb2.OBJECT_KIND_CHECKOUT_SESSION
    assert a.checkout_session.checkout_session_id == first
    live.cancel()

    resumed = api.ledger.WatchEvents(ledger_pb2.WatchEventsRequest(after_event_id=a.event_id))
    replayed = await _next_event(resumed)
    assert replayed.event_id == b.event_id
    third = await _create_session(api)
    assert (await _next_event(resumed)).object_id == third
    resumed.cancel()


async def test_watch_filters_by_object(api: Stubs) -> None:
    target = await _create_session(api)
    stream = api.ledger.WatchEvents(
        ledger_pb2.WatchEventsRequest(object_id=target, after_event_id=0)
    )
    await asyncio.sleep(0.3)
    await _create_session(api)
    await api.sessions.UpdateCheckoutSession(
        cs.UpdateCheckoutSessionRequest(
            checkout_session_id=target,
            web_checkout_details=cs.WebCheckoutDetails(
                checkout_result_return_url="https://shop.example/result"
            ),
        )
    )
    event = await _next_event(stream)
    assert event.object_id == target
    stream.cancel()


async def test_watch_rejects_a_bad_filter(api: Stubs) -> None:
    stream = api.ledger.WatchEvents(ledger_pb2.WatchEventsRequest(after_event_id=-1))
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stream.read()
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT


@pytest.mark.slow
async def test_two_replicas_resolve_each_pending_object_once_and_share_events(
    database_url: str, clean_emulator: EmulatorProcess, keys: Keys, tmp_path: Path
) -> None:
    ports = [free_port(), free_port()]
    replicas = []
    for index, port in enumerate(ports):
        (tmp_path / f"r{index}").mkdir()
        env = {
            **service_env(database_url, clean_emulator, keys, tmp_path / f"r{index}"),
            **FAST_RECONCILER,
            "GRPC_LISTEN": f"127.0.0.1:{port}",
            "MIGRATE_ON_START": "1",
            "PII_KEY_FILES": f"k1={tmp_path / 'r0' / 'pii.key'}",
        }
        replicas.append(ServiceProcess(env))
    for replica in replicas:
        await replica.start()
    try:
        for replica in replicas:
            await replica.wait_serving()
        targets = [f"127.0.0.1:{p}" for p in ports]
        async with (
            grpc.aio.insecure_channel(targets[0]) as channel_a,
            grpc.aio.insecure_channel(targets[1]) as channel_b,
        ):
            a = stubs_for(channel_a, targets[0])
            b = stubs_for(channel_b, targets[1])
            stream_on_a = a.ledger.WatchEvents(ledger_pb2.WatchEventsRequest())
            await asyncio.sleep(0.3)
            made_by_b = await _create_session(b)
            seen = await _next_event(stream_on_a)
            assert seen.object_id == made_by_b
            stream_on_a.cancel()

            charge_ids = []
            for i in range(4):
                done = await checkout(
                    a if i % 2 else b,
                    clean_emulator,
                    intent=cs.PAYMENT_INTENT_AUTHORIZE,
                    card="0701",
                    can_handle_pending=True,
                    reference=f"order-{i}",
                )
                charge_ids.append(done.charge_id)
            await clean_emulator.advance(60)

            conn = await asyncpg.connect(database_url)
            try:
                for _ in range(300):
                    authorized = await conn.fetchval(
                        "SELECT count(*) FROM objects WHERE kind = 'charge' AND state = 'Authorized'"
                        " AND object_id = ANY($1::text[])",
                        charge_ids,
                    )
                    if authorized == len(charge_ids):
                        break
                    await asyncio.sleep(0.05)
                assert authorized == len(charge_ids)
                await asyncio.sleep(1.0)  # both reconcilers keep polling meanwhile
                rows = await conn.fetch(
                    "SELECT object_id, state, count(*) AS n FROM events WHERE kind = 'charge'"
                    " GROUP BY object_id, state"
                )
            finally:
                await conn.close()
            assert {(r["object_id"], r["state"]): r["n"] for r in rows} == {
                **{(c, "AuthorizationInitiated"): 1 for c in charge_ids},
                **{(c, "Authorized"): 1 for c in charge_ids},
            }
        for replica in replicas:
            assert await replica.terminate() == 0
    finally:
        for replica in replicas:
            await replica.kill()


async def _write_objects(app: Application, writer: int, rounds: int, rng: random.Random) -> None:
    """A writer on one replica: transactions over several objects that overlap other writers'
    (so they commit out of event-id order), some holding their transaction open a moment."""
    assert app.ledger is not None
    repo = app.ledger.repository
    for n in range(rounds):
        records = [
            ObjectRecord(
                merchant="default",
                kind="refund",
                object_id=f"S01-0000000-0000000-R{rng.randrange(40):06d}",
                state="RefundInitiated",
                is_final=False,
                charge_permission_id="S01-0000000-0000000",
                snapshot={"writer": writer, "round": n, "part": part},
            )
            for part in range(rng.randint(1, 3))
        ]
        records = list({r.object_id: r for r in records}.values())
        records.sort(key=lambda r: r.object_id)  # one lock order: writers never deadlock
        async with app.ledger.pool.acquire() as conn, conn.transaction():
            await repo._record(conn, records, "api", timeout=None)
            await asyncio.sleep(rng.uniform(0, 0.02))


async def test_a_consumer_resuming_at_random_points_across_replicas_gets_every_event_once(
    database_url: str, clean_emulator: EmulatorProcess, keys: Keys, tmp_path: Path
) -> None:
    """Many writers on two replicas, one consumer that drops its stream at random and resumes on
    either replica from the last event it received: it ends with the events table, each once."""
    rng = random.Random(15)
    replicas = []
    for index in range(2):
        env = service_env(database_url, clean_emulator, keys, tmp_path)
        env["MIGRATE_ON_START"] = "1" if index == 0 else "0"
        app = Application(load_settings(env))
        await app.start()
        replicas.append(app)
    channels = [grpc.aio.insecure_channel(f"127.0.0.1:{app.grpc_port}") for app in replicas]
    try:
        stubs = [ledger_pb2_grpc.LedgerServiceStub(c) for c in channels]
        assert replicas[0].ledger is not None
        [seed] = await replicas[0].ledger.repository.record(
            [
                ObjectRecord(
                    merchant="default",
                    kind="refund",
                    object_id="S01-0000000-0000000-R999999",
                    state="RefundInitiated",
                    is_final=False,
                    snapshot={},
                )
            ],
            "api",
        )
        # Resume points come from the feed itself (an event is listed once it is stable), as a
        # consumer's do; an id read elsewhere may be sent again (docs/api.md).
        for _ in range(100):
            listed = await stubs[0].ListEvents(ledger_pb2.ListEventsRequest())
            if listed.events:
                break
        assert [e.event_id for e in listed.events] == [seed.event_id]
        received: list[int] = []
        expected: list[int] = []  # the table's event count, once the writers are done
        reconnects = 0

        async def consume() -> None:
            nonlocal reconnects
            last = seed.event_id
            while not expected or len(received) < expected[0]:
                stream = rng.choice(stubs).WatchEvents(
                    ledger_pb2.WatchEventsRequest(after_event_id=last)
                )
                reconnects += 1
                try:
                    for _ in range(rng.randint(1, 6)):
                        message = await asyncio.wait_for(stream.read(), 2)
                        assert isinstance(message, ledger_pb2.WatchEventsResponse)  # not EOF
                        last = message.event.event_id
                        received.append(last)
                except TimeoutError:
                    pass  # nothing new for a while: reconnect, as after any drop
                finally:
                    stream.cancel()

        consumer = asyncio.create_task(consume())
        await asyncio.gather(
            *(_write_objects(replicas[w % 2], w, 40, random.Random(w)) for w in range(8))
        )
        conn = await asyncpg.connect(database_url)
        try:
            table = [r["event_id"] for r in await conn.fetch("SELECT event_id FROM events")]
            expected.append(len(table) - 1)
            try:
                await asyncio.wait_for(consumer, 120)
            except TimeoutError:
                missing = sorted(set(table) - set(received) - {seed.event_id})
                rows = await conn.fetch(
                    "SELECT (to_jsonb(e) - 'snapshot')::text AS event,"
                    " pg_current_snapshot()::text AS snapshot FROM events e"
                    " WHERE event_id = ANY($1::bigint[])",
                    missing[:5],
                )
                running = await conn.fetch(
                    "SELECT datname, backend_xid::text, state, xact_start, left(query, 80) AS q"
                    " FROM pg_stat_activity WHERE backend_xid IS NOT NULL"
                )
                raise AssertionError(
                    f"consumer stalled: {len(received)} of {expected[0]} events, "
                    f"missing {missing[:20]}: {[dict(r) for r in rows]}; "
                    f"writers: {[dict(r) for r in running]}"
                ) from None
        finally:
            await conn.close()
        table.remove(seed.event_id)
        assert reconnects > 10
        assert len(received) == len(set(received)), "an event was delivered twice"
        assert set(table) - set(received) == set(), "events were missed"
        assert set(received) - set(table) == set(), "events outside the table were sent"
    finally:
        for channel in channels:
            await channel.close(None)
        for app in replicas:
            await app.stop()


async def test_streams_beyond_the_replica_cap_are_refused_and_the_rest_keep_flowing(
    database_url: str, clean_emulator: EmulatorProcess, keys: Keys, tmp_path: Path
) -> None:
    env = service_env(database_url, clean_emulator, keys, tmp_path)
    env["GRPC_MAX_EVENT_STREAMS"] = "3"
    app = Application(load_settings(env))
    await app.start()
    try:
        target = f"127.0.0.1:{app.grpc_port}"
        async with grpc.aio.insecure_channel(target) as channel:
            api = stubs_for(channel, target)
            open_streams = [api.ledger.WatchEvents(ledger_pb2.WatchEventsRequest()) for _ in "abc"]
            await asyncio.sleep(0.3)
            refused = api.ledger.WatchEvents(ledger_pb2.WatchEventsRequest())
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await refused.read()
            refusal = failure(caught.value)
            assert refusal.code == grpc.StatusCode.RESOURCE_EXHAUSTED
            assert refusal.reason == "TOO_MANY_STREAMS"
            assert refusal.retry_delay_s is not None
            made = await _create_session(api)
            for stream in open_streams:
                assert (await _next_event(stream)).object_id == made
            open_streams.pop().cancel()
            await asyncio.sleep(0.3)
            again = api.ledger.WatchEvents(ledger_pb2.WatchEventsRequest())
            await asyncio.sleep(0.3)
            second = await _create_session(api)
            assert (await _next_event(again)).object_id == second
            for stream in [*open_streams, again]:
                stream.cancel()
    finally:
        await app.stop()


def _rpc_lines(caplog: pytest.LogCaptureFixture, method: str) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == "service.rpc" and vars(r).get("rpc") == method]


async def test_a_watch_logs_one_rpc_line_however_it_ends(
    api: Stubs, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO, logger="service.rpc"):
        refused = api.ledger.WatchEvents(ledger_pb2.WatchEventsRequest(after_event_id=-1))
        with pytest.raises(grpc.aio.AioRpcError):
            await refused.read()
        live = api.ledger.WatchEvents(ledger_pb2.WatchEventsRequest())
        await asyncio.sleep(0.3)
        made = await _create_session(api)
        assert (await _next_event(live)).object_id == made
        live.cancel()
        for _ in range(100):
            if len(_rpc_lines(caplog, "WatchEvents")) >= 2:
                break
            await asyncio.sleep(0.05)
    lines = [vars(r) for r in _rpc_lines(caplog, "WatchEvents")]
    assert [(line["code"], line["reason"]) for line in lines] == [
        ("INVALID_ARGUMENT", "VALIDATION_FAILED"),
        ("CANCELLED", None),
    ]
    assert all(line["merchant"] == "default" for line in lines)
    # One line per RPC, not per message: the stream's events are not collected into it.
    assert lines[1]["object_ids"] == {}
