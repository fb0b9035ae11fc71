"""Regions, environments, unified key ids and endpoint overrides."""

from __future__ import annotations

from pathlib import Path

import pytest

from service.amazonpay import (
    AmazonPayRequestError,
    ClientConfig,
    Environment,
    MerchantAccount,
    PrivateKey,
    Region,
)

KEY_FILE = Path(__file__).resolve().parents[2] / "data" / "signing-vectors" / "test-key-private.pem"


@pytest.fixture(scope="module")
def key() -> PrivateKey:
    return PrivateKey.from_file(KEY_FILE)


@pytest.mark.parametrize(
    ("alias", "region", "host"),
    [
        ("us", Region.NA, "pay-api.amazon.com"),
        ("NA", Region.NA, "pay-api.amazon.com"),
        ("uk", Region.EU, "pay-api.amazon.eu"),
        ("de", Region.EU, "pay-api.amazon.eu"),
        ("eu", Region.EU, "pay-api.amazon.eu"),
        ("jp", Region.JP, "pay-api.amazon.jp"),
    ],
)
def test_region_aliases_resolve_to_the_regional_host(alias: str, region: Region, host: str) -> None:
    assert Region.parse(alias) is region
    assert region.host == host


def test_unknown_region_is_refused() -> None:
    with pytest.raises(AmazonPayRequestError):
        Region.parse("mars")


def test_classic_key_id_puts_the_environment_in_the_path(key: PrivateKey) -> None:
    account = MerchantAccount(
        public_key_id="AHXXXX", private_key=key, region=Region.EU, environment=Environment.LIVE
    )
    assert account.base_url == "https://pay-api.amazon.eu"
    assert account.path_prefix == "/live/v2"
    assert account.api_host == "pay-api.amazon.eu"


@pytest.mark.parametrize("key_id", ["SANDBOX-AH1", "sandbox-ah1", "LIVE-AH1", "Live-AH1"])
def test_unified_key_ids_drop_the_environment_segment(key: PrivateKey, key_id: str) -> None:
    account = MerchantAccount(public_key_id=key_id, private_key=key, environment=Environment.LIVE)
    assert account.unified_key
    assert account.path_prefix == "/v2"
    expected = Environment.SANDBOX if key_id.lower().startswith("sandbox") else Environment.LIVE
    assert account.effective_environment is expected


@pytest.mark.parametrize(
    ("endpoint", "host", "base"),
    [
        ("http://127.0.0.1:8480", "127.0.0.1:8480", "http://127.0.0.1:8480"),
        ("https://emulator.local:443/", "emulator.local", "https://emulator.local:443"),
        ("https://emulator.local:8443", "emulator.local:8443", "https://emulator.local:8443"),
        ("http://[::1]:8480", "[::1]:8480", "http://[::1]:8480"),
    ],
)
def test_endpoint_override_sets_host_header_as_http_host(
    key: PrivateKey, endpoint: str, host: str, base: str
) -> None:
    account = MerchantAccount(public_key_id="AH1", private_key=key, endpoint=endpoint)
    assert account.api_host == host
    assert account.base_url == base
    assert account.path_prefix == "/sandbox/v2"


def test_endpoint_override_keeps_its_path_prefix(key: PrivateKey) -> None:
    account = MerchantAccount(
        public_key_id="SANDBOX-AH1", private_key=key, endpoint="http://127.0.0.1:1/amazon/"
    )
    assert account.path_prefix == "/amazon/v2"


@pytest.mark.parametrize("endpoint", ["ftp://x", "127.0.0.1:8480", "http://u:p@h", "http://h/?q=1"])
def test_bad_endpoints_are_refused(key: PrivateKey, endpoint: str) -> None:
    with pytest.raises(AmazonPayRequestError):
        MerchantAccount(public_key_id="AH1", private_key=key, endpoint=endpoint)


def test_load_reads_the_key_file_and_parses_strings() -> None:
    account = MerchantAccount.load(
        public_key_id="AH1", private_key_path=KEY_FILE, region="uk", environment="LIVE"
    )
    assert account.region is Region.EU
    assert account.environment is Environment.LIVE


def test_account_repr_hides_the_private_key(key: PrivateKey) -> None:
    account = MerchantAccount(public_key_id="AH1", private_key=key)
    text = repr(account)
    assert "redacted" in text
    assert KEY_FILE.read_text().splitlines()[1] not in text


def test_client_config_refuses_nonsense() -> None:
    with pytest.raises(AmazonPayRequestError):
        ClientConfig(max_concurrency=0)
    with pytest.raises(AmazonPayRequestError):
        ClientConfig(signing_threads=0)
