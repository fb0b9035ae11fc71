"""A scripted Amazon Pay look-alike on 127.0.0.1 that verifies every signature it receives."""

from __future__ import annotations

import asyncio
import itertools
import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiohttp import web

from service.amazonpay import (
    AmazonPayRequestError,
    canonical_request,
    parse_authorization_header,
    verify_signature,
)

VECTORS = Path(__file__).resolve().parents[2] / "data" / "signing-vectors"
PRIVATE_KEY_FILE = VECTORS / "test-key-private.pem"
PUBLIC_PEM = (VECTORS / "test-key-public.pem").read_bytes()


@dataclass
class Seen:
    """One request as the server received it."""

    method: str
    path: str
    headers: dict[str, str]
    body: bytes
    verified: bool
    signed_headers: tuple[str, ...]
    signature: str

    def json(self) -> Any:
        return json.loads(self.body) if self.body else None


Action = Callable[[web.Request], Awaitable[web.StreamResponse | None]]


def reply(status: int, body: Any = None, headers: dict[str, str] | None = None) -> Action:
    async def action(request: web.Request) -> web.StreamResponse:
        text = "" if body is None else (body if isinstance(body, str) else json.dumps(body))
        merged = {"x-amz-pay-request-id": f"req-{status}-{id(action)}", **(headers or {})}
        return web.Response(
            status=status, text=text, content_type="application/json", headers=merged
        )

    return action


def reset() -> Action:
    """Close the connection abruptly without answering."""

    async def action(request: web.Request) -> None:
        transport = request.transport
        assert transport is not None
        transport.abort()
        return

    return action


def hang(release: asyncio.Event) -> Action:
    async def action(request: web.Request) -> web.StreamResponse:
        await release.wait()
        return web.Response(status=200, text="{}", content_type="application/json")

    return action


@dataclass
class ScriptedServer:
    """Serves ``script`` in order (the last action repeats) and records every request."""

    script: list[Action] = field(default_factory=list)
    seen: list[Seen] = field(default_factory=list)
    in_flight: int = 0
    max_in_flight: int = 0
    port: int = 0
    _runner: web.AppRunner | None = None
    _counter: itertools.count[int] = field(default_factory=itertools.count)

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self) -> None:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, handler_cancellation=True, shutdown_timeout=0.5)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        server = site._server
        assert server is not None
        self.port = server.sockets[0].getsockname()[1]  # type: ignore[attr-defined]  # aiohttp types it AbstractServer

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    def _verify(self, request: web.Request, body: bytes) -> tuple[bool, tuple[str, ...], str]:
        try:
            auth = parse_authorization_header(request.headers.get("authorization", ""))
        except AmazonPayRequestError:
            return False, (), ""
        headers = {name: request.headers.get(name, "") for name in auth.signed_headers}
        canonical = canonical_request(
            request.method,
            request.raw_path.split("?", 1)[0],
            list(request.query.items()),
            headers,
            body,
            path_is_canonical=True,
        )
        ok = verify_signature(
            PUBLIC_PEM, canonical.string_to_sign(auth.algorithm), auth.signature, auth.algorithm
        )
        return ok, auth.signed_headers, auth.signature

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        verified, signed, signature = self._verify(request, body)
        self.seen.append(
            Seen(
                method=request.method,
                path=request.raw_path,
                headers={k.lower(): v for k, v in request.headers.items()},
                body=body,
                verified=verified,
                signed_headers=signed,
                signature=signature,
            )
        )
        index = next(self._counter)
        action = self.script[min(index, len(self.script) - 1)]
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            result = await action(request)
        finally:
            self.in_flight -= 1
        if result is None:
            return web.Response(status=500)
        return result
