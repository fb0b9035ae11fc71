"""`AmazonPayClient`: one object per service over one shared channel."""

from __future__ import annotations

import random
from collections.abc import Sequence
from types import TracebackType
from typing import Any, Self

import grpc

from ._retry import RetryPolicy
from ._services import (
    ButtonService,
    BuyerService,
    ChargePermissionService,
    ChargeService,
    CheckoutSessionService,
    DeliveryTrackerService,
    DisputeService,
    LedgerService,
    RefundService,
    SettlementService,
)
from ._transport import (
    DEFAULT_READ_TIMEOUT,
    DEFAULT_WRITE_TIMEOUT,
    Credentials,
    OnRetry,
    PemSource,
    TokenSource,
    Transport,
    make_channel,
)

__all__ = ["AmazonPayClient"]

DEFAULT_TARGET = "127.0.0.1:50051"


class AmazonPayClient:
    """Async client of the Amazon Pay gRPC service.

    >>> async with AmazonPayClient("payments.internal:443", tls=True, token=token) as client:
    ...     charge = await client.charges.get("S01-...")

    One instance per process is enough (it multiplexes calls over one HTTP/2 channel).
    """

    def __init__(
        self,
        target: str = DEFAULT_TARGET,
        *,
        merchant: str = "",
        tls: bool = False,
        root_certificates: PemSource | None = None,
        client_certificate: PemSource | None = None,
        client_key: PemSource | None = None,
        server_name: str | None = None,
        token: TokenSource | None = None,
        retry: RetryPolicy | None = None,
        on_retry: OnRetry | None = None,
        read_timeout: float | None = DEFAULT_READ_TIMEOUT,
        write_timeout: float | None = DEFAULT_WRITE_TIMEOUT,
        metadata: Sequence[tuple[str, str]] = (),
        channel_options: Sequence[tuple[str, Any]] = (),
        channel: grpc.aio.Channel | None = None,
        rng: random.Random | None = None,
    ) -> None:
        """`tls`/`root_certificates` enable TLS; `client_certificate` + `client_key` add mTLS;
        `token` is sent as `authorization: Bearer <token>`; `merchant` is the default alias for
        every call (a call's own `merchant=` wins); timeouts are whole-call budgets (retries
        included). Pass `channel` to reuse a channel you built yourself (it is not closed)."""
        self._owns_channel = channel is None
        if channel is None:
            credentials = Credentials(
                tls=tls,
                root_certificates=root_certificates,
                client_certificate=client_certificate,
                client_key=client_key,
                server_name=server_name,
            )
            channel = make_channel(target, credentials, channel_options)
        self.target = target
        self.channel = channel
        self._transport = Transport(
            channel,
            merchant=merchant,
            token=token,
            retry=retry or RetryPolicy(),
            on_retry=on_retry,
            read_timeout=read_timeout,
            write_timeout=write_timeout,
            static_metadata=tuple(metadata),
            rng=rng or random.Random(),  # jitter, not secrets
        )
        self.checkout_sessions = CheckoutSessionService(self._transport)
        self.charge_permissions = ChargePermissionService(self._transport)
        self.charges = ChargeService(self._transport)
        self.refunds = RefundService(self._transport)
        self.buyers = BuyerService(self._transport)
        self.delivery_trackers = DeliveryTrackerService(self._transport)
        self.buttons = ButtonService(self._transport)
        self.ledger = LedgerService(self._transport)
        self.disputes = DisputeService(self._transport)
        self.settlements = SettlementService(self._transport)

    @property
    def retry_policy(self) -> RetryPolicy:
        return self._transport.retry

    async def close(self, grace: float | None = None) -> None:
        """Close the channel (only if this client created it)."""
        if self._owns_channel:
            await self.channel.close(grace)

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()
