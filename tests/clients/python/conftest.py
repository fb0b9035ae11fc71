"""Client tests run against the real service (in-process, real gRPC port), a fresh Postgres
database and the emulator child process: the e2e fixtures, imported so pytest registers them."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from amazonpay_client import AmazonPayClient

from service.app import Application
from tests.e2e.conftest import app, clean_emulator, emulator, keys

__all__ = ["app", "clean_emulator", "emulator", "keys"]


@pytest.fixture
def target(app: Application) -> str:
    return f"127.0.0.1:{app.grpc_port}"


@pytest.fixture
async def client(target: str) -> AsyncIterator[AmazonPayClient]:
    async with AmazonPayClient(target) as c:
        yield c
