"""Run `python -m service` (or the emulator) as a real child process, as Kubernetes would."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import socket
import sys
from collections.abc import Mapping
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class ServiceProcess:
    """A `python -m service` child whose JSON log lines are collected for assertions."""

    def __init__(self, env: Mapping[str, str], args: tuple[str, ...] = ()) -> None:
        self.env = {**os.environ, **env, "PYTHONUNBUFFERED": "1"}
        self.args = args
        self.process: asyncio.subprocess.Process | None = None
        self.log_lines: list[str] = []
        self._reader: asyncio.Task[None] | None = None
        self._serving = asyncio.Event()

    async def start(self) -> None:
        self.process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "service",
            *self.args,
            cwd=REPO,
            env=self.env,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
        )
        self._reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        assert self.process is not None
        assert self.process.stderr is not None
        async for raw in self.process.stderr:
            line = raw.decode(errors="replace").rstrip("\n")
            self.log_lines.append(line)
            if '"level":"ERROR"' in line:
                print(f"service error: {line}", file=sys.stderr)  # shown by pytest on failure
            with contextlib.suppress(ValueError):
                if json.loads(line).get("msg") == "serving gRPC":
                    self._serving.set()

    async def wait_serving(self, timeout: float = 30.0) -> None:
        assert self.process is not None
        waiter = asyncio.create_task(self._serving.wait())
        exited = asyncio.create_task(self.process.wait())
        done, _ = await asyncio.wait(
            {waiter, exited}, timeout=timeout, return_when="FIRST_COMPLETED"
        )
        waiter.cancel()
        exited.cancel()
        if waiter not in done:
            raise AssertionError("service did not start serving:\n" + "\n".join(self.log_lines))

    async def wait(self, timeout: float = 30.0) -> int:
        """Exit code of a process expected to stop by itself."""
        assert self.process is not None
        code = await asyncio.wait_for(self.process.wait(), timeout)
        if self._reader is not None:
            await self._reader
        return code

    async def terminate(self, timeout: float = 30.0) -> int:
        assert self.process is not None
        if self.process.returncode is None:
            self.process.send_signal(signal.SIGTERM)
        code = await asyncio.wait_for(self.process.wait(), timeout)
        if self._reader is not None:
            await self._reader
        return code

    async def kill(self) -> None:
        if self.process is not None and self.process.returncode is None:
            self.process.kill()
            await self.process.wait()
        if self._reader is not None:
            with contextlib.suppress(Exception):
                await self._reader
