"""Least privilege per caller, over real gRPC with TLS, mutual TLS and bearer tokens: callers see
only their merchants, buyer PII only when allowed, and own their idempotency keys."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.protobuf import text_format
from google.protobuf.message import Message

from payments.amazonpay.v1 import (
    buyer_pb2,
    charge_pb2,
    charge_permission_pb2,
    common_pb2,
    ledger_pb2,
)
from payments.amazonpay.v1 import checkout_session_pb2 as cs
from tests._certs import CertificateAuthority
from tests._emulator import EmulatorProcess
from tests.e2e._flows import checkout, failure, key, usd
from tests.e2e.conftest import Keys, service_env
from tests.e2e.test_auth import Pki, running, sha256_hex, stubs, tls

DEFAULT_SHOP = "default-shop-token-1f2e3d"
SECOND_SHOP = "second-shop-token-9a8b7c"
NO_PII = "reporting-token-4d5e6f"
PKG = "payments.amazonpay.v1"
BUYER_NAME = "Ottilie Vanderkamp"
BUYER_EMAIL = "ottilie.vanderkamp@example.com"

CALLERS = f"""
[callers.default-shop]
token_sha256 = "{sha256_hex(DEFAULT_SHOP)}"
allow = ["{PKG}.*"]
merchants = ["default"]
pii = true

[callers.second-shop]
token_sha256 = "{sha256_hex(SECOND_SHOP)}"
allow = ["{PKG}.*"]
merchants = ["second"]
pii = true

[callers.reporting]
token_sha256 = "{sha256_hex(NO_PII)}"
allow = ["{PKG}.*"]
merchants = ["*"]

[callers.order-service]
certificate_names = ["order-service"]
allow = ["{PKG}.*"]
merchants = ["*"]
pii = true
"""


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    ca = CertificateAuthority(tmp_path_factory.mktemp("ca"))
    rogue_ca = CertificateAuthority(tmp_path_factory.mktemp("rogue-ca"), "Rogue CA")
    return Pki(
        ca=ca,
        server=ca.server(),
        order_client=ca.client("order", "order-service", dns=("order-service",)),
        support_client=ca.client("support", "support", uris=("spiffe://payments/support",)),
        stranger_client=ca.client("stranger", "stranger", dns=("stranger",)),
        rogue_client=rogue_ca.client("rogue", "order-service", dns=("order-service",)),
        rogue_ca=rogue_ca,
    )


@pytest.fixture
async def target(
    database_url: str, clean_emulator: EmulatorProcess, keys: Keys, tmp_path: Path, pki: Pki
) -> AsyncIterator[str]:
    callers = tmp_path / "callers.toml"
    callers.write_text(CALLERS)
    env = {
        **service_env(database_url, clean_emulator, keys, tmp_path),
        "GRPC_TLS_CERT_FILE": str(pki.server.cert_file),
        "GRPC_TLS_KEY_FILE": str(pki.server.key_file),
        "GRPC_TLS_CLIENT_CA_FILE": str(pki.ca.cert_file),
        "GRPC_CALLERS_FILE": str(callers),
    }
    async with running(env) as address:
        yield address


def _token(pki: Pki, token: str) -> grpc.ChannelCredentials:
    """mTLS needs a client certificate on every channel; the token then decides who calls."""
    return grpc.composite_channel_credentials(
        tls(pki.ca, pki.stranger_client), grpc.access_token_call_credentials(token)
    )


async def _drain(call: Any) -> None:
    result = call()
    if hasattr(result, "__aiter__"):
        async for _ in result:
            pass
    else:
        await result


async def _denied(call: Any) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await _drain(call)
    info = failure(caught.value)
    assert (info.code, info.reason) == (grpc.StatusCode.PERMISSION_DENIED, "MERCHANT_NOT_ALLOWED")


async def test_a_caller_limited_to_one_merchant_is_refused_on_another_and_sees_only_its_own(
    target: str, pki: Pki, clean_emulator: EmulatorProcess
) -> None:
    async with (
        stubs(target, _token(pki, DEFAULT_SHOP)) as default_shop,
        stubs(target, _token(pki, SECOND_SHOP)) as second_shop,
    ):
        ours = await checkout(default_shop, clean_emulator, reference="default-order")
        theirs = await checkout(
            second_shop, clean_emulator, merchant="second", reference="second-order"
        )

        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await default_shop.sessions.CreateCheckoutSession(
                cs.CreateCheckoutSessionRequest(merchant="second", idempotency_key=key()),
                timeout=10,
            )
        info = failure(caught.value)
        assert (info.code, info.reason) == (
            grpc.StatusCode.PERMISSION_DENIED,
            "MERCHANT_NOT_ALLOWED",
        )
        assert info.metadata == {"caller": "default-shop", "merchant": "second"}
        # An empty merchant is the default one, which second-shop may not use; an alias that
        # does not exist is refused the same way (no list of configured merchants leaks).
        for merchant in ("", "default", "no-such-merchant"):
            await _denied(
                lambda m=merchant: second_shop.charges.GetCharge(
                    charge_pb2.GetChargeRequest(merchant=m, charge_id=ours.charge_id), timeout=10
                )
            )
        ledger = default_shop.ledger
        await _denied(
            lambda: ledger.ListTransactions(
                ledger_pb2.ListTransactionsRequest(merchant="second"), timeout=10
            )
        )
        await _denied(
            lambda: ledger.ListEvents(ledger_pb2.ListEventsRequest(merchant="second"), timeout=10)
        )
        await _denied(
            lambda: ledger.WatchEvents(
                ledger_pb2.WatchEventsRequest(merchant="second", after_event_id=1), timeout=10
            )
        )
        await _denied(
            lambda: ledger.GetTransaction(
                ledger_pb2.GetTransactionRequest(
                    merchant="second",
                    kind=ledger_pb2.OBJECT_KIND_CHARGE,
                    object_id=theirs.charge_id,
                ),
                timeout=10,
            )
        )
        await _denied(
            lambda: ledger.EraseBuyerData(
                ledger_pb2.EraseBuyerDataRequest(
                    merchant="second", charge_permission_id=theirs.charge_permission_id
                ),
                timeout=10,
            )
        )

        own = await second_shop.ledger.ListTransactions(
            ledger_pb2.ListTransactionsRequest(merchant="second"), timeout=10
        )
        assert {t.merchant for t in own.transactions} == {"second"}
        assert theirs.charge_id in {t.object_id for t in own.transactions}
        assert ours.charge_id not in {t.object_id for t in own.transactions}
        events = await second_shop.ledger.ListEvents(
            ledger_pb2.ListEventsRequest(merchant="second"), timeout=10
        )
        assert events.events
        assert {e.merchant for e in events.events} == {"second"}
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await second_shop.ledger.GetTransaction(
                ledger_pb2.GetTransactionRequest(
                    merchant="second", kind=ledger_pb2.OBJECT_KIND_CHARGE, object_id=ours.charge_id
                ),
                timeout=10,
            )
        assert caught.value.code() == grpc.StatusCode.NOT_FOUND
        watched = second_shop.ledger.WatchEvents(
            ledger_pb2.WatchEventsRequest(merchant="second", after_event_id=1), timeout=10
        )
        first = await watched.read()
        watched.cancel()
        assert isinstance(first, ledger_pb2.WatchEventsResponse)
        assert first.event.merchant == "second"


def _leaks(message: Message) -> list[str]:
    text = text_format.MessageToString(message)
    return [
        needle
        for needle in (BUYER_NAME, BUYER_EMAIL, "address_line1", "phone_number", "postal_code")
        if needle in text
    ]


async def test_a_caller_without_pii_sees_no_buyer_data_in_any_rpc(
    target: str, pki: Pki, clean_emulator: EmulatorProcess
) -> None:
    original = clean_emulator.sign_in
    tokens: list[str] = []

    async def sign_in_with_buyer(session_id: str, card: str = "1111") -> dict[str, object]:
        signed = await clean_emulator.control(
            "POST",
            f"checkoutSessions/{session_id}/signIn",
            {"card": card, "buyer": {"name": BUYER_NAME, "email": BUYER_EMAIL}},
        )
        tokens.append(str(signed["buyerToken"]))
        return signed  # type: ignore[no-any-return]

    clean_emulator.sign_in = sign_in_with_buyer  # type: ignore[method-assign]
    try:
        async with (
            stubs(target, _token(pki, NO_PII)) as reporting,
            stubs(target, tls(pki.ca, pki.order_client)) as orders,
        ):
            # The reporting caller runs a whole checkout: no response it gets names the buyer.
            done = await checkout(reporting, clean_emulator, intent=cs.PAYMENT_INTENT_AUTHORIZE)
            assert _leaks(done.complete) == []
            answers: list[Message] = []
            for source in (common_pb2.READ_SOURCE_AMAZON, common_pb2.READ_SOURCE_LEDGER):
                answers.append(
                    await reporting.sessions.GetCheckoutSession(
                        cs.GetCheckoutSessionRequest(
                            checkout_session_id=done.session_id, source=source
                        ),
                        timeout=10,
                    )
                )
                answers.append(
                    await reporting.permissions.GetChargePermission(
                        charge_permission_pb2.GetChargePermissionRequest(
                            charge_permission_id=done.charge_permission_id, source=source
                        ),
                        timeout=10,
                    )
                )
            answers.append(
                await reporting.permissions.UpdateChargePermission(
                    charge_permission_pb2.UpdateChargePermissionRequest(
                        charge_permission_id=done.charge_permission_id,
                        merchant_metadata=common_pb2.MerchantMetadata(
                            merchant_reference_id="order-1b"
                        ),
                    ),
                    timeout=10,
                )
            )
            answers.append(
                await reporting.buyers.GetBuyer(
                    buyer_pb2.GetBuyerRequest(buyer_token=tokens[0]), timeout=10
                )
            )
            answers.append(
                await reporting.ledger.GetTransaction(
                    ledger_pb2.GetTransactionRequest(
                        kind=ledger_pb2.OBJECT_KIND_CHARGE_PERMISSION,
                        object_id=done.charge_permission_id,
                    ),
                    timeout=10,
                )
            )
            answers.append(
                await reporting.ledger.ListTransactions(
                    ledger_pb2.ListTransactionsRequest(), timeout=10
                )
            )
            events = await reporting.ledger.ListEvents(ledger_pb2.ListEventsRequest(), timeout=10)
            answers.append(events)
            watched = reporting.ledger.WatchEvents(
                ledger_pb2.WatchEventsRequest(after_event_id=events.events[0].event_id),
                timeout=10,
            )
            for _ in range(len(events.events) - 1):
                answer = await watched.read()
                assert isinstance(answer, Message)
                answers.append(answer)
            watched.cancel()
            assert [(type(a).__name__, _leaks(a)) for a in answers if _leaks(a)] == []
            buyer = answers[5]
            assert isinstance(buyer, buyer_pb2.GetBuyerResponse)
            assert buyer.buyer.buyer_id, "identifiers stay; only what reaches a person goes"

            # The same reads by a caller allowed PII show the buyer: the data is there.
            allowed = await orders.permissions.GetChargePermission(
                charge_permission_pb2.GetChargePermissionRequest(
                    charge_permission_id=done.charge_permission_id,
                    source=common_pb2.READ_SOURCE_LEDGER,
                ),
                timeout=10,
            )
            assert allowed.charge_permission.buyer.name == BUYER_NAME
            history = await orders.ledger.ListEvents(ledger_pb2.ListEventsRequest(), timeout=10)
            assert BUYER_EMAIL in text_format.MessageToString(history)
            full_buyer = await orders.buyers.GetBuyer(
                buyer_pb2.GetBuyerRequest(buyer_token=tokens[0]), timeout=10
            )
            assert full_buyer.buyer.email == BUYER_EMAIL
    finally:
        clean_emulator.sign_in = original  # type: ignore[method-assign]


async def test_the_same_idempotency_key_from_two_callers_makes_two_charges(
    target: str, pki: Pki, clean_emulator: EmulatorProcess
) -> None:
    async with (
        stubs(target, _token(pki, DEFAULT_SHOP)) as shop,
        stubs(target, tls(pki.ca, pki.order_client)) as orders,
    ):
        done = await checkout(shop, clean_emulator, intent=cs.PAYMENT_INTENT_CONFIRM)
        shared = "order-4711-charge"

        def request(amount: str) -> charge_pb2.CreateChargeRequest:
            return charge_pb2.CreateChargeRequest(
                idempotency_key=shared,
                charge_permission_id=done.charge_permission_id,
                charge_amount=usd(amount),
                capture_now=True,
            )

        # Another caller "squatting" the key with a different request changes nothing for us.
        squatted = await orders.charges.CreateCharge(request("1.00"), timeout=10)
        mine = await shop.charges.CreateCharge(request("10.00"), timeout=10)
        again = await shop.charges.CreateCharge(request("10.00"), timeout=10)
        assert not squatted.idempotent_replay
        assert not mine.idempotent_replay
        assert squatted.charge.charge_id != mine.charge.charge_id
        assert (again.idempotent_replay, again.charge.charge_id) == (True, mine.charge.charge_id)
        charges = [
            c
            for c in await clean_emulator.objects("charges")
            if c["chargePermissionId"] == done.charge_permission_id
        ]
        assert {c["chargeId"] for c in charges} == {
            squatted.charge.charge_id,
            mine.charge.charge_id,
        }


async def test_another_merchants_watch_and_erasure_are_refused_before_their_requests_are_checked(
    target: str, pki: Pki
) -> None:
    async with stubs(target, _token(pki, DEFAULT_SHOP)) as default_shop:
        ledger = default_shop.ledger
        # Invalid as well as foreign: the refusal must not reveal which rule the request broke.
        await _denied(
            lambda: ledger.WatchEvents(
                ledger_pb2.WatchEventsRequest(merchant="second", after_event_id=-1), timeout=10
            )
        )
        await _denied(
            lambda: ledger.EraseBuyerData(
                ledger_pb2.EraseBuyerDataRequest(merchant="second"), timeout=10
            )
        )
