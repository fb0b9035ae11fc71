"""`python -m service` as `make run` starts it: embedded Postgres, dev emulator, real gRPC."""

from __future__ import annotations

import asyncio
import json
import re
import shutil
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from payments.amazonpay.v1 import ledger_pb2, ledger_pb2_grpc
from service.api import discover_services
from tests._process import REPO, ServiceProcess, free_port, stop_orphaned_postgres

EXPECTED_SERVICES = {
    "CheckoutSessionService",
    "ChargePermissionService",
    "ChargeService",
    "RefundService",
    "BuyerService",
    "DeliveryTrackerService",
    "ButtonService",
    "LedgerService",
}


@pytest.fixture(params=["uvloop", "asyncio"])
async def dev_service(
    request: pytest.FixtureRequest,
) -> AsyncIterator[tuple[ServiceProcess, str, int]]:
    port = free_port()
    admin_port = free_port()
    # Under the repository, not pytest's 0700 temp root: the embedded server runs as its own
    # unprivileged user when tests run as root, and must be able to reach its data directory.
    data = REPO / ".data" / f"e2e-{uuid.uuid4().hex[:8]}"
    service = ServiceProcess(
        {
            "GRPC_LISTEN": f"127.0.0.1:{port}",
            "IPN_LISTEN": "127.0.0.1:0",
            "ADMIN_LISTEN": f"127.0.0.1:{admin_port}",
            "EMBEDDED_POSTGRES_DIR": str(data / "postgres"),
            "DATABASE_URL": "",
            "AMAZON_PAY_PUBLIC_KEY_ID": "",
            "AMAZON_PAY_PRIVATE_KEY_FILE": "",
            "SHUTDOWN_GRACE_S": "5",
            "EVENT_LOOP": request.param,
        }
    )
    await service.start()
    try:
        yield service, f"127.0.0.1:{port}", admin_port
    finally:
        await service.kill()
        stop_orphaned_postgres(data / "postgres")
        shutil.rmtree(data, ignore_errors=True)


async def _eventually_logged(service: ServiceProcess, message: str) -> None:
    for _ in range(100):
        if any(f'"msg":"{message}"' in line for line in service.log_lines):
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"never logged {message!r}:\n" + "\n".join(service.log_lines))


async def test_embedded_default_serves_health_and_reflection_then_stops_cleanly(
    dev_service: tuple[ServiceProcess, str, int],
) -> None:
    service, target, admin_port = dev_service
    await service.wait_serving(timeout=60)
    serving = next(json.loads(line) for line in service.log_lines if "serving gRPC" in line)
    assert serving["event_loop"] == service.env["EVENT_LOOP"]
    await _eventually_logged(service, "start-up heap frozen")
    frozen = next(json.loads(line) for line in service.log_lines if "heap frozen" in line)
    assert frozen["objects"] > 10_000  # modules, descriptors and pools: out of every collection
    async with grpc.aio.insecure_channel(target) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        overall = await health.Check(health_pb2.HealthCheckRequest(service=""), timeout=5)
        assert overall.status == health_pb2.HealthCheckResponse.SERVING
        for stub in discover_services():
            per_service = await health.Check(
                health_pb2.HealthCheckRequest(service=stub.full_name), timeout=5
            )
            assert per_service.status == health_pb2.HealthCheckResponse.SERVING

        reflection = reflection_pb2_grpc.ServerReflectionStub(channel)
        responses = reflection.ServerReflectionInfo(
            iter([reflection_pb2.ServerReflectionRequest(list_services="")])
        )
        listed = {s.name async for r in responses for s in r.list_services_response.service}
    assert {f"payments.amazonpay.v1.{name}" for name in EXPECTED_SERVICES} <= listed
    assert "grpc.health.v1.Health" in listed

    async with grpc.aio.insecure_channel(target) as channel:
        await ledger_pb2_grpc.LedgerServiceStub(channel).ListTransactions(
            ledger_pb2.ListTransactionsRequest(), timeout=5
        )
    async with aiohttp.ClientSession() as http:
        admin = f"http://127.0.0.1:{admin_port}"
        async with http.get(f"{admin}/readyz") as ready:
            assert ready.status == 200
        async with http.get(f"{admin}/livez") as live:
            assert live.status == 200
        async with http.get(f"{admin}/metrics") as metrics:
            text = await metrics.text()
    assert "amazonpay_rpc_duration" in text
    assert re.search(r'^amazonpay_ledger_owed_reads\{[^}]*state="failing"', text, re.MULTILINE)
    assert 'rpc="ListTransactions"' in text

    assert await service.terminate() == 0
    assert any('"msg":"stopped"' in line for line in service.log_lines)


async def test_a_bad_setting_exits_with_the_variable_named(tmp_path: Path) -> None:
    service = ServiceProcess({"GRPC_LISTEN": "nowhere"})
    await service.start()
    code = await service.wait()
    assert code == 2
    assert any("GRPC_LISTEN: expected host:port" in line for line in service.log_lines)


def test_every_designed_service_is_in_the_protos() -> None:
    assert {s.name for s in discover_services()} >= EXPECTED_SERVICES
