"""The IPN port faces the internet: slow or idle connections are cut off, quietly, and never
hold the service up. A bounded loopback load test, not a benchmark: no latency is asserted
beyond generous bounds that only a wedged service would miss."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import aiohttp
import grpc
import pytest

from payments.amazonpay.v1 import charge_pb2
from payments.amazonpay.v1 import checkout_session_pb2 as cs
from service.app import Application
from service.config import load_settings
from tests._emulator import EmulatorProcess
from tests.e2e._flows import checkout, key, usd
from tests.e2e.conftest import Keys, service_env, stubs_for

SLOW_CONNECTIONS = 300
CAP = 40


async def _slow_client(port: int, stage: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A connection that stops mid-request: in the headers, or in the body."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    if stage == 0:
        writer.write(b"POST /ipn HTTP/1.1\r\nHost: ipn\r\n")
    elif stage == 1:
        writer.write(b'POST /ipn HTTP/1.1\r\nHost: ipn\r\nContent-Length: 900\r\n\r\n{"Type"')
    await writer.drain()
    return reader, writer


async def _closed_by_server(reader: asyncio.StreamReader) -> bool:
    try:
        while await reader.read(4096):
            pass
    except ConnectionError:
        pass
    return True


async def test_slow_ipn_connections_are_cut_off_quietly_and_create_charge_keeps_answering(
    database_url: str,
    clean_emulator: EmulatorProcess,
    keys: Keys,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    env = {
        **service_env(database_url, clean_emulator, keys, tmp_path),
        "IPN_READ_TIMEOUT_S": "1",
        "IPN_MAX_CONNECTIONS": str(CAP),
    }
    app = Application(load_settings(env))
    await app.start()
    writers: list[asyncio.StreamWriter] = []
    try:
        with caplog.at_level(logging.INFO):
            # In waves, so the kernel's accept queue (backlog 128) never overflows: a dropped
            # handshake is retried by TCP for tens of seconds, which would measure the kernel.
            clients: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []
            for wave in range(0, SLOW_CONNECTIONS, 20):
                clients += await asyncio.gather(
                    *(_slow_client(app.ipn_port, i % 3) for i in range(wave, wave + 20))
                )
                writers = [w for _, w in clients]
                await asyncio.sleep(0.01)
            target = f"127.0.0.1:{app.grpc_port}"
            async with grpc.aio.insecure_channel(target) as channel:
                api = stubs_for(channel, target)
                done = await checkout(api, clean_emulator, intent=cs.PAYMENT_INTENT_CONFIRM)
                for _ in range(5):
                    charge = await api.charges.CreateCharge(
                        charge_pb2.CreateChargeRequest(
                            idempotency_key=key(),
                            charge_permission_id=done.charge_permission_id,
                            charge_amount=usd("1.00"),
                            capture_now=True,
                        ),
                        timeout=10,
                    )
                    assert charge.charge.charge_id
            # Every slow connection is closed by the server: those beyond the cap at once, the
            # others at their read deadline. 60 s is far beyond both; a held one hangs here.
            closed = await asyncio.wait_for(
                asyncio.gather(*(_closed_by_server(r) for r, _ in clients)), 60
            )
            assert all(closed)
            async with (
                aiohttp.ClientSession() as session,
                session.post(f"http://127.0.0.1:{app.ipn_port}/ipn", data=b"not json") as reply,
            ):
                assert reply.status == 400, "the port serves again once the strangers are gone"
    finally:
        for writer in writers:
            writer.close()
        await app.stop()
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert [(r.name, r.getMessage()) for r in errors] == []
    assert not any(r.exc_info for r in caplog.records if r.name.startswith("aiohttp"))
