"""WatchEvents, and several replicas sharing one database."""

from __future__ import annotations

import asyncio
from pathlib import Path

import asyncpg
import grpc
import pytest

from payments.amazonpay.v1 import checkout_session_pb2 as cs
from payments.amazonpay.v1 import ledger_pb2
from tests._emulator import EmulatorProcess
from tests._process import ServiceProcess, free_port
from tests.e2e._flows import checkout, key
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
    stream: grpc.aio.UnaryStreamCall, seconds: float = 10
) -> ledger_pb2.LedgerEvent:  # type: ignore[type-arg]
    message = await asyncio.wait_for(stream.read(), seconds)
    assert message is not grpc.aio.EOF
    event: ledger_pb2.LedgerEvent = message.event
    return event


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
