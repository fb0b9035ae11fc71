"""HTTP transport: the one place that does network I/O.

``Transport`` is deliberately tiny (send one prepared request, get status, headers and body; or
stream a large answer's body) so tests or other stacks can swap it. Implementations raise
:class:`AmazonPayConnectionError` (or its :class:`AmazonPayTimeoutError` subclass) when no HTTP
answer arrives; they never retry. :class:`MockTransport` answers from a function instead of the
network (httpx's ``MockTransport`` is the model): the client still signs, retries and maps errors.
"""

from __future__ import annotations

import abc
import asyncio
import re
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass, field

import aiohttp
from multidict import CIMultiDict, CIMultiDictProxy
from yarl import URL

from ._errors import (
    AmazonPayConnectionError,
    AmazonPayError,
    AmazonPayRequestError,
    AmazonPayTimeoutError,
)

__all__ = [
    "AiohttpTransport",
    "HttpRequest",
    "HttpResponse",
    "MockHandler",
    "MockTransport",
    "Transport",
]

_ERROR_BODY_BYTES = 4096
"""How much of a failed download's body is read for its error (S3 answers a short XML)."""
_XML_CODE = re.compile(r"<Code>([A-Za-z0-9.]{1,64})</Code>")
_RETRYABLE_DOWNLOAD = frozenset({408, 429, 500, 502, 503, 504})


@dataclass(frozen=True, slots=True)
class HttpRequest:
    """A fully prepared, signed request. ``url`` is already percent-encoded and sent as is."""

    method: str
    url: str
    headers: Mapping[str, str] = field(repr=False)
    body: bytes = field(default=b"", repr=False)


@dataclass(frozen=True, slots=True)
class HttpResponse:
    """What came back: status, case-insensitive headers and the raw body."""

    status: int
    headers: CIMultiDictProxy[str]
    body: bytes = field(repr=False)

    @classmethod
    def build(cls, status: int, headers: Mapping[str, str], body: bytes) -> HttpResponse:
        """Convenience constructor for custom transports and tests."""
        return cls(status=status, headers=CIMultiDictProxy(CIMultiDict(headers)), body=body)


class Transport(abc.ABC):
    """Sends one request; no retries, no signing."""

    @abc.abstractmethod
    async def send(self, request: HttpRequest, *, timeout: float | None) -> HttpResponse:
        """Send ``request`` and read the whole answer within ``timeout`` seconds (None: no limit)."""

    async def aclose(self) -> None:  # noqa: B027 - optional hook with a no-op default
        """Release pooled connections."""

    async def stream(
        self, request: HttpRequest, *, chunk_size: int, read_timeout: float | None
    ) -> AsyncIterator[bytes]:
        """The body of a 2xx answer in pieces of at most ``chunk_size`` bytes; any other status
        raises :class:`AmazonPayError`. ``read_timeout`` bounds each wait for data.

        This default reads the answer whole through :meth:`send` (for small test transports);
        :class:`AiohttpTransport` streams, holding one piece at a time.
        """
        response = await self.send(request, timeout=read_timeout)
        if not 200 <= response.status < 300:
            raise download_error(response.status, response.headers, response.body)
        for start in range(0, len(response.body), chunk_size):
            yield response.body[start : start + chunk_size]


def download_error(status: int, headers: Mapping[str, str], body: bytes) -> AmazonPayError:
    """The error for a refused download: S3-style XML (``<Code>AccessDenied</Code>``) or any."""
    error = AmazonPayError.from_response(
        status=status,
        body=body[:_ERROR_BODY_BYTES],
        request_id=headers.get("x-amz-request-id") or headers.get("x-amz-pay-request-id"),
        retryable=status in _RETRYABLE_DOWNLOAD,
        operation="stream_report_document",
    )
    code = _XML_CODE.search(body[:_ERROR_BODY_BYTES].decode("utf-8", "replace"))
    if error.reason_code is None and code is not None:
        error.reason_code = code.group(1)
    return error


class AiohttpTransport(Transport):
    """aiohttp-based transport: one pooled, keep-alive ``ClientSession`` per transport.

    The session is created lazily on the first request, inside the running loop, and closed by
    :meth:`aclose`.
    """

    def __init__(
        self,
        *,
        ca_file: str | None = None,
        pool_size: int = 100,
        keepalive_timeout: float = 30.0,
        connect_timeout: float | None = 10.0,
    ) -> None:
        self._ca_file = ca_file
        self._pool_size = pool_size
        self._keepalive_timeout = keepalive_timeout
        self._connect_timeout = connect_timeout
        self._session: aiohttp.ClientSession | None = None
        self._closed = False

    def _ensure_session(self) -> aiohttp.ClientSession:
        if self._closed:
            raise AmazonPayConnectionError("transport is closed", retryable=False)
        if self._session is None:
            ssl_context = ssl.create_default_context(cafile=self._ca_file)
            connector = aiohttp.TCPConnector(
                limit=self._pool_size,
                keepalive_timeout=self._keepalive_timeout,
                ssl=ssl_context,
            )
            self._session = aiohttp.ClientSession(
                connector=connector,
                auto_decompress=True,
                skip_auto_headers=("User-Agent", "Content-Type"),
                raise_for_status=False,
            )
        return self._session

    async def send(self, request: HttpRequest, *, timeout: float | None) -> HttpResponse:
        session = self._ensure_session()
        client_timeout = aiohttp.ClientTimeout(
            total=timeout,
            sock_connect=self._connect_timeout,
        )
        try:
            async with session.request(
                request.method,
                URL(request.url, encoded=True),
                headers=request.headers,
                data=request.body if request.body else None,
                timeout=client_timeout,
                allow_redirects=False,
            ) as response:
                body = await response.read()
                return HttpResponse(status=response.status, headers=response.headers, body=body)
        except (TimeoutError, aiohttp.ClientError, ValueError) as exc:
            translated = _translated(exc, timeout)
            if translated is None:
                raise
            raise translated from exc

    async def stream(
        self, request: HttpRequest, *, chunk_size: int, read_timeout: float | None
    ) -> AsyncIterator[bytes]:
        session = self._ensure_session()
        client_timeout = aiohttp.ClientTimeout(
            total=None, sock_connect=self._connect_timeout, sock_read=read_timeout
        )
        try:
            async with session.request(
                request.method,
                URL(request.url, encoded=True),
                headers=request.headers,
                timeout=client_timeout,
                allow_redirects=False,
            ) as response:
                if not 200 <= response.status < 300:
                    body = await response.content.read(_ERROR_BODY_BYTES)
                    raise download_error(response.status, response.headers, body)
                async for chunk in response.content.iter_chunked(chunk_size):
                    yield chunk
        except (TimeoutError, aiohttp.ClientError, ValueError) as exc:
            translated = _translated(exc, read_timeout)
            if translated is None:
                raise
            raise translated from exc

    async def aclose(self) -> None:
        self._closed = True
        session, self._session = self._session, None
        if session is not None:
            await session.close()
            # Let SSL transports finish their shutdown before the loop may close.
            await asyncio.sleep(0)


MockHandler = Callable[[HttpRequest], HttpResponse | Awaitable[HttpResponse]]
"""What :class:`MockTransport` asks for each answer: a function or a coroutine function."""


class MockTransport(Transport):
    """Answers every request with ``handler(request)`` instead of sending it.

    ``request`` is exactly what the network would get: the signed headers (``authorization``,
    ``x-amz-pay-idempotency-key`` ...), the encoded URL and the body. The handler returns an
    :class:`HttpResponse` (``HttpResponse.build`` makes one), or raises
    :class:`AmazonPayConnectionError` to play a request that got no answer. An asynchronous
    handler is bounded by the attempt's timeout like a real request: one that takes longer ends
    in :class:`AmazonPayTimeoutError`.

    Example::

        def amazon(request: HttpRequest) -> HttpResponse:
            return HttpResponse.build(200, {"x-amz-pay-request-id": "r-1"}, b'{"chargeId": ...}')

        client = AmazonPayClient(account, transport=MockTransport(amazon))
    """

    def __init__(self, handler: MockHandler) -> None:
        self._handler = handler

    async def send(self, request: HttpRequest, *, timeout: float | None) -> HttpResponse:
        answer = self._handler(request)
        if isinstance(answer, HttpResponse):
            return answer
        try:
            async with asyncio.timeout(timeout):
                return await answer
        except TimeoutError as exc:
            raise AmazonPayTimeoutError(
                f"no complete answer within {timeout:.3f}s" if timeout else "request timed out"
            ) from exc


def _translated(exc: BaseException, timeout: float | None) -> AmazonPayError | None:
    """aiohttp's failure as the client's error (no answer, TLS, a request it refused); None for
    one it does not know (raised as is)."""
    if isinstance(exc, TimeoutError | aiohttp.ServerTimeoutError):
        return AmazonPayTimeoutError(
            f"no complete answer within {timeout:.3f}s" if timeout else "request timed out"
        )
    if isinstance(exc, aiohttp.ClientConnectorCertificateError):
        return AmazonPayConnectionError(
            f"TLS certificate verification failed for {exc.host}", retryable=False
        )
    if isinstance(exc, aiohttp.ClientSSLError):
        return AmazonPayConnectionError(f"TLS failure: {type(exc).__name__}", retryable=False)
    if isinstance(exc, aiohttp.ClientConnectionError | aiohttp.ClientPayloadError):
        return AmazonPayConnectionError(f"connection failed: {type(exc).__name__}: {exc}")
    if isinstance(exc, aiohttp.ClientResponseError):
        return AmazonPayConnectionError(
            f"malformed HTTP answer: {type(exc).__name__}: {exc.message}"
        )
    if isinstance(exc, ValueError):
        # aiohttp refuses a header or URL it cannot send (a control character, say): nothing
        # went out, and repeating the same request can never succeed.
        return AmazonPayRequestError("the HTTP client refused the request (invalid header or URL)")
    return None
