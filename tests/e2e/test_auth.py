"""Transport security and caller identity of the whole service: TLS, mutual TLS, bearer tokens and
per-caller allowlists, over real gRPC with the real emulator and Postgres."""

from __future__ import annotations

import hashlib
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from payments.amazonpay.v1 import charge_pb2, ledger_pb2, refund_pb2
from payments.amazonpay.v1 import checkout_session_pb2 as cs
from service.app import Application
from service.config import load_settings
from tests._certs import CertificateAuthority, Issued
from tests._emulator import EmulatorProcess
from tests._process import ServiceProcess
from tests.e2e._flows import checkout, failure, key, usd
from tests.e2e.conftest import Keys, Stubs, service_env, stubs_for

ORDER_TOKEN = "order-service-token-5f1c0d2e9a"
SUPPORT_TOKEN = "support-tool-token-77aa01bc3d"
SUPPORT_NEXT_TOKEN = "support-tool-token-rotated-0042"
PKG = "payments.amazonpay.v1"


def sha256_hex(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


CALLERS = f"""
[callers.order-service]
token_sha256 = "{sha256_hex(ORDER_TOKEN)}"
certificate_names = ["order-service"]
allow = ["{PKG}.CheckoutSessionService/*", "{PKG}.ChargeService/*", "{PKG}.LedgerService/Get*"]
merchants = ["*"]

[callers.support-tool]
token_sha256 = ["{sha256_hex(SUPPORT_TOKEN)}", "{sha256_hex(SUPPORT_NEXT_TOKEN)}"]
certificate_names = ["spiffe://payments/support-tool"]
allow = ["{PKG}.RefundService/*", "{PKG}.ChargeService/Get*", "{PKG}.LedgerService/*"]
merchants = ["*"]
"""


@dataclass(frozen=True)
class Pki:
    ca: CertificateAuthority
    server: Issued
    order_client: Issued
    support_client: Issued
    stranger_client: Issued
    """Signed by the CA, but its name is in no caller's certificate_names."""
    rogue_client: Issued
    """Named like order-service, signed by another CA."""
    rogue_ca: CertificateAuthority


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    ca = CertificateAuthority(tmp_path_factory.mktemp("ca"))
    rogue_ca = CertificateAuthority(tmp_path_factory.mktemp("rogue-ca"), "Rogue CA")
    return Pki(
        ca=ca,
        server=ca.server(),
        order_client=ca.client("order", "order-service", dns=("order-service",)),
        support_client=ca.client("support", "support", uris=("spiffe://payments/support-tool",)),
        stranger_client=ca.client("stranger", "stranger", dns=("stranger",)),
        rogue_client=rogue_ca.client("rogue", "order-service", dns=("order-service",)),
        rogue_ca=rogue_ca,
    )


@pytest.fixture
def env(
    database_url: str, clean_emulator: EmulatorProcess, keys: Keys, tmp_path: Path, pki: Pki
) -> dict[str, str]:
    """The usual e2e service plus TLS (no client certificates yet)."""
    return {
        **service_env(database_url, clean_emulator, keys, tmp_path),
        "GRPC_TLS_CERT_FILE": str(pki.server.cert_file),
        "GRPC_TLS_KEY_FILE": str(pki.server.key_file),
    }


def callers_file(tmp_path: Path) -> str:
    path = tmp_path / "callers.toml"
    path.write_text(CALLERS)
    return str(path)


@asynccontextmanager
async def running(env: dict[str, str]) -> AsyncIterator[str]:
    application = Application(load_settings(env))
    await application.start()
    try:
        yield f"127.0.0.1:{application.grpc_port}"
    finally:
        await application.stop()


def tls(ca: CertificateAuthority, client: Issued | None = None) -> grpc.ChannelCredentials:
    return grpc.ssl_channel_credentials(
        ca.cert_pem, client.key_pem if client else None, client.cert_pem if client else None
    )


def with_token(ca: CertificateAuthority, token: str) -> grpc.ChannelCredentials:
    """TLS plus `authorization: Bearer <token>` on every call."""
    return grpc.composite_channel_credentials(tls(ca), grpc.access_token_call_credentials(token))


@asynccontextmanager
async def stubs(target: str, credentials: grpc.ChannelCredentials) -> AsyncIterator[Stubs]:
    async with grpc.aio.secure_channel(target, credentials) as channel:
        yield stubs_for(channel, target)


async def health_status(channel: grpc.aio.Channel) -> int:
    reply = await health_pb2_grpc.HealthStub(channel).Check(
        health_pb2.HealthCheckRequest(service=""), timeout=5
    )
    return int(reply.status)


async def test_tls_serves_clients_that_trust_the_ca_and_refuses_plaintext(
    env: dict[str, str], pki: Pki
) -> None:
    async with running(env) as target:
        async with stubs(target, tls(pki.ca)) as api:
            listed = await api.ledger.ListTransactions(
                ledger_pb2.ListTransactionsRequest(), timeout=10
            )
            assert list(listed.transactions) == []
        async with grpc.aio.insecure_channel(target) as plaintext:
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await health_status(plaintext)
            assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
        async with grpc.aio.secure_channel(target, tls(pki.rogue_ca)) as untrusting:
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await health_status(untrusting)
            assert caught.value.code() == grpc.StatusCode.UNAVAILABLE


async def test_mutual_tls_identifies_callers_by_certificate_and_refuses_other_clients(
    env: dict[str, str], pki: Pki, tmp_path: Path
) -> None:
    env |= {
        "GRPC_TLS_CLIENT_CA_FILE": str(pki.ca.cert_file),
        "GRPC_CALLERS_FILE": callers_file(tmp_path),
    }
    async with running(env) as target:
        async with stubs(target, tls(pki.ca, pki.order_client)) as order:
            created = await order.sessions.CreateCheckoutSession(
                cs.CreateCheckoutSessionRequest(
                    idempotency_key=key(),
                    web_checkout_details=cs.WebCheckoutDetails(
                        checkout_review_return_url="https://shop.example/review"
                    ),
                ),
                timeout=10,
            )
            assert created.checkout_session.checkout_session_id
        async with stubs(target, tls(pki.ca, pki.support_client)) as support:
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await support.sessions.CreateCheckoutSession(
                    cs.CreateCheckoutSessionRequest(idempotency_key=key()), timeout=10
                )
            denied = failure(caught.value)
            assert (denied.code, denied.reason) == (
                grpc.StatusCode.PERMISSION_DENIED,
                "RPC_NOT_ALLOWED",
            )
            assert denied.metadata["caller"] == "support-tool"
        async with stubs(target, tls(pki.ca, pki.stranger_client)) as stranger:
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await stranger.ledger.ListTransactions(
                    ledger_pb2.ListTransactionsRequest(), timeout=10
                )
            assert failure(caught.value).reason == "UNAUTHENTICATED"
        for refused in (tls(pki.ca), tls(pki.ca, pki.rogue_client)):
            async with grpc.aio.secure_channel(target, refused) as channel:
                with pytest.raises(grpc.aio.AioRpcError) as caught:
                    await health_status(channel)
                assert caught.value.code() == grpc.StatusCode.UNAVAILABLE


async def test_bearer_tokens_and_allowlists_split_charging_from_refunding(
    env: dict[str, str], pki: Pki, tmp_path: Path, clean_emulator: EmulatorProcess
) -> None:
    env["GRPC_CALLERS_FILE"] = callers_file(tmp_path)
    async with running(env) as target:
        async with stubs(target, with_token(pki.ca, ORDER_TOKEN)) as order:
            done = await checkout(order, clean_emulator, intent=cs.PAYMENT_INTENT_AUTHORIZE)
            await order.charges.CaptureCharge(
                charge_pb2.CaptureChargeRequest(
                    charge_id=done.charge_id, idempotency_key=key(), capture_amount=usd("100.00")
                ),
                timeout=10,
            )
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await order.refunds.CreateRefund(
                    refund_pb2.CreateRefundRequest(
                        charge_id=done.charge_id, idempotency_key=key(), refund_amount=usd("1.00")
                    ),
                    timeout=10,
                )
            denied = failure(caught.value)
            assert denied.code == grpc.StatusCode.PERMISSION_DENIED
            assert (denied.reason, denied.domain) == ("RPC_NOT_ALLOWED", PKG)
            assert denied.metadata == {
                "caller": "order-service",
                "rpc": f"{PKG}.RefundService/CreateRefund",
            }

        for token in (SUPPORT_TOKEN, SUPPORT_NEXT_TOKEN):  # both hashes during a rotation
            async with stubs(target, with_token(pki.ca, token)) as support:
                refund = await support.refunds.CreateRefund(
                    refund_pb2.CreateRefundRequest(
                        charge_id=done.charge_id, idempotency_key=key(), refund_amount=usd("5.00")
                    ),
                    timeout=10,
                )
                assert refund.refund.refund_id
        async with stubs(target, with_token(pki.ca, SUPPORT_TOKEN)) as support:
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await support.charges.CreateCharge(
                    charge_pb2.CreateChargeRequest(
                        idempotency_key=key(),
                        charge_permission_id=done.charge_permission_id,
                        charge_amount=usd("1.00"),
                    ),
                    timeout=10,
                )
            denied = failure(caught.value)
            assert (denied.code, denied.reason) == (
                grpc.StatusCode.PERMISSION_DENIED,
                "RPC_NOT_ALLOWED",
            )
            assert denied.metadata == {
                "caller": "support-tool",
                "rpc": f"{PKG}.ChargeService/CreateCharge",
            }
            charge = await support.charges.GetCharge(
                charge_pb2.GetChargeRequest(charge_id=done.charge_id), timeout=10
            )
            assert charge.charge.charge_id == done.charge_id


async def test_missing_or_wrong_tokens_are_unauthenticated_but_health_and_reflection_are_open(
    env: dict[str, str], pki: Pki, tmp_path: Path
) -> None:
    env["GRPC_CALLERS_FILE"] = callers_file(tmp_path)
    async with running(env) as target:
        for credentials in (tls(pki.ca), with_token(pki.ca, "not-a-token")):
            async with stubs(target, credentials) as anonymous:
                with pytest.raises(grpc.aio.AioRpcError) as caught:
                    await anonymous.ledger.ListTransactions(
                        ledger_pb2.ListTransactionsRequest(), timeout=10
                    )
                refused = failure(caught.value)
                assert refused.code == grpc.StatusCode.UNAUTHENTICATED
                assert (refused.reason, refused.domain) == ("UNAUTHENTICATED", PKG)
                assert "not-a-token" not in (caught.value.details() or "")
        async with grpc.aio.secure_channel(target, tls(pki.ca)) as channel:
            assert await health_status(channel) == health_pb2.HealthCheckResponse.SERVING
            reflection = reflection_pb2_grpc.ServerReflectionStub(channel)
            replies = reflection.ServerReflectionInfo(
                iter([reflection_pb2.ServerReflectionRequest(list_services="")]), timeout=5
            )
            names = {s.name async for r in replies for s in r.list_services_response.service}
            assert f"{PKG}.ChargeService" in names


async def test_denials_are_logged_with_caller_and_rpc_but_never_the_token_or_its_hash(
    env: dict[str, str], pki: Pki, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    env["GRPC_CALLERS_FILE"] = callers_file(tmp_path)
    wrong = "wrong-token-3b9e7d"
    async with running(env) as target:
        caplog.clear()
        with caplog.at_level(logging.DEBUG):
            async with stubs(target, with_token(pki.ca, ORDER_TOKEN)) as order:
                with pytest.raises(grpc.aio.AioRpcError):
                    await order.ledger.ListEvents(ledger_pb2.ListEventsRequest(), timeout=10)
            async with stubs(target, with_token(pki.ca, wrong)) as stranger:
                with pytest.raises(grpc.aio.AioRpcError):
                    await stranger.ledger.ListEvents(ledger_pb2.ListEventsRequest(), timeout=10)
    denials = [r for r in caplog.records if r.name == "service.api.auth"]
    assert [(r.getMessage(), getattr(r, "caller", None)) for r in denials] == [
        ("rpc denied", "order-service"),
        ("rpc unauthenticated", None),
    ]
    assert all(getattr(r, "rpc", None) == f"{PKG}.LedgerService/ListEvents" for r in denials)
    everything = caplog.text + "".join(repr(vars(r)) for r in caplog.records)
    for secret in (ORDER_TOKEN, wrong, sha256_hex(ORDER_TOKEN), sha256_hex(wrong)):
        assert secret not in everything


async def test_live_mode_starts_with_tls(env: dict[str, str], pki: Pki) -> None:
    env["AMAZON_PAY_ENVIRONMENT"] = "live"
    # Live mode refuses the emulator's http:// endpoint and extra certificate hosts: Amazon's own.
    del env["AMAZON_PAY_ENDPOINT"], env["IPN_EXTRA_CERT_HOSTS"]
    async with running(env) as target, grpc.aio.secure_channel(target, tls(pki.ca)) as channel:
        assert await health_status(channel) == health_pb2.HealthCheckResponse.SERVING


@pytest.mark.parametrize(
    ("broken", "variable"),
    [
        ({"AMAZON_PAY_ENVIRONMENT": "live"}, "AMAZON_PAY_ENVIRONMENT"),
        ({"GRPC_TLS_CERT_FILE": "garbage", "GRPC_TLS_KEY_FILE": "key"}, "GRPC_TLS_CERT_FILE"),
        ({"GRPC_TLS_CERT_FILE": "cert", "GRPC_TLS_KEY_FILE": "other"}, "GRPC_TLS_KEY_FILE"),
        (
            {
                "GRPC_TLS_CERT_FILE": "cert",
                "GRPC_TLS_KEY_FILE": "key",
                "GRPC_TLS_CLIENT_CA_FILE": "garbage",
            },
            "GRPC_TLS_CLIENT_CA_FILE",
        ),
    ],
)
async def test_the_process_refuses_to_start_naming_the_variable(
    tmp_path: Path, pki: Pki, broken: dict[str, str], variable: str
) -> None:
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("-----BEGIN CERTIFICATE-----\nnot base64\n-----END CERTIFICATE-----\n")
    files = {
        "garbage": str(garbage),
        "cert": str(pki.server.cert_file),
        "key": str(pki.server.key_file),
        "other": str(pki.order_client.key_file),
    }
    process = ServiceProcess(
        {
            "DATABASE_URL": "",
            "EMBEDDED_POSTGRES_DIR": str(tmp_path / "pg"),
            "AMAZON_PAY_PUBLIC_KEY_ID": "",
            "AMAZON_PAY_PRIVATE_KEY_FILE": "",
            "GRPC_LISTEN": "127.0.0.1:0",
            "IPN_LISTEN": "off",
            **{name: files.get(value, value) for name, value in broken.items()},
        }
    )
    await process.start()
    try:
        assert await process.wait(timeout=60) == 2
    finally:
        await process.kill()
    output = "\n".join(process.log_lines)
    assert f"configuration error: {variable}: " in output
    assert "PRIVATE KEY" not in output
    assert not (tmp_path / "pg").exists(), "nothing may start before the TLS files are checked"
