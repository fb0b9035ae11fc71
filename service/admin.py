"""The admin port: Prometheus `/metrics`, and `/readyz` + `/livez` mirroring gRPC health for
probes that cannot speak TLS gRPC. Kept off the gRPC port so callers never reach it and
NetworkPolicy can open it to the monitoring namespace and the kubelet only.

With `GRPC_WORKERS` > 1 each worker serves these on a Unix socket of its own and the supervisor
serves the admin port, answering from every worker (`service.supervisor`)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, generate_latest

from ._listen import listen

__all__ = ["AdminServer", "Check"]

Check = Callable[[], Awaitable[bool]]
"""An async yes/no: is the process ready, is it alive."""


async def _yes() -> bool:
    return True


async def _own_metrics() -> bytes:
    return generate_latest(REGISTRY)


class AdminServer:
    def __init__(
        self,
        ready: Check = _yes,
        *,
        live: Check = _yes,
        metrics: Callable[[], Awaitable[bytes]] = _own_metrics,
    ) -> None:
        self._ready = ready
        self._live = live
        self._metrics_text = metrics
        self._runner: web.AppRunner | None = None
        self.port = 0

    async def _readyz(self, _request: web.Request) -> web.Response:
        if await self._ready():
            return web.Response(text="SERVING\n")
        return web.Response(status=503, text="NOT_SERVING\n")

    async def _livez(self, _request: web.Request) -> web.Response:
        if await self._live():
            return web.Response(text="ok\n")
        return web.Response(status=503, text="not live\n")

    async def _metrics(self, _request: web.Request) -> web.Response:
        body = await self._metrics_text()
        return web.Response(body=body, headers={"content-type": CONTENT_TYPE_LATEST})

    def _app_runner(self) -> web.AppRunner:
        app = web.Application()
        app.router.add_get("/metrics", self._metrics)
        app.router.add_get("/readyz", self._readyz)
        app.router.add_get("/livez", self._livez)
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False)
        return self._runner

    async def start(self, host: str, port: int) -> int:
        self.port = await listen(self._app_runner(), host, port)
        return self.port

    async def start_unix(self, path: Path) -> None:
        """Serve on the Unix socket `path` (a worker's, for its supervisor)."""
        runner = self._app_runner()
        await runner.setup()
        await web.UnixSite(runner, str(path)).start()

    async def stop(self) -> None:
        if self._runner is not None:
            runner, self._runner = self._runner, None
            await runner.cleanup()
