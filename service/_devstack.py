"""The `make run` default: a local Amazon Pay emulator with a throwaway key, when no real
credentials are configured. Never used when AMAZON_PAY_PUBLIC_KEY_ID is set."""

from __future__ import annotations

import asyncio
import logging
import secrets
from dataclasses import dataclass
from pathlib import Path

import aiohttp

from emulator.launch import EmulatorChild, EmulatorExited, launch, write_key_pair

__all__ = ["DEV_STORE_ID", "DevAmazonPay", "DevEndpoint"]

DEV_STORE_ID = "amzn1.application-oa2-client.dev-emulator"
"""Store id `make run` uses when none is configured: Create Checkout Session requires one."""

_log = logging.getLogger("service.devstack")


@dataclass(frozen=True)
class DevEndpoint:
    endpoint: str
    public_key_id: str
    private_key_file: Path


def _write_throwaway_key(directory: Path) -> tuple[str, Path, Path]:
    private_path, public_path, _ = write_key_pair(
        directory, private_name="dev-private-key.pem", public_name="dev-public-key.pem"
    )
    private_path.chmod(0o600)
    return f"SANDBOX-DEV{secrets.token_hex(8).upper()}", private_path, public_path


class DevAmazonPay:
    """Runs `python -m emulator` as a child process on `port` of 127.0.0.1 (0: a free port)."""

    def __init__(self, data_dir: Path, port: int = 0) -> None:
        self._dir = data_dir
        self._port = port
        self._child: EmulatorChild | None = None

    async def start(self, timeout_s: float = 30.0) -> DevEndpoint:
        key_id, private_path, public_path = await asyncio.to_thread(_write_throwaway_key, self._dir)
        try:
            self._child = await launch(
                workdir=self._dir,
                keys={key_id: public_path},
                port=self._port,
                state_file=self._dir / "emulator-state.json",
                timeout_s=timeout_s,
            )
        except EmulatorExited as exc:
            hint = f" (is port {self._port} taken? set DEV_EMULATOR_PORT)" if self._port else ""
            raise RuntimeError(
                f"the development emulator exited with code {exc.returncode}{hint}"
            ) from None
        url = self._child.url
        _log.info("development emulator started", extra={"url": url})
        return DevEndpoint(url, key_id, private_path)

    async def subscribe_ipn(self, url: str) -> None:
        """Ask the emulator to deliver IPNs to our receiver."""
        assert self._child is not None
        async with (
            aiohttp.ClientSession() as session,
            session.post(
                f"{self._child.url}/_emulator/ipn/subscriptions", json={"url": url}
            ) as response,
        ):
            response.raise_for_status()

    async def stop(self) -> None:
        child, self._child = self._child, None
        if child is not None:
            await child.stop(timeout_s=10)
