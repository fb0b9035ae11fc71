"""Amazon's official Node.js SDK as the benchmark's yardstick: what a team would run instead of this
service, embedding ``@amazonpay/amazon-pay-api-sdk-nodejs`` (unchanged, from npm, the version
``bench/node_sdk/package-lock.json`` pins) and calling Amazon directly over HTTPS.

``ensure_installed`` runs ``npm ci`` in ``bench/node_sdk`` when its ``node_modules`` is missing or
older than the lock file, so ``make bench`` installs it itself. ``NodeSdk`` keeps one
``node create_charge.js`` process (its keep-alive connections stay warm between rounds, like an
application's) and runs closed-loop rounds of CreateCharge in it.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
from collections import Counter
from pathlib import Path
from typing import Any

from bench._load import Run
from bench._stack import KEY_ID, REPO

NODE_DIR = REPO / "bench" / "node_sdk"
PACKAGE = "@amazonpay/amazon-pay-api-sdk-nodejs"
_INSTALLED = NODE_DIR / "node_modules" / ".package-lock.json"


class NodeUnavailable(RuntimeError):
    """node or npm is missing, or `npm ci` failed."""


def ensure_installed() -> dict[str, str]:
    """Install the pinned SDK if needed; returns the node and SDK versions."""
    node, npm = shutil.which("node"), shutil.which("npm")
    if node is None or npm is None:
        raise NodeUnavailable("make bench needs node and npm (Node.js 18 or later) on PATH")
    lock = NODE_DIR / "package-lock.json"
    if not _INSTALLED.exists() or _INSTALLED.stat().st_mtime < lock.stat().st_mtime:
        done = subprocess.run(
            [npm, "ci", "--no-audit", "--no-fund"],
            cwd=NODE_DIR,
            capture_output=True,
            text=True,
            check=False,
        )
        if done.returncode != 0:
            raise NodeUnavailable(f"npm ci in {NODE_DIR} failed:\n{done.stdout}{done.stderr}")
    sdk = json.loads((NODE_DIR / "node_modules" / PACKAGE / "package.json").read_text())
    version = subprocess.run([node, "--version"], capture_output=True, text=True, check=True)
    return {"node": version.stdout.strip(), "sdk": f"{PACKAGE}@{sdk['version']}"}


class NodeSdk:
    """One long-lived Node process driving the SDK against the emulator's HTTPS port."""

    def __init__(self, *, api_url: str, ca_file: str, private_key: Path) -> None:
        self._env = {
            **os.environ,
            "EMULATOR_HOST": api_url.removeprefix("https://"),
            "PUBLIC_KEY_ID": KEY_ID,
            "PRIVATE_KEY_FILE": str(private_key),
            "NODE_EXTRA_CA_CERTS": ca_file,
            # The SDK sets NODE_TLS_REJECT_UNAUTHORIZED=0 for an overridden endpoint, and Node
            # warns about it on stderr once; nothing else is written there.
            "NODE_NO_WARNINGS": "1",
        }
        self.process: asyncio.subprocess.Process | None = None

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    async def start(self) -> None:
        node = shutil.which("node")
        if node is None:
            raise NodeUnavailable("node is not on PATH")
        self.process = await asyncio.create_subprocess_exec(
            node,
            str(NODE_DIR / "create_charge.js"),
            cwd=NODE_DIR,
            env=self._env,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            limit=64 * 1024 * 1024,
        )
        ready = await self._read()
        if not ready.get("ready"):
            raise NodeUnavailable(f"create_charge.js did not start: {ready}")

    async def _read(self) -> dict[str, Any]:
        assert self.process is not None
        assert self.process.stdout is not None
        line = await asyncio.wait_for(self.process.stdout.readline(), 300)
        if not line:
            raise NodeUnavailable(f"create_charge.js exited with {await self.process.wait()}")
        answer: dict[str, Any] = json.loads(line)
        return answer

    async def run(self, permissions: list[str], *, concurrency: int, seconds: float) -> Run:
        """A closed loop of CreateCharge (captureNow), one charge permission slot per call."""
        assert self.process is not None
        assert self.process.stdin is not None
        command = {
            "op": "run",
            "concurrency": concurrency,
            "seconds": seconds,
            "permissions": permissions,
        }
        self.process.stdin.write((json.dumps(command) + "\n").encode())
        await self.process.stdin.drain()
        answer = await self._read()
        return Run(
            latencies=[ms / 1000 for ms in answer["latencies_ms"]],
            errors=Counter(answer["errors"]),
            seconds=float(answer["seconds"]),
            started=int(answer["used"]),
        )

    async def stop(self) -> None:
        if self.process is None or self.process.returncode is not None:
            return
        assert self.process.stdin is not None
        self.process.stdin.write(b'{"op": "exit"}\n')
        try:
            await self.process.stdin.drain()
            await asyncio.wait_for(self.process.wait(), 10)
        except (OSError, TimeoutError):
            self.process.kill()
            await self.process.wait()
