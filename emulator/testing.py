"""A minimal Amazon Pay signer and client for tests and benchmarks that drive the emulator.

Deliberately separate from `service/amazonpay` (the real client) so each checks the other.
"""

from __future__ import annotations

import base64
import hashlib
import json
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import aiohttp
import yarl
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from .signing import (
    ALGORITHM_V2,
    SALT_LENGTHS,
    canonical_query,
    canonical_uri,
    string_to_sign,
)


def generate_key() -> tuple[rsa.RSAPrivateKey, str]:
    """A fresh RSA-2048 key and its SubjectPublicKeyInfo PEM."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return key, pem.decode()


def sign_headers(
    private_key: rsa.RSAPrivateKey,
    public_key_id: str,
    method: str,
    path: str,
    body: bytes = b"",
    *,
    query: str = "",
    headers: dict[str, str] | None = None,
    algorithm: str = ALGORITHM_V2,
    host: str = "pay-api.amazon.com",
    region: str = "na",
    date: str | None = None,
    salt_length: int | None = None,
) -> dict[str, str]:
    """Return all request headers, signing every one of them as the official SDKs do."""
    out = {
        "accept": "application/json",
        "content-type": "application/json",
        "x-amz-pay-date": date or datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ"),
        "x-amz-pay-host": host,
        "x-amz-pay-region": region,
    }
    out.update({k.lower(): v for k, v in (headers or {}).items()})
    names = sorted(out)
    lines = [method, canonical_uri(path), canonical_query(query)]
    lines += [f"{n}:{out[n].strip()}" for n in names]
    lines += ["", ";".join(names), hashlib.sha256(body).hexdigest()]
    to_sign = string_to_sign(algorithm, "\n".join(lines))
    salt = SALT_LENGTHS[algorithm] if salt_length is None else salt_length
    signature = private_key.sign(
        to_sign.encode(),
        padding.PSS(mgf=padding.MGF1(hashes.SHA256()), salt_length=salt),
        hashes.SHA256(),
    )
    out["authorization"] = (
        f"{algorithm} PublicKeyId={public_key_id}, SignedHeaders={';'.join(names)}, "
        f"Signature={base64.b64encode(signature).decode()}"
    )
    return out


@dataclass
class Reply:
    status: int
    body: Any
    headers: dict[str, str]


class SignedClient:
    """Signs and sends API calls; `prefix` picks /sandbox/v2, /live/v2 or /v2."""

    def __init__(
        self,
        session: aiohttp.ClientSession,
        base_url: str,
        private_key: rsa.RSAPrivateKey,
        public_key_id: str,
        prefix: str = "/sandbox/v2",
        region: str = "na",
    ) -> None:
        self.session = session
        self.base_url = base_url.rstrip("/")
        self.private_key = private_key
        self.public_key_id = public_key_id
        self.prefix = prefix
        self.region = region

    async def call(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        idempotency_key: str | None = None,
        simulation: str | None = None,
        extra_headers: dict[str, str] | None = None,
        auto_key: bool = True,
        query: str = "",
    ) -> Reply:
        """Sign and send; `query` is the raw (already encoded) query string, signed too."""
        raw = b"" if body is None else json.dumps(body).encode()
        headers: dict[str, str] = dict(extra_headers or {})
        if method == "POST" and auto_key and idempotency_key is None:
            idempotency_key = uuid.uuid4().hex
        if idempotency_key is not None:
            headers["x-amz-pay-idempotency-key"] = idempotency_key
        if simulation is not None:
            headers["x-amz-pay-simulation-code"] = simulation
        full_path = self.prefix + path
        signed = sign_headers(
            self.private_key,
            self.public_key_id,
            method=method,
            path=full_path,
            body=raw,
            query=query,
            headers=headers,
            region=self.region,
        )
        url = self.base_url + full_path + (f"?{query}" if query else "")
        async with self.session.request(
            method, yarl.URL(url, encoded=True), data=raw or None, headers=signed
        ) as resp:
            text = await resp.text()
            data = json.loads(text) if text else None
            return Reply(resp.status, data, dict(resp.headers))

    async def control(self, method: str, path: str, body: Any = None) -> Reply:
        async with self.session.request(
            method, f"{self.base_url}/_emulator{path}", json=body
        ) as resp:
            text = await resp.text()
            try:
                data = json.loads(text) if text else None
            except ValueError:
                data = text
            return Reply(resp.status, data, dict(resp.headers))
