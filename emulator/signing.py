"""Amazon Pay request-signature verification, written independently of `service/`.

The canonical request is rebuilt from the `SignedHeaders` list the client sends, because the
official SDKs sign different header sets (the Node SDK also signs `user-agent`).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from urllib.parse import quote, unquote, unquote_to_bytes

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

ALGORITHM_V2 = "AMZN-PAY-RSASSA-PSS-V2"
ALGORITHM_V1 = "AMZN-PAY-RSASSA-PSS"
SALT_LENGTHS: dict[str, int] = {ALGORITHM_V2: 32, ALGORITHM_V1: 20}
EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()

_SLASHES = re.compile(rb"/{2,}")
_AUTH_RE = re.compile(
    r"^(?P<alg>[A-Z0-9-]+)\s+PublicKeyId=(?P<key>[^,\s]+),\s*"
    r"SignedHeaders=(?P<headers>[^,\s]+),\s*Signature=(?P<sig>\S+)$"
)


class SignatureError(Exception):
    """Why a request failed authentication, with Amazon's status and reasonCode."""

    def __init__(self, status: int, reason_code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.reason_code = reason_code
        self.message = message


@dataclass(frozen=True, slots=True)
class Authorization:
    algorithm: str
    public_key_id: str
    signed_headers: tuple[str, ...]
    signature: bytes


def canonical_uri(raw_path: str) -> str:
    """Percent-decode the path as received, collapse slashes, re-encode per Amazon's rules."""
    decoded = _SLASHES.sub(b"/", unquote_to_bytes(raw_path))
    if not decoded:
        return "/"
    return quote(decoded, safe="/-_.~")


def _rfc3986(value: str) -> str:
    return quote(value, safe="-_.~")


def canonical_query(raw_query: str) -> str:
    """Sort RFC 3986-encoded pairs by encoded name, then value."""
    if not raw_query:
        return ""
    pairs: list[tuple[str, str]] = []
    for part in raw_query.split("&"):
        if not part:
            continue
        name, _, value = part.partition("=")
        pairs.append((_rfc3986(unquote(name)), _rfc3986(unquote(value))))
    pairs.sort()
    return "&".join(f"{n}={v}" for n, v in pairs)


def canonical_query_from_params(params: Mapping[str, list[str]]) -> str:
    pairs = sorted((_rfc3986(k), _rfc3986(v)) for k, vs in params.items() for v in vs)
    return "&".join(f"{n}={v}" for n, v in pairs)


def parse_authorization(value: str) -> Authorization:
    match = _AUTH_RE.match(value.strip())
    if match is None:
        raise SignatureError(400, "InvalidHeaderValue", "The authorization header is malformed")
    algorithm = match["alg"]
    if algorithm not in SALT_LENGTHS:
        raise SignatureError(
            400, "InvalidHeaderValue", f"Unsupported signature algorithm '{algorithm}'"
        )
    try:
        signature = base64.b64decode(match["sig"], validate=True)
    except (binascii.Error, ValueError) as exc:
        raise SignatureError(
            403, "InvalidRequestSignature", "The signature is not valid base64"
        ) from exc
    headers = tuple(h.strip().lower() for h in match["headers"].split(";") if h.strip())
    return Authorization(
        algorithm=algorithm, public_key_id=match["key"], signed_headers=headers, signature=signature
    )


def canonical_request(
    method: str,
    canonical_path: str,
    canonical_qs: str,
    signed_headers: tuple[str, ...],
    header_value: Callable[[str], str | None],
    body_sha256_hex: str,
) -> str:
    """Headers are emitted in the order the client listed them; conforming clients sort them."""
    lines = [method, canonical_path, canonical_qs]
    for name in signed_headers:
        value = header_value(name)
        if value is None:
            raise SignatureError(400, "MissingHeader", f"Signed header '{name}' is missing")
        lines.append(f"{name}:{value.strip()}")
    lines.append("")
    lines.append(";".join(signed_headers))
    lines.append(body_sha256_hex)
    return "\n".join(lines)


def string_to_sign(algorithm: str, canonical: str) -> str:
    return f"{algorithm}\n{hashlib.sha256(canonical.encode()).hexdigest()}"


def load_public_key(pem: str | bytes) -> rsa.RSAPublicKey:
    """Accept SubjectPublicKeyInfo or PKCS#1 PEM."""
    data = pem.encode() if isinstance(pem, str) else pem
    key = serialization.load_pem_public_key(data)
    if not isinstance(key, rsa.RSAPublicKey):
        raise ValueError("Only RSA public keys are supported")
    return key


def verify_signature(
    public_key: rsa.RSAPublicKey, algorithm: str, to_sign: str, signature: bytes
) -> bool:
    """PSS with SHA-256/MGF1-SHA-256; the salt length is enforced exactly (32 for V2, 20 for V1)."""
    try:
        public_key.verify(
            signature,
            to_sign.encode(),
            padding.PSS(mgf=padding.MGF1(hashes.SHA256()), salt_length=SALT_LENGTHS[algorithm]),
            hashes.SHA256(),
        )
    except InvalidSignature:
        return False
    return True
