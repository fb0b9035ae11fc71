"""TLS, mTLS and the bearer token as they arrive on the wire.

The service itself does not terminate TLS yet (a mesh does), so this endpoint is a real
grpc.aio TLS server that requires a client certificate and records each call's metadata: it
tests the client's channel and credentials, not the service.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import pytest
from amazonpay_client import AmazonPayClient, UnavailableError
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from payments.amazonpay.v1 import button_pb2


@dataclass
class Pki:
    ca: bytes
    server_cert: bytes
    server_key: bytes
    client_cert: bytes
    client_key: bytes
    directory: Path


def _issue(
    subject: str,
    key: ec.EllipticCurvePrivateKey,
    issuer: tuple[x509.Name, ec.EllipticCurvePrivateKey] | None,
    *,
    ca: bool = False,
    server: bool = False,
) -> x509.Certificate:
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)])
    issuer_name, issuer_key = issuer or (name, key)
    now = dt.datetime.now(dt.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(issuer_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(hours=1))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if server:
        builder = builder.add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
    return builder.sign(issuer_key, hashes.SHA256())


def _pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = _issue("test CA", ca_key, None, ca=True)
    issuer = (ca.subject, ca_key)
    server_key = ec.generate_private_key(ec.SECP256R1())
    client_key = ec.generate_private_key(ec.SECP256R1())
    directory = tmp_path_factory.mktemp("pki")
    pki = Pki(
        _pem(ca),
        _pem(_issue("localhost", server_key, issuer, server=True)),
        _key_pem(server_key),
        _pem(_issue("orders-service", client_key, issuer)),
        _key_pem(client_key),
        directory,
    )
    for name in ("ca", "client_cert", "client_key"):
        (directory / f"{name}.pem").write_bytes(getattr(pki, name))
    return pki


@dataclass
class Recorder:
    port: int
    calls: list[dict[str, str]] = field(default_factory=list)


@pytest.fixture
async def mtls_endpoint(pki: Pki) -> AsyncIterator[Recorder]:
    server = grpc.aio.server()
    recorder = Recorder(0)

    async def sign(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
        metadata = {k: str(v) for k, v in context.invocation_metadata() or ()}
        peer = list(context.auth_context().get("x509_common_name", [b""]))
        metadata["peer_common_name"] = peer[0].decode()
        recorder.calls.append(metadata)
        return button_pb2.SignButtonPayloadResponse(payload=request.payload)

    handler = grpc.method_handlers_generic_handler(
        "payments.amazonpay.v1.ButtonService",
        {
            "SignButtonPayload": grpc.unary_unary_rpc_method_handler(
                sign,
                request_deserializer=button_pb2.SignButtonPayloadRequest.FromString,
                response_serializer=button_pb2.SignButtonPayloadResponse.SerializeToString,
            )
        },
    )
    server.add_generic_rpc_handlers((handler,))
    credentials = grpc.ssl_server_credentials(
        [(pki.server_key, pki.server_cert)], root_certificates=pki.ca, require_client_auth=True
    )
    recorder.port = server.add_secure_port("127.0.0.1:0", credentials)
    await server.start()
    try:
        yield recorder
    finally:
        await server.stop(None)


async def test_mtls_with_a_private_ca_and_the_bearer_token_reach_the_server(
    pki: Pki, mtls_endpoint: Recorder
) -> None:
    async with AmazonPayClient(
        f"localhost:{mtls_endpoint.port}",
        root_certificates=pki.directory / "ca.pem",
        client_certificate=pki.directory / "client_cert.pem",
        client_key=pki.directory / "client_key.pem",
        token="s3cr3t-token",
        metadata=[("x-caller", "orders")],
    ) as client:
        reply = await client.buttons.sign_payload("{}")
    assert reply.payload == "{}"
    [call] = mtls_endpoint.calls
    assert call["authorization"] == "Bearer s3cr3t-token"
    assert call["x-caller"] == "orders"
    assert call["peer_common_name"] == "orders-service"


async def test_a_token_function_is_asked_on_every_call(pki: Pki, mtls_endpoint: Recorder) -> None:
    tokens = iter(["first", "second"])
    async with AmazonPayClient(
        f"localhost:{mtls_endpoint.port}",
        root_certificates=pki.ca,
        client_certificate=pki.client_cert,
        client_key=pki.client_key,
        token=lambda: next(tokens),
    ) as client:
        await client.buttons.sign_payload("{}")
        await client.buttons.sign_payload("{}")
    assert [c["authorization"] for c in mtls_endpoint.calls] == ["Bearer first", "Bearer second"]


async def test_without_a_client_certificate_the_handshake_fails_as_unavailable(
    pki: Pki, mtls_endpoint: Recorder
) -> None:
    async with AmazonPayClient(
        f"localhost:{mtls_endpoint.port}", root_certificates=pki.ca, read_timeout=3
    ) as client:
        with pytest.raises(UnavailableError):
            await client.buttons.sign_payload("{}")
    assert mtls_endpoint.calls == []


async def test_a_server_outside_the_trusted_ca_is_refused(
    pki: Pki, mtls_endpoint: Recorder
) -> None:
    async with AmazonPayClient(
        f"localhost:{mtls_endpoint.port}",
        tls=True,  # system roots only: the private CA is not trusted
        client_certificate=pki.client_cert,
        client_key=pki.client_key,
        read_timeout=3,
    ) as client:
        with pytest.raises(UnavailableError):
            await client.buttons.sign_payload("{}")
    assert mtls_endpoint.calls == []


def test_half_an_mtls_pair_is_refused_up_front(pki: Pki) -> None:
    with pytest.raises(ValueError, match="both"):
        AmazonPayClient("localhost:1", client_certificate=pki.client_cert)
