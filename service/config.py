"""Typed, frozen settings read from environment variables (and an optional TOML file).

Every setting has one environment variable. `SERVICE_CONFIG_FILE` may name a TOML file whose top-level
keys are the same variable names; the environment wins over the file. Settings are validated once at
start-up and a bad value raises `ConfigError` naming the variable and the rule it broke.

Each setting is stated once, as a dataclass field made by `_setting` (variable, parser, default);
`load_settings` reads the fields generically and a test holds README's table to them.
"""

from __future__ import annotations

import math
import os
import re
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields, is_dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:
    from _typeshed import DataclassInstance

__all__ = [
    "REGION_ALIASES",
    "AmazonCallSettings",
    "AmazonPaySettings",
    "ConfigError",
    "DatabaseSettings",
    "GrpcSettings",
    "PiiSettings",
    "SecuritySettings",
    "Settings",
    "WorkerSettings",
    "available_cpus",
    "load_settings",
    "parse_listen_address",
    "setting_variables",
]

T = TypeVar("T")
D = TypeVar("D")

REGION_ALIASES: Mapping[str, str] = {
    "na": "na",
    "us": "na",
    "eu": "eu",
    "uk": "eu",
    "de": "eu",
    "jp": "jp",
}

_HOST_PORT = re.compile(r"^(?P<host>\[[0-9a-fA-F:.]+\]|[A-Za-z0-9._-]*):(?P<port>[0-9]{1,5})$")
_PUBLIC_KEY_ID = re.compile(r"^[A-Za-z0-9_-]{1,128}$")
_TOPIC_ARN = re.compile(
    r"^arn:aws(?:-[a-z]+)*:sns:[a-z0-9-]+:[0-9]{12}:[A-Za-z0-9_-]{1,256}(?:\.fifo)?$"
)
_ROLE = re.compile(r"^[A-Za-z_][A-Za-z0-9_-]{0,62}$")
_ALIAS = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")


class ConfigError(ValueError):
    """A setting is missing or invalid; the message names the variable and the rule."""

    def __init__(self, variable: str, rule: str) -> None:
        super().__init__(f"{variable}: {rule}")
        self.variable = variable
        self.rule = rule


def parse_listen_address(variable: str, value: str) -> tuple[str, int]:
    """Split `host:port` (IPv6 in brackets); port 0 asks the OS for a free port."""
    match = _HOST_PORT.fullmatch(value.strip())
    if match is None:
        raise ConfigError(variable, f"expected host:port (e.g. 127.0.0.1:50051), got {value!r}")
    port = int(match["port"])
    if port > 65535:
        raise ConfigError(variable, f"port must be 0..65535, got {port}")
    host = match["host"] or "0.0.0.0"  # noqa: S104 - an empty host explicitly means all interfaces
    return host, port


def _str(_: str, value: str) -> str:
    return value.strip()


N = TypeVar("N", int, float)


def _number_in(
    convert: Callable[[str], N], kind: str, *, low: N, high: N
) -> Callable[[str, str], N]:
    def parse(name: str, value: str) -> N:
        try:
            number = convert(value.strip())
        except ValueError:
            raise ConfigError(name, f"expected {kind}, got {value!r}") from None
        if not low <= number <= high:
            raise ConfigError(name, f"must be between {low} and {high}, got {number}")
        return number

    return parse


def _int_in(low: int, high: int) -> Callable[[str, str], int]:
    return _number_in(int, "an integer", low=low, high=high)


def _float_in(low: float, high: float) -> Callable[[str, str], float]:
    return _number_in(float, "a number", low=low, high=high)


def _bool(name: str, value: str) -> bool:
    lowered = value.strip().lower()
    if lowered in {"1", "true", "yes", "on"}:
        return True
    if lowered in {"0", "false", "no", "off"}:
        return False
    raise ConfigError(name, f"expected true/false (1/0), got {value!r}")


def _listen(name: str, value: str) -> str:
    parse_listen_address(name, value)
    return value.strip()


def _database_url(name: str, value: str) -> str:
    if not value.startswith(("postgresql://", "postgres://")):
        raise ConfigError(name, "must start with postgresql:// or postgres://")
    return value


def _matching(pattern: re.Pattern[str], rule: str) -> Callable[[str, str], str]:
    """The stripped value, when all of it matches `pattern`; else `rule` names what is wanted."""

    def parse(name: str, value: str) -> str:
        if not pattern.fullmatch(value.strip()):
            raise ConfigError(name, rule)
        return value.strip()

    return parse


_role = _matching(_ROLE, "must be a role name: 1-63 letters, digits, '_' or '-'")
_public_key_id = _matching(
    _PUBLIC_KEY_ID, "must be 1-128 characters of letters, digits, '-' or '_'"
)
_alias = _matching(_ALIAS, "must be 1-63 lower-case letters, digits, '-' or '_'")


def _one_of(*choices: str, fold: Callable[[str], str] = str.lower) -> Callable[[str, str], str]:
    """One of `choices`, compared after `fold` (the stripped value's case)."""
    wanted = f"{', '.join(choices[:-1])} or {choices[-1]}"

    def parse(name: str, value: str) -> str:
        choice = fold(value.strip())
        if choice not in choices:
            raise ConfigError(name, f"must be {wanted}, got {value!r}")
        return choice

    return parse


_environment = _one_of("sandbox", "live")
_log_level = _one_of("DEBUG", "INFO", "WARNING", "ERROR", fold=str.upper)
_event_loop = _one_of("uvloop", "asyncio")


def _region(name: str, value: str) -> str:
    region = REGION_ALIASES.get(value.strip().lower())
    if region is None:
        raise ConfigError(
            name, f"must be one of {', '.join(sorted(REGION_ALIASES))}, got {value!r}"
        )
    return region


def _readable_file(name: str, value: str) -> Path:
    path = Path(value.strip())
    if not path.is_file():
        raise ConfigError(name, f"file {str(path)!r} does not exist or is not a regular file")
    if not os.access(path, os.R_OK):
        raise ConfigError(name, f"file {str(path)!r} is not readable by this process")
    return path


def _path(_: str, value: str) -> Path:
    return Path(value.strip())


def _endpoint(name: str, value: str) -> str:
    stripped = value.strip().rstrip("/")
    if not re.fullmatch(r"^https?://[^/\s]+(/[^\s]*)?$", stripped):
        raise ConfigError(name, f"must be an http:// or https:// URL, got {value!r}")
    return stripped


def _optional_listen(name: str, value: str) -> str | None:
    if value.strip().lower() in {"off", "none", "disabled"}:
        return None
    return _listen(name, value)


def _csv(_: str, value: str) -> tuple[str, ...]:
    return tuple(item.strip() for item in value.split(",") if item.strip())


def _topic_arns(name: str, value: str) -> tuple[str, ...]:
    arns = _csv(name, value)
    for arn in arns:
        if not _TOPIC_ARN.match(arn):
            raise ConfigError(
                name, f"{arn!r} is not an SNS topic ARN (arn:aws:sns:<region>:<account>:<topic>)"
            )
    return arns


def _key_files(name: str, value: str) -> tuple[tuple[str, Path], ...]:
    pairs = []
    for item in _csv(name, value):
        key_id, sep, path = item.partition("=")
        if not sep or not _PUBLIC_KEY_ID.fullmatch(key_id.strip()):
            raise ConfigError(name, f"expected id=path pairs separated by commas, got {item!r}")
        pairs.append((key_id.strip(), _readable_file(name, path)))
    if len({k for k, _ in pairs}) != len(pairs):
        raise ConfigError(name, "key ids must be unique")
    return tuple(pairs)


def available_cpus() -> int:
    """CPUs this process may run on: its affinity mask, capped by a cgroup CPU limit (a
    Kubernetes `limits.cpu`, rounded up) when there is one."""
    count = len(os.sched_getaffinity(0))
    limit = None
    try:
        quota, period = Path("/sys/fs/cgroup/cpu.max").read_text().split()[:2]  # cgroup v2
        if quota != "max":
            limit = int(quota) / int(period)
    except (OSError, ValueError):
        try:
            v1 = Path("/sys/fs/cgroup/cpu")
            quota_us = int((v1 / "cpu.cfs_quota_us").read_text())
            if quota_us > 0:
                limit = quota_us / int((v1 / "cpu.cfs_period_us").read_text())
        except (OSError, ValueError):
            pass
    if limit is not None:
        count = min(count, max(1, math.ceil(limit)))
    return max(1, count)


def _signing_threads(name: str, value: str) -> int:
    text = value.strip()
    if text.lstrip("+-").isdigit() and int(text) < 1:
        raise ConfigError(
            name,
            "must be at least 1: Amazon requests are signed in this thread pool, never on the "
            f"event loop (an RSA signature there would stall every call in flight), got {text}",
        )
    return _int_in(1, 64)(name, value)


def _workers(name: str, value: str) -> int:
    if value.strip().lower() == "auto":
        return available_cpus()
    return _int_in(1, 64)(name, value)


def _setting(env: str, parse: Callable[[str, str], T], default: D) -> T | D:
    """A field read from the variable `env` with `parse`; the field's default is the only default.

    `load_settings` reads every such field generically and the README's configuration table is
    checked against the same fields (tests/unit/config/test_readme_table.py).
    """
    return field(default=default, metadata={"env": env, "parse": parse})


@dataclass(frozen=True)
class GrpcSettings:
    """How the gRPC server listens and behaves."""

    listen: str = _setting("GRPC_LISTEN", _listen, "127.0.0.1:50051")
    """Host:port of the gRPC server; `0.0.0.0:50051` in a container."""

    max_message_bytes: int = _setting(
        "GRPC_MAX_MESSAGE_BYTES", _int_in(1024, 64 * 1024 * 1024), 4 * 1024 * 1024
    )
    """Largest request or response message accepted."""

    keepalive_time_s: int = _setting("GRPC_KEEPALIVE_TIME_S", _int_in(1, 3600), 30)
    """Server pings idle connections this often, so dead peers are noticed."""

    keepalive_timeout_s: int = _setting("GRPC_KEEPALIVE_TIMEOUT_S", _int_in(1, 600), 10)
    """A ping unanswered this long closes the connection."""

    max_connection_age_s: int = _setting("GRPC_MAX_CONNECTION_AGE_S", _int_in(10, 86400), 300)
    """Connections are recycled so new replicas receive load."""

    max_event_streams: int = _setting("GRPC_MAX_EVENT_STREAMS", _int_in(1, 100_000), 1000)
    """WatchEvents streams one replica serves at once; one more gets
    RESOURCE_EXHAUSTED (reason `TOO_MANY_STREAMS`)."""

    shutdown_grace_s: float = _setting("SHUTDOWN_GRACE_S", _float_in(0, 600), 20.0)
    """On SIGTERM, in-flight calls get this long to finish; keep it below the
    pod's terminationGracePeriodSeconds."""

    workers: int = _setting("GRPC_WORKERS", _workers, 1)
    """Server processes sharing the gRPC (and IPN) port with SO_REUSEPORT, each with
    its own event loop, pool and workers; `auto` is one per CPU of the container's limit (the
    production image's setting). More than 1 needs DATABASE_URL and Amazon credentials."""

    @property
    def host_port(self) -> tuple[str, int]:
        return parse_listen_address("GRPC_LISTEN", self.listen)


@dataclass(frozen=True)
class DatabaseSettings:
    """Where the ledger lives."""

    url: str | None = _setting("DATABASE_URL", _database_url, None)
    """Postgresql:// URL. Unset: an embedded PostgreSQL is started under
    `EMBEDDED_POSTGRES_DIR` (development only)."""

    migrate_url: str | None = _setting("MIGRATE_DATABASE_URL", _database_url, None)
    """Postgresql:// URL of the role that owns the schema, used by
    `python -m service migrate` (and start-up migrations). Unset: `DATABASE_URL` migrates too
    (development: one role for everything)."""

    service_role: str | None = _setting("DATABASE_SERVICE_ROLE", _role, None)
    """The role the service runs as (the user of `DATABASE_URL`); after
    migrating, the owner grants it only the DML it needs (docs/operations.md)."""

    pool_min_size: int = _setting("DATABASE_POOL_MIN", _int_in(0, 1000), 2)
    """Connections kept open per replica."""

    pool_max_size: int = _setting("DATABASE_POOL_MAX", _int_in(1, 1000), 10)
    """Upper bound of connections per replica; size it against Postgres'
    max_connections divided by the replica count."""

    statement_timeout_ms: int = _setting(
        "DATABASE_STATEMENT_TIMEOUT_MS", _int_in(100, 3_600_000), 10_000
    )
    """Server-side cap for any single statement."""

    embedded_dir: Path = _setting("EMBEDDED_POSTGRES_DIR", _path, Path(".data/postgres"))
    """Data directory of the embedded development database."""

    migrate_on_start: bool = _setting("MIGRATE_ON_START", _bool, True)
    """Apply pending migrations at start-up (safe with many replicas: an advisory
    lock serializes them). Set false when a migration Job owns schema changes."""


@dataclass(frozen=True)
class AmazonPaySettings:
    """The default merchant account and how to reach Amazon Pay."""

    public_key_id: str | None = _setting("AMAZON_PAY_PUBLIC_KEY_ID", _public_key_id, None)
    """The key id Seller Central issued (`SANDBOX-…`/`LIVE-…` or legacy)."""

    private_key_file: Path | None = _setting("AMAZON_PAY_PRIVATE_KEY_FILE", _readable_file, None)
    """PEM file of the RSA private key (a mounted secret). Never logged."""

    region: str = _setting("AMAZON_PAY_REGION", _region, "na")
    """Na|eu|jp, or an alias us|uk|de."""

    environment: str = _setting("AMAZON_PAY_ENVIRONMENT", _environment, "sandbox")
    """Sandbox or live. Live refuses to start without TLS unless
    `ALLOW_INSECURE=1`."""

    store_id: str | None = _setting("AMAZON_PAY_STORE_ID", _str, None)
    """The Login with Amazon client id, used in button payloads."""

    endpoint: str | None = _setting("AMAZON_PAY_ENDPOINT", _endpoint, None)
    """Base URL override (http or https), e.g. the local emulator. Unset:
    Amazon's regional host."""

    ca_file: Path | None = _setting("AMAZON_PAY_CA_FILE", _readable_file, None)
    """Extra CA bundle to trust for `AMAZON_PAY_ENDPOINT` (the emulator's CA)."""

    merchant_alias: str = _setting("AMAZON_PAY_MERCHANT_ALIAS", _alias, "default")
    """The name callers use in the `merchant` field for this account."""

    @property
    def configured(self) -> bool:
        return self.public_key_id is not None and self.private_key_file is not None


@dataclass(frozen=True)
class AmazonCallSettings:
    """Overload and outage control in front of Amazon, per merchant account."""

    max_concurrent: int = _setting("AMAZON_MAX_CONCURRENT_CALLS", _int_in(1, 10_000), 64)
    """Calls to Amazon in flight at once per merchant."""

    max_queued: int = _setting("AMAZON_MAX_QUEUED_CALLS", _int_in(0, 100_000), 128)
    """Calls waiting for a slot; beyond it RESOURCE_EXHAUSTED."""

    circuit_failures: int = _setting("AMAZON_CIRCUIT_FAILURES", _int_in(1, 1000), 5)
    """Consecutive failures showing Amazon failing (5xx, 429 after
    retries, no answer within the service's own timeout) that open the circuit breaker; a
    caller's short deadline never counts."""

    circuit_open_s: float = _setting("AMAZON_CIRCUIT_OPEN_S", _float_in(0.1, 3600), 10.0)
    """How long an open circuit fails fast before a probe call."""

    max_retries: int = _setting("AMAZON_MAX_RETRIES", _int_in(0, 10), 3)
    """Retries of one call on 408/425/429/5xx/no answer (same key)."""

    signing_threads: int = _setting("AMAZON_SIGNING_THREADS", _signing_threads, 2)
    """Threads of each process computing the RSA signature of every Amazon call, so that no
    signature runs on the event loop (the RSA operation releases the GIL, so they can use idle
    cores)."""


@dataclass(frozen=True)
class PiiSettings:
    """Encryption at rest and retention of buyer PII."""

    key_files: tuple[tuple[str, Path], ...] = _setting("PII_KEY_FILES", _key_files, ())
    """`id=path` pairs, comma-separated; each file holds a 32-byte AES key (raw
    or base64). Required with `DATABASE_URL`; the embedded development database gets a generated
    key under `.data/dev/`. List the old and the new key while rotating."""

    active_key_id: str | None = _setting("PII_ACTIVE_KEY_ID", _str, None)
    """Key that encrypts new values (default: the last in `PII_KEY_FILES`)."""

    retention_days: int | None = _setting("PII_RETENTION_DAYS", _int_in(1, 36500), None)
    """Erase buyer PII this many days after it was recorded (the financial
    record stays). Unset: keep until erased on request."""


@dataclass(frozen=True)
class SecuritySettings:
    """Transport security and caller identity of the gRPC server (see docs/security.md)."""

    tls_cert_file: Path | None = _setting("GRPC_TLS_CERT_FILE", _readable_file, None)
    """PEM server certificate (chain). Set with `GRPC_TLS_KEY_FILE` for TLS."""

    tls_key_file: Path | None = _setting("GRPC_TLS_KEY_FILE", _readable_file, None)
    """PEM private key of the server certificate (a mounted secret)."""

    tls_client_ca_file: Path | None = _setting("GRPC_TLS_CLIENT_CA_FILE", _readable_file, None)
    """PEM CA bundle; when set, clients MUST present a certificate it
    signed (mutual TLS)."""

    callers_file: Path | None = _setting("GRPC_CALLERS_FILE", _readable_file, None)
    """TOML file of callers (token hashes, certificate names, RPC allowlists).
    Unset: no caller authentication (development)."""

    @property
    def tls(self) -> bool:
        return self.tls_cert_file is not None


@dataclass(frozen=True)
class WorkerSettings:
    """The IPN receiver and the reconciler."""

    ipn_listen: str | None = _setting("IPN_LISTEN", _optional_listen, "127.0.0.1:8081")
    """Host:port of the IPN receiver (path `/ipn`); `off` disables it."""

    ipn_topic_arns: tuple[str, ...] = _setting("IPN_TOPIC_ARNS", _topic_arns, ())
    """Comma-separated SNS topic ARNs to accept; empty accepts any topic whose
    signature verifies."""

    ipn_extra_cert_hosts: tuple[str, ...] = _setting("IPN_EXTRA_CERT_HOSTS", _csv, ())
    """Host:port values trusted to serve SNS signing certificates besides
    `sns.<region>.amazonaws.com` (development: the emulator). Never set in production."""

    ipn_max_body_bytes: int = _setting("IPN_MAX_BODY_BYTES", _int_in(1024, 1024 * 1024), 64 * 1024)
    """Larger IPN bodies are refused with 413."""

    ipn_read_timeout_s: float = _setting("IPN_READ_TIMEOUT_S", _float_in(0.1, 300), 10.0)
    """A connection to the IPN port that has not delivered its whole request
    (headers and body) this long after connecting is closed."""

    ipn_max_connections: int = _setting("IPN_MAX_CONNECTIONS", _int_in(1, 100_000), 256)
    """Open connections to the IPN port per replica; further ones are
    closed at once (SNS retries a delivery that failed)."""

    reconciler_enabled: bool = _setting("RECONCILER_ENABLED", _bool, True)
    """Run the reconciler in this replica."""

    reconciler_interval_s: float = _setting("RECONCILER_INTERVAL_S", _float_in(0.01, 3600), 5.0)
    """Pause between reconciler passes."""

    reconciler_poll_base_s: float = _setting("RECONCILER_POLL_BASE_S", _float_in(0.01, 86400), 30.0)
    """First re-poll delay of a pending object (doubles when unchanged)."""

    reconciler_poll_max_s: float = _setting("RECONCILER_POLL_MAX_S", _float_in(0.01, 86400), 3600.0)
    """Longest delay between polls of a pending object."""

    settlement_enabled: bool = _setting("SETTLEMENT_ENABLED", _bool, True)
    """Run the settlement worker (fetch settlement reports and disbursements,
    reconcile them) in this replica."""

    settlement_interval_s: float = _setting("SETTLEMENT_INTERVAL_S", _float_in(0.01, 86400), 300.0)
    """Pause between settlement passes."""

    settlement_window_hours: float = _setting(
        "SETTLEMENT_WINDOW_HOURS", _float_in(0.01, 8760), 72.0
    )
    """A ledger capture or refund no settlement names this long after it
    happened (counted on Amazon's settlement periods) is reported missing at Amazon."""

    settlement_lookback_days: int = _setting("SETTLEMENT_LOOKBACK_DAYS", _int_in(1, 365), 30)
    """How far back the first fetch of settlement reports and disbursements
    reaches."""

    admin_listen: str | None = _setting("ADMIN_LISTEN", _optional_listen, "127.0.0.1:9464")
    """Host:port of the admin HTTP server (Prometheus `/metrics`); `off`
    disables it."""


@dataclass(frozen=True)
class Settings:
    """Everything the service reads at start-up."""

    grpc: GrpcSettings = field(default_factory=GrpcSettings)
    database: DatabaseSettings = field(default_factory=DatabaseSettings)
    amazon_pay: AmazonPaySettings = field(default_factory=AmazonPaySettings)
    workers: WorkerSettings = field(default_factory=WorkerSettings)
    pii: PiiSettings = field(default_factory=PiiSettings)
    amazon_calls: AmazonCallSettings = field(default_factory=AmazonCallSettings)
    security: SecuritySettings = field(default_factory=SecuritySettings)

    log_level: str = _setting("LOG_LEVEL", _log_level, "INFO")
    """DEBUG, INFO, WARNING or ERROR."""

    event_loop: str = _setting("EVENT_LOOP", _event_loop, "uvloop")
    """`uvloop` (11-29 % less CPU per CreateCharge than asyncio's own loop, more
    at low concurrency; bench/results/profile.md) or `asyncio` (the standard library's, for
    debugging the loop)."""

    allow_insecure: bool = _setting("ALLOW_INSECURE", _bool, False)
    """Permit plaintext gRPC in live mode (only behind a mesh that adds TLS)."""

    dev_emulator: bool = _setting("DEV_EMULATOR", _bool, True)
    """When no Amazon credentials are configured, start the local emulator with a
    throwaway key (the `make run` default). Set false to refuse to start without credentials."""

    dev_emulator_port: int = _setting("DEV_EMULATOR_PORT", _int_in(0, 65535), 8480)
    """Port of that emulator on 127.0.0.1 (fixed, so scripts and the docs
    can name it; 0 picks a free port, which tests running side by side need)."""

    extra_merchants: tuple[AmazonPaySettings, ...] = field(
        default=(), metadata={"env": "AMAZON_PAY_MERCHANTS_FILE"}
    )
    """Further merchant accounts, served side by side with the
    default one and chosen by the request's `merchant` field."""

    @property
    def merchants(self) -> tuple[AmazonPaySettings, ...]:
        """Every configured account, the default (from `AMAZON_PAY_*`) first."""
        return (self.amazon_pay, *self.extra_merchants)


class _Reader:
    """Reads raw strings from the environment, then the config file, recording the variable name."""

    def __init__(self, env: Mapping[str, str], file_values: Mapping[str, object]) -> None:
        self._env = env
        self._file = file_values

    def raw(self, name: str) -> str | None:
        if name in self._env and self._env[name] != "":
            return self._env[name]
        value = self._file.get(name)
        if value is None:
            return None
        if isinstance(value, bool):
            return "1" if value else "0"
        return str(value)

    def get(self, name: str, parse: Callable[[str, str], T], default: T) -> T:
        value = self.raw(name)
        if value is None:
            return default
        return parse(name, value)


def _load_file(env: Mapping[str, str]) -> dict[str, object]:
    path = env.get("SERVICE_CONFIG_FILE")
    if not path:
        return {}
    try:
        with open(path, "rb") as handle:
            return tomllib.load(handle)
    except FileNotFoundError:
        raise ConfigError("SERVICE_CONFIG_FILE", f"file {path!r} does not exist") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError("SERVICE_CONFIG_FILE", f"not valid TOML: {exc}") from None


_MERCHANT_KEYS = {
    f.name: (f.metadata["env"], f.metadata["parse"])
    for f in fields(AmazonPaySettings)
    if f.name != "merchant_alias"
}
"""Keys of a `[merchants.<alias>]` table: the `AMAZON_PAY_*` fields but the alias (the table's name)."""


def _load_merchants(path_text: str, default_alias: str) -> tuple[AmazonPaySettings, ...]:
    """`[merchants.<alias>]` tables with the keys of `_MERCHANT_KEYS`."""
    variable = "AMAZON_PAY_MERCHANTS_FILE"
    try:
        with open(path_text, "rb") as handle:
            data = tomllib.load(handle)
    except FileNotFoundError:
        raise ConfigError(variable, f"file {path_text!r} does not exist") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(variable, f"not valid TOML: {exc}") from None
    tables = data.get("merchants")
    if not isinstance(tables, dict) or not tables:
        raise ConfigError(variable, "expected at least one [merchants.<alias>] table")
    merchants: list[AmazonPaySettings] = []
    for alias, table in tables.items():
        where = f"{variable}: merchants.{alias}"
        _alias(where, alias)
        if alias == default_alias:
            raise ConfigError(variable, f"alias {alias!r} is already the default merchant")
        if not isinstance(table, dict):
            raise ConfigError(variable, f"merchants.{alias} must be a table")
        unknown = sorted(set(table) - set(_MERCHANT_KEYS))
        if unknown:
            raise ConfigError(variable, f"merchants.{alias}: unknown keys {unknown}")
        values: dict[str, object] = {"merchant_alias": alias}
        for key, (_, parse) in _MERCHANT_KEYS.items():
            if key in table:
                values[key] = parse(f"{where}.{key}", str(table[key]))
        for required in ("public_key_id", "private_key_file"):
            if required not in values:
                raise ConfigError(variable, f"merchants.{alias}: {required} is required")
        merchants.append(AmazonPaySettings(**values))  # type: ignore[arg-type]
    return tuple(merchants)


def _refuse_unsafe_live(settings: Settings) -> None:
    """Live mode fails closed: real credentials, a real database, https only, SNS only.

    The dev emulator and the embedded Postgres exist for sandbox development; starting them
    because a live deployment lost a variable would take orders against a fake Amazon.
    """
    amazon = settings.amazon_pay
    if not amazon.configured:
        raise ConfigError(
            "AMAZON_PAY_PUBLIC_KEY_ID",
            "live mode needs AMAZON_PAY_PUBLIC_KEY_ID and AMAZON_PAY_PRIVATE_KEY_FILE; the "
            "development emulator is for sandbox only",
        )
    if settings.database.url is None:
        raise ConfigError(
            "DATABASE_URL",
            "live mode needs DATABASE_URL; the embedded PostgreSQL is for sandbox development only",
        )
    for merchant in settings.merchants:
        if merchant.environment != "live" or merchant.endpoint is None:
            continue
        if not merchant.endpoint.startswith("https://"):
            rule = "a live merchant's endpoint must be an https:// URL"
            if merchant is amazon:
                raise ConfigError("AMAZON_PAY_ENDPOINT", rule)
            raise ConfigError(
                "AMAZON_PAY_MERCHANTS_FILE", f"merchants.{merchant.merchant_alias}.endpoint: {rule}"
            )
    if settings.workers.ipn_extra_cert_hosts:
        raise ConfigError(
            "IPN_EXTRA_CERT_HOSTS",
            "must be unset in live mode: only sns.<region>.amazonaws.com may serve the "
            "certificates IPNs are verified with",
        )


def _read(r: _Reader, cls: type[DataclassInstance]) -> dict[str, Any]:
    """Every `_setting` field of `cls` from its variable, or the field's default."""
    return {
        f.name: r.get(f.metadata["env"], f.metadata["parse"], f.default)
        for f in fields(cls)
        if "parse" in f.metadata
    }


def setting_variables() -> frozenset[str]:
    """Every variable `load_settings` reads (the settings' fields and `SERVICE_CONFIG_FILE`)."""
    names = {"SERVICE_CONFIG_FILE"}
    pending: list[type[DataclassInstance]] = [Settings]
    while pending:
        for f in fields(pending.pop()):
            if "env" in f.metadata:
                names.add(f.metadata["env"])
            elif isinstance(f.default_factory, type) and is_dataclass(f.default_factory):
                pending.append(f.default_factory)
    return frozenset(names)


def load_settings(env: Mapping[str, str] | None = None) -> Settings:
    """Build and validate settings; raises `ConfigError` on the first bad variable."""
    source = os.environ if env is None else env
    r = _Reader(source, _load_file(source))
    grpc = GrpcSettings(**_read(r, GrpcSettings))
    database = DatabaseSettings(**_read(r, DatabaseSettings))
    if database.pool_min_size > database.pool_max_size:
        raise ConfigError(
            "DATABASE_POOL_MIN",
            f"must not exceed DATABASE_POOL_MAX "
            f"({database.pool_min_size} > {database.pool_max_size})",
        )
    amazon = AmazonPaySettings(**_read(r, AmazonPaySettings))
    if (amazon.public_key_id is None) != (amazon.private_key_file is None):
        missing = (
            "AMAZON_PAY_PRIVATE_KEY_FILE"
            if amazon.private_key_file is None
            else ("AMAZON_PAY_PUBLIC_KEY_ID")
        )
        raise ConfigError(
            missing, "AMAZON_PAY_PUBLIC_KEY_ID and AMAZON_PAY_PRIVATE_KEY_FILE must be set together"
        )
    workers = WorkerSettings(**_read(r, WorkerSettings))
    pii = PiiSettings(**_read(r, PiiSettings))
    if pii.active_key_id is None and pii.key_files:
        pii = replace(pii, active_key_id=pii.key_files[-1][0])
    if (
        pii.active_key_id is not None
        and pii.key_files
        and pii.active_key_id not in dict(pii.key_files)
    ):
        raise ConfigError(
            "PII_ACTIVE_KEY_ID", f"{pii.active_key_id!r} is not listed in PII_KEY_FILES"
        )
    security = SecuritySettings(**_read(r, SecuritySettings))
    if (security.tls_cert_file is None) != (security.tls_key_file is None):
        missing = "GRPC_TLS_KEY_FILE" if security.tls_key_file is None else "GRPC_TLS_CERT_FILE"
        raise ConfigError(missing, "GRPC_TLS_CERT_FILE and GRPC_TLS_KEY_FILE must be set together")
    if security.tls_client_ca_file is not None and not security.tls:
        raise ConfigError(
            "GRPC_TLS_CLIENT_CA_FILE", "mutual TLS needs GRPC_TLS_CERT_FILE and GRPC_TLS_KEY_FILE"
        )
    merchants_file = r.raw("AMAZON_PAY_MERCHANTS_FILE")
    extra = _load_merchants(merchants_file, amazon.merchant_alias) if merchants_file else ()
    amazon_calls = AmazonCallSettings(**_read(r, AmazonCallSettings))
    settings = Settings(
        amazon_calls=amazon_calls,
        pii=pii,
        security=security,
        workers=workers,
        extra_merchants=extra,
        grpc=grpc,
        database=database,
        amazon_pay=amazon,
        **_read(r, Settings),
    )
    live = any(m.environment == "live" for m in settings.merchants)
    if live and not settings.allow_insecure and not security.tls:
        raise ConfigError(
            "AMAZON_PAY_ENVIRONMENT",
            "live mode needs gRPC TLS (GRPC_TLS_CERT_FILE/GRPC_TLS_KEY_FILE); set ALLOW_INSECURE=1 "
            "only when a mesh terminates TLS in front of this service",
        )
    if live:
        _refuse_unsafe_live(settings)
    if not amazon.configured and not settings.dev_emulator:
        raise ConfigError(
            "AMAZON_PAY_PUBLIC_KEY_ID",
            "no Amazon Pay credentials configured and DEV_EMULATOR is off",
        )
    return settings
