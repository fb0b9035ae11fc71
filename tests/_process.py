"""Run `python -m service` (or the emulator) as a real child process, as Kubernetes would."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import socket
import sys
import time
from collections.abc import Mapping
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def stop_orphaned_postgres(data_dir: Path, timeout: float = 10.0) -> None:
    """Stop an embedded Postgres whose parent service was killed (SIGKILL cannot stop it)."""
    pid_file = data_dir / "postmaster.pid"
    try:
        pid = int(pid_file.read_text().splitlines()[0])
    except (OSError, ValueError, IndexError):
        return
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGQUIT)  # immediate shutdown: the postmaster stops its children
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.05)
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class ServiceProcess:
    """A `python -m service` child whose JSON log lines are collected for assertions."""

    def __init__(
        self, env: Mapping[str, str], args: tuple[str, ...] = (), *, capture_stdout: bool = False
    ) -> None:
        # The dev emulator's fixed default port would collide between parallel test runs.
        self.env = {**os.environ, "DEV_EMULATOR_PORT": "0", **env, "PYTHONUNBUFFERED": "1"}
        self.args = args
        self.process: asyncio.subprocess.Process | None = None
        self.log_lines: list[str] = []
        self.stdout_lines: list[str] = []
        self._capture_stdout = capture_stdout
        self._stdout_reader: asyncio.Task[None] | None = None
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
            stdout=asyncio.subprocess.PIPE if self._capture_stdout else asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
            start_new_session=True,
        )
        self._reader = asyncio.create_task(self._read())
        if self._capture_stdout:
            self._stdout_reader = asyncio.create_task(self._read_stdout())

    async def _read_stdout(self) -> None:
        assert self.process is not None
        assert self.process.stdout is not None
        async for raw in self.process.stdout:
            self.stdout_lines.append(raw.decode(errors="replace").rstrip("\n"))

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
        """SIGKILL. Waits are bounded: a child the service started (its embedded Postgres, a
        session leader of its own) survives it and keeps stderr open, and asyncio on 3.11
        reports the exit only once every pipe has closed (see `stop_orphaned_postgres`)."""
        if self.process is not None and self.process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)  # with the dev emulator it started
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(self.process.wait()), 5)
        if self._reader is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(asyncio.shield(self._reader), 5)
            self._reader.cancel()
        if self._stdout_reader is not None:
            self._stdout_reader.cancel()
