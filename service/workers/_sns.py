"""Verification of Amazon SNS envelopes (the transport of Amazon Pay IPNs).

A notification is trusted only when its signature verifies with a certificate fetched from an
allowed host: `sns.<region>.amazonaws.com` over https in production, plus hosts named explicitly
for development (the local emulator). Certificates are cached by URL.
"""

from __future__ import annotations

import asyncio
import base64
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import partial
from typing import Any
from urllib.parse import urlsplit

import aiohttp
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa

__all__ = ["SnsError", "SnsVerifier", "string_to_sign"]

# sns.<region>.amazonaws.com[.cn], a region being e.g. us-east-1, us-gov-west-1, cn-north-1: not
# just any label, since other AWS services (sns.s3...?) share the domain.
_SNS_HOST = re.compile(r"^sns\.[a-z]{2}(?:-[a-z]+)+-[0-9]{1,2}\.amazonaws\.com(?:\.cn)?$")
_REQUIRED = (
    "Type",
    "MessageId",
    "TopicArn",
    "Message",
    "Timestamp",
    "SignatureVersion",
    "Signature",
    "SigningCertURL",
)
_MAX_CERT_BYTES = 16 * 1024


class SnsError(ValueError):
    """The envelope cannot be trusted; `reason` is a short machine-readable word."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason


def string_to_sign(envelope: Mapping[str, Any]) -> bytes:
    """SNS canonical form of a Notification: `Key\\nValue\\n` for the signed keys, in order."""
    keys = ["Message", "MessageId"]
    if envelope.get("Subject") is not None:
        keys.append("Subject")
    keys += ["Timestamp", "TopicArn", "Type"]
    return "".join(f"{key}\n{envelope[key]}\n" for key in keys).encode()


@dataclass
class _CachedCert:
    key: rsa.RSAPublicKey
    not_after: datetime


class SnsVerifier:
    def __init__(
        self,
        *,
        extra_cert_hosts: Iterable[str] = (),
        topic_arns: Iterable[str] = (),
        session: aiohttp.ClientSession | None = None,
        cache_size: int = 32,
    ) -> None:
        self._extra_hosts = frozenset(extra_cert_hosts)
        self._topics = frozenset(topic_arns)
        self._session = session
        self._owns_session = session is None
        self._cache: dict[str, _CachedCert] = {}
        self._cache_size = cache_size
        self._fetching: dict[str, asyncio.Task[_CachedCert]] = {}

    def check_cert_url(self, url: str) -> None:
        try:
            parts = urlsplit(url)
            hostname = parts.hostname or ""
        except ValueError:
            raise SnsError("untrusted_certificate_host", "certificate URL is malformed") from None
        if parts.netloc in self._extra_hosts and parts.scheme in ("http", "https"):
            return
        if parts.scheme != "https" or not _SNS_HOST.match(hostname) or parts.username:
            raise SnsError("untrusted_certificate_host", f"host {parts.netloc!r} is not allowed")
        if not parts.path.endswith(".pem"):
            raise SnsError("untrusted_certificate_host", "certificate URL must name a .pem file")

    async def verify(self, envelope: Mapping[str, Any]) -> None:
        missing = [k for k in _REQUIRED if not isinstance(envelope.get(k), str)]
        if missing:
            raise SnsError("malformed", f"missing or non-string fields {missing}")
        if envelope["Type"] != "Notification":
            raise SnsError("unsupported_type", f"Type {envelope['Type']!r} is not handled")
        if self._topics and envelope["TopicArn"] not in self._topics:
            raise SnsError("unexpected_topic", "TopicArn is not the configured topic")
        algorithm: hashes.HashAlgorithm
        if envelope["SignatureVersion"] == "1":
            algorithm = hashes.SHA1()  # noqa: S303 - SNS SignatureVersion 1 is defined as SHA1withRSA
        elif envelope["SignatureVersion"] == "2":
            algorithm = hashes.SHA256()
        else:
            raise SnsError("malformed", "SignatureVersion must be 1 or 2")
        self.check_cert_url(envelope["SigningCertURL"])
        try:
            signature = base64.b64decode(envelope["Signature"], validate=True)
        except ValueError:
            raise SnsError("bad_signature", "Signature is not base64") from None
        key = await self._certificate(envelope["SigningCertURL"])
        try:
            key.verify(signature, string_to_sign(envelope), padding.PKCS1v15(), algorithm)
        except InvalidSignature:
            raise SnsError("bad_signature", "signature does not verify") from None

    async def _certificate(self, url: str) -> rsa.RSAPublicKey:
        """The cached key, or one fetch per URL shared by its concurrent callers.

        Fetches of different URLs run side by side: a slow or failing certificate host (any
        `.pem` path on an allowed host can be named by anyone who can reach the port) never
        delays the verification of a notification signed with another certificate.
        """
        cached = self._cache.get(url)
        if cached is not None and cached.not_after > datetime.now(UTC):
            return cached.key
        task = self._fetching.get(url)
        if task is None:
            task = asyncio.create_task(self._load(url), name="sns-certificate")
            self._fetching[url] = task
            task.add_done_callback(partial(self._fetched, url))
        # Shielded: one caller's cancellation must not cancel the fetch the others await.
        return (await asyncio.shield(task)).key

    def _fetched(self, url: str, task: asyncio.Task[_CachedCert]) -> None:
        self._fetching.pop(url, None)
        if not task.cancelled():
            task.exception()  # retrieved here too, in case every waiter was cancelled

    async def _load(self, url: str) -> _CachedCert:
        pem = await self._fetch(url)
        now = datetime.now(UTC)
        try:
            cert = x509.load_pem_x509_certificate(pem)
        except ValueError:
            raise SnsError("bad_certificate", "not a PEM certificate") from None
        if not cert.not_valid_before_utc <= now <= cert.not_valid_after_utc:
            raise SnsError("bad_certificate", "certificate is not currently valid")
        key = cert.public_key()
        if not isinstance(key, rsa.RSAPublicKey):
            raise SnsError("bad_certificate", "certificate key is not RSA")
        if len(self._cache) >= self._cache_size:
            self._cache.pop(next(iter(self._cache)))
        entry = self._cache[url] = _CachedCert(key, cert.not_valid_after_utc)
        return entry

    async def _fetch(self, url: str) -> bytes:
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5))
        try:
            async with self._session.get(url, allow_redirects=False) as response:
                if response.status != 200:
                    raise SnsError(
                        "bad_certificate", f"certificate fetch answered {response.status}"
                    )
                body = await response.content.read(_MAX_CERT_BYTES + 1)
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise SnsError("certificate_unavailable", type(exc).__name__) from None
        if len(body) > _MAX_CERT_BYTES:
            raise SnsError("bad_certificate", "certificate is too large")
        return body

    async def close(self) -> None:
        for task in list(self._fetching.values()):
            task.cancel()
        if self._owns_session and self._session is not None:
            await self._session.close()
            self._session = None
