"""HTTPS endpoint override trusted through a custom CA file (real TLS over loopback)."""

from __future__ import annotations

import asyncio
import datetime as dt
import ipaddress
import ssl
from pathlib import Path

import pytest
import uvloop
from aiohttp import web
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from service.amazonpay import (
    AmazonPayClient,
    AmazonPayConnectionError,
    MerchantAccount,
    PrivateKey,
    Refund,
)

from ._server import PRIVATE_KEY_FILE


def _self_signed(tmp_path: Path) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_file = tmp_path / "cert.pem"
    key_file = tmp_path / "key.pem"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_file, key_file


async def _https_round_trip(tmp_path: Path, trusted: bool, loop_module: str) -> None:
    assert type(asyncio.get_running_loop()).__module__.split(".")[0] == loop_module
    cert_file, key_file = _self_signed(tmp_path)
    hosts: list[str] = []

    async def handle(request: web.Request) -> web.Response:
        hosts.append(request.headers["x-amz-pay-host"])
        return web.json_response({"refundId": "S01-1-R1"}, status=200)

    app = web.Application()
    app.router.add_get("/{tail:.*}", handle)
    runner = web.AppRunner(app)
    await runner.setup()
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert_file, key_file)
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=context)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    account = MerchantAccount(
        public_key_id="AH1",
        private_key=PrivateKey.from_file(PRIVATE_KEY_FILE),
        endpoint=f"https://127.0.0.1:{port}",
        ca_file=str(cert_file) if trusted else None,
    )
    try:
        async with AmazonPayClient(account) as client:
            if trusted:
                refund = await client.invoke("GetRefund", path_params={"refundId": "S01-1-R1"})
                assert isinstance(refund, Refund)
                assert refund.refund_id == "S01-1-R1"
                assert hosts == [f"127.0.0.1:{port}"]
            else:
                with pytest.raises(AmazonPayConnectionError) as info:
                    await client.invoke("GetRefund", path_params={"refundId": "S01-1-R1"})
                assert not info.value.retryable
                assert info.value.attempts == 1
                assert hosts == []
    finally:
        await runner.cleanup()


@pytest.mark.parametrize("trusted", [True, False])
async def test_https_endpoint_works_only_with_its_ca_file(tmp_path: Path, trusted: bool) -> None:
    await _https_round_trip(tmp_path, trusted, "asyncio")


@pytest.mark.parametrize("trusted", [True, False])
async def test_https_under_uvloop_the_service_default_loop(tmp_path: Path, trusted: bool) -> None:
    """uvloop has its own TLS transport; the service runs on it (EVENT_LOOP) in production."""
    await asyncio.to_thread(uvloop.run, _https_round_trip(tmp_path, trusted, "uvloop"))
