"""Serving an aiohttp runner on a host and port (the admin port and the IPN receiver)."""

from __future__ import annotations

from typing import Any

from aiohttp import web

__all__ = ["listen"]


async def listen(runner: web.BaseRunner, host: str, port: int, *, reuse_port: bool = False) -> int:
    """Set `runner` up and serve it on `host`:`port`; returns the port it listens on (for
    port 0, the one the operating system chose). With `reuse_port` the port is shared
    (SO_REUSEPORT) with the other workers of this replica (`GRPC_WORKERS`)."""
    await runner.setup()
    site = web.TCPSite(runner, host, port, reuse_port=reuse_port or None)
    await site.start()
    server: Any = site._server  # aiohttp keeps the listening socket private
    return int(server.sockets[0].getsockname()[1])
