"""Canonicalization and signatures against the official SDKs' own test vectors."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from service.amazonpay import (
    Algorithm,
    AmazonPayRequestError,
    CanonicalRequest,
    PrivateKey,
    RequestSigner,
    button_string_to_sign,
    canonical_request,
    parse_authorization_header,
    string_to_sign,
    verify_signature,
)

VECTORS = Path(__file__).resolve().parents[2] / "data" / "signing-vectors"
PRIVATE_PEM = VECTORS / "test-key-private.pem"
PUBLIC_PEM = (VECTORS / "test-key-public.pem").read_bytes()
FIXED_HEADERS = {
    "accept": "application/json",
    "content-type": "application/json",
    "x-amz-pay-date": "20180524T223710Z",
    "x-amz-pay-host": "pay-api.amazon.eu",
}
BUTTON_PAYLOAD = (
    '{"storeId":"amzn1.application-oa2-client.xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx",'
    '"webCheckoutDetails":{"checkoutReviewReturnUrl":"https://localhost/test/CheckoutReview.php",'
    '"checkoutResultReturnUrl":"https://localhost/test/CheckoutResult.php"}}'
)


def _load(name: str) -> list[dict[str, Any]]:
    data: list[dict[str, Any]] = json.loads((VECTORS / name).read_text(encoding="utf-8"))
    return data


JAVA = _load("java-canonical-vectors.json")
DOTNET = _load("dotnet-canonical-vectors.json")


def _java_id(vector: dict[str, Any]) -> str:
    return f"{vector['name']}[{vector['stringToSign'].split(chr(10))[0]}]"


def test_vector_files_have_the_documented_sizes() -> None:
    assert len(JAVA) == 34
    assert len(DOTNET) == 13


@pytest.mark.parametrize("vector", JAVA, ids=_java_id)
def test_java_vector_canonical_request_and_string_to_sign_match(vector: dict[str, Any]) -> None:
    headers = {**FIXED_HEADERS, "x-amz-pay-region": "EU"}
    canonical = canonical_request(
        vector["method"], vector["uri"], vector["parameters"], headers, vector["payload"]
    )
    algorithm = Algorithm.parse(vector["stringToSign"].split("\n", 1)[0])
    assert canonical.text == vector["canonicalRequest"]
    assert canonical.string_to_sign(algorithm) == vector["stringToSign"]


@pytest.mark.parametrize("vector", DOTNET, ids=lambda v: v["name"])
def test_dotnet_vector_canonical_request_and_both_strings_to_sign_match(
    vector: dict[str, Any],
) -> None:
    headers = {
        **FIXED_HEADERS,
        "x-amz-pay-date": vector["date"],
        "x-amz-pay-host": vector["host"],
        "x-amz-pay-region": vector["region_header"],
    }
    canonical = canonical_request(
        vector["method"], vector["uri"], vector["parameters"], headers, vector["payload"]
    )
    assert canonical.text == vector["canonicalRequest"]
    assert string_to_sign(canonical.text, Algorithm.V1) == vector["stringToSign_V1"]
    assert string_to_sign(canonical.text, Algorithm.V2) == vector["stringToSign_V2"]


@pytest.mark.parametrize("vector", [*JAVA, *DOTNET], ids=lambda v: v["name"])
@pytest.mark.parametrize("algorithm", list(Algorithm))
def test_signature_of_every_vector_verifies_with_the_public_key(
    vector: dict[str, Any], algorithm: Algorithm
) -> None:
    key = PrivateKey.from_file(PRIVATE_PEM)
    message = string_to_sign(vector["canonicalRequest"], algorithm)
    signature = key.sign(message, algorithm)
    assert verify_signature(PUBLIC_PEM, message, signature, algorithm)


def test_signature_uses_the_algorithm_salt_length() -> None:
    key = PrivateKey.from_file(PRIVATE_PEM)
    v2 = key.sign("message", Algorithm.V2)
    v1 = key.sign("message", Algorithm.V1)
    assert verify_signature(PUBLIC_PEM, "message", v2, Algorithm.V2)
    assert not verify_signature(PUBLIC_PEM, "message", v2, Algorithm.V1)
    assert verify_signature(PUBLIC_PEM, "message", v1, Algorithm.V1)
    assert not verify_signature(PUBLIC_PEM, "message", v1, Algorithm.V2)


def test_tampered_message_does_not_verify() -> None:
    key = PrivateKey.from_file(PRIVATE_PEM)
    signature = key.sign("message")
    assert not verify_signature(PUBLIC_PEM, "messagE", signature)
    assert not verify_signature(PUBLIC_PEM, "message", "not base64!")


def test_button_vector_string_to_sign_matches_readme() -> None:
    assert button_string_to_sign(BUTTON_PAYLOAD) == (
        "AMZN-PAY-RSASSA-PSS-V2\n8dec52d799607be40f82d5c8e7ecb6c171e6591c41b1111a576b16076c89381c"
    )


def test_button_signature_verifies_over_the_readme_string_to_sign() -> None:
    signer = RequestSigner("KEYID", PrivateKey.from_file(PRIVATE_PEM))
    signature = signer.sign_button_payload(BUTTON_PAYLOAD)
    assert verify_signature(PUBLIC_PEM, button_string_to_sign(BUTTON_PAYLOAD), signature)


def _charges_post(headers: dict[str, str]) -> CanonicalRequest:
    return canonical_request(
        "POST", "/sandbox/v2/charges", None, headers, b'{"a":1}', path_is_canonical=True
    )


def test_authorization_header_has_the_documented_format_and_verifies() -> None:
    signer = RequestSigner("AHKEYID123", PrivateKey.from_file(PRIVATE_PEM))
    headers = {**FIXED_HEADERS, "x-amz-pay-region": "eu", "x-amz-pay-idempotency-key": "abc"}
    canonical = _charges_post(headers)
    value = signer.authorization(canonical)
    assert value.startswith("AMZN-PAY-RSASSA-PSS-V2 PublicKeyId=AHKEYID123, SignedHeaders=")
    parsed = parse_authorization_header(value)
    assert parsed.signed_headers == (
        "accept",
        "content-type",
        "x-amz-pay-date",
        "x-amz-pay-host",
        "x-amz-pay-idempotency-key",
        "x-amz-pay-region",
    )
    assert verify_signature(PUBLIC_PEM, canonical.string_to_sign(), parsed.signature)
    assert parsed.signature not in repr(parsed)


def test_a_prepared_authorization_signed_elsewhere_is_the_same_header() -> None:
    """The client canonicalises on the event loop and signs in a worker thread."""
    signer = RequestSigner("AHKEYID123", PrivateKey.from_file(PRIVATE_PEM))
    headers = {**FIXED_HEADERS, "x-amz-pay-region": "eu"}
    pending = signer.prepare(_charges_post(headers))
    whole = parse_authorization_header(signer.authorization(_charges_post(headers)))
    split = parse_authorization_header(pending.sign())
    assert (split.algorithm, split.public_key_id, split.signed_headers) == (
        whole.algorithm,
        whole.public_key_id,
        whole.signed_headers,
    )
    assert verify_signature(PUBLIC_PEM, pending.string_to_sign, split.signature)
    assert "Signature=" not in repr(pending)
    assert "PrivateKey" not in repr(pending)


def test_pkcs1_and_pkcs8_files_and_bytes_load_the_same_key(tmp_path: Path) -> None:
    pkcs1 = PrivateKey.from_file(PRIVATE_PEM)
    raw = serialization.load_pem_private_key(PRIVATE_PEM.read_bytes(), password=None)
    pkcs8_pem = raw.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    assert pkcs8_pem.startswith(b"-----BEGIN PRIVATE KEY-----")
    pkcs8_file = tmp_path / "key8.pem"
    pkcs8_file.write_bytes(pkcs8_pem)
    public = serialization.load_pem_public_key(PUBLIC_PEM)
    assert isinstance(public, rsa.RSAPublicKey)
    expected = public.public_numbers()
    for key in (pkcs1, PrivateKey.from_file(pkcs8_file), PrivateKey.from_pem(pkcs8_pem)):
        assert key.public_key().public_numbers() == expected
        assert verify_signature(PUBLIC_PEM, "x", key.sign("x"))


def test_password_protected_key_loads_with_its_password(tmp_path: Path) -> None:
    raw = serialization.load_pem_private_key(PRIVATE_PEM.read_bytes(), password=None)
    encrypted = raw.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(b"s3cret"),
    )
    path = tmp_path / "enc.pem"
    path.write_bytes(encrypted)
    key = PrivateKey.from_file(path, password=b"s3cret")
    assert verify_signature(PUBLIC_PEM, "x", key.sign("x"))
    with pytest.raises(AmazonPayRequestError):
        PrivateKey.from_file(path)


def test_unreadable_key_errors_never_echo_the_key_material(tmp_path: Path) -> None:
    bogus = tmp_path / "bogus.pem"
    bogus.write_text("-----BEGIN PRIVATE KEY-----\nTOPSECRETMATERIAL\n-----END PRIVATE KEY-----\n")
    with pytest.raises(AmazonPayRequestError) as info:
        PrivateKey.from_file(bogus)
    assert "TOPSECRETMATERIAL" not in str(info.value)
    assert info.value.__cause__ is None
    with pytest.raises(AmazonPayRequestError):
        PrivateKey.from_file(tmp_path / "missing.pem")


def test_private_key_repr_and_signer_repr_hide_the_key() -> None:
    key = PrivateKey.from_file(PRIVATE_PEM)
    pem_body = PRIVATE_PEM.read_text().splitlines()[1]
    for text in (repr(key), str(key), repr(RequestSigner("ID", key))):
        assert "redacted" in text
        assert pem_body not in text


def test_private_key_refuses_to_be_pickled() -> None:
    import pickle

    with pytest.raises(TypeError):
        pickle.dumps(PrivateKey.from_file(PRIVATE_PEM))
