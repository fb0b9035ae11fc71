"""Run the emulator on real sockets: HTTP, optional HTTPS, ports picked by the OS when 0."""

from __future__ import annotations

import tempfile
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

from aiohttp import web

from .app import create_app
from .state import EMULATOR_KEY, Emulator, EmulatorConfig
from .tls import ensure_tls_files


@dataclass
class RunningEmulator:
    app: web.Application
    host: str
    http_port: int
    tls_port: int | None
    ca_file: Path | None

    @property
    def emulator(self) -> Emulator:
        return self.app[EMULATOR_KEY]

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.http_port}"

    @property
    def tls_url(self) -> str | None:
        return None if self.tls_port is None else f"https://{self.host}:{self.tls_port}"

    def ready_line(self) -> dict[str, object]:
        return {
            "event": "listening",
            "http_port": self.http_port,
            "tls_port": self.tls_port,
            "ca_file": None if self.ca_file is None else str(self.ca_file),
            "url": self.url,
        }


def _bound_port(site: web.TCPSite) -> int:
    server = site._server
    assert server is not None
    sockets = getattr(server, "sockets", None) or []
    return int(sockets[0].getsockname()[1])


@asynccontextmanager
async def run_emulator(
    config: EmulatorConfig | None = None,
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    tls_port: int | None = None,
    data_dir: Path | None = None,
) -> AsyncIterator[RunningEmulator]:
    """Serve the emulator until the block exits; `tls_port=0` adds HTTPS on a free port."""
    config = config or EmulatorConfig()
    app = create_app(config)
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    try:
        site = web.TCPSite(runner, host, port)
        await site.start()
        http_port = _bound_port(site)
        bound_tls: int | None = None
        ca_file: Path | None = None
        if tls_port is not None:
            directory = data_dir
            if directory is None:
                directory = (
                    config.state_file.parent
                    if config.state_file is not None
                    else Path(tempfile.mkdtemp(prefix="amazonpay-emulator-"))
                )
            files = ensure_tls_files(directory)
            ca_file = files.ca_file
            tls_site = web.TCPSite(runner, host, tls_port, ssl_context=files.server_context())
            await tls_site.start()
            bound_tls = _bound_port(tls_site)
        app[EMULATOR_KEY].ipn.base_url = f"http://{host}:{http_port}"
        yield RunningEmulator(
            app=app, host=host, http_port=http_port, tls_port=bound_tls, ca_file=ca_file
        )
    finally:
        await runner.cleanup()
