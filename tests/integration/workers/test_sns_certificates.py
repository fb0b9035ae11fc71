"""SNS signature verification against a certificate served over real HTTP."""

from __future__ import annotations

import asyncio
import base64
from datetime import UTC, datetime, timedelta

import pytest
from aiohttp import web
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.x509.oid import NameOID

from service.workers import SnsError, SnsVerifier, string_to_sign
from tests.unit.workers.test_sns import ENVELOPE


def _key_and_certificate() -> tuple[rsa.RSAPrivateKey, bytes]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "sns.amazonaws.com")])
    now = datetime.now(UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(now - timedelta(days=1))
        .not_valid_after(now + timedelta(days=1))
        .sign(key, hashes.SHA256())
    )
    return key, cert.public_bytes(serialization.Encoding.PEM)


def _signed(key: rsa.RSAPrivateKey, cert_url: str) -> dict[str, str]:
    envelope = {**ENVELOPE, "SignatureVersion": "2", "SigningCertURL": cert_url}
    signature = key.sign(string_to_sign(envelope), padding.PKCS1v15(), hashes.SHA256())
    envelope["Signature"] = base64.b64encode(signature).decode()
    return envelope


async def _dropping_server(pem: bytes, drops: int) -> tuple[asyncio.Server, list[int]]:
    """Plain HTTP over asyncio: the first `drops` requests lose their connection unanswered."""
    seen = [0]

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        seen[0] += 1
        if seen[0] > drops:
            head = f"HTTP/1.1 200 OK\r\nContent-Length: {len(pem)}\r\nConnection: close\r\n\r\n"
            writer.write(head.encode() + pem)
            await writer.drain()
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    return server, seen


async def test_a_certificate_fetch_whose_connection_breaks_is_tried_once_more() -> None:
    """aiohttp repeats an idempotent request once when the connection breaks unanswered."""
    key, pem = _key_and_certificate()
    server, seen = await _dropping_server(pem, drops=1)
    host = f"127.0.0.1:{server.sockets[0].getsockname()[1]}"
    verifier = SnsVerifier(extra_cert_hosts=[host])
    try:
        await verifier.verify(_signed(key, f"http://{host}/cert.pem"))
    finally:
        await verifier.close()
        server.close()
    assert seen[0] == 2


async def test_a_certificate_that_stays_unreachable_is_a_retryable_refusal() -> None:
    key, pem = _key_and_certificate()
    server, seen = await _dropping_server(pem, drops=2)
    host = f"127.0.0.1:{server.sockets[0].getsockname()[1]}"
    verifier = SnsVerifier(extra_cert_hosts=[host])
    try:
        with pytest.raises(SnsError) as caught:
            await verifier.verify(_signed(key, f"http://{host}/cert.pem"))
    finally:
        await verifier.close()
        server.close()
    assert caught.value.reason == "certificate_unavailable"  # the receiver answers 503
    assert seen[0] == 2


async def test_a_signature_from_a_served_certificate_verifies(unused_tcp_port: int) -> None:
    key, pem = _key_and_certificate()
    app = web.Application()

    async def serve_cert(_: web.Request) -> web.Response:
        return web.Response(body=pem)

    app.router.add_get("/cert.pem", serve_cert)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", unused_tcp_port).start()
    host = f"127.0.0.1:{unused_tcp_port}"
    verifier = SnsVerifier(extra_cert_hosts=[host])
    try:
        for version, digest in (("1", hashes.SHA1()), ("2", hashes.SHA256())):  # noqa: S303
            envelope = {
                **ENVELOPE,
                "SignatureVersion": version,
                "SigningCertURL": f"http://{host}/cert.pem",
            }
            signature = key.sign(string_to_sign(envelope), padding.PKCS1v15(), digest)
            envelope["Signature"] = base64.b64encode(signature).decode()
            await verifier.verify(envelope)
            tampered = {**envelope, "Message": '{"NotificationId":"n-2"}'}
            with pytest.raises(SnsError) as caught:
                await verifier.verify(tampered)
            assert caught.value.reason == "bad_signature"
    finally:
        await verifier.close()
        await runner.cleanup()


async def test_a_slow_certificate_host_does_not_delay_another_certificate() -> None:
    """Fetches are per URL: a genuine IPN's certificate is fetched while another URL hangs."""
    key, pem = _key_and_certificate()
    release = asyncio.Event()
    all_slow_arrived = asyncio.Event()
    slow_requests = [0]

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        request = await reader.readuntil(b"\r\n\r\n")
        if request.startswith(b"GET /slow"):
            slow_requests[0] += 1
            if slow_requests[0] == 5:
                all_slow_arrived.set()
            await release.wait()
        head = f"HTTP/1.1 200 OK\r\nContent-Length: {len(pem)}\r\nConnection: close\r\n\r\n"
        writer.write(head.encode() + pem)
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    host = f"127.0.0.1:{server.sockets[0].getsockname()[1]}"
    verifier = SnsVerifier(extra_cert_hosts=[host])
    try:
        stuck = [
            asyncio.create_task(verifier.verify(_signed(key, f"http://{host}/slow-{i}.pem")))
            for i in range(5)
        ]
        shared = [
            asyncio.create_task(verifier.verify(_signed(key, f"http://{host}/slow-0.pem")))
            for _ in range(3)
        ]
        await asyncio.wait_for(all_slow_arrived.wait(), 10)
        # Bounded only so a regression fails instead of hanging; the slow fetches never finish
        # before `release`, so this passing means nothing waited for them.
        await asyncio.wait_for(verifier.verify(_signed(key, f"http://{host}/genuine.pem")), 4)
        assert not any(t.done() for t in stuck + shared)
        release.set()
        await asyncio.gather(*stuck, *shared)
        assert slow_requests[0] == 5, "concurrent verifications of one URL share one fetch"
    finally:
        release.set()
        await verifier.close()
        server.close()
