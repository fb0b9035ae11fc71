"""Callers file, TLS material loading and the auth interceptor on a real in-process gRPC server.

The server here hosts a small LedgerService that echoes `current_caller` back, so the tests see
what a servicer sees; the full service is exercised in tests/e2e/test_auth.py.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest
from cryptography.hazmat.primitives import serialization
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from payments.amazonpay.v1 import ledger_pb2, ledger_pb2_grpc
from service.api import AuthInterceptor, CallerLogFilter, build_server, current_caller
from service.config import ConfigError, GrpcSettings, SecuritySettings, load_settings
from service.security import Callers, load_callers, load_security, load_server_tls
from tests._certs import CertificateAuthority, Issued

LEDGER = "payments.amazonpay.v1.LedgerService"


def sha(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


CALLERS = f"""
[callers.order-service]
token_sha256 = "{sha("order-token")}"
certificate_names = ["order-service"]
allow = ["{LEDGER}/List*", "{LEDGER}/WatchEvents"]
merchants = ["*"]

[callers.support-tool]
token_sha256 = ["{sha("support-old")}", "{sha("support-new")}"]
certificate_names = ["spiffe://payments/support-tool"]
allow = ["{LEDGER}/GetTransaction"]
merchants = ["*"]
"""


# --- callers file ---------------------------------------------------------------------------


def test_callers_file_maps_tokens_and_certificate_names_to_callers(tmp_path: Path) -> None:
    callers = load_callers(write(tmp_path / "callers.toml", CALLERS))
    order = callers.by_token("order-token")
    assert order is not None
    assert order.name == "order-service"
    by_cert = callers.by_certificate(["spiffe://payments/support-tool", "unrelated"])
    assert by_cert is not None
    assert by_cert.name == "support-tool"
    assert callers.by_token("order-token ") is None
    assert callers.by_token("") is None
    assert callers.by_certificate(["someone-else"]) is None


def test_both_token_hashes_of_a_rotating_caller_are_accepted(tmp_path: Path) -> None:
    callers = load_callers(write(tmp_path / "callers.toml", CALLERS))
    for token in ("support-old", "support-new"):
        caller = callers.by_token(token)
        assert caller is not None
        assert caller.name == "support-tool"


def test_allow_patterns_match_service_and_method_names(tmp_path: Path) -> None:
    callers = {c.name: c for c in load_callers(write(tmp_path / "c.toml", CALLERS)).callers}
    order, support = callers["order-service"], callers["support-tool"]
    assert order.allows(f"{LEDGER}/ListEvents")
    assert order.allows(f"{LEDGER}/ListTransactions")
    assert not order.allows(f"{LEDGER}/GetTransaction")
    assert not order.allows(f"{LEDGER}/EraseBuyerData")
    assert support.allows(f"{LEDGER}/GetTransaction")
    assert not support.allows(f"{LEDGER}/GetTransactionX")
    assert not support.allows(f"{LEDGER.lower()}/GetTransaction")


def test_a_certificate_naming_two_callers_identifies_nobody(tmp_path: Path) -> None:
    callers = load_callers(write(tmp_path / "c.toml", CALLERS))
    assert callers.by_certificate(["order-service", "spiffe://payments/support-tool"]) is None


def test_caller_repr_never_shows_token_hashes(tmp_path: Path) -> None:
    callers = load_callers(write(tmp_path / "c.toml", CALLERS))
    assert sha("order-token") not in repr(callers)
    assert hashlib.sha256(b"order-token").digest().hex() not in repr(callers)
    assert "order-service" in repr(callers)


@pytest.mark.parametrize(
    ("text", "rule"),
    [
        ("not toml [", "not valid TOML"),
        ("", "at least one [callers.<name>] table"),
        (
            "[callers.a]\nallow = ['*']\nmerchants = ['*']\n",
            "needs token_sha256 or certificate_names",
        ),
        (f"[callers.a]\ntoken_sha256 = '{sha('x')}'\n", "allow is required"),
        (
            f"[callers.a]\ntoken_sha256 = '{sha('x')}'\nallow = []\nmerchants = ['*']\nrole = 1\n",
            "unknown keys",
        ),
        (
            f"[callers.a]\ntoken_sha256 = '{sha('x')}'\nallow = [1]\nmerchants = ['*']\n",
            "list of non-empty strings",
        ),
        (
            "[callers.'bad name']\ncertificate_names = ['a']\nallow = ['*']\nmerchants = ['*']\n",
            "names are 1-63",
        ),
        (
            f"[callers.a]\ntoken_sha256 = '{sha('x')}'\nallow = ['*']\nmerchants = ['*']\n"
            f"[callers.b]\ntoken_sha256 = '{sha('x')}'\nallow = ['*']\nmerchants = ['*']\n",
            "share a token hash",
        ),
        (
            "[callers.a]\ncertificate_names = ['x']\nallow = ['*']\nmerchants = ['*']\n"
            "[callers.b]\ncertificate_names = ['x']\nallow = ['*']\nmerchants = ['*']\n",
            "share the certificate name 'x'",
        ),
    ],
)
def test_a_bad_callers_file_names_the_variable_and_rule(
    tmp_path: Path, text: str, rule: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        load_callers(write(tmp_path / "callers.toml", text))
    assert caught.value.variable == "GRPC_CALLERS_FILE"
    assert rule in str(caught.value)


def test_a_caller_without_merchants_stops_start_up_naming_the_caller(tmp_path: Path) -> None:
    text = f"[callers.order-service]\ntoken_sha256 = '{sha('x')}'\nallow = ['*']\n"
    with pytest.raises(ConfigError) as caught:
        load_callers(write(tmp_path / "c.toml", text))
    assert caught.value.variable == "GRPC_CALLERS_FILE"
    assert "callers.order-service.merchants is required" in str(caught.value)
    assert "'order-service'" in str(caught.value)


@pytest.mark.parametrize(
    ("merchants", "pii", "rule"),
    [
        ("[]", "false", "at least one alias"),
        ("['Shop A']", "false", "is not a merchant alias"),
        ("'default'", "false", "list of non-empty strings"),
        ("['default']", "'yes'", "pii must be true or false"),
    ],
)
def test_bad_merchants_or_pii_name_the_rule(
    tmp_path: Path, merchants: str, pii: str, rule: str
) -> None:
    text = (
        f"[callers.a]\ntoken_sha256 = '{sha('x')}'\nallow = ['*']\n"
        f"merchants = {merchants}\npii = {pii}\n"
    )
    with pytest.raises(ConfigError) as caught:
        load_callers(write(tmp_path / "c.toml", text))
    assert rule in str(caught.value)


def test_merchants_and_pii_are_read_per_caller_with_pii_off_by_default(tmp_path: Path) -> None:
    text = (
        f"[callers.a]\ntoken_sha256 = '{sha('a')}'\nallow = ['*']\nmerchants = ['eu-shop']\n"
        f"[callers.b]\ntoken_sha256 = '{sha('b')}'\nallow = ['*']\nmerchants = ['*']\n"
        "pii = true\n"
    )
    callers = {c.name: c for c in load_callers(write(tmp_path / "c.toml", text)).callers}
    assert (callers["a"].merchants, callers["a"].pii) == (("eu-shop",), False)
    assert callers["a"].allows_merchant("eu-shop")
    assert not callers["a"].allows_merchant("default")
    assert callers["b"].pii
    assert callers["b"].allows_merchant("anything")


def test_an_email_certificate_name_is_refused_as_not_a_dns_name_or_uri(tmp_path: Path) -> None:
    text = (
        "[callers.a]\ncertificate_names = ['ops@example.com']\nallow = ['*']\nmerchants = ['*']\n"
    )
    with pytest.raises(ConfigError) as caught:
        load_callers(write(tmp_path / "c.toml", text))
    assert "SAN DNS names and URIs" in str(caught.value)


@pytest.mark.parametrize("value", ["'a-raw-secret-token'", "['a-raw-secret-token']", "''"])
def test_a_token_pasted_instead_of_its_hash_is_refused_without_echoing_it(
    tmp_path: Path, value: str
) -> None:
    path = write(
        tmp_path / "c.toml",
        f"[callers.a]\ntoken_sha256 = {value}\nallow = ['*']\nmerchants = ['*']\n",
    )
    with pytest.raises(ConfigError) as caught:
        load_callers(path)
    assert "token_sha256" in str(caught.value)
    assert "a-raw-secret-token" not in str(caught.value)


def test_patterns_that_match_no_rpc_are_reported(tmp_path: Path) -> None:
    text = f"[callers.a]\ncertificate_names = ['a']\nallow = ['{LEDGER}/*', 'ChargeService/*']\nmerchants = ['*']\n"
    callers = load_callers(write(tmp_path / "c.toml", text))
    assert callers.unmatched_patterns([f"{LEDGER}/ListEvents"]) == [("a", "ChargeService/*")]


# --- TLS material ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def ca(tmp_path_factory: pytest.TempPathFactory) -> CertificateAuthority:
    return CertificateAuthority(tmp_path_factory.mktemp("ca"))


@pytest.fixture(scope="module")
def server_cert(ca: CertificateAuthority) -> Issued:
    return ca.server()


def test_matching_certificate_and_key_load_as_mutual_tls(
    ca: CertificateAuthority, server_cert: Issued
) -> None:
    tls = load_server_tls(server_cert.cert_file, server_cert.key_file, ca.cert_file)
    assert tls.mutual
    assert tls.certificate_chain == server_cert.cert_pem
    assert server_cert.key_pem.decode() not in repr(tls)


@pytest.mark.parametrize(
    ("broken", "variable", "rule"),
    [
        ("cert", "GRPC_TLS_CERT_FILE", "no valid PEM certificate"),
        ("key", "GRPC_TLS_KEY_FILE", "no valid PEM private key"),
        ("ca", "GRPC_TLS_CLIENT_CA_FILE", "no valid PEM certificate"),
        ("other_key", "GRPC_TLS_KEY_FILE", "does not belong to the first certificate"),
        ("encrypted_key", "GRPC_TLS_KEY_FILE", "is encrypted"),
    ],
)
def test_invalid_tls_material_names_its_variable(
    tmp_path: Path,
    ca: CertificateAuthority,
    server_cert: Issued,
    broken: str,
    variable: str,
    rule: str,
) -> None:
    cert, key, client_ca = server_cert.cert_file, server_cert.key_file, ca.cert_file
    garbage = write(tmp_path / "garbage.pem", "-----BEGIN CERTIFICATE-----\nnope\n")
    if broken == "cert":
        cert = garbage
    elif broken == "key":
        key = garbage
    elif broken == "ca":
        client_ca = garbage
    elif broken == "other_key":
        key = ca.client("other", "other").key_file
    elif broken == "encrypted_key":
        key = tmp_path / "encrypted.key"
        key.write_bytes(
            server_cert.key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.BestAvailableEncryption(b"pass"),
            )
        )
    with pytest.raises(ConfigError) as caught:
        load_server_tls(cert, key, client_ca)
    assert caught.value.variable == variable
    assert rule in str(caught.value)
    assert "PRIVATE KEY" not in str(caught.value)


def test_tls_files_are_validated_by_load_settings(tmp_path: Path, server_cert: Issued) -> None:
    missing = str(tmp_path / "missing.pem")
    cert, key = str(server_cert.cert_file), str(server_cert.key_file)
    cases = [
        ({"GRPC_TLS_CERT_FILE": missing, "GRPC_TLS_KEY_FILE": key}, "GRPC_TLS_CERT_FILE"),
        ({"GRPC_TLS_CERT_FILE": cert, "GRPC_TLS_KEY_FILE": missing}, "GRPC_TLS_KEY_FILE"),
        ({"GRPC_TLS_CERT_FILE": cert}, "GRPC_TLS_KEY_FILE"),
        ({"GRPC_TLS_KEY_FILE": key}, "GRPC_TLS_CERT_FILE"),
        ({"GRPC_TLS_CLIENT_CA_FILE": cert}, "GRPC_TLS_CLIENT_CA_FILE"),
        ({"GRPC_CALLERS_FILE": missing}, "GRPC_CALLERS_FILE"),
    ]
    for env, variable in cases:
        with pytest.raises(ConfigError) as caught:
            load_settings(env)
        assert caught.value.variable == variable, env


def test_live_mode_starts_with_tls_and_refuses_plaintext(
    tmp_path: Path, server_cert: Issued
) -> None:
    env = {
        "AMAZON_PAY_PUBLIC_KEY_ID": "LIVE-ABC",
        "AMAZON_PAY_PRIVATE_KEY_FILE": str(write(tmp_path / "k.pem", "not parsed here")),
        "AMAZON_PAY_ENVIRONMENT": "live",
        "DATABASE_URL": "postgresql://ledger.example/payments",
    }
    with pytest.raises(ConfigError) as caught:
        load_settings(env)
    assert caught.value.variable == "AMAZON_PAY_ENVIRONMENT"
    assert "GRPC_TLS_CERT_FILE" in caught.value.rule
    secure = load_settings(
        {
            **env,
            "GRPC_TLS_CERT_FILE": str(server_cert.cert_file),
            "GRPC_TLS_KEY_FILE": str(server_cert.key_file),
        }
    )
    assert secure.security.tls


def test_live_mode_without_callers_warns(
    caplog: pytest.LogCaptureFixture, server_cert: Issued
) -> None:
    settings = SecuritySettings(server_cert.cert_file, server_cert.key_file)
    with caplog.at_level(logging.INFO, logger="service.security"):
        load_security(settings, live=True)
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert any("authentication is disabled" in r.getMessage() for r in warnings)
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="service.security"):
        load_security(settings, live=False)
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


# --- the interceptor on a real server ---------------------------------------------------------


class EchoLedger(ledger_pb2_grpc.LedgerServiceServicer):
    """Answers with the name the interceptor recorded in `current_caller`."""

    async def ListEvents(self, request: Any, context: Any) -> ledger_pb2.ListEventsResponse:
        return ledger_pb2.ListEventsResponse(next_page_token=current_caller.get() or "")

    async def GetTransaction(self, request: Any, context: Any) -> ledger_pb2.GetTransactionResponse:
        return ledger_pb2.GetTransactionResponse()

    async def ListTransactions(
        self, request: Any, context: Any
    ) -> ledger_pb2.ListTransactionsResponse:
        return ledger_pb2.ListTransactionsResponse()

    async def EraseBuyerData(self, request: Any, context: Any) -> ledger_pb2.EraseBuyerDataResponse:
        return ledger_pb2.EraseBuyerDataResponse()

    async def WatchEvents(
        self, request: Any, context: Any
    ) -> AsyncIterator[ledger_pb2.WatchEventsResponse]:
        for event_id in (1, 2):
            yield ledger_pb2.WatchEventsResponse(
                event=ledger_pb2.LedgerEvent(event_id=event_id, merchant=current_caller.get() or "")
            )


@dataclass
class Server:
    port: int
    ca: CertificateAuthority

    def channel(self, client: Issued | None = None) -> grpc.aio.Channel:
        credentials = grpc.ssl_channel_credentials(
            self.ca.cert_pem,
            client.key_pem if client else None,
            client.cert_pem if client else None,
        )
        return grpc.aio.secure_channel(f"127.0.0.1:{self.port}", credentials)


@asynccontextmanager
async def serving(
    tmp_path: Path, ca: CertificateAuthority, *, mutual: bool
) -> AsyncIterator[Server]:
    server_cert = ca.server(f"server-{mutual}")
    security = load_security(
        SecuritySettings(
            server_cert.cert_file,
            server_cert.key_file,
            ca.cert_file if mutual else None,
            write(tmp_path / "callers.toml", CALLERS),
        )
    )
    assert security.callers is not None
    grpc_server = build_server(
        GrpcSettings(),
        {"LedgerService": EchoLedger()},
        interceptors=[AuthInterceptor(security.callers)],
        credentials=security.server_credentials(),
    )
    port = await grpc_server.start("127.0.0.1:0")
    try:
        yield Server(port, ca)
    finally:
        await grpc_server.stop(0)


@pytest.fixture
async def server(tmp_path: Path, ca: CertificateAuthority) -> AsyncIterator[Server]:
    """TLS without client certificates: callers identify with bearer tokens."""
    async with serving(tmp_path, ca, mutual=False) as running:
        yield running


@pytest.fixture
async def mtls_server(tmp_path: Path, ca: CertificateAuthority) -> AsyncIterator[Server]:
    async with serving(tmp_path, ca, mutual=True) as running:
        yield running


def reason(error: grpc.aio.AioRpcError) -> str:
    status = rpc_status.from_call(error)  # type: ignore[arg-type]
    assert status is not None
    info = error_details_pb2.ErrorInfo()
    assert status.details[0].Unpack(info)
    assert info.domain == "payments.amazonpay.v1"
    return str(info.reason)


async def test_servicers_see_the_caller_named_by_the_token(server: Server) -> None:
    async with server.channel() as channel:
        ledger = ledger_pb2_grpc.LedgerServiceStub(channel)
        reply = await ledger.ListEvents(
            ledger_pb2.ListEventsRequest(),
            metadata=[("authorization", "Bearer order-token")],
            timeout=5,
        )
    assert reply.next_page_token == "order-service"


async def test_streaming_rpcs_are_authorized_and_see_the_caller(
    server: Server, mtls_server: Server
) -> None:
    client = mtls_server.ca.client("order", "order-service", dns=("order-service",))
    async with mtls_server.channel(client) as channel:
        ledger = ledger_pb2_grpc.LedgerServiceStub(channel)
        events = [e async for e in ledger.WatchEvents(ledger_pb2.WatchEventsRequest(), timeout=5)]
        assert [(e.event.event_id, e.event.merchant) for e in events] == [
            (1, "order-service"),
            (2, "order-service"),
        ]
    async with server.channel() as channel:
        ledger = ledger_pb2_grpc.LedgerServiceStub(channel)
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            async for _ in ledger.WatchEvents(ledger_pb2.WatchEventsRequest(), timeout=5):
                pass
    assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED


async def test_a_uri_san_identifies_the_caller(mtls_server: Server) -> None:
    client = mtls_server.ca.client(
        "support", "cn-unknown", uris=("spiffe://payments/support-tool",)
    )
    async with mtls_server.channel(client) as channel:
        ledger = ledger_pb2_grpc.LedgerServiceStub(channel)
        await ledger.GetTransaction(ledger_pb2.GetTransactionRequest(), timeout=5)
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await ledger.ListEvents(ledger_pb2.ListEventsRequest(), timeout=5)
    assert caught.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert reason(caught.value) == "RPC_NOT_ALLOWED"


async def test_a_common_name_or_email_san_does_not_identify_the_caller(
    mtls_server: Server,
) -> None:
    """Only SAN DNS names and URIs count: a CA that lets a requester choose the CN or an e-mail
    address must not be able to mint a certificate for a caller."""
    for client in (
        mtls_server.ca.client("cn-only", "order-service"),
        mtls_server.ca.client("email", "x", emails=("order-service@example.com",)),
    ):
        async with mtls_server.channel(client) as channel:
            ledger = ledger_pb2_grpc.LedgerServiceStub(channel)
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await ledger.ListEvents(ledger_pb2.ListEventsRequest(), timeout=5)
        assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED


async def test_a_dns_san_identifies_the_caller(mtls_server: Server) -> None:
    client = mtls_server.ca.client("dns", "cn-unknown", dns=("order-service",))
    async with mtls_server.channel(client) as channel:
        ledger = ledger_pb2_grpc.LedgerServiceStub(channel)
        reply = await ledger.ListEvents(ledger_pb2.ListEventsRequest(), timeout=5)
    assert reply.next_page_token == "order-service"


@pytest.mark.parametrize(
    "authorization",
    ["Bearer wrong", "Basic b3JkZXItdG9rZW4=", "Bearer", "order-token", "Bearer  "],
)
async def test_malformed_or_unknown_authorization_is_unauthenticated(
    server: Server, authorization: str
) -> None:
    async with server.channel() as channel:
        ledger = ledger_pb2_grpc.LedgerServiceStub(channel)
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await ledger.ListEvents(
                ledger_pb2.ListEventsRequest(),
                metadata=[("authorization", authorization)],
                timeout=5,
            )
    assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert reason(caught.value) == "UNAUTHENTICATED"


async def test_a_wrong_token_is_refused_even_with_a_valid_certificate(mtls_server: Server) -> None:
    """A token, when sent, decides: a stolen certificate cannot launder a bad token."""
    client = mtls_server.ca.client("order", "order-service", dns=("order-service",))
    async with mtls_server.channel(client) as channel:
        ledger = ledger_pb2_grpc.LedgerServiceStub(channel)
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await ledger.ListEvents(
                ledger_pb2.ListEventsRequest(),
                metadata=[("authorization", "Bearer wrong")],
                timeout=5,
            )
    assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED


async def test_a_token_takes_precedence_over_the_certificate(mtls_server: Server) -> None:
    client = mtls_server.ca.client("order", "order-service", dns=("order-service",))
    async with mtls_server.channel(client) as channel:
        ledger = ledger_pb2_grpc.LedgerServiceStub(channel)
        await ledger.GetTransaction(
            ledger_pb2.GetTransactionRequest(),
            metadata=[("authorization", "Bearer support-new")],
            timeout=5,
        )


def test_caller_log_filter_adds_the_current_caller() -> None:
    record = logging.makeLogRecord({"msg": "x"})
    token = current_caller.set("order-service")
    try:
        assert CallerLogFilter().filter(record)
    finally:
        current_caller.reset(token)
    assert vars(record)["caller"] == "order-service"
    outside = logging.makeLogRecord({"msg": "x"})
    CallerLogFilter().filter(outside)
    assert not hasattr(outside, "caller")


def test_interceptor_warns_about_patterns_that_match_no_rpc(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    text = "[callers.a]\ncertificate_names = ['a']\nallow = ['payments.amazonpay.v1.ChargeServ/*']\nmerchants = ['*']\n"
    callers: Callers = load_callers(write(tmp_path / "c.toml", text))
    with caplog.at_level(logging.WARNING, logger="service.api.auth"):
        AuthInterceptor(callers)
    assert [getattr(r, "pattern", None) for r in caplog.records] == [
        "payments.amazonpay.v1.ChargeServ/*"
    ]


def test_a_caller_naming_an_unconfigured_merchant_is_reported(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from service.app import _warn_unknown_merchants

    text = (
        f"[callers.a]\ntoken_sha256 = '{sha('a')}'\nallow = ['*']\nmerchants = ['defualt', 'eu']\n"
    )
    callers = load_callers(write(tmp_path / "c.toml", text))
    with caplog.at_level(logging.WARNING, logger="service.app"):
        _warn_unknown_merchants(callers, {"default", "eu"})
    assert [(r.getMessage(), getattr(r, "merchants", None)) for r in caplog.records] == [
        ("caller names merchants that are not configured", ["defualt"])
    ]
