"""Channel construction (TLS, mTLS, bearer token) and the retrying unary call loop."""

from __future__ import annotations

import asyncio
import inspect
import random
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import KW_ONLY, dataclass, field
from pathlib import Path
from typing import Any

import grpc

from ._errors import DeadlineExceededError, error_from_rpc
from ._retry import RetryEvent, RetryPolicy

__all__ = ["Credentials", "OnRetry", "TokenSource", "Transport", "make_channel", "new_key"]

TokenSource = str | Callable[[], str]
"""A fixed bearer token, or a function returning the current one (called on every attempt)."""
OnRetry = Callable[[RetryEvent], Awaitable[None] | None]
"""Hook called before every retry wait."""
PemSource = bytes | str | Path
"""PEM contents (bytes) or a file path."""

DEFAULT_READ_TIMEOUT = 10.0
"""Reads hit Amazon at most once or the ledger: 10 s covers the service's own retries."""
DEFAULT_WRITE_TIMEOUT = 30.0
"""Money-moving calls: the service retries Amazon with backoff inside this deadline."""

_CHANNEL_OPTIONS: list[tuple[str, Any]] = [
    # Our loop retries with the caller's idempotency key; gRPC's transparent retries would not
    # report attempts to on_retry and could double the attempt budget.
    ("grpc.enable_retries", 0),
    ("grpc.keepalive_time_ms", 30_000),
    ("grpc.keepalive_timeout_ms", 10_000),
    ("grpc.keepalive_permit_without_calls", 0),
    ("grpc.max_receive_message_length", 16 * 1024 * 1024),
]


def new_key() -> str:
    """A fresh idempotency key: a UUID4 without dashes (32 of [0-9a-f])."""
    return uuid.uuid4().hex


def _pem(value: PemSource | None) -> bytes | None:
    if value is None or isinstance(value, bytes):
        return value
    return Path(value).read_bytes()


class Credentials:
    """How to reach the service: plaintext, TLS (optionally with a private CA) or mTLS."""

    def __init__(
        self,
        *,
        tls: bool = False,
        root_certificates: PemSource | None = None,
        client_certificate: PemSource | None = None,
        client_key: PemSource | None = None,
        server_name: str | None = None,
    ) -> None:
        if (client_certificate is None) != (client_key is None):
            raise ValueError("mTLS needs both client_certificate and client_key")
        self.tls = tls or root_certificates is not None or client_certificate is not None
        self.root_certificates = _pem(root_certificates)
        self.client_certificate = _pem(client_certificate)
        self.client_key = _pem(client_key)
        self.server_name = server_name


def make_channel(
    target: str, credentials: Credentials, options: Sequence[tuple[str, Any]] = ()
) -> grpc.aio.Channel:
    """A grpc.aio channel; TLS when asked, with the system roots unless a CA is given."""
    opts = [*_CHANNEL_OPTIONS, *options]
    if credentials.server_name:
        opts.append(("grpc.ssl_target_name_override", credentials.server_name))
    if not credentials.tls:
        return grpc.aio.insecure_channel(target, options=opts)
    channel_credentials = grpc.ssl_channel_credentials(
        root_certificates=credentials.root_certificates,
        private_key=credentials.client_key,
        certificate_chain=credentials.client_certificate,
    )
    return grpc.aio.secure_channel(target, channel_credentials, options=opts)


@dataclass(eq=False)
class Transport:
    """Everything calls share: channel, default merchant, token, deadlines and retry policy."""

    channel: grpc.aio.Channel
    _: KW_ONLY
    merchant: str = ""
    token: TokenSource | None = field(default=None, repr=False)
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    on_retry: OnRetry | None = None
    read_timeout: float | None = DEFAULT_READ_TIMEOUT
    write_timeout: float | None = DEFAULT_WRITE_TIMEOUT
    static_metadata: tuple[tuple[str, str], ...] = ()
    """Sent with every attempt (`metadata()` adds the token)."""
    rng: random.Random = field(default_factory=random.Random)
    """Retry jitter, not secrets."""

    def metadata(self) -> tuple[tuple[str, str], ...]:
        """Per-attempt metadata: the static pairs plus `authorization: Bearer <token>`."""
        if self.token is None:
            return self.static_metadata
        token = self.token() if callable(self.token) else self.token
        return (*self.static_metadata, ("authorization", f"Bearer {token}"))

    def merchant_for(self, merchant: str | None) -> str:
        return self.merchant if merchant is None else merchant

    async def notify_retry(self, event: RetryEvent) -> None:
        if self.on_retry is None:
            return
        result = self.on_retry(event)
        if inspect.isawaitable(result):
            await result

    async def unary(
        self,
        method: str,
        callable_: Any,
        request: Any,
        *,
        timeout: float | None,
        write: bool,
    ) -> Any:
        """Call with retries inside ONE overall deadline; the identical request on every attempt.

        `timeout` is the whole logical call's budget (all attempts and waits); None selects the
        default for reads or writes.
        """
        budget = (
            timeout if timeout is not None else (self.write_timeout if write else self.read_timeout)
        )
        loop = asyncio.get_running_loop()
        deadline = None if budget is None else loop.time() + budget
        key = getattr(request, "idempotency_key", "") if write else ""
        attempt = 0
        while True:
            attempt += 1
            remaining = None if deadline is None else deadline - loop.time()
            if remaining is not None and remaining <= 0:
                raise DeadlineExceededError(
                    grpc.StatusCode.DEADLINE_EXCEEDED,
                    f"client deadline of {budget}s spent after {attempt - 1} attempt(s)",
                    method=method,
                )
            try:
                return await callable_(request, timeout=remaining, metadata=self.metadata())
            except grpc.aio.AioRpcError as exc:
                error = error_from_rpc(exc, method)
                if not self.retry.should_retry(error, attempt):
                    raise error from exc
                delay = self.retry.delay(error, attempt, self.rng)
                if deadline is not None and loop.time() + delay >= deadline:
                    raise error from exc
            await self.notify_retry(
                RetryEvent(
                    method=method, attempt=attempt, error=error, delay=delay, idempotency_key=key
                )
            )
            await asyncio.sleep(delay)
