from __future__ import annotations

import os
from collections.abc import AsyncIterator

import pytest

from service.ledger import Ledger, PiiKeyring
from tests._postgres import fresh_database, postgres_server


@pytest.fixture(scope="session")
async def postgres_server_url() -> AsyncIterator[str]:
    async with postgres_server() as url:
        yield url


@pytest.fixture
async def database_url(postgres_server_url: str) -> AsyncIterator[str]:
    """An empty database, dropped after the test."""
    async with fresh_database(postgres_server_url) as url:
        yield url


@pytest.fixture
async def ledger(database_url: str) -> AsyncIterator[Ledger]:
    """A migrated ledger on its own database."""
    ledger = await Ledger.connect(
        database_url, keyring=PiiKeyring({"test": os.urandom(32)}, "test"), min_size=1, max_size=5
    )
    await ledger.migrate()
    try:
        yield ledger
    finally:
        await ledger.close()
