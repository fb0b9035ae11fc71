"""The configured merchant accounts, each with its own Amazon Pay client."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

from service.amazonpay import AmazonPayClient, AttemptEvent, ClientConfig, MerchantAccount
from service.config import AmazonPaySettings

from ._guard import Admission, BreakerSettings, CircuitBreaker

T = TypeVar("T")

__all__ = ["Merchant", "MerchantRegistry", "UnknownMerchant"]


class UnknownMerchant(LookupError):
    def __init__(self, alias: str, known: Sequence[str]) -> None:
        super().__init__(f"unknown merchant {alias!r}; configured: {', '.join(known)}")
        self.alias = alias


class Merchant:
    """One account: its alias (what callers send), the client that signs for it, and the
    breaker and admission control in front of it."""

    def __init__(
        self,
        alias: str,
        client: AmazonPayClient,
        breaker: CircuitBreaker | None = None,
        admission: Admission | None = None,
    ) -> None:
        self.alias = alias
        self.client = client
        self.breaker = breaker or CircuitBreaker(alias, BreakerSettings())
        self.admission = admission or Admission(alias, 64, 128)

    async def call(self, make: Callable[[], Awaitable[T]]) -> T:
        """One Amazon call through the circuit breaker (admission is taken by the caller, once
        per logical operation, so nested calls cannot deadlock on it)."""
        self.breaker.before_call()
        try:
            result = await make()
        except BaseException as exc:
            self.breaker.record(exc)
            raise
        self.breaker.record(None)
        return result

    @property
    def account(self) -> MerchantAccount:
        return self.client.account

    @property
    def is_sandbox(self) -> bool:
        return self.account.effective_environment.value == "sandbox"


class MerchantRegistry:
    """Alias -> merchant. All clients share one signing thread pool sized to the cores."""

    def __init__(self, merchants: Sequence[Merchant], default_alias: str) -> None:
        self._by_alias = {m.alias: m for m in merchants}
        if default_alias not in self._by_alias:
            raise ValueError(f"default merchant {default_alias!r} is not configured")
        self.default_alias = default_alias
        self._executor: ThreadPoolExecutor | None = None

    @classmethod
    async def from_settings(
        cls,
        settings: Sequence[AmazonPaySettings],
        *,
        client_config: ClientConfig | None = None,
        on_attempt: Callable[[AttemptEvent], None] | None = None,
        breaker: BreakerSettings | None = None,
        max_concurrent: int = 64,
        max_queued: int = 128,
        on_circuit_change: Callable[[str, int], None] | None = None,
    ) -> MerchantRegistry:
        config = client_config or ClientConfig()
        executor = ThreadPoolExecutor(
            max_workers=config.signing_threads, thread_name_prefix="amazonpay-sign"
        )
        merchants = []
        for entry in settings:
            assert entry.public_key_id is not None
            assert entry.private_key_file is not None
            account = await asyncio.to_thread(
                MerchantAccount.load,
                public_key_id=entry.public_key_id,
                private_key_path=entry.private_key_file,
                region=entry.region,
                environment=entry.environment,
                store_id=entry.store_id,
                endpoint=entry.endpoint,
                ca_file=str(entry.ca_file) if entry.ca_file else None,
            )
            client = AmazonPayClient(
                account, config=config, signing_executor=executor, on_attempt=on_attempt
            )
            alias = entry.merchant_alias
            merchants.append(
                Merchant(
                    alias=alias,
                    client=client,
                    breaker=CircuitBreaker(
                        alias, breaker or BreakerSettings(), on_change=on_circuit_change
                    ),
                    admission=Admission(alias, max_concurrent, max_queued),
                )
            )
        registry = cls(merchants, settings[0].merchant_alias)
        registry._executor = executor
        return registry

    def get(self, alias: str) -> Merchant:
        """The merchant for a request's `merchant` field; empty means the default."""
        merchant = self._by_alias.get(alias or self.default_alias)
        if merchant is None:
            raise UnknownMerchant(alias, sorted(self._by_alias))
        return merchant

    def __iter__(self) -> Iterator[Merchant]:
        return iter(self._by_alias.values())

    async def close(self) -> None:
        for merchant in self._by_alias.values():
            await merchant.client.close()
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)
