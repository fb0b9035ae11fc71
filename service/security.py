"""TLS material and the callers file, read and checked once at start-up.

Kept apart from `config.py` (which only records paths) because loading needs `cryptography` and
`grpc`, and apart from `service/api` because the identity model (who a caller is, what it may call)
is not a gRPC concern. Every problem raises `ConfigError` naming the variable; no message ever
contains key material, a token or a token hash.
"""

from __future__ import annotations

import fnmatch
import hashlib
import hmac
import logging
import re
import tomllib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import grpc
from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization

from .config import ConfigError, SecuritySettings

__all__ = [
    "Caller",
    "Callers",
    "Security",
    "ServerTls",
    "load_callers",
    "load_security",
    "load_server_tls",
    "token_sha256",
]

_log = logging.getLogger("service.security")

_CALLER_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$")
_DNS_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_-]{0,62}(?:\.[A-Za-z0-9_-]{1,63})*$")
_SHA256_HEX = re.compile(r"^[0-9a-fA-F]{64}$")
_CALLER_KEYS = frozenset({"token_sha256", "certificate_names", "allow", "merchants", "pii"})
_MERCHANT = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")


def token_sha256(token: str) -> bytes:
    """The digest a callers file stores (as hex) instead of the token itself."""
    return hashlib.sha256(token.encode("utf-8")).digest()


@dataclass(frozen=True)
class Caller:
    """One configured caller. Its name is what logs and servicers see; never a credential."""

    name: str
    allow: tuple[str, ...]
    """fnmatch patterns on `package.Service/Method`: `payments.amazonpay.v1.ChargeService/*`."""

    token_hashes: tuple[bytes, ...] = field(default=(), repr=False)
    """Raw SHA-256 digests; two during a token rotation."""

    certificate_names: tuple[str, ...] = ()
    """Client-certificate SAN DNS names or URIs (SPIFFE ids) that identify this caller (mTLS)."""

    merchants: tuple[str, ...] = ("*",)
    """Merchant aliases this caller may act for and read; `*` is every configured merchant."""

    pii: bool = False
    """Whether buyer name, e-mail, phone and addresses reach this caller (otherwise empty)."""

    def allows(self, rpc: str) -> bool:
        """`rpc` is `package.Service/Method` (the gRPC method path without its leading slash)."""
        return any(fnmatch.fnmatchcase(rpc, pattern) for pattern in self.allow)

    def allows_merchant(self, alias: str) -> bool:
        return "*" in self.merchants or alias in self.merchants


@dataclass(frozen=True)
class Callers:
    """Every configured caller, looked up by bearer token or by certificate names."""

    callers: tuple[Caller, ...]

    def by_token(self, token: str) -> Caller | None:
        """Constant-time comparison against every stored hash (no early exit on a match)."""
        digest = token_sha256(token)
        found: Caller | None = None
        for caller in self.callers:
            for stored in caller.token_hashes:
                if hmac.compare_digest(digest, stored):
                    found = caller
        return found

    def by_certificate(self, names: Iterable[str]) -> Caller | None:
        """The one caller a verified certificate's names point at; None if none or ambiguous."""
        presented = set(names)
        matches = {c.name: c for c in self.callers if presented.intersection(c.certificate_names)}
        if len(matches) != 1:
            return None
        return next(iter(matches.values()))

    def unmatched_patterns(self, rpcs: Iterable[str]) -> list[tuple[str, str]]:
        """(caller, pattern) pairs that allow no existing RPC: almost always a typo."""
        known = list(rpcs)
        return [
            (caller.name, pattern)
            for caller in self.callers
            for pattern in caller.allow
            if not any(fnmatch.fnmatchcase(rpc, pattern) for rpc in known)
        ]


@dataclass(frozen=True)
class ServerTls:
    """PEM material for `grpc.ssl_server_credentials`; a client CA means mutual TLS."""

    certificate_chain: bytes
    private_key: bytes = field(repr=False)
    client_ca: bytes | None = None
    not_valid_after: datetime | None = None

    @property
    def mutual(self) -> bool:
        return self.client_ca is not None

    def credentials(self) -> grpc.ServerCredentials:
        return grpc.ssl_server_credentials(
            [(self.private_key, self.certificate_chain)],
            root_certificates=self.client_ca,
            require_client_auth=self.client_ca is not None,
        )


@dataclass(frozen=True)
class Security:
    """What the gRPC server needs: credentials for its port and the callers to authenticate."""

    tls: ServerTls | None = None
    callers: Callers | None = None

    def server_credentials(self) -> grpc.ServerCredentials | None:
        return self.tls.credentials() if self.tls is not None else None


def _read(variable: str, path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise ConfigError(variable, f"cannot read {str(path)!r}: {exc.strerror}") from None


def _certificates(variable: str, path: Path) -> tuple[bytes, list[x509.Certificate]]:
    data = _read(variable, path)
    try:
        certificates = x509.load_pem_x509_certificates(data)
    except ValueError:
        raise ConfigError(
            variable, f"{str(path)!r} holds no valid PEM certificate (-----BEGIN CERTIFICATE-----)"
        ) from None
    return data, certificates


def _public_der(key: object) -> bytes:
    public_bytes = getattr(key, "public_bytes", None)
    if public_bytes is None:
        return b""
    der: bytes = public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return der


def load_server_tls(
    cert_file: Path, key_file: Path, client_ca_file: Path | None = None
) -> ServerTls:
    """Load and cross-check the server certificate chain, its key and the client CA bundle."""
    chain, certificates = _certificates("GRPC_TLS_CERT_FILE", cert_file)
    key_pem = _read("GRPC_TLS_KEY_FILE", key_file)
    try:
        key = serialization.load_pem_private_key(key_pem, password=None)
    except TypeError:
        raise ConfigError(
            "GRPC_TLS_KEY_FILE", f"{str(key_file)!r} is encrypted; provide an unencrypted PEM key"
        ) from None
    except (ValueError, UnsupportedAlgorithm):
        raise ConfigError(
            "GRPC_TLS_KEY_FILE", f"{str(key_file)!r} holds no valid PEM private key"
        ) from None
    leaf = certificates[0]
    if _public_der(key.public_key()) != _public_der(leaf.public_key()):
        raise ConfigError(
            "GRPC_TLS_KEY_FILE",
            "the private key does not belong to the first certificate in GRPC_TLS_CERT_FILE",
        )
    client_ca = None
    if client_ca_file is not None:
        client_ca, _ = _certificates("GRPC_TLS_CLIENT_CA_FILE", client_ca_file)
    return ServerTls(
        certificate_chain=chain,
        private_key=key_pem,
        client_ca=client_ca,
        not_valid_after=leaf.not_valid_after_utc,
    )


def _hashes(where: str, value: object) -> tuple[bytes, ...]:
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, list) or not items:
        raise ConfigError("GRPC_CALLERS_FILE", f"{where} must be a hex string or a list of them")
    hashes = []
    for item in items:
        # The value is never echoed: a pasted raw token would otherwise end up in a log.
        if not isinstance(item, str) or not _SHA256_HEX.fullmatch(item.strip()):
            raise ConfigError(
                "GRPC_CALLERS_FILE",
                f"{where} must hold 64 hex characters (the SHA-256 of the token, never the token)",
            )
        hashes.append(bytes.fromhex(item.strip()))
    return tuple(hashes)


def _strings(where: str, value: object) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(v, str) and v.strip() for v in value):
        raise ConfigError("GRPC_CALLERS_FILE", f"{where} must be a list of non-empty strings")
    return tuple(v.strip() for v in value)


def _caller(name: str, table: object) -> Caller:
    where = f"callers.{name}"
    if not _CALLER_NAME.fullmatch(name):
        raise ConfigError(
            "GRPC_CALLERS_FILE", f"{where}: names are 1-63 letters, digits, '.', '-' or '_'"
        )
    if not isinstance(table, Mapping):
        raise ConfigError("GRPC_CALLERS_FILE", f"{where} must be a table")
    unknown = sorted(set(table) - _CALLER_KEYS)
    if unknown:
        raise ConfigError("GRPC_CALLERS_FILE", f"{where}: unknown keys {unknown}")
    if "allow" not in table:
        raise ConfigError("GRPC_CALLERS_FILE", f"{where}.allow is required (RPC patterns)")
    if "merchants" not in table:
        raise ConfigError(
            "GRPC_CALLERS_FILE",
            f"{where}.merchants is required: the merchant aliases caller {name!r} may act for "
            '(["*"] for all)',
        )
    merchants = _strings(f"{where}.merchants", table["merchants"])
    if not merchants:
        raise ConfigError("GRPC_CALLERS_FILE", f"{where}.merchants must name at least one alias")
    for alias in merchants:
        if alias != "*" and not _MERCHANT.match(alias):
            raise ConfigError(
                "GRPC_CALLERS_FILE",
                f"{where}.merchants: {alias!r} is not a merchant alias (1-63 lower-case letters, "
                "digits, '-' or '_') nor '*'",
            )
    pii = table.get("pii", False)
    if not isinstance(pii, bool):
        raise ConfigError("GRPC_CALLERS_FILE", f"{where}.pii must be true or false")
    hashes = (
        _hashes(f"{where}.token_sha256", table["token_sha256"]) if "token_sha256" in table else ()
    )
    names = (
        _strings(f"{where}.certificate_names", table["certificate_names"])
        if "certificate_names" in table
        else ()
    )
    if not hashes and not names:
        raise ConfigError(
            "GRPC_CALLERS_FILE", f"{where} needs token_sha256 or certificate_names to be identified"
        )
    for cert_name in names:
        if "://" not in cert_name and not _DNS_NAME.match(cert_name):
            raise ConfigError(
                "GRPC_CALLERS_FILE",
                f"{where}.certificate_names: {cert_name!r} is neither a DNS name nor a URI; "
                "callers are matched on SAN DNS names and URIs (SPIFFE ids) only",
            )
    return Caller(
        name=name,
        allow=_strings(f"{where}.allow", table["allow"]),
        token_hashes=hashes,
        certificate_names=names,
        merchants=merchants,
        pii=pii,
    )


def load_callers(path: Path) -> Callers:
    """Parse `[callers.<name>]` tables; token hashes and certificate names must be unique."""
    try:
        data = tomllib.loads(_read("GRPC_CALLERS_FILE", path).decode("utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError("GRPC_CALLERS_FILE", f"{str(path)!r} is not valid TOML: {exc}") from None
    tables = data.get("callers")
    unknown = sorted(set(data) - {"callers"})
    if unknown:
        raise ConfigError("GRPC_CALLERS_FILE", f"unknown top-level keys {unknown}")
    if not isinstance(tables, dict) or not tables:
        raise ConfigError("GRPC_CALLERS_FILE", "expected at least one [callers.<name>] table")
    callers = tuple(_caller(name, table) for name, table in tables.items())
    hash_owner: dict[bytes, str] = {}
    name_owner: dict[str, str] = {}
    for caller in callers:
        for digest in caller.token_hashes:
            if hash_owner.setdefault(digest, caller.name) != caller.name:
                raise ConfigError(
                    "GRPC_CALLERS_FILE",
                    f"callers {hash_owner[digest]!r} and {caller.name!r} share a token hash",
                )
        for cert_name in caller.certificate_names:
            if name_owner.setdefault(cert_name, caller.name) != caller.name:
                raise ConfigError(
                    "GRPC_CALLERS_FILE",
                    f"callers {name_owner[cert_name]!r} and {caller.name!r} share the "
                    f"certificate name {cert_name!r}",
                )
    return Callers(callers)


def load_security(settings: SecuritySettings, *, live: bool = False) -> Security:
    """Read every file named in `settings`; log what the posture means for operators."""
    tls = None
    if settings.tls_cert_file is not None and settings.tls_key_file is not None:
        tls = load_server_tls(
            settings.tls_cert_file, settings.tls_key_file, settings.tls_client_ca_file
        )
        if tls.not_valid_after is not None and tls.not_valid_after <= datetime.now(UTC):
            _log.warning(
                "gRPC server certificate has expired; clients will refuse the handshake",
                extra={"not_valid_after": tls.not_valid_after.isoformat()},
            )
    callers = load_callers(settings.callers_file) if settings.callers_file is not None else None
    if callers is None:
        (_log.warning if live else _log.info)(
            "gRPC caller authentication is disabled (GRPC_CALLERS_FILE unset): any client "
            "that reaches the port can call every RPC"
        )
    elif tls is None or not tls.mutual:
        cert_only = [c.name for c in callers.callers if c.certificate_names and not c.token_hashes]
        if cert_only:
            _log.warning(
                "callers identified only by certificate names cannot authenticate without "
                "GRPC_TLS_CLIENT_CA_FILE",
                extra={"callers": cert_only},
            )
    return Security(tls, callers)
