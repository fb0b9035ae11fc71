from __future__ import annotations

from collections.abc import AsyncIterator

import aiohttp
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

from emulator import EmulatorConfig, RunningEmulator, run_emulator
from emulator.testing import SignedClient, generate_key

KEY_ID = "EMU-TEST-KEY"


@pytest.fixture(scope="session")
def key_pair() -> tuple[rsa.RSAPrivateKey, str]:
    return generate_key()


@pytest.fixture
async def emu(key_pair: tuple[rsa.RSAPrivateKey, str]) -> AsyncIterator[RunningEmulator]:
    """A fresh emulator on a free loopback port with the test key registered."""
    async with run_emulator(EmulatorConfig(keys={KEY_ID: key_pair[1]})) as running:
        yield running


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


@pytest.fixture
def client(
    emu: RunningEmulator, http: aiohttp.ClientSession, key_pair: tuple[rsa.RSAPrivateKey, str]
) -> SignedClient:
    return SignedClient(http, emu.url, key_pair[0], KEY_ID)
