"""Throughput of the emulator alone: signed GET/POST requests per second on its single core.

Runs `python -m emulator` as a child process (one event loop = one core), pre-signs every
request before the clock starts (client-side RSA signing would otherwise be the bottleneck),
then fires them over loopback keep-alive connections and prints requests per second.

    .venv/bin/python bench/emulator_bench.py [--requests 6000] [--concurrency 32]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import sys
import tempfile
import time
import uuid
from pathlib import Path

import aiohttp

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from emulator.testing import generate_key, sign_headers  # noqa: E402

KEY_ID = "BENCH-KEY"
PREFIX = "/sandbox/v2"


def _cpu_seconds(pid: int) -> tuple[float, float]:
    """User and system CPU of the emulator process (Linux), to tell its cost from the client's."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0, 0.0
    tick = os.sysconf("SC_CLK_TCK")
    return int(fields[11]) / tick, int(fields[12]) / tick


def _raw_request(url: str, method: str, path: str, body: bytes, headers: dict[str, str]) -> bytes:
    """Pre-serialized HTTP/1.1 so the load generator costs far less CPU than the emulator."""
    host = url.removeprefix("http://")
    lines = [f"{method} {path} HTTP/1.1", f"host: {host}", f"content-length: {len(body)}"]
    lines += [f"{k}: {v}" for k, v in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


async def _read_response(reader: asyncio.StreamReader) -> int:
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    length = 0
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            length = int(line.split(b":", 1)[1])
    await reader.readexactly(length)
    return status


async def _start(public_pem: str, workdir: Path) -> tuple[asyncio.subprocess.Process, str]:
    pem_file = workdir / "bench-public.pem"
    pem_file.write_text(public_pem)
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "emulator",
        "--host",
        "127.0.0.1",
        "--port",
        "0",
        "--key",
        f"{KEY_ID}={pem_file}",
        cwd=REPO,
        stdout=asyncio.subprocess.PIPE,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    assert proc.stdout is not None
    info = json.loads(await asyncio.wait_for(proc.stdout.readline(), 30))
    return proc, str(info["url"])


async def main(total: int, concurrency: int) -> None:
    key, pem = generate_key()
    with tempfile.TemporaryDirectory() as tmp:
        proc, url = await _start(pem, Path(tmp))
        try:
            async with aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=concurrency)
            ) as http:
                body = json.dumps({"storeId": "amzn1.application-oa2-client.bench"}).encode()
                path = PREFIX + "/checkoutSessions"
                seed_headers = sign_headers(
                    key,
                    KEY_ID,
                    "POST",
                    path,
                    body,
                    headers={"x-amz-pay-idempotency-key": uuid.uuid4().hex},
                )
                async with http.post(url + path, data=body, headers=seed_headers) as resp:
                    session_id = (await resp.json())["checkoutSessionId"]
                get_path = f"{PREFIX}/checkoutSessions/{session_id}"
                requests: list[tuple[str, str, bytes, dict[str, str]]] = []
                for i in range(total):
                    if i % 2:
                        headers = sign_headers(key, KEY_ID, "GET", get_path)
                        requests.append(("GET", get_path, b"", headers))
                    else:
                        headers = sign_headers(
                            key,
                            KEY_ID,
                            "POST",
                            path,
                            body,
                            headers={"x-amz-pay-idempotency-key": uuid.uuid4().hex},
                        )
                        requests.append(("POST", path, body, headers))
                wire = [_raw_request(url, *r) for r in requests]
                queue = iter(wire)
                failures = 0

                async def worker() -> None:
                    nonlocal failures
                    host, port = url.removeprefix("http://").split(":")
                    reader, writer = await asyncio.open_connection(host, int(port))
                    try:
                        for raw in queue:
                            writer.write(raw)
                            status = await _read_response(reader)
                            if status >= 300:
                                failures += 1
                    finally:
                        writer.close()

                cpu_before = _cpu_seconds(proc.pid)
                started = time.perf_counter()
                await asyncio.gather(*(worker() for _ in range(concurrency)))
                elapsed = time.perf_counter() - started
                cpu_after = _cpu_seconds(proc.pid)
                user_cpu = cpu_after[0] - cpu_before[0]
                system_cpu = cpu_after[1] - cpu_before[1]
                server_cpu = user_cpu + system_cpu
        finally:
            proc.send_signal(signal.SIGTERM)
            await proc.wait()
    print(
        json.dumps(
            {
                "requests": total,
                "concurrency": concurrency,
                "failures": failures,
                "seconds": round(elapsed, 3),
                "requests_per_second": round(total / elapsed, 1),
                "emulator_cpu_seconds": {
                    "user": round(user_cpu, 3),
                    "system": round(system_cpu, 3),
                },
                "requests_per_emulator_cpu_second": round(total / server_cpu, 1)
                if server_cpu
                else None,
                "mix": "50% signed GET checkoutSession, 50% signed POST checkoutSessions",
            }
        )
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--requests", type=int, default=6000)
    parser.add_argument("--concurrency", type=int, default=32)
    args = parser.parse_args()
    asyncio.run(main(args.requests, args.concurrency))
