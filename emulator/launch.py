"""Start `python -m emulator` as a child process and wait until it serves.

The one launcher the test fixtures, the benchmark and the service's development stack share: it
picks the port (0: the OS chooses a free one), waits for the ready JSON the child writes (see
`__main__`), reports a child that died during start-up, and stops it (SIGTERM, then SIGKILL).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

__all__ = ["EmulatorChild", "EmulatorExited", "launch", "write_key_pair"]

READY_FILE = "emulator-ready.json"
_PACKAGE_ROOT = Path(__file__).resolve().parents[1]


class EmulatorExited(RuntimeError):
    """The child exited before it announced that it serves."""

    def __init__(self, returncode: int) -> None:
        super().__init__(f"the emulator exited with code {returncode} during start-up")
        self.returncode = returncode


class EmulatorChild:
    """A running emulator child; `ready` is the JSON line it announced (url, ports, CA file)."""

    def __init__(self, process: asyncio.subprocess.Process, ready: Mapping[str, Any]) -> None:
        self.process = process
        self.ready = dict(ready)

    @property
    def url(self) -> str:
        url: str = self.ready["url"]
        return url

    @property
    def pid(self) -> int:
        return self.process.pid

    async def stop(self, timeout_s: float = 15.0) -> None:
        """SIGTERM (the emulator saves its state file), SIGKILL after `timeout_s`."""
        if self.process.returncode is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            self.process.terminate()
        try:
            await asyncio.wait_for(self.process.wait(), timeout_s)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                self.process.kill()
            await self.process.wait()


async def launch(
    *,
    workdir: Path,
    keys: Mapping[str, Path],
    port: int = 0,
    host: str = "127.0.0.1",
    state_file: Path | None = None,
    data_dir: Path | None = None,
    extra_args: Sequence[str] = (),
    timeout_s: float = 30.0,
) -> EmulatorChild:
    """Run the emulator with the public keys `keys` (id -> PEM file); the ready file goes in `workdir`.

    Paths are made absolute, since the child runs beside the `emulator` package so that
    `-m emulator` finds it whatever the caller's working directory.
    """
    command = _Command(
        workdir=workdir, keys=keys, port=port, host=host, state_file=state_file, data_dir=data_dir
    )
    ready, args = await asyncio.to_thread(command.prepare)
    process = await asyncio.create_subprocess_exec(
        *args,
        *extra_args,
        cwd=_PACKAGE_ROOT,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
        stdout=asyncio.subprocess.DEVNULL,
    )
    child = EmulatorChild(process, {})
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    try:
        while True:
            text = await asyncio.to_thread(_read_ready, ready)
            if text:
                child.ready = json.loads(text)
                return child
            if process.returncode is not None:
                raise EmulatorExited(process.returncode)
            if loop.time() > deadline:
                raise TimeoutError(f"the emulator did not become ready within {timeout_s:g} s")
            await asyncio.sleep(0.05)
    except BaseException:
        await child.stop()
        raise


@dataclass(frozen=True)
class _Command:
    workdir: Path
    keys: Mapping[str, Path]
    port: int
    host: str
    state_file: Path | None
    data_dir: Path | None

    def prepare(self) -> tuple[Path, list[str]]:
        """The ready file (removed if left from an earlier run) and the child's command line."""
        self.workdir.mkdir(parents=True, exist_ok=True)
        ready = self.workdir.resolve() / READY_FILE
        ready.unlink(missing_ok=True)
        args = [sys.executable, "-m", "emulator", "--host", self.host, "--port", str(self.port)]
        args += ["--ready-file", str(ready)]
        if self.state_file is not None:
            args += ["--state-file", str(self.state_file.resolve())]
        if self.data_dir is not None:
            args += ["--data-dir", str(self.data_dir.resolve())]
        for key_id, public in self.keys.items():
            args += ["--key", f"{key_id}={public.resolve()}"]
        return ready, args


def _read_ready(path: Path) -> str:
    """The ready JSON, or "" while the child has not written it (it renames it into place whole)."""
    try:
        return path.read_text().strip()
    except FileNotFoundError:
        return ""


def write_key_pair(
    directory: Path,
    *,
    private_name: str = "private.pem",
    public_name: str = "public.pem",
    pkcs1: bool = False,
) -> tuple[Path, Path, rsa.RSAPrivateKey]:
    """A fresh RSA-2048 merchant key: the private PEM (PKCS#8, or PKCS#1 when asked) for the
    service and the public PEM to register with the emulator (`launch(keys=...)`)."""
    directory.mkdir(parents=True, exist_ok=True)
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    private = directory / private_name
    public = directory / public_name
    private_format = (
        serialization.PrivateFormat.TraditionalOpenSSL
        if pkcs1
        else serialization.PrivateFormat.PKCS8
    )
    private.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, private_format, serialization.NoEncryption())
    )
    public.write_bytes(
        key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    return private, public, key
