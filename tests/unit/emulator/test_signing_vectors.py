"""The emulator's verifier canonicalizes exactly like Amazon's own SDK test vectors."""

from __future__ import annotations

import base64
import hashlib
import json
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from emulator import signing

VECTORS = Path(__file__).resolve().parents[2] / "data" / "signing-vectors"
FIXED_HEADERS = ("accept", "content-type", "x-amz-pay-date", "x-amz-pay-host", "x-amz-pay-region")


def _load(name: str) -> list[dict[str, Any]]:
    data: list[dict[str, Any]] = json.loads((VECTORS / name).read_text())
    return data


def _raw_query(params: dict[str, list[str]]) -> str:
    """What a client puts on the wire: any valid percent-encoding, unsorted."""
    return "&".join(
        f"{quote(k, safe='')}={quote(v, safe='')}" for k, vs in params.items() for v in vs
    )


def _rebuild(vector: dict[str, Any], region: str) -> str:
    headers = {
        "accept": "application/json",
        "content-type": "application/json",
        "x-amz-pay-date": "20180524T223710Z",
        "x-amz-pay-host": "pay-api.amazon.eu",
        "x-amz-pay-region": region,
    }
    path = urlsplit(vector["uri"]).path
    return signing.canonical_request(
        vector["method"],
        signing.canonical_uri(quote(path, safe="/")),
        signing.canonical_query(_raw_query(vector["parameters"])),
        FIXED_HEADERS,
        headers.get,
        hashlib.sha256(vector["payload"].encode()).hexdigest(),
    )


@pytest.mark.parametrize("vector", _load("java-canonical-vectors.json"), ids=lambda v: v["name"])
def test_canonical_request_matches_java_sdk_vector(vector: dict[str, Any]) -> None:
    canonical = _rebuild(vector, "EU")
    assert canonical == vector["canonicalRequest"]
    algorithm = vector["stringToSign"].split("\n", 1)[0]
    assert signing.string_to_sign(algorithm, canonical) == vector["stringToSign"]


@pytest.mark.parametrize("vector", _load("dotnet-canonical-vectors.json"), ids=lambda v: v["name"])
def test_canonical_request_matches_dotnet_sdk_vector(vector: dict[str, Any]) -> None:
    canonical = _rebuild(vector, "eu")
    assert canonical == vector["canonicalRequest"]
    assert signing.string_to_sign(signing.ALGORITHM_V1, canonical) == vector["stringToSign_V1"]
    assert signing.string_to_sign(signing.ALGORITHM_V2, canonical) == vector["stringToSign_V2"]


def test_canonical_query_sorts_by_encoded_name_then_value() -> None:
    assert signing.canonical_query("foo=b&foo=a&A.10=x&A.2=y") == "A.10=x&A.2=y&foo=a&foo=b"
    assert signing.canonical_query("f%20oo=b%20ar") == "f%20oo=b%20ar"


def test_canonical_uri_collapses_slashes_and_uppercases_percent_encoding() -> None:
    assert signing.canonical_uri("///foo//") == "/foo/"
    assert signing.canonical_uri("") == "/"
    assert signing.canonical_uri("/%e1%88%b4") == "/%E1%88%B4"


def _test_key() -> tuple[rsa.RSAPrivateKey, rsa.RSAPublicKey]:
    private = serialization.load_pem_private_key(
        (VECTORS / "test-key-private.pem").read_bytes(), None
    )
    assert isinstance(private, rsa.RSAPrivateKey)
    public = signing.load_public_key((VECTORS / "test-key-public.pem").read_text())
    return private, public


def _pss(private: rsa.RSAPrivateKey, message: str, salt: int) -> bytes:
    return private.sign(
        message.encode(),
        padding.PSS(mgf=padding.MGF1(hashes.SHA256()), salt_length=salt),
        hashes.SHA256(),
    )


def test_button_payload_string_to_sign_matches_reference() -> None:
    payload = (
        '{"storeId":"amzn1.application-oa2-client.xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx",'
        '"webCheckoutDetails":{"checkoutReviewReturnUrl":"https://localhost/test/CheckoutReview.php",'
        '"checkoutResultReturnUrl":"https://localhost/test/CheckoutResult.php"}}'
    )
    assert signing.string_to_sign(signing.ALGORITHM_V2, payload) == (
        "AMZN-PAY-RSASSA-PSS-V2\n8dec52d799607be40f82d5c8e7ecb6c171e6591c41b1111a576b16076c89381c"
    )


def test_sdk_test_key_signatures_verify_with_the_salt_of_their_algorithm() -> None:
    private, public = _test_key()
    message = (
        "AMZN-PAY-RSASSA-PSS-V2\nbb49552975c396f1e49d5510e1555b8b0627dc491bc61aaefdb561f202ad8020"
    )
    assert signing.verify_signature(
        public, signing.ALGORITHM_V2, message, _pss(private, message, 32)
    )
    assert signing.verify_signature(
        public, signing.ALGORITHM_V1, message, _pss(private, message, 20)
    )


def test_salt_length_is_enforced_per_algorithm() -> None:
    private, public = _test_key()
    message = "anything"
    assert not signing.verify_signature(
        public, signing.ALGORITHM_V2, message, _pss(private, message, 20)
    )
    assert not signing.verify_signature(
        public, signing.ALGORITHM_V1, message, _pss(private, message, 32)
    )


def test_pkcs1_public_key_pem_is_accepted() -> None:
    _, public = _test_key()
    pkcs1 = public.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.PKCS1)
    assert signing.load_public_key(pkcs1).public_numbers() == public.public_numbers()


def test_authorization_header_is_parsed_into_its_parts() -> None:
    sig = base64.b64encode(b"\x01\x02").decode()
    auth = signing.parse_authorization(
        f"AMZN-PAY-RSASSA-PSS-V2 PublicKeyId=SANDBOX-AB, SignedHeaders=accept;User-Agent, "
        f"Signature={sig}"
    )
    assert auth.algorithm == signing.ALGORITHM_V2
    assert auth.public_key_id == "SANDBOX-AB"
    assert auth.signed_headers == ("accept", "user-agent")
    assert auth.signature == b"\x01\x02"


@pytest.mark.parametrize(
    "value",
    ["Bearer abc", "AMZN-PAY-HMAC PublicKeyId=a, SignedHeaders=a, Signature=AA=="],
)
def test_malformed_authorization_is_invalid_header_value(value: str) -> None:
    with pytest.raises(signing.SignatureError) as info:
        signing.parse_authorization(value)
    assert (info.value.status, info.value.reason_code) == (400, "InvalidHeaderValue")
