"""``AmazonPayClient``: one merchant account, any row of ``ENDPOINTS``, retries included."""

from __future__ import annotations

import asyncio
import json
import logging
import random
import re
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from concurrent.futures import Executor, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any, Self

from ._config import SDK_VERSION, ClientConfig, MerchantAccount
from ._endpoints import ENDPOINTS, Endpoint
from ._errors import (
    AmazonPayConnectionError,
    AmazonPayDeadlineExceeded,
    AmazonPayError,
    AmazonPayRequestError,
    AmazonPayTimeoutError,
)
from ._models import ApiObject, Model, format_timestamp
from ._retry import Deadline, parse_retry_after
from ._signing import Algorithm, RequestSigner, canonical_path, canonical_query, canonical_request
from ._transport import AiohttpTransport, HttpRequest, HttpResponse, Transport

__all__ = ["AmazonPayClient", "ApiResponse", "AttemptEvent", "ButtonSignature"]

logger = logging.getLogger("service.amazonpay")

# Applied with `fullmatch` (`$` would also accept a final newline, which no header may carry).
_IDEMPOTENCY_KEY = re.compile(r"[A-Za-z0-9_-]{1,32}")
_SIMULATION_CODE = re.compile(r"[A-Za-z0-9_-]{1,64}")
_PATH_SEGMENT = re.compile(r"[\x21-\x7e]+")
_QUERY_VALUE = re.compile(r"[^\x00-\x1f\x7f-\x9f]{1,2048}")
_DOCUMENT_URL = re.compile(r"https?://[^\s/?#@]+/[^\s]*", re.ASCII)
_MAX_DOCUMENT_URL = 8192
_REQUEST_ID_HEADER = "x-amz-pay-request-id"

Body = Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class AttemptEvent:
    """What happened on one HTTP attempt; handed to the ``on_attempt`` metrics hook."""

    operation: str
    """Operation name, e.g. ``create_charge``."""
    attempt: int
    """1 for the first attempt, 2 for the first retry..."""
    http_status: int | None
    """HTTP status, or None when no answer arrived (connection failure, timeout)."""
    reason_code: str | None
    """Amazon ``reasonCode`` of an error answer."""
    request_id: str | None
    """``x-amz-pay-request-id`` of the answer."""
    error: str | None
    """Exception class name when the attempt failed without an HTTP answer."""
    retry: bool
    """True when another attempt follows."""
    delay: float | None
    """Seconds waited before the next attempt (when ``retry``)."""
    duration: float
    """Seconds the attempt took (signing and HTTP)."""


@dataclass(frozen=True, slots=True)
class ApiResponse:
    """A raw successful answer (used by :meth:`AmazonPayClient.request`)."""

    status: int
    """HTTP status."""
    headers: Mapping[str, str] = field(repr=False)
    """Response headers (case-insensitive)."""
    body: bytes = field(repr=False)
    """Raw body."""
    request_id: str | None = None
    """``x-amz-pay-request-id``."""

    def json(self) -> Any:
        """Decoded JSON body (``{}`` for an empty body)."""
        return json.loads(self.body) if self.body else {}


@dataclass(frozen=True, slots=True)
class ButtonSignature:
    """A signed Amazon Pay button payload: render ``payload`` and ``signature`` verbatim."""

    payload: str
    """The exact JSON text that was signed."""
    signature: str
    """Base64 RSASSA-PSS signature."""
    public_key_id: str
    """Key id the button must name."""
    algorithm: Algorithm
    """Algorithm used (the button's ``algorithm`` attribute)."""

    def __repr__(self) -> str:
        return (
            f"ButtonSignature(public_key_id={self.public_key_id!r}, "
            f"algorithm={self.algorithm.value!r}, signature=<redacted>)"
        )


def _json_default(value: object) -> Any:
    if isinstance(value, Decimal):
        return format(value, "f")
    if isinstance(value, datetime):
        return format_timestamp(value)
    if isinstance(value, Model):
        return value.to_json()
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def _encode_body(body: Body | None) -> bytes:
    if body is None:
        return b""
    try:
        text = json.dumps(
            dict(body), separators=(",", ":"), ensure_ascii=False, default=_json_default
        )
    except (TypeError, ValueError) as exc:
        raise AmazonPayRequestError(f"request body is not JSON serialisable: {exc}") from None
    return text.encode("utf-8")


def _segment(name: str, value: str) -> str:
    if (
        not isinstance(value, str)
        or not _PATH_SEGMENT.fullmatch(value)
        or value in (".", "..")
        or "/" in value
    ):
        raise AmazonPayRequestError(f"{name} must be a non-empty id of printable ASCII without '/'")
    return value


def _endpoint(endpoint: str | Endpoint) -> Endpoint:
    if isinstance(endpoint, Endpoint):
        return endpoint
    row = ENDPOINTS.get(endpoint)
    if row is None:
        raise AmazonPayRequestError(f"unknown Amazon Pay operation {endpoint!r}")
    return row


def _path_segments(row: Endpoint, params: Mapping[str, str]) -> tuple[str, ...]:
    unknown = sorted(set(params) - set(row.path_params))
    if unknown:
        raise AmazonPayRequestError(
            f"{row.name} has no path parameter {unknown[0]}", operation=row.label
        )
    segments: list[str] = []
    for part in row.path.strip("/").split("/"):
        if part.startswith("{"):
            name = part[1:-1]
            if name not in params:
                raise AmazonPayRequestError(f"{row.name} needs {name}", operation=row.label)
            part = _segment(name, params[name])
        segments.append(part)
    return tuple(segments)


def _query_pairs(row: Endpoint, query: Mapping[str, str] | None) -> tuple[tuple[str, str], ...]:
    """The row's query parameters, checked: names the row documents, short printable values."""
    if not query:
        return ()
    unknown = sorted(set(query) - row.query)
    if unknown:
        raise AmazonPayRequestError(
            f"{row.name} has no query parameter {unknown[0]}", operation=row.label
        )
    for name, value in query.items():
        if not isinstance(value, str) or not _QUERY_VALUE.fullmatch(value):
            raise AmazonPayRequestError(
                f"query parameter {name} must be 1-2048 characters without control characters",
                operation=row.label,
            )
    return tuple(sorted(query.items()))


def _parse(row: Endpoint, response: HttpResponse, *, typed: bool = True) -> ApiObject:
    request_id = response.headers.get(_REQUEST_ID_HEADER)
    try:
        data = json.loads(response.body) if response.body else {}
    except ValueError:
        data = None
    model = row.response if typed else ApiObject
    parsed = (
        model.from_json(data, http_status=response.status, request_id=request_id)
        if isinstance(data, dict)
        else None
    )
    if parsed is None:
        raise AmazonPayError(
            "answer body is not a JSON object",
            http_status=response.status,
            request_id=request_id,
            operation=row.label,
        )
    return parsed


def _check_idempotency_key(key: str) -> str:
    if not isinstance(key, str) or not _IDEMPOTENCY_KEY.fullmatch(key):
        raise AmazonPayRequestError("idempotency_key must be 1-32 characters of [A-Za-z0-9_-]")
    return key


class AmazonPayClient:
    """Async Amazon Pay API v2 client for one merchant account.

    Use it as an async context manager (or call :meth:`close`). Every operation accepts
    ``timeout`` (seconds, e.g. the caller's remaining gRPC deadline) and/or ``deadline`` (an
    absolute ``time.monotonic()`` value); all attempts and backoff sleeps fit inside it.
    """

    def __init__(
        self,
        account: MerchantAccount,
        *,
        config: ClientConfig | None = None,
        transport: Transport | None = None,
        signing_executor: Executor | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        rng: random.Random | None = None,
        clock: Callable[[], datetime] | None = None,
        on_attempt: Callable[[AttemptEvent], None] | None = None,
    ) -> None:
        self._account = account
        self._config = config or ClientConfig()
        self._signer = RequestSigner(account.public_key_id, account.private_key, account.algorithm)
        self._owns_transport = transport is None
        self._transport = transport or AiohttpTransport(
            ca_file=account.ca_file,
            pool_size=self._config.pool_size,
            keepalive_timeout=self._config.keepalive_timeout,
            connect_timeout=self._config.connect_timeout,
        )
        self._owns_executor = signing_executor is None
        self._executor = signing_executor or ThreadPoolExecutor(
            max_workers=self._config.signing_threads, thread_name_prefix="amazonpay-sign"
        )
        self._sleep = sleep
        self._rng = rng or random.SystemRandom()
        self._clock = clock or (lambda: datetime.now(UTC))
        self._on_attempt = on_attempt
        self._slots = asyncio.Semaphore(self._config.max_concurrency)
        self._base_url = account.base_url
        self._prefix = account.path_prefix
        self._static_headers = {
            "accept": "application/json",
            "content-type": "application/json",
            "x-amz-pay-host": account.api_host,
            "x-amz-pay-region": account.region.value,
            "user-agent": self._config.user_agent,
            "x-amz-pay-sdk-type": "Python",
            "x-amz-pay-sdk-version": SDK_VERSION,
        }
        self._closed = False

    @property
    def account(self) -> MerchantAccount:
        """The merchant account this client signs for."""
        return self._account

    @property
    def closed(self) -> bool:
        return self._closed

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def close(self) -> None:
        """Close pooled connections and the signing threads this client created."""
        if self._closed:
            return
        self._closed = True
        if self._owns_transport:
            await self._transport.aclose()
        if self._owns_executor and isinstance(self._executor, ThreadPoolExecutor):
            self._executor.shutdown(wait=False, cancel_futures=True)

    def __repr__(self) -> str:
        return f"AmazonPayClient(account={self._account!r})"

    async def invoke(
        self,
        endpoint: str | Endpoint,
        *,
        path_params: Mapping[str, str] | None = None,
        body: Body | None = None,
        idempotency_key: str | None = None,
        simulation_code: str | None = None,
        timeout: float | None = None,
        deadline: float | None = None,
        typed: bool = True,
        query: Mapping[str, str] | None = None,
    ) -> ApiObject:
        """Send one operation of :data:`ENDPOINTS` (by name, e.g. ``"CaptureCharge"``) and
        return its typed answer (``http_status`` and ``request_id`` set).

        ``path_params`` fills the row's path template; ``query`` takes the row's query
        parameters (sent and signed as Amazon's canonical query: encoded, sorted); a POST needs
        ``idempotency_key`` and only a POST may carry one; ``simulation_code`` only where the
        row takes one (sandbox only).
        ``typed=False`` returns a plain :class:`ApiObject` holding the answer's JSON in ``raw``
        (a caller that only stores the JSON skips building the typed model).
        """
        row = _endpoint(endpoint)
        segments = _path_segments(row, path_params or {})
        query_pairs = _query_pairs(row, query)
        if row.takes_idempotency_key:
            if idempotency_key is None:
                raise AmazonPayRequestError(
                    f"idempotency_key is required for {row.name}", operation=row.label
                )
            _check_idempotency_key(idempotency_key)
        elif idempotency_key is not None:
            raise AmazonPayRequestError(f"{row.name} takes no idempotency_key", operation=row.label)
        if simulation_code is not None and not row.takes_simulation_code:
            raise AmazonPayRequestError(f"{row.name} takes no simulation_code", operation=row.label)
        if row.default_store_id and self._account.store_id:
            data = dict(body or {})
            data.setdefault("storeId", self._account.store_id)
            body = data
        elif row.method == "GET" and body is not None:
            raise AmazonPayRequestError(f"{row.name} takes no body", operation=row.label)
        response = await self._execute(
            row.label,
            row.method,
            segments,
            body=body,
            idempotency_key=idempotency_key,
            simulation_code=simulation_code,
            budget=Deadline.resolve(timeout, deadline),
            query=query_pairs,
        )
        return _parse(row, response, typed=typed)

    async def stream_report_document(
        self, url: str, *, chunk_size: int = 65536
    ) -> AsyncIterator[bytes]:
        """The content of a report document, in pieces of at most ``chunk_size`` bytes.

        ``url`` is the ``url`` of Get Report Document: a pre-signed URL valid for 30 seconds,
        fetched with an unsigned GET (none of Amazon's API headers) and never read whole into
        memory. Failures are :class:`AmazonPayError` s (an expired URL: HTTP 403); nothing is
        retried, since a new URL is needed: call Get Report Document again. The URL carries its
        own credentials and is never logged or put into an error.
        """
        if self._closed:
            raise AmazonPayRequestError("client is closed", operation="stream_report_document")
        if isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1:
            raise AmazonPayRequestError("chunk_size must be a positive integer")
        request = HttpRequest(
            method="GET",
            url=self._document_url(url),
            headers={"accept": "*/*", "user-agent": self._config.user_agent},
        )
        async for chunk in self._transport.stream(
            request, chunk_size=chunk_size, read_timeout=self._config.attempt_timeout
        ):
            yield chunk

    def _document_url(self, url: str) -> str:
        """An absolute http(s) URL without user info; https unless the account's own endpoint
        is plain http (an emulator)."""
        if (
            not isinstance(url, str)
            or len(url) > _MAX_DOCUMENT_URL
            or not _DOCUMENT_URL.fullmatch(url)
        ):
            raise AmazonPayRequestError(
                "report document url must be an absolute http(s) URL",
                operation="stream_report_document",
            )
        if url.startswith("http://") and not self._base_url.startswith("http://"):
            raise AmazonPayRequestError(
                "report document url must use https", operation="stream_report_document"
            )
        return url

    # --- button signature and raw access ---------------------------------------------------------

    async def sign_button_payload(self, payload: str | Mapping[str, Any]) -> ButtonSignature:
        """``generateButtonSignature``: sign the exact payload text (a mapping is serialised
        compactly first) in the signing pool."""
        text = payload if isinstance(payload, str) else _encode_body(payload).decode("utf-8")
        loop = asyncio.get_running_loop()
        signature = await loop.run_in_executor(
            self._executor, self._signer.sign_button_payload, text
        )
        return ButtonSignature(
            payload=text,
            signature=signature,
            public_key_id=self._account.public_key_id,
            algorithm=self._signer.algorithm,
        )

    async def request(
        self,
        method: str,
        path: str,
        *,
        body: Body | None = None,
        idempotency_key: str | None = None,
        simulation_code: str | None = None,
        operation: str = "request",
        timeout: float | None = None,
        deadline: float | None = None,
    ) -> ApiResponse:
        """Call any API path under the account's prefix (e.g. ``"/charges/S01-...-C000001"``)
        with the same signing, retries and error handling as the typed methods."""
        method = method.upper()
        key = idempotency_key
        if method == "POST":
            key = _check_idempotency_key(idempotency_key or uuid.uuid4().hex)
        elif key is not None:
            key = _check_idempotency_key(key)
        segments = tuple(part for part in path.split("/") if part)
        response = await self._execute(
            operation,
            method,
            segments,
            body=body,
            idempotency_key=key,
            simulation_code=simulation_code,
            budget=Deadline.resolve(timeout, deadline),
        )
        return ApiResponse(
            status=response.status,
            headers=response.headers,
            body=response.body,
            request_id=response.headers.get(_REQUEST_ID_HEADER),
        )

    # --- machinery -------------------------------------------------------------------------------

    def _headers(self, idempotency_key: str | None, simulation_code: str | None) -> dict[str, str]:
        headers = dict(self._static_headers)
        headers["x-amz-pay-date"] = format_timestamp(self._clock())
        if idempotency_key is not None:
            headers["x-amz-pay-idempotency-key"] = idempotency_key
        if simulation_code is not None:
            headers["x-amz-pay-simulation-code"] = simulation_code
        return headers

    def _check_simulation_code(self, code: str | None) -> str | None:
        if code is None:
            return None
        if not isinstance(code, str) or not _SIMULATION_CODE.fullmatch(code):
            raise AmazonPayRequestError("simulation_code must be a short [A-Za-z0-9_-] token")
        if self._account.effective_environment.value != "sandbox":
            raise AmazonPayRequestError("simulation codes are only accepted in sandbox")
        return code

    async def _execute(
        self,
        operation: str,
        method: str,
        segments: tuple[str, ...],
        *,
        body: Body | None,
        idempotency_key: str | None,
        simulation_code: str | None,
        budget: Deadline | None,
        query: Sequence[tuple[str, str]] = (),
    ) -> HttpResponse:
        """One call with its retries, each attempt and pause within `budget` (the caller's
        timeout and deadline, resolved when the call was made)."""
        if self._closed:
            raise AmazonPayRequestError("client is closed", operation=operation)
        simulation_code = self._check_simulation_code(simulation_code)
        path = canonical_path("/".join((self._prefix, *segments)))
        url = self._base_url + path
        if query:
            url += "?" + canonical_query(query)
        payload = _encode_body(body)
        policy = self._config.retry
        loop = asyncio.get_running_loop()
        attempt = 0
        last_error: AmazonPayError | None = None

        while True:
            attempt += 1
            if budget is not None and budget.expired():
                raise self._deadline_error(operation, attempt - 1, last_error)
            started = time.monotonic()
            response: HttpResponse | None = None
            await self._acquire_slot(
                budget, operation=operation, attempts=attempt - 1, last_error=last_error
            )
            try:
                headers = self._headers(idempotency_key, simulation_code)
                # Amazon's order: verb, path, query, headers, payload.
                canonical = canonical_request(
                    method, path, query or None, headers, payload, path_is_canonical=True
                )
                pending = self._signer.prepare(canonical)
                headers["authorization"] = await loop.run_in_executor(self._executor, pending.sign)
                attempt_timeout = self._config.attempt_timeout
                bounded_by_deadline = False
                if budget is not None:
                    remaining = budget.remaining()
                    if remaining <= 0:
                        raise self._deadline_error(operation, attempt - 1, last_error)
                    if attempt_timeout is None or remaining < attempt_timeout:
                        attempt_timeout = remaining
                        bounded_by_deadline = True
                request = HttpRequest(method=method, url=url, headers=headers, body=payload)
                try:
                    response = await self._transport.send(request, timeout=attempt_timeout)
                except AmazonPayTimeoutError as exc:
                    exc.operation = operation
                    exc.attempts = attempt
                    if bounded_by_deadline:
                        exc.cut_short = True
                        self._emit(operation, attempt, started, error=exc)
                        raise self._deadline_error(operation, attempt, exc) from exc
                    error: AmazonPayError = exc
                except AmazonPayConnectionError as exc:
                    exc.operation = operation
                    exc.attempts = attempt
                    error = exc
                else:
                    if 200 <= response.status < 300:
                        self._emit(operation, attempt, started, response=response)
                        logger.debug(
                            "amazonpay %s ok status=%d request_id=%s attempt=%d",
                            operation,
                            response.status,
                            response.headers.get(_REQUEST_ID_HEADER),
                            attempt,
                        )
                        return response
                    error = AmazonPayError.from_response(
                        status=response.status,
                        body=response.body,
                        request_id=response.headers.get(_REQUEST_ID_HEADER),
                        retryable=response.status in policy.retryable_statuses,
                        operation=operation,
                    )
                    error.attempts = attempt
            finally:
                self._slots.release()

            last_error = error
            retry_after = None
            if response is not None:
                retry_after = parse_retry_after(
                    response.headers.get("Retry-After"), now=self._clock()
                )
            will_retry = error.retryable and attempt <= policy.max_retries
            delay = policy.delay(attempt, self._rng, retry_after) if will_retry else None
            self._emit(
                operation,
                attempt,
                started,
                response=response,
                error=error,
                retry=will_retry,
                delay=delay,
            )
            if not will_retry or delay is None:
                logger.warning(
                    "amazonpay %s failed status=%s reason=%s request_id=%s attempt=%d retryable=%s",
                    operation,
                    error.http_status,
                    error.reason_code,
                    error.request_id,
                    attempt,
                    error.retryable,
                )
                raise error
            if budget is not None and delay >= budget.remaining():
                logger.warning(
                    "amazonpay %s gives up: backoff %.3fs exceeds the deadline (attempt=%d)",
                    operation,
                    delay,
                    attempt,
                )
                raise self._deadline_error(operation, attempt, error)
            logger.info(
                "amazonpay %s retry status=%s reason=%s request_id=%s attempt=%d delay=%.3f",
                operation,
                error.http_status,
                error.reason_code,
                error.request_id,
                attempt,
                delay,
            )
            await self._sleep(delay)

    async def _acquire_slot(
        self,
        budget: Deadline | None,
        *,
        operation: str,
        attempts: int,
        last_error: AmazonPayError | None,
    ) -> None:
        """A connection slot, waiting no longer than the call's time budget."""
        if budget is None:
            await self._slots.acquire()
            return
        try:
            async with asyncio.timeout(max(budget.remaining(), 0.0)):
                await self._slots.acquire()
        except TimeoutError:
            raise self._deadline_error(operation, attempts, last_error) from None

    @staticmethod
    def _deadline_error(
        operation: str, attempts: int, last_error: AmazonPayError | None
    ) -> AmazonPayDeadlineExceeded:
        detail = f"; last failure: {last_error.message}" if last_error else ""
        return AmazonPayDeadlineExceeded(
            f"deadline exceeded after {attempts} attempt(s){detail}",
            last_error=last_error,
            operation=operation,
            attempts=attempts,
        )

    def _emit(
        self,
        operation: str,
        attempt: int,
        started: float,
        *,
        response: HttpResponse | None = None,
        error: AmazonPayError | None = None,
        retry: bool = False,
        delay: float | None = None,
    ) -> None:
        """The attempt hook's event (`started`: the attempt's monotonic start)."""
        if self._on_attempt is None:
            return
        event = AttemptEvent(
            operation=operation,
            attempt=attempt,
            http_status=response.status if response is not None else None,
            reason_code=error.reason_code if error is not None else None,
            request_id=response.headers.get(_REQUEST_ID_HEADER) if response is not None else None,
            error=type(error).__name__ if error is not None and response is None else None,
            retry=retry,
            delay=delay,
            duration=time.monotonic() - started,
        )
        try:
            self._on_attempt(event)
        except Exception:
            logger.warning("amazonpay on_attempt hook failed", exc_info=True)
