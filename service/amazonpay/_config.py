"""Merchant account and client configuration: regions, environments, endpoints."""

from __future__ import annotations

import enum
import platform
from dataclasses import dataclass, field
from os import PathLike
from urllib.parse import urlsplit

from yarl import URL

from ._errors import AmazonPayRequestError
from ._retry import RetryPolicy
from ._signing import Algorithm, PrivateKey

__all__ = ["SDK_NAME", "SDK_VERSION", "ClientConfig", "Environment", "MerchantAccount", "Region"]

SDK_NAME = "amazonpay-grpc-service-python"
SDK_VERSION = "0.1.0"

_REGION_ALIASES = {
    "na": "na",
    "us": "na",
    "eu": "eu",
    "uk": "eu",
    "gb": "eu",
    "de": "eu",
    "jp": "jp",
}
_HOSTS = {"na": "pay-api.amazon.com", "eu": "pay-api.amazon.eu", "jp": "pay-api.amazon.jp"}


class Region(enum.StrEnum):
    """Amazon Pay API region; the value is what ``x-amz-pay-region`` carries."""

    NA = "na"
    EU = "eu"
    JP = "jp"

    @property
    def host(self) -> str:
        """The public API host of the region."""
        return _HOSTS[self.value]

    @classmethod
    def parse(cls, value: str | Region) -> Region:
        """Accept the enum, its value or an alias (``us``→na, ``uk``/``de``→eu), any case."""
        if isinstance(value, Region):
            return value
        canonical = _REGION_ALIASES.get(value.strip().lower())
        if canonical is None:
            raise AmazonPayRequestError(f"unknown Amazon Pay region {value!r}")
        return cls(canonical)


class Environment(enum.StrEnum):
    """Sandbox or live; the value is the URL path segment."""

    SANDBOX = "sandbox"
    LIVE = "live"

    @classmethod
    def parse(cls, value: str | Environment) -> Environment:
        """Accept the enum or its value, any case."""
        if isinstance(value, Environment):
            return value
        try:
            return cls(value.strip().lower())
        except ValueError:
            raise AmazonPayRequestError(f"unknown Amazon Pay environment {value!r}") from None


@dataclass(frozen=True, kw_only=True)
class MerchantAccount:
    """One Amazon Pay merchant identity: who signs, where requests go."""

    public_key_id: str
    """Id Amazon issued for the uploaded public key. A ``SANDBOX-``/``LIVE-`` prefix (any case)
    selects the environment itself, and URLs then carry no environment segment."""
    private_key: PrivateKey = field(repr=False)
    """The RSA private key; never shown in reprs, logs or errors."""
    region: Region = Region.NA
    """API region: decides the host and the ``x-amz-pay-region`` header."""
    environment: Environment = Environment.SANDBOX
    """Sandbox or live; ignored in URLs for unified (``SANDBOX-``/``LIVE-``) key ids."""
    store_id: str | None = None
    """Login with Amazon client id (``amzn1.application-oa2-client...``), used in bodies."""
    algorithm: Algorithm = Algorithm.V2
    """Signature algorithm; V2 unless the account still uses the legacy one."""
    endpoint: str | None = None
    """Base URL replacing the Amazon host, e.g. ``http://127.0.0.1:8480`` for an emulator."""
    ca_file: str | None = None
    """PEM bundle of extra trusted CAs for an ``https`` endpoint (system store otherwise)."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "region", Region.parse(self.region))
        object.__setattr__(self, "environment", Environment.parse(self.environment))
        object.__setattr__(self, "algorithm", Algorithm.parse(self.algorithm))
        if not self.public_key_id or any(ch.isspace() or ch == "," for ch in self.public_key_id):
            raise AmazonPayRequestError("public_key_id must be a non-empty token")
        if not isinstance(self.private_key, PrivateKey):
            raise AmazonPayRequestError("private_key must be a PrivateKey")
        if self.endpoint is not None:
            parts = urlsplit(self.endpoint)
            if parts.scheme not in ("http", "https") or not parts.netloc:
                raise AmazonPayRequestError(
                    f"endpoint must be an http(s) URL with a host, got {self.endpoint!r}"
                )
            if parts.query or parts.fragment or parts.username or parts.password:
                raise AmazonPayRequestError(
                    "endpoint must not carry credentials, query or fragment"
                )

    @classmethod
    def load(
        cls,
        *,
        public_key_id: str,
        private_key_path: str | PathLike[str],
        region: str | Region = Region.NA,
        environment: str | Environment = Environment.SANDBOX,
        store_id: str | None = None,
        algorithm: str | Algorithm = Algorithm.V2,
        endpoint: str | None = None,
        ca_file: str | None = None,
        password: bytes | None = None,
    ) -> MerchantAccount:
        """Build an account from plain settings, reading the key file (blocking, at start-up)."""
        return cls(
            public_key_id=public_key_id,
            private_key=PrivateKey.from_file(private_key_path, password=password),
            region=Region.parse(region),
            environment=Environment.parse(environment),
            store_id=store_id,
            algorithm=Algorithm.parse(algorithm),
            endpoint=endpoint,
            ca_file=ca_file,
        )

    @property
    def unified_key(self) -> bool:
        """True for ``SANDBOX-``/``LIVE-`` key ids, whose URLs have no environment segment."""
        upper = self.public_key_id.upper()
        return upper.startswith(("SANDBOX-", "LIVE-"))

    @property
    def effective_environment(self) -> Environment:
        """The environment requests really reach (a unified key id decides it)."""
        upper = self.public_key_id.upper()
        if upper.startswith("SANDBOX-"):
            return Environment.SANDBOX
        if upper.startswith("LIVE-"):
            return Environment.LIVE
        return self.environment

    @property
    def base_url(self) -> str:
        """Scheme and authority requests go to (no trailing slash)."""
        if self.endpoint is None:
            return f"https://{self.region.host}"
        url = URL(self.endpoint)
        return f"{url.scheme}://{url.raw_authority}"

    @property
    def api_host(self) -> str:
        """``x-amz-pay-host``: the host[:port] exactly as the HTTP ``Host`` header carries it."""
        if self.endpoint is None:
            return self.region.host
        host = URL(self.endpoint).host_port_subcomponent
        if host is None:  # pragma: no cover - __post_init__ guarantees a host
            raise AmazonPayRequestError("endpoint has no host")
        return host

    @property
    def path_prefix(self) -> str:
        """Unencoded path before the resource: ``[/override-path]/{sandbox|live}/v2`` or ``/v2``."""
        base = ""
        if self.endpoint is not None:
            base = URL(self.endpoint).path.rstrip("/")
        if self.unified_key:
            return f"{base}/v2"
        return f"{base}/{self.environment.value}/v2"

    def __repr__(self) -> str:
        return (
            f"MerchantAccount(public_key_id={self.public_key_id!r}, region={self.region.value!r}, "
            f"environment={self.effective_environment.value!r}, store_id={self.store_id!r}, "
            f"algorithm={self.algorithm.value!r}, endpoint={self.endpoint!r}, "
            "private_key=<redacted>)"
        )


def _default_user_agent() -> str:
    return (
        f"{SDK_NAME}/{SDK_VERSION} (Python/{platform.python_version()}; "
        f"{platform.system() or 'unknown'})"
    )


@dataclass(frozen=True, kw_only=True)
class ClientConfig:
    """Tuning of one client; the defaults suit a service calling Amazon on behalf of callers."""

    retry: RetryPolicy = field(default_factory=RetryPolicy)
    """When and how long to wait before retrying a failed attempt."""
    max_concurrency: int = 32
    """Calls in flight at once for this merchant; further calls wait for a slot."""
    signing_threads: int = 2
    """Threads of the dedicated signing pool (RSA releases the GIL, so one per core helps)."""
    attempt_timeout: float | None = 30.0
    """Upper bound of one attempt in seconds; with a deadline, an attempt also never outlives it."""
    connect_timeout: float | None = 10.0
    """Time allowed to open a TCP/TLS connection (default transport)."""
    pool_size: int = 100
    """Maximum pooled keep-alive connections (default transport)."""
    keepalive_timeout: float = 30.0
    """Seconds an idle pooled connection is kept (default transport)."""
    user_agent: str = field(default_factory=_default_user_agent)
    """``user-agent`` header (signed like every other header)."""

    def __post_init__(self) -> None:
        if self.max_concurrency < 1:
            raise AmazonPayRequestError("max_concurrency must be at least 1")
        if self.signing_threads < 1:
            raise AmazonPayRequestError("signing_threads must be at least 1")
        if self.attempt_timeout is not None and self.attempt_timeout <= 0:
            raise AmazonPayRequestError("attempt_timeout must be positive")
