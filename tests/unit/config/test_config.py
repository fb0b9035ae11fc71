from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from service.__main__ import main as service_main
from service.config import ConfigError, available_cpus, load_settings, parse_listen_address
from service.supervisor import Supervisor


def test_defaults_need_no_environment() -> None:
    settings = load_settings({})
    assert settings.grpc.listen == "127.0.0.1:50051"
    assert settings.database.url is None
    assert settings.amazon_pay.region == "na"
    assert settings.amazon_pay.environment == "sandbox"
    assert settings.dev_emulator_port == 8480  # the port the docs, `make demo` and Node name
    assert load_settings({"DEV_EMULATOR_PORT": "0"}).dev_emulator_port == 0


@pytest.mark.parametrize(
    ("variable", "value", "rule"),
    [
        ("GRPC_LISTEN", "localhost", "expected host:port"),
        ("GRPC_LISTEN", "127.0.0.1:70000", "port must be 0..65535"),
        ("DATABASE_URL", "mysql://x", "must start with postgresql://"),
        ("DATABASE_POOL_MAX", "many", "expected an integer"),
        ("DATABASE_POOL_MAX", "0", "must be between 1 and 1000"),
        ("AMAZON_PAY_REGION", "mars", "must be one of"),
        ("AMAZON_PAY_ENVIRONMENT", "prod", "must be sandbox or live"),
        ("AMAZON_PAY_ENDPOINT", "ftp://x", "must be an http:// or https:// URL"),
        ("AMAZON_PAY_CA_FILE", "/nonexistent/ca.pem", "does not exist"),
        ("AMAZON_PAY_PUBLIC_KEY_ID", "bad key!", "letters, digits"),
        ("LOG_LEVEL", "LOUD", "must be DEBUG"),
        ("EVENT_LOOP", "trio", "must be uvloop or asyncio"),
        ("MIGRATE_ON_START", "perhaps", "expected true/false"),
        ("SHUTDOWN_GRACE_S", "-1", "must be between"),
        ("DEV_EMULATOR_PORT", "70000", "must be between 0 and 65535"),
    ],
)
def test_a_bad_variable_is_named_with_its_rule(variable: str, value: str, rule: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings({variable: value})
    assert caught.value.variable == variable
    assert str(caught.value).startswith(f"{variable}: ")
    assert rule in str(caught.value)


def test_pool_min_above_max_names_pool_min() -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings({"DATABASE_POOL_MIN": "20", "DATABASE_POOL_MAX": "5"})
    assert caught.value.variable == "DATABASE_POOL_MIN"


def test_key_id_without_key_file_names_the_missing_variable() -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings({"AMAZON_PAY_PUBLIC_KEY_ID": "SANDBOX-ABC"})
    assert caught.value.variable == "AMAZON_PAY_PRIVATE_KEY_FILE"


def test_live_mode_refuses_plaintext_unless_allowed(tmp_path: Path) -> None:
    key = tmp_path / "key.pem"
    key.write_text("not parsed here")
    env = {
        "AMAZON_PAY_PUBLIC_KEY_ID": "LIVE-ABC",
        "AMAZON_PAY_PRIVATE_KEY_FILE": str(key),
        "AMAZON_PAY_ENVIRONMENT": "live",
        "DATABASE_URL": "postgresql://ledger.example/payments",
    }
    with pytest.raises(ConfigError) as caught:
        load_settings(env)
    assert caught.value.variable == "AMAZON_PAY_ENVIRONMENT"
    assert load_settings({**env, "ALLOW_INSECURE": "1"}).allow_insecure


@pytest.mark.parametrize(
    ("change", "variable"),
    [
        (
            {"AMAZON_PAY_PUBLIC_KEY_ID": "", "AMAZON_PAY_PRIVATE_KEY_FILE": ""},
            "AMAZON_PAY_PUBLIC_KEY_ID",
        ),
        ({"DATABASE_URL": ""}, "DATABASE_URL"),
        ({"AMAZON_PAY_ENDPOINT": "http://pay-api.amazon.com"}, "AMAZON_PAY_ENDPOINT"),
        ({"IPN_EXTRA_CERT_HOSTS": "127.0.0.1:9000"}, "IPN_EXTRA_CERT_HOSTS"),
    ],
)
def test_live_mode_fails_closed_naming_the_variable(
    tmp_path: Path, change: dict[str, str], variable: str
) -> None:
    key = tmp_path / "key.pem"
    key.write_text("not parsed here")
    env = {
        "AMAZON_PAY_PUBLIC_KEY_ID": "LIVE-ABC",
        "AMAZON_PAY_PRIVATE_KEY_FILE": str(key),
        "AMAZON_PAY_ENVIRONMENT": "live",
        "DATABASE_URL": "postgresql://ledger.example/payments",
        "ALLOW_INSECURE": "1",
    }
    assert load_settings(env).amazon_pay.environment == "live"
    with pytest.raises(ConfigError) as caught:
        load_settings({**env, **change})
    assert caught.value.variable == variable


def test_a_live_merchant_in_the_merchants_file_refuses_http(tmp_path: Path) -> None:
    key = tmp_path / "key.pem"
    key.write_text("not parsed here")
    merchants = tmp_path / "merchants.toml"
    merchants.write_text(
        f'[merchants.eu]\npublic_key_id = "LIVE-EU"\nprivate_key_file = "{key}"\n'
        'environment = "live"\nendpoint = "http://pay-api.amazon.eu"\n'
    )
    env = {
        "AMAZON_PAY_PUBLIC_KEY_ID": "SANDBOX-ABC",
        "AMAZON_PAY_PRIVATE_KEY_FILE": str(key),
        "DATABASE_URL": "postgresql://ledger.example/payments",
        "ALLOW_INSECURE": "1",
        "AMAZON_PAY_MERCHANTS_FILE": str(merchants),
    }
    with pytest.raises(ConfigError) as caught:
        load_settings(env)
    assert caught.value.variable == "AMAZON_PAY_MERCHANTS_FILE"
    assert "merchants.eu.endpoint" in caught.value.rule


@pytest.mark.parametrize(
    ("alias", "region"), [("us", "na"), ("UK", "eu"), ("de", "eu"), ("jp", "jp")]
)
def test_region_aliases_normalize(alias: str, region: str) -> None:
    assert load_settings({"AMAZON_PAY_REGION": alias}).amazon_pay.region == region


def test_config_file_values_apply_and_environment_wins(tmp_path: Path) -> None:
    config = tmp_path / "service.toml"
    config.write_text('GRPC_LISTEN = "0.0.0.0:6000"\nDATABASE_POOL_MAX = 7\nLOG_LEVEL = "DEBUG"\n')
    settings = load_settings({"SERVICE_CONFIG_FILE": str(config), "LOG_LEVEL": "ERROR"})
    assert settings.grpc.listen == "0.0.0.0:6000"
    assert settings.database.pool_max_size == 7
    assert settings.log_level == "ERROR"


def test_invalid_config_file_is_named(tmp_path: Path) -> None:
    config = tmp_path / "service.toml"
    config.write_text("GRPC_LISTEN = ")
    with pytest.raises(ConfigError) as caught:
        load_settings({"SERVICE_CONFIG_FILE": str(config)})
    assert caught.value.variable == "SERVICE_CONFIG_FILE"


@given(
    host=st.sampled_from(["127.0.0.1", "0.0.0.0", "localhost", "[::1]", "svc-a.internal"]),
    port=st.integers(min_value=0, max_value=65535),
)
def test_listen_address_round_trips(host: str, port: int) -> None:
    assert parse_listen_address("GRPC_LISTEN", f"{host}:{port}") == (host, port)


@given(st.text(max_size=30).filter(lambda s: ":" not in s))
def test_listen_address_without_port_is_always_rejected(value: str) -> None:
    with pytest.raises(ConfigError):
        parse_listen_address("GRPC_LISTEN", value)


def test_grpc_workers_auto_is_one_per_available_cpu_and_numbers_are_bounded() -> None:
    assert load_settings({"GRPC_WORKERS": "auto"}).grpc.workers == available_cpus()
    assert load_settings({"GRPC_WORKERS": "3"}).grpc.workers == 3
    assert load_settings({}).grpc.workers == 1
    for bad in ("0", "65", "many"):
        with pytest.raises(ConfigError) as caught:
            load_settings({"GRPC_WORKERS": bad})
        assert caught.value.variable == "GRPC_WORKERS"


def test_signing_threads_default_to_a_small_pool_and_any_count_is_bounded() -> None:
    assert load_settings({}).amazon_calls.signing_threads == 2
    assert load_settings({"AMAZON_SIGNING_THREADS": "4"}).amazon_calls.signing_threads == 4
    for bad in ("65", "two"):
        with pytest.raises(ConfigError) as caught:
            load_settings({"AMAZON_SIGNING_THREADS": bad})
        assert caught.value.variable == "AMAZON_SIGNING_THREADS"


@pytest.mark.parametrize("threads", ["0", "-1"])
def test_no_signing_threads_is_refused_because_signing_never_runs_on_the_event_loop(
    threads: str,
) -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings({"AMAZON_SIGNING_THREADS": threads})
    assert caught.value.variable == "AMAZON_SIGNING_THREADS"
    assert "at least 1" in caught.value.rule
    assert "event loop" in caught.value.rule


def test_the_service_refuses_to_start_without_signing_threads(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("AMAZON_SIGNING_THREADS", "0")
    assert service_main(["serve"]) == 2
    assert (
        "configuration error: AMAZON_SIGNING_THREADS: must be at least 1" in capsys.readouterr().err
    )


def test_several_workers_need_a_database_url_and_credentials() -> None:
    with pytest.raises(ConfigError) as caught:
        Supervisor(load_settings({"GRPC_WORKERS": "2"}))
    assert caught.value.variable == "GRPC_WORKERS"
    assert "DATABASE_URL" in caught.value.rule
