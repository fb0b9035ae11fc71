"""End-to-end fixtures: the emulator as a child process, the service in-process on a free port,
a fresh database per test, and gRPC stubs on a real channel."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import grpc
import pytest

from payments.amazonpay.v1 import (
    button_pb2_grpc,
    buyer_pb2_grpc,
    charge_pb2_grpc,
    charge_permission_pb2_grpc,
    checkout_session_pb2_grpc,
    delivery_tracker_pb2_grpc,
    ledger_pb2_grpc,
    refund_pb2_grpc,
)
from service.app import Application
from service.config import load_settings
from service.ledger import PiiKeyring
from tests._emulator import EmulatorProcess, write_key_pair

KEY_ID = "SANDBOX-E2ETESTKEY0000000000000"
SECOND_KEY_ID = "SANDBOX-E2ESECONDMERCHANT0000000"


@dataclass
class Keys:
    private: Path
    public: Path
    second_private: Path
    second_public: Path


@pytest.fixture(scope="session")
def keys(tmp_path_factory: pytest.TempPathFactory) -> Keys:
    base = tmp_path_factory.mktemp("keys")
    private, public = write_key_pair(base / "default")
    second_private, second_public = write_key_pair(base / "second")
    return Keys(private, public, second_private, second_public)


@pytest.fixture(scope="session")
async def emulator(
    tmp_path_factory: pytest.TempPathFactory, keys: Keys
) -> AsyncIterator[EmulatorProcess]:
    process = EmulatorProcess(
        tmp_path_factory.mktemp("emulator"),
        {KEY_ID: keys.public, SECOND_KEY_ID: keys.second_public},
    )
    await process.start()
    try:
        yield process
    finally:
        await process.stop()


@pytest.fixture
async def clean_emulator(emulator: EmulatorProcess) -> AsyncIterator[EmulatorProcess]:
    """No faults left over from another test."""
    await emulator.control("DELETE", "faults")
    yield emulator
    await emulator.control("DELETE", "faults")


def service_env(
    database_url: str, emulator: EmulatorProcess, keys: Keys, tmp_path: Path
) -> dict[str, str]:
    pii_key = tmp_path / "pii.key"
    if not pii_key.exists():
        PiiKeyring.generate_file(pii_key)
    merchants = tmp_path / "merchants.toml"
    merchants.write_text(
        "[merchants.second]\n"
        f'public_key_id = "{SECOND_KEY_ID}"\n'
        f'private_key_file = "{keys.second_private}"\n'
        'region = "eu"\n'
        'store_id = "amzn1.application-oa2-client.second"\n'
        f'endpoint = "{emulator.url}"\n'
    )
    return {
        "DATABASE_URL": database_url,
        "GRPC_LISTEN": "127.0.0.1:0",
        "AMAZON_PAY_PUBLIC_KEY_ID": KEY_ID,
        "AMAZON_PAY_PRIVATE_KEY_FILE": str(keys.private),
        "AMAZON_PAY_ENDPOINT": emulator.url,
        "AMAZON_PAY_REGION": "us",
        "AMAZON_PAY_STORE_ID": "amzn1.application-oa2-client.e2e",
        "AMAZON_PAY_MERCHANTS_FILE": str(merchants),
        "SHUTDOWN_GRACE_S": "1",
        "IPN_LISTEN": "127.0.0.1:0",
        "ADMIN_LISTEN": "127.0.0.1:0",
        "IPN_EXTRA_CERT_HOSTS": urlsplit(emulator.url).netloc,
        "RECONCILER_ENABLED": "0",
        "SETTLEMENT_ENABLED": "0",
        "PII_KEY_FILES": f"k1={pii_key}",
    }


@dataclass
class Stubs:
    target: str
    sessions: checkout_session_pb2_grpc.CheckoutSessionServiceAsyncStub
    permissions: charge_permission_pb2_grpc.ChargePermissionServiceAsyncStub
    charges: charge_pb2_grpc.ChargeServiceAsyncStub
    refunds: refund_pb2_grpc.RefundServiceAsyncStub
    buyers: buyer_pb2_grpc.BuyerServiceAsyncStub
    trackers: delivery_tracker_pb2_grpc.DeliveryTrackerServiceAsyncStub
    buttons: button_pb2_grpc.ButtonServiceAsyncStub
    ledger: ledger_pb2_grpc.LedgerServiceAsyncStub


def stubs_for(channel: grpc.aio.Channel, target: str) -> Stubs:
    return Stubs(
        target,
        checkout_session_pb2_grpc.CheckoutSessionServiceStub(channel),
        charge_permission_pb2_grpc.ChargePermissionServiceStub(channel),
        charge_pb2_grpc.ChargeServiceStub(channel),
        refund_pb2_grpc.RefundServiceStub(channel),
        buyer_pb2_grpc.BuyerServiceStub(channel),
        delivery_tracker_pb2_grpc.DeliveryTrackerServiceStub(channel),
        button_pb2_grpc.ButtonServiceStub(channel),
        ledger_pb2_grpc.LedgerServiceStub(channel),
    )


@pytest.fixture
async def app(
    database_url: str, clean_emulator: EmulatorProcess, keys: Keys, tmp_path: Path
) -> AsyncIterator[Application]:
    application = Application(
        load_settings(service_env(database_url, clean_emulator, keys, tmp_path))
    )
    await application.start()
    try:
        yield application
    finally:
        await application.stop()


@pytest.fixture
async def api(app: Application) -> AsyncIterator[Stubs]:
    target = f"127.0.0.1:{app.grpc_port}"
    async with grpc.aio.insecure_channel(target) as channel:
        yield stubs_for(channel, target)
