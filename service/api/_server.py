"""Builds the grpc.aio server: options, servicers, health and reflection."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from service.config import GrpcSettings

from ._malformed import GuardedRegistration
from ._registry import ServiceStub, discover_services

__all__ = ["LIVENESS_SERVICE", "GrpcServer", "build_server"]

LIVENESS_SERVICE = "liveness"


class GrpcServer:
    """The server plus its health servicer, which start/stop flip between SERVING and NOT_SERVING."""

    def __init__(
        self,
        server: grpc.aio.Server,
        health_servicer: Any,
        services: list[ServiceStub],
        credentials: grpc.ServerCredentials | None = None,
    ) -> None:
        self.server = server
        self.credentials = credentials
        self.health = health_servicer
        self.services = services
        self.port = 0
        self.serving = False

    async def set_serving(self, serving: bool) -> None:
        """Overall ("") and per-service status; readiness probes watch the overall one. The
        `liveness` service stays SERVING while the process runs: a replica waiting for Postgres
        is not ready, but restarting it would not help."""
        status = (
            health_pb2.HealthCheckResponse.SERVING
            if serving
            else health_pb2.HealthCheckResponse.NOT_SERVING
        )
        self.serving = serving
        await self.health.set("", status)
        for service in self.services:
            await self.health.set(service.full_name, status)

    async def start(self, listen: str) -> int:
        await self.health.set(LIVENESS_SERVICE, health_pb2.HealthCheckResponse.SERVING)
        if self.credentials is None:
            self.port = self.server.add_insecure_port(listen)
        else:
            self.port = self.server.add_secure_port(listen, self.credentials)
        if self.port == 0:
            raise OSError(f"could not bind gRPC server to {listen}")
        await self.server.start()
        return self.port

    async def stop(self, grace_s: float) -> None:
        """Health goes NOT_SERVING first so load balancers drain, then in-flight calls finish."""
        self.serving = False
        await self.health.enter_graceful_shutdown()
        await self.server.stop(grace_s)


def server_options(settings: GrpcSettings) -> list[tuple[str, Any]]:
    return [
        ("grpc.max_receive_message_length", settings.max_message_bytes),
        ("grpc.max_send_message_length", settings.max_message_bytes),
        ("grpc.keepalive_time_ms", settings.keepalive_time_s * 1000),
        ("grpc.keepalive_timeout_ms", settings.keepalive_timeout_s * 1000),
        ("grpc.http2.min_ping_interval_without_data_ms", 10_000),
        ("grpc.keepalive_permit_without_calls", 1),
        ("grpc.max_connection_age_ms", settings.max_connection_age_s * 1000),
        ("grpc.max_connection_age_grace_ms", int(settings.shutdown_grace_s * 1000)),
        # Shared only by this replica's own workers (GRPC_WORKERS); otherwise a second service
        # started on the same port by mistake must fail to bind, not take half the calls.
        ("grpc.so_reuseport", 1 if settings.workers > 1 else 0),
    ]


def build_server(
    settings: GrpcSettings,
    servicers: Mapping[str, Any],
    interceptors: list[grpc.aio.ServerInterceptor[Any, Any]] | None = None,
    credentials: grpc.ServerCredentials | None = None,
) -> GrpcServer:
    """Register `servicers` (by service name, e.g. "ChargeService"); the rest answer UNIMPLEMENTED.

    With `credentials` the port speaks TLS (mutual TLS when they require client certificates)."""
    services = discover_services()
    known = {s.name for s in services}
    unknown = sorted(set(servicers) - known)
    if unknown:
        raise ValueError(f"servicers for services not in the protos: {unknown}")
    # No interceptor unless one is asked for: grpc then takes its fast path on every call.
    server = grpc.aio.server(interceptors=interceptors or None, options=server_options(settings))
    # Malformed requests are answered by the handlers themselves (after every interceptor, so
    # authentication still answers first for a caller sending garbage); every method is found
    # in one table.
    registration: Any = GuardedRegistration()
    for service in services:
        service.add_to_server(
            servicers.get(service.name) or service.default_servicer(), registration
        )
    # grpc-stubs predates the asyncio health servicer that grpc's examples use.
    health_servicer = health.aio.HealthServicer()  # type: ignore[attr-defined]
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, registration)
    reflection.enable_server_reflection(
        [s.full_name for s in services]
        + [health_pb2.DESCRIPTOR.services_by_name["Health"].full_name, reflection.SERVICE_NAME],
        registration,
    )
    registration.register(server)
    return GrpcServer(
        server=server,
        health_servicer=health_servicer,
        services=services,
        credentials=credentials,
    )
