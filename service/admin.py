"""The admin port: Prometheus `/metrics`, and `/readyz` + `/livez` mirroring gRPC health for
probes that cannot speak TLS gRPC. Kept off the gRPC port so callers never reach it and
NetworkPolicy can open it to the monitoring namespace and the kubelet only."""

from __future__ import annotations

from collections.abc import Callable

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, generate_latest

from ._listen import listen

__all__ = ["AdminServer"]


class AdminServer:
    def __init__(self, ready: Callable[[], bool] = lambda: True) -> None:
        self._ready = ready
        self._runner: web.AppRunner | None = None
        self.port = 0

    async def _readyz(self, _request: web.Request) -> web.Response:
        if self._ready():
            return web.Response(text="SERVING\n")
        return web.Response(status=503, text="NOT_SERVING\n")

    async def _livez(self, _request: web.Request) -> web.Response:
        return web.Response(text="ok\n")

    async def _metrics(self, _request: web.Request) -> web.Response:
        body = generate_latest(REGISTRY)
        return web.Response(body=body, headers={"content-type": CONTENT_TYPE_LATEST})

    async def start(self, host: str, port: int) -> int:
        app = web.Application()
        app.router.add_get("/metrics", self._metrics)
        app.router.add_get("/readyz", self._readyz)
        app.router.add_get("/livez", self._livez)
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False)
        self.port = await listen(self._runner, host, port)
        return self.port

    async def stop(self) -> None:
        if self._runner is not None:
            runner, self._runner = self._runner, None
            await runner.cleanup()
