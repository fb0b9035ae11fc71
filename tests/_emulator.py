"""The emulator as a real child process on a free port, plus a client for its control plane."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import aiohttp

from emulator.launch import EmulatorChild, launch
from emulator.launch import write_key_pair as launch_key_pair


def write_key_pair(directory: Path) -> tuple[Path, Path]:
    """A merchant key pair; the private key in PKCS#1, the form Seller Central downloads."""
    private, public, _ = launch_key_pair(directory, pkcs1=True)
    return private, public


class EmulatorProcess:
    def __init__(self, workdir: Path, keys: dict[str, Path], extra_args: tuple[str, ...] = ()):
        self.workdir = workdir
        self.keys = keys
        self.extra_args = extra_args
        self.child: EmulatorChild | None = None
        self.process: asyncio.subprocess.Process | None = None
        self.url = ""
        self._session: aiohttp.ClientSession | None = None

    async def start(self) -> None:
        self.child = await launch(
            workdir=self.workdir,
            keys=self.keys,
            data_dir=self.workdir,
            extra_args=self.extra_args,
        )
        self.process = self.child.process
        self.url = self.child.url
        self._session = aiohttp.ClientSession()

    async def stop(self) -> None:
        if self._session is not None:
            await self._session.close()
        if self.child is not None:
            await self.child.stop()

    async def control(self, method: str, path: str, body: Any = None) -> Any:
        assert self._session is not None
        async with self._session.request(
            method, f"{self.url}/_emulator/{path}", json=body
        ) as response:
            payload = await response.json(content_type=None)
            if response.status >= 400:
                raise AssertionError(f"emulator {method} {path}: {response.status} {payload}")
            return payload

    async def sign_in(self, session_id: str, card: str = "1111") -> dict[str, Any]:
        result: dict[str, Any] = await self.control(
            "POST", f"checkoutSessions/{session_id}/signIn", {"card": card}
        )
        return result

    async def confirm(self, session_id: str) -> dict[str, Any]:
        result: dict[str, Any] = await self.control(
            "POST", f"checkoutSessions/{session_id}/confirm", {}
        )
        return result

    async def advance(self, seconds: float) -> None:
        await self.control("POST", "clock", {"advanceSeconds": seconds})

    async def objects(self, kind: str) -> list[dict[str, Any]]:
        result = await self.control("GET", f"objects/{kind}")
        items: list[dict[str, Any]] = result[kind]
        return items
