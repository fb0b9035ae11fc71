"""Fuzz fixtures: the e2e emulator (a child process for the session) and one in-process service
on its own database for the whole module, so hypothesis examples share it."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Coroutine
from dataclasses import dataclass
from typing import Any, TypeVar

import asyncpg
import grpc
import pytest

from service.app import Application
from service.config import load_settings
from tests._emulator import EmulatorProcess
from tests._postgres import fresh_database
from tests.e2e.conftest import Keys, emulator, keys, service_env

__all__ = ["FuzzTarget", "emulator", "fuzz_target", "keys"]

T = TypeVar("T")


@dataclass
class FuzzTarget:
    loop: asyncio.AbstractEventLoop
    channel: grpc.aio.Channel
    ledger: asyncpg.Connection
    emulator: EmulatorProcess
    application: Application
    env: dict[str, str]

    async def restart(self) -> None:
        """Stop the service and start it again on the same ledger (start-up re-drives whatever
        the fuzz left pending)."""
        await self.application.stop()
        self.application = Application(load_settings(self.env))
        await self.application.start()

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run a coroutine on the loop the service lives on (tests here are synchronous)."""
        return self.loop.run_until_complete(coro)

    async def row_counts(self) -> tuple[int, int, int]:
        row = await self.ledger.fetchrow(
            "SELECT (SELECT count(*) FROM operations) AS o, (SELECT count(*) FROM objects) AS b,"
            " (SELECT count(*) FROM events) AS e"
        )
        assert row is not None
        return row["o"], row["b"], row["e"]


@pytest.fixture(scope="module")
async def fuzz_target(
    postgres_server_url: str,
    emulator: EmulatorProcess,
    keys: Keys,
    tmp_path_factory: pytest.TempPathFactory,
) -> AsyncIterator[FuzzTarget]:
    await emulator.control("DELETE", "faults")
    async with fresh_database(postgres_server_url) as database_url:
        env = service_env(database_url, emulator, keys, tmp_path_factory.mktemp("fuzz"))
        application = Application(load_settings(env))
        await application.start()
        ledger = await asyncpg.connect(database_url)
        target: FuzzTarget | None = None
        try:
            async with grpc.aio.insecure_channel(
                f"127.0.0.1:{application.grpc_port}",
                options=[("grpc.max_send_message_length", 8 * 1024 * 1024)],
            ) as channel:
                target = FuzzTarget(
                    asyncio.get_running_loop(), channel, ledger, emulator, application, env
                )
                yield target
        finally:
            await ledger.close()
            await (target.application if target is not None else application).stop()
