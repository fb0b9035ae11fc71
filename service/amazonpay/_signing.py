"""Amazon Pay request signing (``AMZN-PAY-RSASSA-PSS-V2`` and the older ``AMZN-PAY-RSASSA-PSS``).

The canonical request follows the official SDKs byte for byte (their test vectors are the
acceptance test): method, canonical URI, canonical query, one ``name:value`` line per signed
header, an empty line, the signed header names and the hex SHA-256 of the payload. Everything here
is pure CPU work with no I/O except loading a key file, so the client runs it in a thread pool.
"""

from __future__ import annotations

import base64
import binascii
import enum
import hashlib
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from os import PathLike
from pathlib import Path
from typing import NoReturn
from urllib.parse import quote, unquote, urlsplit

from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from ._errors import AmazonPayRequestError

__all__ = [
    "Algorithm",
    "AuthorizationHeader",
    "CanonicalRequest",
    "PendingAuthorization",
    "PrivateKey",
    "QueryParams",
    "RequestSigner",
    "button_string_to_sign",
    "canonical_headers",
    "canonical_path",
    "canonical_query",
    "canonical_request",
    "canonical_uri",
    "encode_rfc3986",
    "hex_sha256",
    "parse_authorization_header",
    "string_to_sign",
    "verify_signature",
]

QueryParams = Mapping[str, str | Sequence[str]] | Iterable[tuple[str, str]]
"""Query parameters: a mapping (a value may be a list of values) or a sequence of pairs."""

_SLASHES = re.compile(r"/{2,}")
_AUTHORIZATION = re.compile(
    r"^(?P<algorithm>\S+) PublicKeyId=(?P<key_id>[^,\s]+), "
    r"SignedHeaders=(?P<signed>[^,\s]+), Signature=(?P<signature>\S+)$"
)


class Algorithm(enum.StrEnum):
    """Signature algorithm; the value is the name that prefixes the string to sign."""

    V2 = "AMZN-PAY-RSASSA-PSS-V2"
    V1 = "AMZN-PAY-RSASSA-PSS"

    @property
    def salt_length(self) -> int:
        """PSS salt length in bytes: 32 for V2, 20 for the legacy algorithm."""
        return 32 if self is Algorithm.V2 else 20

    @classmethod
    def parse(cls, value: str | Algorithm) -> Algorithm:
        """Accept the enum or its wire name (case-insensitive)."""
        if isinstance(value, Algorithm):
            return value
        for member in cls:
            if member.value == value.strip().upper():
                return member
        raise AmazonPayRequestError(f"unknown signature algorithm {value!r}")


def hex_sha256(data: bytes | str) -> str:
    """Lower-case hex SHA-256 of UTF-8 text or raw bytes."""
    if isinstance(data, str):
        data = data.encode("utf-8")
    return hashlib.sha256(data).hexdigest()


def encode_rfc3986(value: str) -> str:
    """Percent-encode every UTF-8 byte except ``A-Za-z0-9-_.~`` (upper-case hex, space as %20)."""
    return quote(value, safe="", encoding="utf-8", errors="strict")


def canonical_path(path: str) -> str:
    """Canonical URI of an unencoded path: slashes collapsed, every other reserved byte encoded.

    The same string is what the client puts on the wire, so what is signed is what is sent.
    """
    collapsed = _SLASHES.sub("/", path)
    if not collapsed.startswith("/"):
        collapsed = "/" + collapsed
    return quote(collapsed, safe="/", encoding="utf-8", errors="strict")


def canonical_uri(uri: str) -> str:
    """Canonical URI of a full URL or a path, as the Java and .NET SDKs compute it.

    ``//foo//`` parses as a network-path reference (``foo`` is the authority), so its path is
    ``/``; percent escapes in the input are decoded first, then everything is encoded once.
    """
    return canonical_path(unquote(urlsplit(uri).path, encoding="utf-8", errors="strict"))


def _query_pairs(params: QueryParams | None) -> list[tuple[str, str]]:
    if params is None:
        return []
    pairs: list[tuple[str, str]] = []
    if isinstance(params, Mapping):
        for name, value in params.items():
            if isinstance(value, str):
                pairs.append((name, value))
            else:
                pairs.extend((name, item) for item in value)
    else:
        pairs.extend((name, value) for name, value in params)
    return pairs


def canonical_query(params: QueryParams | None) -> str:
    """``name=value`` pairs, both RFC 3986 encoded, sorted by encoded name then value."""
    encoded = sorted(
        (encode_rfc3986(name), encode_rfc3986(value)) for name, value in _query_pairs(params)
    )
    return "&".join(f"{name}={value}" for name, value in encoded)


def canonical_headers(headers: Mapping[str, str]) -> tuple[str, str]:
    """Return (``name:value`` lines each ending in a newline, ``;``-joined signed names)."""
    normalized: dict[str, str] = {}
    for name, value in headers.items():
        lower = name.strip().lower()
        if lower in normalized:
            raise AmazonPayRequestError(f"header {lower!r} given twice")
        normalized[lower] = value.strip()
    names = sorted(normalized)
    lines = "".join(f"{name}:{normalized[name]}\n" for name in names)
    return lines, ";".join(names)


@dataclass(frozen=True, slots=True)
class CanonicalRequest:
    """A canonical request and the header names it signs."""

    text: str
    """The full canonical request, lines joined by ``\\n``."""
    signed_headers: str
    """Lower-case header names joined by ``;`` (the ``SignedHeaders`` of the authorization)."""

    def string_to_sign(self, algorithm: Algorithm = Algorithm.V2) -> str:
        """The algorithm name, a newline and the hex SHA-256 of the canonical request."""
        return string_to_sign(self.text, algorithm)


def canonical_request(
    method: str,
    uri: str,
    query: QueryParams | None,
    headers: Mapping[str, str],
    payload: bytes | str,
    *,
    path_is_canonical: bool = False,
) -> CanonicalRequest:
    """Build the canonical request.

    ``uri`` is a URL or path canonicalized like the SDKs do; with ``path_is_canonical`` it is
    used as given (the client passes the exact encoded path it sends).
    """
    header_lines, signed = canonical_headers(headers)
    uri_part = uri if path_is_canonical else canonical_uri(uri)
    text = "\n".join(
        (
            method.upper(),
            uri_part,
            canonical_query(query),
            header_lines,
            signed,
            hex_sha256(payload),
        )
    )
    return CanonicalRequest(text=text, signed_headers=signed)


def string_to_sign(canonical: str, algorithm: Algorithm = Algorithm.V2) -> str:
    """``<algorithm>\\n<hex sha256(canonical request)>``."""
    return f"{Algorithm.parse(algorithm).value}\n{hex_sha256(canonical)}"


def button_string_to_sign(payload: str, algorithm: Algorithm = Algorithm.V2) -> str:
    """String to sign for an Amazon Pay button payload: hash of the exact payload text."""
    return f"{Algorithm.parse(algorithm).value}\n{hex_sha256(payload)}"


def _pss(algorithm: Algorithm) -> padding.PSS:
    return padding.PSS(mgf=padding.MGF1(hashes.SHA256()), salt_length=algorithm.salt_length)


class PrivateKey:
    """An RSA private key that never shows itself: not in repr, str, pickles or errors."""

    __slots__ = ("_key",)

    def __init__(self, key: rsa.RSAPrivateKey) -> None:
        if not isinstance(key, rsa.RSAPrivateKey):
            raise AmazonPayRequestError("Amazon Pay private keys must be RSA keys")
        self._key = key

    @classmethod
    def from_pem(cls, data: bytes | str, *, password: bytes | None = None) -> PrivateKey:
        """Load a PKCS#1 (``BEGIN RSA PRIVATE KEY``) or PKCS#8 (``BEGIN PRIVATE KEY``) PEM."""
        raw = data.encode("ascii", "replace") if isinstance(data, str) else data
        try:
            key = serialization.load_pem_private_key(raw, password=password)
        except (ValueError, TypeError, UnsupportedAlgorithm):
            _raise_unreadable("the given PEM data")
        if not isinstance(key, rsa.RSAPrivateKey):
            raise AmazonPayRequestError("Amazon Pay private keys must be RSA keys")
        return cls(key)

    @classmethod
    def from_file(cls, path: str | PathLike[str], *, password: bytes | None = None) -> PrivateKey:
        """Read a PEM key file (blocking: call it at start-up, not on the event loop)."""
        file = Path(path)
        try:
            data = file.read_bytes()
        except OSError as exc:
            raise AmazonPayRequestError(
                f"cannot read private key file {str(file)!r}: {exc.strerror}"
            ) from None
        try:
            return cls.from_pem(data, password=password)
        except AmazonPayRequestError:
            _raise_unreadable(f"file {str(file)!r}")

    @property
    def key_size(self) -> int:
        """Modulus size in bits."""
        return self._key.key_size

    def public_key(self) -> rsa.RSAPublicKey:
        """The matching public key (safe to share)."""
        return self._key.public_key()

    def public_key_pem(self) -> bytes:
        """The public key as SubjectPublicKeyInfo PEM, the form Seller Central takes."""
        return self.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )

    def sign(self, message: str | bytes, algorithm: Algorithm = Algorithm.V2) -> str:
        """RSASSA-PSS (SHA-256, MGF1-SHA-256) signature of ``message``, base64 encoded."""
        data = message.encode("utf-8") if isinstance(message, str) else message
        signature = self._key.sign(data, _pss(Algorithm.parse(algorithm)), hashes.SHA256())
        return base64.b64encode(signature).decode("ascii")

    def __repr__(self) -> str:
        return f"PrivateKey(<redacted RSA-{self._key.key_size}>)"

    __str__ = __repr__

    def __reduce__(self) -> NoReturn:
        raise TypeError("PrivateKey cannot be pickled")

    def __eq__(self, other: object) -> bool:
        return self is other

    def __hash__(self) -> int:
        return id(self)


def _raise_unreadable(source: str) -> NoReturn:
    raise AmazonPayRequestError(
        f"cannot load an RSA private key from {source}: expected an unencrypted (or correctly "
        "password-protected) PKCS#1 or PKCS#8 PEM"
    ) from None


@dataclass(frozen=True, slots=True)
class AuthorizationHeader:
    """The parts of an ``authorization`` header (for verifiers and tests)."""

    algorithm: Algorithm
    public_key_id: str
    signed_headers: tuple[str, ...]
    signature: str = ""

    def __repr__(self) -> str:
        return (
            f"AuthorizationHeader(algorithm={self.algorithm.value!r}, "
            f"public_key_id={self.public_key_id!r}, signed_headers={self.signed_headers!r}, "
            "signature=<redacted>)"
        )


def parse_authorization_header(value: str) -> AuthorizationHeader:
    """Split ``<alg> PublicKeyId=<id>, SignedHeaders=<a;b>, Signature=<b64>``."""
    match = _AUTHORIZATION.match(value.strip())
    if match is None:
        raise AmazonPayRequestError("malformed authorization header")
    return AuthorizationHeader(
        algorithm=Algorithm.parse(match["algorithm"]),
        public_key_id=match["key_id"],
        signed_headers=tuple(match["signed"].split(";")),
        signature=match["signature"],
    )


def verify_signature(
    public_key: rsa.RSAPublicKey | bytes,
    message: str | bytes,
    signature: str,
    algorithm: Algorithm = Algorithm.V2,
) -> bool:
    """True when ``signature`` (base64) is a valid PSS signature of ``message``."""
    if isinstance(public_key, bytes):
        loaded = serialization.load_pem_public_key(public_key)
        if not isinstance(loaded, rsa.RSAPublicKey):
            return False
        public_key = loaded
    data = message.encode("utf-8") if isinstance(message, str) else message
    try:
        raw = base64.b64decode(signature, validate=True)
        public_key.verify(raw, data, _pss(Algorithm.parse(algorithm)), hashes.SHA256())
    except (InvalidSignature, binascii.Error, ValueError):
        return False
    return True


@dataclass(frozen=True, slots=True)
class PendingAuthorization:
    """A canonicalised request whose RSA signature is still to be made.

    Canonicalisation is pure-Python work that needs the GIL; the RSA operation releases it. Doing
    the first on the event loop and only :meth:`sign` in a worker thread keeps the two threads
    from taking turns on the GIL (measured by ``make bench``: about 0.15 ms less CPU per call).
    """

    string_to_sign: str
    prefix: str = field(repr=False)
    key: PrivateKey = field(repr=False)
    algorithm: Algorithm

    def sign(self) -> str:
        """The ``authorization`` header value."""
        return f"{self.prefix}{self.key.sign(self.string_to_sign, self.algorithm)}"


class RequestSigner:
    """Signs requests and button payloads for one public key id."""

    __slots__ = ("_algorithm", "_private_key", "_public_key_id")

    def __init__(
        self, public_key_id: str, private_key: PrivateKey, algorithm: Algorithm = Algorithm.V2
    ) -> None:
        self._public_key_id = public_key_id
        self._private_key = private_key
        self._algorithm = Algorithm.parse(algorithm)

    @property
    def algorithm(self) -> Algorithm:
        """The algorithm every signature of this signer uses."""
        return self._algorithm

    def authorization(self, request: CanonicalRequest) -> str:
        """The ``authorization`` header value of `request` (see :func:`canonical_request`)."""
        return self.prepare(request).sign()

    def prepare(self, request: CanonicalRequest) -> PendingAuthorization:
        """Everything of :meth:`authorization` but the RSA operation."""
        return PendingAuthorization(
            string_to_sign=request.string_to_sign(self._algorithm),
            prefix=(
                f"{self._algorithm.value} PublicKeyId={self._public_key_id}, "
                f"SignedHeaders={request.signed_headers}, Signature="
            ),
            key=self._private_key,
            algorithm=self._algorithm,
        )

    def sign_button_payload(self, payload: str) -> str:
        """``generateButtonSignature``: base64 signature over the exact payload text."""
        return self._private_key.sign(
            button_string_to_sign(payload, self._algorithm), self._algorithm
        )

    def __repr__(self) -> str:
        return (
            f"RequestSigner(public_key_id={self._public_key_id!r}, "
            f"algorithm={self._algorithm.value!r}, private_key=<redacted>)"
        )
