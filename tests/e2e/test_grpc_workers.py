"""`GRPC_WORKERS=2`: one `python -m service`, two worker processes behind one port."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import signal
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import grpc
import pytest

from payments.amazonpay.v1 import checkout_session_pb2 as cs
from payments.amazonpay.v1 import checkout_session_pb2_grpc, ledger_pb2, ledger_pb2_grpc
from service.supervisor import merge_metrics
from tests._emulator import EmulatorProcess
from tests._process import ServiceProcess, free_port
from tests.e2e.conftest import Keys, service_env

CONNECTIONS = 24
"""Enough separate connections that the kernel gives each of two workers some (2 * 2^-24 odds
that one worker gets none)."""


@pytest.fixture
async def workers(
    database_url: str, clean_emulator: EmulatorProcess, keys: Keys, tmp_path: Path
) -> AsyncIterator[tuple[ServiceProcess, str, str]]:
    port, admin = free_port(), free_port()
    service = ServiceProcess(
        {
            **service_env(database_url, clean_emulator, keys, tmp_path),
            "GRPC_WORKERS": "2",
            "GRPC_LISTEN": f"127.0.0.1:{port}",
            "ADMIN_LISTEN": f"127.0.0.1:{admin}",
            "SHUTDOWN_GRACE_S": "10",
            "LOG_LEVEL": "INFO",
        }
    )
    await service.start()
    try:
        admin_url = f"http://127.0.0.1:{admin}"
        await _until_ready(service, admin_url)
        yield service, f"127.0.0.1:{port}", admin_url
    finally:
        await service.kill()


async def _until_ready(service: ServiceProcess, admin_url: str, timeout_s: float = 90) -> None:
    """The supervisor's /readyz is 200 once every worker serves."""
    async with aiohttp.ClientSession() as http:
        for _ in range(int(timeout_s / 0.2)):
            with contextlib.suppress(aiohttp.ClientError):
                async with http.get(f"{admin_url}/readyz") as ready:
                    if ready.status == 200:
                        return
            assert service.process is not None
            assert service.process.returncode is None, "\n".join(service.log_lines)
            await asyncio.sleep(0.2)
    raise AssertionError("workers never all ready:\n" + "\n".join(service.log_lines))


@contextlib.asynccontextmanager
async def _connections(target: str) -> AsyncIterator[list[grpc.aio.Channel]]:
    async with contextlib.AsyncExitStack() as stack:
        yield [
            await stack.enter_async_context(
                grpc.aio.insecure_channel(target, options=[("grpc.use_local_subchannel_pool", 1)])
            )
            for _ in range(CONNECTIONS)
        ]


def _rpc_lines(service: ServiceProcess, rpc: str) -> list[dict[str, Any]]:
    lines = []
    for line in service.log_lines:
        with contextlib.suppress(ValueError):
            entry = json.loads(line)
            if entry.get("msg") == "rpc" and entry.get("rpc") == rpc:
                lines.append(entry)
    return lines


async def test_two_workers_serve_on_one_port_and_both_answer(
    workers: tuple[ServiceProcess, str, str],
) -> None:
    service, target, admin_url = workers
    async with _connections(target) as channels:
        replies = await asyncio.gather(
            *(
                ledger_pb2_grpc.LedgerServiceStub(channel).ListTransactions(
                    ledger_pb2.ListTransactionsRequest(page_size=1), timeout=10
                )
                for channel in channels
            )
        )
    assert len(replies) == CONNECTIONS
    await asyncio.sleep(0.3)  # each line is written as its call ends
    answered_by = {line["worker"] for line in _rpc_lines(service, "ListTransactions")}
    assert answered_by == {0, 1}
    serving = [json.loads(line) for line in service.log_lines if '"serving gRPC"' in line]
    assert {entry["worker"] for entry in serving} == {0, 1}
    assert {entry["port"] for entry in serving} == {int(target.rsplit(":", 1)[1])}
    async with aiohttp.ClientSession() as http, http.get(f"{admin_url}/metrics") as metrics:
        text = await metrics.text()
    for worker in ("0", "1"):
        assert re.search(
            rf'^amazonpay_rpc_calls_total\{{[^}}]*rpc="ListTransactions"[^}}]*worker="{worker}"',
            text,
            re.MULTILINE,
        ), text[:2000]
        # Each worker set up its own settlement reconciliation (a replica's, leases shared).
        assert re.search(
            rf'^amazonpay_settlement_lines_total\{{[^}}]*worker="{worker}"', text, re.MULTILINE
        ), text[:2000]


async def test_sigterm_drains_both_workers(
    workers: tuple[ServiceProcess, str, str], clean_emulator: EmulatorProcess
) -> None:
    service, target, admin_url = workers
    await clean_emulator.control(
        "POST", "faults", {"operation": "CreateCheckoutSession", "latencyMs": 1500, "count": None}
    )

    async def create(channel: grpc.aio.Channel, n: int) -> cs.CreateCheckoutSessionResponse:
        stub = checkout_session_pb2_grpc.CheckoutSessionServiceStub(channel)
        reply: cs.CreateCheckoutSessionResponse = await stub.CreateCheckoutSession(
            cs.CreateCheckoutSessionRequest(
                idempotency_key=f"drain-{n}",
                web_checkout_details=cs.WebCheckoutDetails(
                    checkout_review_return_url="https://shop.example/review"
                ),
            ),
            timeout=30,
        )
        return reply

    async with _connections(target) as channels:
        calls = [asyncio.create_task(create(channel, n)) for n, channel in enumerate(channels)]
        await asyncio.sleep(0.7)  # every call is in flight at the emulator
        assert not any(call.done() for call in calls)
        assert service.process is not None
        service.process.terminate()
        async with aiohttp.ClientSession() as http:
            for _ in range(50):
                with contextlib.suppress(aiohttp.ClientError):
                    async with http.get(f"{admin_url}/readyz") as ready:
                        if ready.status == 503:
                            break
                await asyncio.sleep(0.02)
        replies = await asyncio.gather(*calls)
    assert all(reply.checkout_session.checkout_session_id for reply in replies)
    assert await service.wait(timeout=60) == 0
    lines = _rpc_lines(service, "CreateCheckoutSession")
    assert len(lines) == CONNECTIONS
    assert {line["code"] for line in lines} == {"OK"}
    assert {line["worker"] for line in lines} == {0, 1}  # both drained their in-flight calls
    stopped = [json.loads(line) for line in service.log_lines if '"msg":"stopped"' in line]
    assert sorted(entry["worker"] for entry in stopped) == [0, 1]


def test_merged_metrics_keep_each_family_once_with_a_worker_label() -> None:
    one = (
        "# HELP amazonpay_rpc_calls_total calls\n# TYPE amazonpay_rpc_calls_total counter\n"
        'amazonpay_rpc_calls_total{rpc="GetCharge"} 3.0\n'
    )
    two = one.replace("3.0", "5.0")
    text = merge_metrics({0: one, 1: two}).decode()
    assert text.count("# TYPE amazonpay_rpc_calls_total counter") == 1
    assert 'amazonpay_rpc_calls_total{rpc="GetCharge",worker="0"} 3.0' in text
    assert 'amazonpay_rpc_calls_total{rpc="GetCharge",worker="1"} 5.0' in text


def _children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                stat = (entry / "stat").read_text()
                if int(stat[stat.rindex(")") + 2 :].split()[1]) == pid:
                    found.append(int(entry.name))
    return found


async def test_a_worker_killed_after_serving_is_restarted(
    workers: tuple[ServiceProcess, str, str],
) -> None:
    service, target, admin_url = workers
    assert service.process is not None
    first = _children(service.process.pid)
    assert len(first) == 2
    os.kill(first[0], signal.SIGKILL)
    for _ in range(100):
        if any('"worker exited; restarting it"' in line for line in service.log_lines):
            break
        await asyncio.sleep(0.1)
    await _until_ready(service, admin_url)
    now = _children(service.process.pid)
    assert len(now) == 2
    assert first[0] not in now
    assert first[1] in now
    async with grpc.aio.insecure_channel(target) as channel:
        await ledger_pb2_grpc.LedgerServiceStub(channel).ListTransactions(
            ledger_pb2.ListTransactionsRequest(page_size=1), timeout=10
        )
