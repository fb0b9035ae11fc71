"""`python -m emulator` as a child process: ready line, HTTPS, state file across restarts,
and Amazon's official Node SDK driving a whole purchase over HTTPS."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import ssl
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from emulator.testing import SignedClient

from ._flows import STORE_ID, purchase
from .conftest import KEY_ID

REPO = Path(__file__).resolve().parents[3]
NODE_DIR = Path(__file__).resolve().parent / "node_sdk"


@asynccontextmanager
async def emulator_process(*args: str) -> AsyncIterator[dict[str, Any]]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "emulator",
        "--host",
        "127.0.0.1",
        "--port",
        "0",
        *args,
        cwd=REPO,
        stdout=asyncio.subprocess.PIPE,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        assert proc.stdout is not None
        line = await asyncio.wait_for(proc.stdout.readline(), 30)
        info: dict[str, Any] = json.loads(line)
        yield info
    finally:
        if proc.returncode is None:
            proc.send_signal(signal.SIGTERM)
            await asyncio.wait_for(proc.wait(), 15)
    assert proc.returncode == 0


def _write_keys(tmp_path: Path, key_pair: tuple[rsa.RSAPrivateKey, str]) -> tuple[Path, Path]:
    public = tmp_path / "public.pem"
    public.write_text(key_pair[1])
    private = tmp_path / "private.pem"
    private.write_bytes(
        key_pair[0].private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return public, private


async def test_state_file_keeps_objects_keys_and_clock_across_restarts(
    tmp_path: Path, key_pair: tuple[rsa.RSAPrivateKey, str]
) -> None:
    public, _ = _write_keys(tmp_path, key_pair)
    state = tmp_path / "state.json"
    ready = tmp_path / "ready.json"
    args = ("--state-file", str(state), "--ready-file", str(ready), "--key", f"{KEY_ID}={public}")
    async with aiohttp.ClientSession() as http:
        async with emulator_process(*args) as info:
            assert info["event"] == "listening"
            assert info["tls_port"] is None
            assert json.loads(ready.read_text()) == info
            client = SignedClient(http, info["url"], key_pair[0], KEY_ID)
            done = await purchase(client, intent="AuthorizeWithCapture")
            replay_body = {"storeId": STORE_ID}
            first = await client.call(
                "POST", "/checkoutSessions", replay_body, idempotency_key="persist"
            )
            await client.control("POST", "/clock", {"advanceSeconds": 3600})
        assert state.exists()
        async with emulator_process("--state-file", str(state)) as info:
            client = SignedClient(http, info["url"], key_pair[0], KEY_ID)
            charge = await client.call("GET", f"/charges/{done['chargeId']}")
            assert (charge.status, charge.body["statusDetails"]["state"]) == (200, "Captured")
            again = await client.call(
                "POST", "/checkoutSessions", replay_body, idempotency_key="persist"
            )
            assert again.body == first.body
            clock = await client.control("GET", "/clock")
            assert clock.body["offsetSeconds"] >= 3600


async def test_tls_port_serves_the_api_with_a_certificate_signed_by_the_announced_ca(
    tmp_path: Path, key_pair: tuple[rsa.RSAPrivateKey, str]
) -> None:
    public, _ = _write_keys(tmp_path, key_pair)
    args = ("--tls-port", "0", "--data-dir", str(tmp_path), "--key", f"{KEY_ID}={public}")
    async with emulator_process(*args) as info:
        context = ssl.create_default_context(cafile=info["ca_file"])
        connector = aiohttp.TCPConnector(ssl=context)
        async with aiohttp.ClientSession(connector=connector) as http:
            client = SignedClient(
                http, f"https://127.0.0.1:{info['tls_port']}", key_pair[0], KEY_ID
            )
            reply = await client.call("POST", "/checkoutSessions", {"storeId": STORE_ID})
            assert reply.status == 201


@pytest.mark.slow
@pytest.mark.parametrize("algorithm", ["AMZN-PAY-RSASSA-PSS-V2", "AMZN-PAY-RSASSA-PSS"])
async def test_official_node_sdk_completes_a_purchase_over_https(
    tmp_path: Path, key_pair: tuple[rsa.RSAPrivateKey, str], algorithm: str
) -> None:
    node, npm = shutil.which("node"), shutil.which("npm")
    # A conformance test never skips: without Node.js it fails and says what is missing.
    assert node is not None, "node is needed (Node.js 18 or later)"
    assert npm is not None, "npm is needed (Node.js 18 or later)"
    if not (NODE_DIR / "node_modules" / "@amazonpay").exists():
        install = await asyncio.create_subprocess_exec(
            npm,
            "ci",
            "--no-audit",
            "--no-fund",
            cwd=NODE_DIR,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        out, _ = await install.communicate()
        assert install.returncode == 0, out.decode()
    public, private = _write_keys(tmp_path, key_pair)
    args = ("--tls-port", "0", "--data-dir", str(tmp_path), "--key", f"{KEY_ID}={public}")
    async with emulator_process(*args) as info:
        env = {
            **os.environ,
            "EMULATOR_HTTP": info["url"],
            "EMULATOR_HOST": f"127.0.0.1:{info['tls_port']}",
            "PUBLIC_KEY_ID": KEY_ID,
            "PRIVATE_KEY_FILE": str(private),
            "NODE_EXTRA_CA_CERTS": info["ca_file"],
            "ALGORITHM": algorithm,
        }
        proc = await asyncio.create_subprocess_exec(
            node,
            str(NODE_DIR / "purchase.js"),
            env=env,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        out, err = await asyncio.wait_for(proc.communicate(), 120)
    result = json.loads(out.decode().strip().splitlines()[-1])
    assert proc.returncode == 0, (out.decode(), err.decode())
    assert result["ok"], result
    assert result["chargeState"] == "Captured"
    assert result["repeatedComplete"] == {
        "status": 422,
        "reasonCode": "InvalidCheckoutSessionStatus",
    }
    # Reports API, report schedules and Get Dispute through the SDK, queries signed by it.
    assert result["settlement"]["lines"] == 2
    assert result["settlement"]["disputeId"].startswith(result["chargeId"].rsplit("-", 1)[0])
