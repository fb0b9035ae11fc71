"""Live mode fails closed: each unsafe set-up stops `python -m service` with exit 2 and a message
naming the variable, before anything (an embedded Postgres, the dev emulator) is started."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests._certs import CertificateAuthority
from tests._emulator import write_key_pair
from tests._process import ServiceProcess


@pytest.fixture(scope="module")
def live_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    base = tmp_path_factory.mktemp("live")
    private, _ = write_key_pair(base / "amazon")
    server = CertificateAuthority(base / "ca").server()
    return {
        "key": str(private),
        "cert": str(server.cert_file),
        "tls_key": str(server.key_file),
        "base": str(base),
    }


def _merchants_file(live_files: dict[str, str]) -> str:
    path = Path(live_files["base"]) / "merchants.toml"
    path.write_text(
        f'[merchants.eu]\npublic_key_id = "LIVE-EUEXAMPLE"\nprivate_key_file = "{live_files["key"]}"\n'
        'environment = "live"\nendpoint = "http://pay-api.amazon.eu"\n'
    )
    return str(path)


@pytest.mark.parametrize(
    ("change", "variable"),
    [
        (
            {"AMAZON_PAY_PUBLIC_KEY_ID": "", "AMAZON_PAY_PRIVATE_KEY_FILE": ""},
            "AMAZON_PAY_PUBLIC_KEY_ID",
        ),
        ({"DATABASE_URL": ""}, "DATABASE_URL"),
        ({"AMAZON_PAY_ENDPOINT": "http://127.0.0.1:9/"}, "AMAZON_PAY_ENDPOINT"),
        ({"AMAZON_PAY_MERCHANTS_FILE": "merchants"}, "AMAZON_PAY_MERCHANTS_FILE"),
        ({"IPN_EXTRA_CERT_HOSTS": "127.0.0.1:8480"}, "IPN_EXTRA_CERT_HOSTS"),
        (
            {"IPN_TOPIC_ARNS": "REPLACE-WITH-arn:aws:sns:<region>:<account>:<topic>"},
            "IPN_TOPIC_ARNS",
        ),
    ],
)
async def test_live_mode_refuses_to_start_naming_the_variable(
    tmp_path: Path, live_files: dict[str, str], change: dict[str, str], variable: str
) -> None:
    if change.get("AMAZON_PAY_MERCHANTS_FILE") == "merchants":
        change = {"AMAZON_PAY_MERCHANTS_FILE": _merchants_file(live_files)}
    process = ServiceProcess(
        {
            "AMAZON_PAY_ENVIRONMENT": "live",
            "AMAZON_PAY_PUBLIC_KEY_ID": "LIVE-AEXAMPLEKEYID",
            "AMAZON_PAY_PRIVATE_KEY_FILE": live_files["key"],
            "AMAZON_PAY_ENDPOINT": "",
            "AMAZON_PAY_MERCHANTS_FILE": "",
            # Unreachable on purpose: a refusal must come before any connection is tried.
            "DATABASE_URL": "postgresql://nobody@127.0.0.1:9/ledger",
            "EMBEDDED_POSTGRES_DIR": str(tmp_path / "pg"),
            "GRPC_TLS_CERT_FILE": live_files["cert"],
            "GRPC_TLS_KEY_FILE": live_files["tls_key"],
            "GRPC_LISTEN": "127.0.0.1:0",
            "IPN_LISTEN": "off",
            "ADMIN_LISTEN": "off",
            "IPN_EXTRA_CERT_HOSTS": "",
            "IPN_TOPIC_ARNS": "",
            **change,
        }
    )
    await process.start()
    try:
        assert await process.wait(timeout=60) == 2
    finally:
        await process.kill()
    output = "\n".join(process.log_lines)
    assert f"configuration error: {variable}: " in output
    assert not (tmp_path / "pg").exists(), "no embedded Postgres for live mode"
    assert "development emulator started" not in output


async def test_a_caller_without_merchants_stops_start_up_naming_it(tmp_path: Path) -> None:
    callers = tmp_path / "callers.toml"
    callers.write_text(
        "[callers.order-service]\ncertificate_names = ['order-service']\nallow = ['*']\n"
    )
    process = ServiceProcess(
        {
            "DATABASE_URL": "",
            "EMBEDDED_POSTGRES_DIR": str(tmp_path / "pg"),
            "AMAZON_PAY_PUBLIC_KEY_ID": "",
            "AMAZON_PAY_PRIVATE_KEY_FILE": "",
            "GRPC_LISTEN": "127.0.0.1:0",
            "IPN_LISTEN": "off",
            "ADMIN_LISTEN": "off",
            "GRPC_CALLERS_FILE": str(callers),
        }
    )
    await process.start()
    try:
        assert await process.wait(timeout=60) == 2
    finally:
        await process.kill()
    output = "\n".join(process.log_lines)
    assert (
        "configuration error: GRPC_CALLERS_FILE: callers.order-service.merchants is required"
        in (output)
    )
    assert not (tmp_path / "pg").exists()
