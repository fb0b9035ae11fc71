"""Properties of the RFC 3986 / canonical URI / canonical query encoders."""

from __future__ import annotations

import string
from urllib.parse import unquote

from hypothesis import given
from hypothesis import strategies as st

from service.amazonpay import canonical_path, canonical_query, encode_rfc3986

UNRESERVED = set(string.ascii_letters + string.digits + "-_.~")
text = st.text(st.characters(exclude_categories=["Cs"]), max_size=40)


@given(text)
def test_encoding_round_trips_through_unquote(value: str) -> None:
    assert unquote(encode_rfc3986(value), errors="strict") == value


@given(text, text)
def test_encoding_is_injective(a: str, b: str) -> None:
    if a != b:
        assert encode_rfc3986(a) != encode_rfc3986(b)


@given(text)
def test_only_unreserved_characters_stay_literal_and_hex_is_upper_case(value: str) -> None:
    encoded = encode_rfc3986(value)
    i = 0
    while i < len(encoded):
        ch = encoded[i]
        if ch == "%":
            hex_digits = encoded[i + 1 : i + 3]
            assert len(hex_digits) == 2
            assert all(c in "0123456789ABCDEF" for c in hex_digits)
            i += 3
        else:
            assert ch in UNRESERVED
            i += 1
    for ch in value:
        if ch in UNRESERVED:
            assert ch in encoded


@given(text)
def test_canonical_path_has_no_repeated_slashes_and_decodes_to_collapsed_input(value: str) -> None:
    path = canonical_path(value)
    assert path.startswith("/")
    assert "//" not in path
    assert set(path) <= UNRESERVED | {"/", "%"} | set("0123456789ABCDEF")
    decoded = unquote(path, errors="strict")
    assert decoded.replace("/", "") == value.replace("/", "")


@given(st.lists(st.tuples(text, text), max_size=8), st.randoms())
def test_canonical_query_is_independent_of_parameter_order(
    pairs: list[tuple[str, str]], rnd: object
) -> None:
    shuffled = list(pairs)
    rnd.shuffle(shuffled)  # type: ignore[attr-defined]
    assert canonical_query(pairs) == canonical_query(shuffled)


@given(st.lists(st.tuples(text, text), max_size=8))
def test_canonical_query_is_sorted_by_encoded_name_then_value(
    pairs: list[tuple[str, str]],
) -> None:
    query = canonical_query(pairs)
    if not pairs:
        assert query == ""
        return
    items = [tuple(item.split("=", 1)) for item in query.split("&")]
    assert items == sorted(items)
    assert sorted((unquote(n), unquote(v)) for n, v in items) == sorted(pairs)
