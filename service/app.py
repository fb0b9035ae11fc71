"""Composition root: builds the pool, the Amazon Pay client and the servicers, and owns the
start/stop order. Start: database → migrations → gRPC (NOT_SERVING) → SERVING. Stop: NOT_SERVING →
drain in-flight calls → close pools → stop embedded processes."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import replace
from typing import Any

from .api import GrpcServer, Rpcs, build_server, build_servicers
from .config import Settings
from .core import MerchantRegistry, Payments
from .ledger import EmbeddedPostgres, InstanceLease, Ledger

__all__ = ["Application"]

_log = logging.getLogger("service.app")


class Application:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.ledger: Ledger | None = None
        self.grpc: GrpcServer | None = None
        self.merchants: MerchantRegistry | None = None
        self.payments: Payments | None = None
        self._instance: InstanceLease | None = None
        self._embedded_pg: EmbeddedPostgres | None = None
        self._dev_amazon: Any = None

    @property
    def grpc_port(self) -> int:
        return self.grpc.port if self.grpc is not None else 0

    async def start(self) -> None:
        try:
            await self._start()
        except BaseException:
            await self.stop()
            raise

    async def _start(self) -> None:
        settings = self.settings
        url = settings.database.url
        if url is None:
            self._embedded_pg = EmbeddedPostgres(settings.database.embedded_dir)
            url = await self._embedded_pg.start()
        if not settings.amazon_pay.configured and settings.dev_emulator:
            from ._devstack import DevAmazonPay

            self._dev_amazon = DevAmazonPay(settings.database.embedded_dir.parent / "dev")
            dev = await self._dev_amazon.start()
            self.settings = settings = replace(
                settings,
                amazon_pay=replace(
                    settings.amazon_pay,
                    endpoint=dev.endpoint,
                    public_key_id=dev.public_key_id,
                    private_key_file=dev.private_key_file,
                ),
            )
        self.ledger = await Ledger.connect(
            url,
            min_size=settings.database.pool_min_size,
            max_size=settings.database.pool_max_size,
            statement_timeout_ms=settings.database.statement_timeout_ms,
        )
        if settings.database.migrate_on_start:
            applied = await self.ledger.migrate()
            _log.info("migrations checked", extra={"applied": applied})
        self._instance = InstanceLease(url)
        await self._instance.acquire()
        self.merchants = await MerchantRegistry.from_settings(settings.merchants)
        self.payments = Payments(
            self.merchants, self.ledger.repository, instance_id=self._instance.instance_id
        )
        # Operations a crashed process left between Amazon's answer and the ledger commit are
        # finished before this replica takes traffic.
        await self.payments.redrive_orphans()
        rpcs = Rpcs(self.payments, self.ledger.repository)
        self.grpc = build_server(settings.grpc, servicers=build_servicers(rpcs))
        await self.grpc.set_serving(False)
        port = await self.grpc.start(settings.grpc.listen)
        await self.grpc.set_serving(True)
        _log.info("serving gRPC", extra={"listen": settings.grpc.listen, "port": port})

    async def stop(self) -> None:
        """Idempotent; each step runs even if an earlier one failed."""
        if self.grpc is not None:
            grpc_server, self.grpc = self.grpc, None
            _log.info("draining gRPC", extra={"grace_s": self.settings.grpc.shutdown_grace_s})
            await grpc_server.stop(self.settings.grpc.shutdown_grace_s)
        if self.merchants is not None:
            merchants, self.merchants = self.merchants, None
            await merchants.close()
        if self._instance is not None:
            instance, self._instance = self._instance, None
            await instance.release()
        if self.ledger is not None:
            ledger, self.ledger = self.ledger, None
            await ledger.close()
        if self._dev_amazon is not None:
            dev, self._dev_amazon = self._dev_amazon, None
            await dev.stop()
        if self._embedded_pg is not None:
            pg, self._embedded_pg = self._embedded_pg, None
            await pg.stop()
        _log.info("stopped")

    async def run_until_stopped(self, stop: asyncio.Event) -> None:
        await self.start()
        await stop.wait()
        await self.stop()
