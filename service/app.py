"""Composition root: builds every part and owns the start/stop order.

Start: database → migrations → instance lock → merchants → re-drive of interrupted operations →
event hub → IPN receiver → reconciler → settlement worker → gRPC (NOT_SERVING) → SERVING.
Stop: NOT_SERVING and end event streams → drain in-flight calls → stop workers → close pools →
stop embedded processes. Every stop step runs even if an earlier one failed.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
from collections.abc import Awaitable, Callable
from dataclasses import replace
from pathlib import Path
from urllib.parse import urlsplit

from google.protobuf import descriptor_pool
from opentelemetry import trace
from opentelemetry.instrumentation.grpc import aio_server_interceptor
from opentelemetry.instrumentation.grpc import filters as grpc_filters
from opentelemetry.instrumentation.utils import suppress_instrumentation
from opentelemetry.metrics import MeterProvider

from .admin import AdminServer
from .amazonpay import ClientConfig, RetryPolicy
from .api import (
    AuthInterceptor,
    GrpcServer,
    RequestPath,
    build_server,
    build_servicers,
    discover_services,
)
from .config import ConfigError, Settings, parse_listen_address
from .core import (
    SETTLEMENT_OUTCOMES,
    BreakerSettings,
    MerchantRegistry,
    Payments,
    Settlements,
    SettlementSettings,
)
from .ledger import (
    EmbeddedPostgres,
    EventHub,
    InstanceLease,
    Ledger,
    PiiKeyError,
    PiiKeyring,
    migrate_database,
    require_migrated,
)
from .security import Callers, load_security
from .telemetry import Metrics, tracing_enabled
from .workers import IpnReceiver, Reconciler, ReconcilerSettings, SettlementWorker, SnsVerifier

__all__ = ["Application", "pii_keyring"]

_log = logging.getLogger("service.app")
_tracer = trace.get_tracer(__name__)


class Application:
    def __init__(
        self,
        settings: Settings,
        *,
        meter_provider: MeterProvider | None = None,
        admin_socket: Path | None = None,
    ) -> None:
        """`admin_socket`: serve the admin endpoints on this Unix socket instead of
        `ADMIN_LISTEN` (a worker of `service.supervisor`, whose supervisor owns the port)."""
        self.settings = settings
        self._admin_socket = admin_socket
        self.metrics = Metrics(meter_provider)
        self.ledger: Ledger | None = None
        self.grpc: GrpcServer | None = None
        self.merchants: MerchantRegistry | None = None
        self.payments: Payments | None = None
        self.hub: EventHub | None = None
        self.ipn: IpnReceiver | None = None
        self.reconciler: Reconciler | None = None
        self.settlements: Settlements | None = None
        self.settlement_worker: SettlementWorker | None = None
        self.admin: AdminServer | None = None
        self._readiness: asyncio.Task[None] | None = None
        self._instance: InstanceLease | None = None
        self._embedded_pg: EmbeddedPostgres | None = None
        self._dev_amazon: object | None = None
        self._dev_endpoint: str | None = None

    @property
    def grpc_port(self) -> int:
        return self.grpc.port if self.grpc is not None else 0

    @property
    def ipn_port(self) -> int:
        return self.ipn.port if self.ipn is not None else 0

    async def start(self) -> None:
        try:
            await self._start()
        except BaseException:
            await self.stop()
            raise

    async def _start(self) -> None:
        settings = self.settings
        # TLS material and callers are read first: a bad file stops start-up before anything runs.
        live = any(m.environment == "live" for m in settings.merchants)
        security = load_security(settings.security, live=live)
        url = settings.database.url
        if url is None:
            self._embedded_pg = EmbeddedPostgres(settings.database.embedded_dir)
            url = await self._embedded_pg.start()
        if not settings.amazon_pay.configured and settings.dev_emulator:
            settings = await self._start_dev_amazon(settings)
        self.ledger = await Ledger.connect(
            url,
            keyring=await pii_keyring(settings),
            min_size=settings.database.pool_min_size,
            max_size=settings.database.pool_max_size,
            statement_timeout_ms=settings.database.statement_timeout_ms,
        )
        if settings.database.migrate_on_start:
            if settings.database.migrate_url is not None:
                applied = await migrate_database(
                    settings.database.migrate_url, service_role=settings.database.service_role
                )
            else:
                applied = await self.ledger.migrate()
            _log.info("migrations checked", extra={"applied": applied})
        else:
            async with self.ledger.pool.acquire() as conn:
                await require_migrated(conn)
        self._instance = InstanceLease(url)
        await self._instance.acquire()
        pool = self.ledger.pool
        self.metrics.pool_sizes = lambda: (pool.get_size(), pool.get_idle_size())
        calls = settings.amazon_calls
        self.merchants = await MerchantRegistry.from_settings(
            settings.merchants,
            client_config=ClientConfig(
                retry=RetryPolicy(max_retries=calls.max_retries),
                signing_threads=calls.signing_threads,
            ),
            on_attempt=self.metrics.record_attempt,
            breaker=BreakerSettings(calls.circuit_failures, calls.circuit_open_s),
            max_concurrent=calls.max_concurrent,
            max_queued=calls.max_queued,
            on_circuit_change=self.metrics.record_circuit,
        )
        self.metrics.known_merchants(m.alias for m in self.merchants)
        if security.callers is not None:
            _warn_unknown_merchants(security.callers, {m.alias for m in self.merchants})
        repository = self.ledger.repository
        self.payments = Payments(
            self.merchants,
            repository,
            instance_id=self._instance.instance_id,
            on_quarantine=lambda op: self.metrics.quarantined_operations.add(1, {"operation": op}),
        )
        # Operations a crashed process left between Amazon's answer and the ledger commit are
        # finished before this replica takes traffic.
        with _tracer.start_as_current_span("startup.redrive"):
            await self.payments.redrive_orphans()
        self.hub = EventHub(url, repository, max_subscribers=settings.grpc.max_event_streams)
        await self.hub.start()
        await self._start_workers(settings)
        request_path = RequestPath(
            payments=self.payments,
            repository=repository,
            hub=self.hub,
            metrics=self.metrics,
            settlements=self.settlements,
        )
        descriptors = descriptor_pool.Default()
        self.metrics.known_rpcs(
            method.name
            for stub in discover_services()
            for method in descriptors.FindServiceByName(stub.full_name).methods
        )
        self.grpc = build_server(
            settings.grpc,
            servicers=build_servicers(request_path),
            interceptors=[
                # Tracing first, so an authentication failure is traced too; only when spans are
                # recorded (an exporter is configured): otherwise it is pure cost on every call.
                # Not WatchEvents: a span as long as a stream says nothing, and a stream the
                # caller drops closes the instrumentation's generator in another context
                # ("Failed to detach context").
                *(
                    [
                        aio_server_interceptor(  # type: ignore[no-untyped-call]
                            filter_=grpc_filters.negate(grpc_filters.method_name("WatchEvents"))
                        )
                    ]
                    if tracing_enabled()
                    else []
                ),
                *([AuthInterceptor(security.callers)] if security.callers else []),
            ],
            credentials=security.server_credentials(),
        )
        await self.grpc.set_serving(False)
        port = await self.grpc.start(settings.grpc.listen)
        await self.grpc.set_serving(True)
        self._readiness = asyncio.create_task(self._follow_database(), name="readiness")
        _log.info(
            "serving gRPC",
            extra={
                "listen": settings.grpc.listen,
                "port": port,
                "tls": "mutual" if security.tls and security.tls.mutual else bool(security.tls),
                "authentication": security.callers is not None,
                "event_loop": type(asyncio.get_running_loop()).__module__.split(".")[0],
            },
        )

    async def _start_dev_amazon(self, settings: Settings) -> Settings:
        from ._devstack import DEV_STORE_ID, DevAmazonPay

        dev_amazon = DevAmazonPay(
            settings.database.embedded_dir.parent / "dev", port=settings.dev_emulator_port
        )
        self._dev_amazon = dev_amazon
        dev = await dev_amazon.start()
        self._dev_endpoint = dev.endpoint
        self.settings = replace(
            settings,
            amazon_pay=replace(
                settings.amazon_pay,
                endpoint=dev.endpoint,
                public_key_id=dev.public_key_id,
                private_key_file=dev.private_key_file,
                store_id=settings.amazon_pay.store_id or DEV_STORE_ID,
            ),
            workers=replace(
                settings.workers,
                ipn_extra_cert_hosts=(
                    *settings.workers.ipn_extra_cert_hosts,
                    urlsplit(dev.endpoint).netloc,
                ),
            ),
        )
        return self.settings

    @property
    def development(self) -> bool:
        """Started the embedded database or the dev emulator: `make run`, not a deployment."""
        return self._dev_endpoint is not None or self._embedded_pg is not None

    def next_steps(self) -> str:
        """What a newcomer does next, printed (to stdout, outside the JSON log) once serving."""
        host = self.settings.grpc.listen.rsplit(":", 1)[0]
        target = f"{host}:{self.grpc_port}"
        how = (
            "TLS: pass --tls --ca-file ... to the CLI"
            if self.settings.security.tls_cert_file is not None
            else f"plaintext, reflection on: grpcurl -plaintext {target} list"
        )
        lines = ["", "Amazon Pay gRPC service is serving.", f"  gRPC           {target}  ({how})"]
        if self._dev_endpoint is not None:
            emulator = self._dev_endpoint
            lines += [
                f"  emulator       {emulator}  (local Amazon Pay; DEV_EMULATOR_PORT changes it)",
                "  approve buyer  open "
                f"{emulator}/_emulator/checkoutSessions/<checkoutSessionId>/signIn, pick a card,",
                "                 then confirm on the page it leads to (or POST .../signIn and"
                " .../confirm)",
            ]
        lines += [
            f"  first checkout make demo   (python -m amazonpay_client demo --target {target})",
            "",
        ]
        return "\n".join(lines)

    async def _start_workers(self, settings: Settings) -> None:
        assert self.payments is not None
        assert self.ledger is not None
        workers = settings.workers
        if workers.ipn_listen is not None:
            self.ipn = IpnReceiver(
                self.payments,
                self.ledger.repository,
                SnsVerifier(
                    extra_cert_hosts=workers.ipn_extra_cert_hosts,
                    topic_arns=workers.ipn_topic_arns,
                ),
                self.metrics,
                max_body_bytes=workers.ipn_max_body_bytes,
                read_timeout_s=workers.ipn_read_timeout_s,
                max_connections=workers.ipn_max_connections,
            )
            host, port = parse_listen_address("IPN_LISTEN", workers.ipn_listen)
            bound = await self.ipn.start(host, port, reuse_port=settings.grpc.workers > 1)
            _log.info("serving IPN", extra={"listen": workers.ipn_listen, "port": bound})
            if self._dev_amazon is not None:
                from ._devstack import DevAmazonPay

                assert isinstance(self._dev_amazon, DevAmazonPay)
                await self._dev_amazon.subscribe_ipn(f"http://127.0.0.1:{bound}/ipn")
        if self._admin_socket is not None:
            self.admin = AdminServer(ready=self._serving)
            await self.admin.start_unix(self._admin_socket)
        elif workers.admin_listen is not None:
            self.admin = AdminServer(ready=self._serving)
            host, port = parse_listen_address("ADMIN_LISTEN", workers.admin_listen)
            bound = await self.admin.start(host, port)
            _log.info("serving admin", extra={"listen": workers.admin_listen, "port": bound})
        if workers.reconciler_enabled:
            self.reconciler = Reconciler(
                self.payments,
                self.ledger.repository,
                self.metrics,
                ReconcilerSettings(
                    interval_s=workers.reconciler_interval_s,
                    poll_base_s=workers.reconciler_poll_base_s,
                    poll_max_s=workers.reconciler_poll_max_s,
                    pii_retention_days=settings.pii.retention_days,
                ),
                self.ipn,
            )
            self.reconciler.start()
        assert self.merchants is not None
        assert self._instance is not None
        self.settlements = Settlements(
            self.merchants,
            self.ledger.repository,
            SettlementSettings(
                window_s=workers.settlement_window_hours * 3600,
                lookback_s=workers.settlement_lookback_days * 86400.0,
            ),
            owner=self._instance.instance_id,
            observe=self.metrics.record_settlement,
        )
        self.metrics.known_settlement_outcomes(SETTLEMENT_OUTCOMES)
        if workers.settlement_enabled:
            self.settlement_worker = SettlementWorker(
                self.settlements, self.metrics, interval_s=workers.settlement_interval_s
            )
            self.settlement_worker.start()

    async def _serving(self) -> bool:
        return self.grpc is not None and self.grpc.serving

    async def _follow_database(self, interval_s: float = 2.0) -> None:
        """Readiness follows Postgres: NOT_SERVING while the ledger cannot be reached, so
        Kubernetes sends no traffic to a replica that would only answer UNAVAILABLE."""
        ready = True
        while True:
            await asyncio.sleep(interval_s)
            if self.ledger is None or self.grpc is None:
                return
            with suppress_instrumentation():  # a `SELECT 1` trace every 2 s tells nobody anything
                reachable = await self.ledger.ping(timeout=interval_s)
            if reachable and self._instance is not None and not self._instance.held:
                # Postgres restarted: our liveness lock went with the old session.
                await self._instance.ensure()
            if reachable != ready:
                ready = reachable
                await self.grpc.set_serving(ready)
                log = _log.info if ready else _log.error
                log("ledger reachable again" if ready else "ledger unreachable: NOT_SERVING")

    async def stop(self) -> None:
        """Idempotent; each step runs even if an earlier one failed."""
        grace = self.settings.grpc.shutdown_grace_s
        if self._readiness is not None:
            self._readiness.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._readiness
            self._readiness = None
        if self.grpc is not None:
            await _step("health", self.grpc.set_serving(False))
        if self.hub is not None:
            self.hub.close_subscribers()
        if self.grpc is not None:
            grpc_server, self.grpc = self.grpc, None
            _log.info("draining gRPC", extra={"grace_s": grace})
            await _step("grpc", grpc_server.stop(grace))
        steps: list[tuple[str, Callable[[], Awaitable[None]] | None]] = [
            ("reconciler", self.reconciler.stop if self.reconciler else None),
            ("settlement", self.settlement_worker.stop if self.settlement_worker else None),
            ("ipn", self.ipn.stop if self.ipn else None),
            ("admin", self.admin.stop if self.admin else None),
            ("event hub", self.hub.stop if self.hub else None),
            ("merchants", self.merchants.close if self.merchants else None),
            ("instance lock", self._instance.release if self._instance else None),
            ("ledger", self.ledger.close if self.ledger else None),
        ]
        self.reconciler = self.ipn = self.hub = self.merchants = self.admin = None
        self.settlement_worker = None
        self._instance = self.ledger = None
        for name, stop in steps:
            if stop is not None:
                await _step(name, stop())
        if self._dev_amazon is not None:
            from ._devstack import DevAmazonPay

            dev, self._dev_amazon = self._dev_amazon, None
            assert isinstance(dev, DevAmazonPay)
            await _step("dev emulator", dev.stop())
        if self._embedded_pg is not None:
            pg, self._embedded_pg = self._embedded_pg, None
            await _step("embedded postgres", pg.stop())
        _log.info("stopped")

    async def run_until_stopped(
        self, stop: asyncio.Event, on_serving: Callable[[], None] | None = None
    ) -> None:
        await self.start()
        freeze_startup_heap()
        if on_serving is not None:
            on_serving()
        await stop.wait()
        await self.stop()


def freeze_startup_heap() -> None:
    """Move everything start-up allocated (modules, proto descriptors, pools, clients) out of the
    garbage collector's sight. A full collection otherwise walks all of it and stalled the event
    loop for about 40 ms every few seconds under load: the service's p99 (bench/results)."""
    gc.collect()
    gc.freeze()
    _log.info("start-up heap frozen", extra={"objects": gc.get_freeze_count()})


async def pii_keyring(settings: Settings) -> PiiKeyring:
    """The keys of `PII_KEY_FILES`, or a generated development key for the embedded database."""
    files = dict(settings.pii.key_files)
    active = settings.pii.active_key_id
    if not files:
        if settings.database.url is not None:
            raise ConfigError(
                "PII_KEY_FILES",
                "required when DATABASE_URL is set: buyer PII is encrypted at rest "
                "(e.g. PII_KEY_FILES=k1=/run/secrets/pii/k1)",
            )
        dev_key = settings.database.embedded_dir.parent / "dev" / "pii-dev.key"
        if not dev_key.exists():
            await asyncio.to_thread(PiiKeyring.generate_file, dev_key)
        files, active = {"dev": dev_key}, "dev"
    assert active is not None
    try:
        return await asyncio.to_thread(PiiKeyring.from_files, files, active)
    except (OSError, PiiKeyError) as exc:
        raise ConfigError("PII_KEY_FILES", str(exc)) from None


def _warn_unknown_merchants(callers: Callers, configured: set[str]) -> None:
    """A caller's merchant alias that no account has is almost always a typo."""
    for caller in callers.callers:
        unknown = sorted(set(caller.merchants) - configured - {"*"})
        if unknown:
            _log.warning(
                "caller names merchants that are not configured",
                extra={"caller": caller.name, "merchants": unknown},
            )


async def _step(name: str, awaitable: Awaitable[None]) -> None:
    try:
        await awaitable
    except Exception:
        _log.exception("shutdown step failed", extra={"step": name})
