"""The least CPU any CreateCharge through this stack can cost: the mandated libraries doing only the
work the exactly-once path cannot skip, with none of the service's code.

One CreateCharge must at least: receive and answer one unary gRPC call (grpc.aio), hand one RSA
signature to a worker thread and take the answer back, send one HTTPS request and read the answer
(aiohttp), and write to Postgres twice (asyncpg through a pool: the pending operation before the
Amazon call, the outcome after it; DESIGN.md's exactly-once path). A GetCharge served from the
ledger must at least serve the gRPC call and read one row. ``python -m bench`` measures each part
here, under uvloop like the service, in the same run as the service, and adds up each RPC's own
floor from them (`bench.run.RPC_FLOORS`).

    python -m bench._floor grpc-server --port P      # a do-nothing unary gRPC server
    python -m bench._floor clients --url U [--ca-file F] --database D --calls N   # JSON figures
    python -m bench._floor composed-server --port P --url U ... # the parts above, in one call

The parts are measured one by one, each in a process doing nothing else. ``composed-server`` runs
the same parts in the order one CreateCharge needs them, inside one ChargeService.CreateCharge
handler and still with none of the service's code: what these libraries cost when composed in one
event loop (more tasks, threads and wake-ups per call than any part alone): about the least any
implementation on them can cost, since it does nothing a CreateCharge could skip.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import ssl
import sys
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import aiohttp
import grpc
import uvloop
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from bench._load import Run, closed_loop
from bench.sign_bench import load_key, sign_once
from payments.amazonpay.v1 import charge_pb2
from service.amazonpay import RequestSigner
from service.ledger import row_read_probe, statement_probe

CONCURRENCY = 8


async def grpc_server(port: int) -> None:
    """The cheapest useful unary call grpc.aio can serve: the health check."""
    server = grpc.aio.server()
    servicer = health.aio.HealthServicer()  # type: ignore[attr-defined]
    health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
    server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    print("ready", flush=True)
    await server.wait_for_termination()


async def drive_grpc(target: str, calls: int) -> None:
    """Run by the parent: ``calls`` health checks at the bench's concurrency."""
    async with grpc.aio.insecure_channel(target) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        request = health_pb2.HealthCheckRequest()

        async def one(_i: int) -> None:
            await stub.Check(request, timeout=10)

        await closed_loop(one, concurrency=CONCURRENCY, max_calls=50, max_seconds=10)
        await closed_loop(one, concurrency=CONCURRENCY, max_calls=calls, max_seconds=60)


def _cpu() -> float:
    return time.process_time()


async def _per_call(call: Any, calls: int) -> float:
    await closed_loop(call, concurrency=CONCURRENCY, max_calls=min(100, calls), max_seconds=10)
    started = _cpu()
    run = await closed_loop(call, concurrency=CONCURRENCY, max_calls=calls, max_seconds=60)
    if run.errors:
        raise RuntimeError(f"floor measurement failed: {dict(run.errors)}")
    return (_cpu() - started) / max(run.ok, 1) * 1000


async def clients(
    url: str, headers: dict[str, str], database: str, calls: int, ca_file: str | None = None
) -> dict[str, Any]:
    out: dict[str, Any] = {"concurrency": CONCURRENCY, "calls": calls, "https": ca_file is not None}
    tls = ssl.create_default_context(cafile=ca_file) if ca_file else None
    connector = aiohttp.TCPConnector(ssl=tls) if tls is not None else aiohttp.TCPConnector()

    async with aiohttp.ClientSession(connector=connector) as http:

        async def get(_i: int) -> None:
            async with http.get(url, headers=headers) as response:
                await response.read()
                if response.status != 200:
                    raise RuntimeError(f"HTTP {response.status}")

        out["aiohttp_request_ms"] = round(await _per_call(get, calls), 4)

    async with statement_probe(database, pool_size=CONCURRENCY) as write_row:

        async def write(_i: int) -> None:
            await write_row()

        out["asyncpg_statement_ms"] = round(await _per_call(write, calls), 4)

    async with row_read_probe(database, pool_size=CONCURRENCY) as read_row:

        async def read(_i: int) -> None:
            await read_row()

        out["asyncpg_read_ms"] = round(await _per_call(read, calls), 4)

    loop = asyncio.get_running_loop()
    with ThreadPoolExecutor(max_workers=2) as executor:

        async def hop(_i: int) -> None:
            await loop.run_in_executor(executor, int)

        out["thread_hop_ms"] = round(await _per_call(hop, calls), 4)
    return out


CHARGE_SERVICE = "amazonpay.v1.ChargeService"
COMPOSED_METHODS: dict[str, tuple[Any, Any]] = {
    "CreateCharge": (charge_pb2.CreateChargeRequest, charge_pb2.CreateChargeResponse),
    "GetCharge": (charge_pb2.GetChargeRequest, charge_pb2.GetChargeResponse),
}
"""The RPCs the composed server answers: their request and response types."""


async def composed_server(
    port: int,
    *,
    url: str,
    headers: dict[str, str],
    database: str,
    key_file: str,
    ca_file: str | None = None,
) -> None:
    """ChargeService handlers made of the floor's parts in their order. CreateCharge: write the
    pending operation, sign in a worker thread, one HTTPS request, write the outcome, answer.
    GetCharge: read one charge-sized row, answer."""
    loop = asyncio.get_running_loop()
    signer = RequestSigner("BENCHKEY", load_key(Path(key_file)))
    tls = ssl.create_default_context(cafile=ca_file) if ca_file else None
    connector = aiohttp.TCPConnector(ssl=tls) if tls is not None else aiohttp.TCPConnector()
    with ThreadPoolExecutor(max_workers=2) as executor:
        async with (
            aiohttp.ClientSession(connector=connector) as http,
            statement_probe(database, pool_size=CONCURRENCY) as write_row,
            row_read_probe(database, pool_size=CONCURRENCY) as read_row,
        ):

            async def create_charge(
                _request: charge_pb2.CreateChargeRequest,
                _context: grpc.aio.ServicerContext[Any, Any],
            ) -> charge_pb2.CreateChargeResponse:
                await write_row()
                await loop.run_in_executor(executor, sign_once, signer)
                async with http.get(url, headers=headers) as response:
                    await response.read()
                    if response.status != 200:
                        raise RuntimeError(f"HTTP {response.status}")
                await write_row()
                return charge_pb2.CreateChargeResponse()

            async def get_charge(
                _request: charge_pb2.GetChargeRequest,
                _context: grpc.aio.ServicerContext[Any, Any],
            ) -> charge_pb2.GetChargeResponse:
                await read_row()
                return charge_pb2.GetChargeResponse()

            handlers: dict[str, Callable[..., Awaitable[Any]]] = {
                "CreateCharge": create_charge,
                "GetCharge": get_charge,
            }
            handler = grpc.method_handlers_generic_handler(
                CHARGE_SERVICE,
                {
                    name: grpc.unary_unary_rpc_method_handler(
                        handlers[name],
                        request_deserializer=request.FromString,
                        response_serializer=response.SerializeToString,
                    )
                    for name, (request, response) in COMPOSED_METHODS.items()
                },
            )
            server = grpc.aio.server()
            server.add_generic_rpc_handlers((handler,))
            server.add_insecure_port(f"127.0.0.1:{port}")
            await server.start()
            print("ready", flush=True)
            await server.wait_for_termination()


async def drive_composed(
    target: str,
    calls: int,
    *,
    method: str = "CreateCharge",
    concurrency: int = CONCURRENCY,
    max_seconds: float = 60,
) -> Run:
    """Run by the parent: up to ``calls`` calls of ``method`` to the composed server."""
    request_type, response_type = COMPOSED_METHODS[method]
    async with grpc.aio.insecure_channel(target) as channel:
        call = channel.unary_unary(
            f"/{CHARGE_SERVICE}/{method}",
            request_serializer=request_type.SerializeToString,
            response_deserializer=response_type.FromString,
        )
        request = (
            charge_pb2.CreateChargeRequest(
                idempotency_key="composed-floor", charge_permission_id="S01-0000000-0000000"
            )
            if method == "CreateCharge"
            else charge_pb2.GetChargeRequest(charge_id="S01-0000000-0000000-C000000")
        )

        async def one(_i: int) -> None:
            await call(request, timeout=10)

        run = await closed_loop(
            one, concurrency=concurrency, max_calls=calls, max_seconds=max_seconds
        )
        if run.errors:
            raise RuntimeError(f"composed floor failed: {dict(run.errors)}")
        return run


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench._floor", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)
    server = sub.add_parser("grpc-server")
    server.add_argument("--port", type=int, required=True)
    client = sub.add_parser("clients")
    client.add_argument("--url", required=True)
    client.add_argument("--ca-file", default=None, help="CA of an https:// URL")
    client.add_argument("--headers", required=True, help="JSON object of signed headers")
    client.add_argument("--database", required=True)
    client.add_argument("--calls", type=int, default=2000)
    composed = sub.add_parser("composed-server")
    composed.add_argument("--port", type=int, required=True)
    composed.add_argument("--url", required=True)
    composed.add_argument("--ca-file", default=None, help="CA of an https:// URL")
    composed.add_argument("--headers", required=True, help="JSON object of signed headers")
    composed.add_argument("--database", required=True)
    composed.add_argument("--key-file", required=True, help="RSA private key (PEM) to sign with")
    a = p.parse_args(argv)
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        if a.command == "grpc-server":
            runner.run(grpc_server(a.port))
            return 0
        if a.command == "composed-server":
            runner.run(
                composed_server(
                    a.port,
                    url=a.url,
                    headers=json.loads(a.headers),
                    database=a.database,
                    key_file=a.key_file,
                    ca_file=a.ca_file,
                )
            )
            return 0
        figures = runner.run(
            clients(a.url, json.loads(a.headers), a.database, a.calls, ca_file=a.ca_file)
        )
    print(json.dumps(figures), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
