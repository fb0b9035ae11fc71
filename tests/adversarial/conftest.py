"""The adversarial suite: attacks sent as a user with bad intent would send them, over real gRPC
and HTTP to a real `python -m service` process, against a real Postgres and the emulator.

The emulator is this package's own, with a distinct Amazon MerchantID per merchant key.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import asyncpg
import grpc
import pytest

from tests._emulator import EmulatorProcess
from tests._process import ServiceProcess, free_port
from tests.e2e.conftest import KEY_ID, SECOND_KEY_ID, Keys, Stubs, keys, service_env, stubs_for

__all__ = ["SECOND_MERCHANT_ID", "Running", "emulator", "keys", "running"]

SECOND_MERCHANT_ID = "A2ADVERSARIALSECOND"


@pytest.fixture(scope="package")
async def emulator(
    tmp_path_factory: pytest.TempPathFactory, keys: Keys
) -> AsyncIterator[EmulatorProcess]:
    process = EmulatorProcess(tmp_path_factory.mktemp("emulator"), {KEY_ID: keys.public})
    await process.start()
    await process.control(
        "POST",
        "keys",
        {
            "publicKeyId": SECOND_KEY_ID,
            "publicKeyPem": keys.second_public.read_text(),
            "merchantId": SECOND_MERCHANT_ID,
        },
    )
    try:
        yield process
    finally:
        await process.stop()


@dataclass
class Running:
    """One service process and what an attacker (and the test) can reach."""

    env: dict[str, str]
    process: ServiceProcess
    target: str
    ipn_url: str
    database_url: str
    emulator: EmulatorProcess

    async def restart(self) -> None:
        await self.process.terminate()
        self.process = ServiceProcess(self.env)
        await self.process.start()
        await self.process.wait_serving()

    async def ledger(self) -> asyncpg.Connection:
        return await asyncpg.connect(self.database_url)


@pytest.fixture
async def running(
    database_url: str, emulator: EmulatorProcess, keys: Keys, tmp_path: Path
) -> AsyncIterator[Running]:
    await emulator.control("DELETE", "faults")
    grpc_port, ipn_port = free_port(), free_port()
    env = {
        **service_env(database_url, emulator, keys, tmp_path),
        "GRPC_LISTEN": f"127.0.0.1:{grpc_port}",
        "IPN_LISTEN": f"127.0.0.1:{ipn_port}",
        "RECONCILER_ENABLED": "1",
        "RECONCILER_INTERVAL_S": "0.2",
        "AMAZON_CIRCUIT_FAILURES": "3",
        "AMAZON_CIRCUIT_OPEN_S": "30",
    }
    service = Running(
        env,
        ServiceProcess(env),
        f"127.0.0.1:{grpc_port}",
        f"http://127.0.0.1:{ipn_port}/ipn",
        database_url,
        emulator,
    )
    await service.process.start()
    try:
        await service.process.wait_serving()
        yield service
        assert service.process.process is not None
        assert service.process.process.returncode is None, "the service died under attack"
        assert await service.process.terminate() == 0
    finally:
        await service.process.kill()
        await emulator.control("DELETE", "faults")


@pytest.fixture
async def api(running: Running) -> AsyncIterator[Stubs]:
    async with grpc.aio.insecure_channel(running.target) as channel:
        yield stubs_for(channel, running.target)
