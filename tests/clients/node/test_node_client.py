"""`node --test` of clients/node against the real service and emulator, from `make test`."""

from __future__ import annotations

import asyncio
import os
import re
import shutil

import pytest

from service.app import Application
from tests._emulator import EmulatorProcess
from tests._process import REPO

NODE_DIR = REPO / "clients" / "node"
NODE = shutil.which("node")
NPM = shutil.which("npm")

pytestmark = pytest.mark.skipif(
    NODE is None or NPM is None, reason="node and npm are not installed on this machine"
)


async def _run(*argv: str, env: dict[str, str] | None = None, timeout: float = 300) -> str:
    """Run without blocking the event loop (the service under test lives on it)."""
    process = await asyncio.create_subprocess_exec(
        *argv,
        cwd=NODE_DIR,
        env={**os.environ, **(env or {})},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    output, _ = await asyncio.wait_for(process.communicate(), timeout)
    text = output.decode(errors="replace")
    assert process.returncode == 0, f"{' '.join(argv)} exited {process.returncode}:\n{text}"
    return text


async def _ensure_node_modules() -> None:
    if not (NODE_DIR / "node_modules" / "@grpc" / "grpc-js").is_dir():
        assert NPM is not None
        await _run(NPM, "ci", "--no-audit", "--no-fund")


def _tap_count(output: str, name: str) -> int:
    match = re.search(rf"^# {name} (\d+)$", output, re.MULTILINE)
    assert match, f"no '# {name}' line in node --test output:\n{output}"
    return int(match.group(1))


async def test_node_checkout_capture_refund_against_the_real_service(
    app: Application, clean_emulator: EmulatorProcess
) -> None:
    await _ensure_node_modules()
    assert NODE is not None
    output = await _run(
        NODE,
        "--test",
        "--test-reporter=tap",
        "test/",
        env={
            "AMAZONPAY_TARGET": f"127.0.0.1:{app.grpc_port}",
            "EMULATOR_URL": clean_emulator.url,
        },
    )
    assert _tap_count(output, "fail") == 0, output
    assert _tap_count(output, "skipped") == 0, output
    assert _tap_count(output, "pass") == 5, output


async def test_node_checkout_script_prints_every_step(
    app: Application, clean_emulator: EmulatorProcess
) -> None:
    await _ensure_node_modules()
    assert NODE is not None
    output = await _run(
        NODE,
        "scripts/checkout.js",
        env={
            "AMAZONPAY_TARGET": f"127.0.0.1:{app.grpc_port}",
            "EMULATOR_URL": clean_emulator.url,
        },
    )
    steps = [line.split(".")[0] for line in output.splitlines() if re.match(r"^\d\. ", line)]
    assert steps == [str(n) for n in range(1, 9)], output
    assert '"capturedState": "Captured"' in output
