"""Authentication over real HTTP: every failure mode has Amazon's status and reasonCode."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import aiohttp
from cryptography.hazmat.primitives.asymmetric import rsa

from emulator import RunningEmulator
from emulator.signing import ALGORITHM_V1
from emulator.testing import SignedClient, generate_key, sign_headers

from ._flows import STORE_ID, new_session
from .conftest import KEY_ID

BODY = json.dumps({"storeId": STORE_ID}).encode()
PATH = "/sandbox/v2/checkoutSessions"


async def _post(
    http: aiohttp.ClientSession, emu: RunningEmulator, headers: dict[str, str], body: bytes = BODY
) -> tuple[int, dict[str, str]]:
    async with http.post(emu.url + PATH, data=body, headers=headers) as resp:
        return resp.status, await resp.json()


def _signed(key: rsa.RSAPrivateKey, **kwargs: object) -> dict[str, str]:
    return sign_headers(
        key,
        KEY_ID,
        "POST",
        PATH,
        BODY,
        headers={"x-amz-pay-idempotency-key": "k1"},
        **kwargs,  # type: ignore[arg-type]
    )


async def test_missing_authorization_header_is_400_missing_header(
    emu: RunningEmulator, http: aiohttp.ClientSession, key_pair: tuple[rsa.RSAPrivateKey, str]
) -> None:
    headers = _signed(key_pair[0])
    del headers["authorization"]
    assert await _post(http, emu, headers) == (
        400,
        {"reasonCode": "MissingHeader", "message": "The 'authorization' header is missing"},
    )


async def test_missing_signed_header_is_400_missing_header(
    emu: RunningEmulator, http: aiohttp.ClientSession, key_pair: tuple[rsa.RSAPrivateKey, str]
) -> None:
    headers = _signed(key_pair[0])
    del headers["x-amz-pay-host"]
    status, body = await _post(http, emu, headers)
    assert (status, body["reasonCode"]) == (400, "MissingHeader")


async def test_unknown_public_key_id_is_403_invalid_authentication(
    emu: RunningEmulator, http: aiohttp.ClientSession
) -> None:
    stranger, _ = generate_key()
    headers = sign_headers(stranger, "NOT-REGISTERED", "POST", PATH, BODY)
    status, body = await _post(http, emu, headers)
    assert (status, body["reasonCode"]) == (403, "InvalidAuthentication")


async def test_signature_by_another_key_is_403_invalid_request_signature(
    emu: RunningEmulator, http: aiohttp.ClientSession
) -> None:
    stranger, _ = generate_key()
    headers = sign_headers(stranger, KEY_ID, "POST", PATH, BODY)
    status, body = await _post(http, emu, headers)
    assert (status, body["reasonCode"]) == (403, "InvalidRequestSignature")


async def test_tampered_body_is_403_invalid_request_signature(
    emu: RunningEmulator, http: aiohttp.ClientSession, key_pair: tuple[rsa.RSAPrivateKey, str]
) -> None:
    headers = _signed(key_pair[0])
    status, body = await _post(http, emu, headers, json.dumps({"storeId": "other"}).encode())
    assert (status, body["reasonCode"]) == (403, "InvalidRequestSignature")


async def test_v2_label_with_salt_20_signature_is_rejected(
    emu: RunningEmulator, http: aiohttp.ClientSession, key_pair: tuple[rsa.RSAPrivateKey, str]
) -> None:
    headers = _signed(key_pair[0], salt_length=20)
    status, body = await _post(http, emu, headers)
    assert (status, body["reasonCode"]) == (403, "InvalidRequestSignature")


async def test_legacy_algorithm_with_salt_20_is_accepted(
    emu: RunningEmulator, http: aiohttp.ClientSession, key_pair: tuple[rsa.RSAPrivateKey, str]
) -> None:
    status, body = await _post(http, emu, _signed(key_pair[0], algorithm=ALGORITHM_V1))
    assert status == 201, body


async def test_iso_date_form_is_accepted(
    emu: RunningEmulator, http: aiohttp.ClientSession, key_pair: tuple[rsa.RSAPrivateKey, str]
) -> None:
    iso = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    status, body = await _post(http, emu, _signed(key_pair[0], date=iso))
    assert status == 201, body


async def test_date_older_than_15_minutes_is_rejected(
    emu: RunningEmulator, http: aiohttp.ClientSession, key_pair: tuple[rsa.RSAPrivateKey, str]
) -> None:
    old = (datetime.now(UTC) - timedelta(minutes=16)).strftime("%Y%m%dT%H%M%SZ")
    status, body = await _post(http, emu, _signed(key_pair[0], date=old))
    assert (status, body["reasonCode"]) == (403, "InvalidRequestSignature")


async def test_advancing_the_emulator_clock_does_not_break_request_dates(
    client: SignedClient,
) -> None:
    await client.control("POST", "/clock", {"advanceSeconds": 10 * 86400})
    assert (await client.call("POST", "/checkoutSessions", {"storeId": STORE_ID})).status == 201


async def test_extra_signed_headers_such_as_user_agent_are_verified(
    emu: RunningEmulator, http: aiohttp.ClientSession, key_pair: tuple[rsa.RSAPrivateKey, str]
) -> None:
    headers = sign_headers(
        key_pair[0],
        KEY_ID,
        "POST",
        PATH,
        BODY,
        headers={"user-agent": "amazon-pay-api-sdk-nodejs/2.3.4", "x-amz-pay-idempotency-key": "k"},
    )
    assert "user-agent" in headers["authorization"]
    status, _ = await _post(http, emu, headers)
    assert status == 201
    headers["user-agent"] = "tampered"
    status, body = await _post(http, emu, headers)
    assert (status, body["reasonCode"]) == (403, "InvalidRequestSignature")


async def test_key_registered_through_control_plane_is_accepted(
    emu: RunningEmulator, http: aiohttp.ClientSession
) -> None:
    key, pem = generate_key()
    async with http.post(
        emu.url + "/_emulator/keys", json={"publicKeyId": "LATE-KEY", "publicKeyPem": pem}
    ) as resp:
        assert resp.status == 201
    client = SignedClient(http, emu.url, key, "LATE-KEY")
    assert await new_session(client)


async def test_environment_key_prefix_selects_environment_on_bare_v2_path(
    emu: RunningEmulator, http: aiohttp.ClientSession
) -> None:
    key, pem = generate_key()
    emu.emulator.add_key("LIVE-ABC", pem)
    live = SignedClient(http, emu.url, key, "LIVE-ABC", prefix="/v2")
    reply = await live.call("POST", "/checkoutSessions", {"storeId": STORE_ID})
    assert reply.body["releaseEnvironment"] == "Live"
    sandbox = SignedClient(http, emu.url, key, "LIVE-ABC", prefix="/sandbox/v2")
    missing = await sandbox.call("GET", f"/checkoutSessions/{reply.body['checkoutSessionId']}")
    assert (missing.status, missing.body["reasonCode"]) == (404, "ResourceNotFound")


async def test_unknown_api_path_and_method_answer_in_amazon_error_format(
    client: SignedClient,
) -> None:
    unknown = await client.call("GET", "/nothingHere")
    assert (unknown.status, unknown.body["reasonCode"]) == (404, "ResourceNotFound")
    wrong = await client.call("PUT", "/charges/x")
    assert (wrong.status, wrong.body["reasonCode"]) == (405, "UnsupportedOperation")
