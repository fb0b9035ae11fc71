"""The settlement report flat file: round trips, hostile input, bounded memory."""

from __future__ import annotations

import dataclasses
import tracemalloc
from collections.abc import AsyncIterator, Iterable
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from service.amazonpay import (
    BODY_COLUMNS,
    HEADER_COLUMNS,
    AmazonPayError,
    SettlementLine,
    SettlementReportError,
    SettlementReportHeader,
    format_settlement_report,
    parse_settlement_report,
)
from service.amazonpay._settlement_report import MAX_FIELD_CHARS, MAX_LINE_BYTES

HEADER_NAMES = '"SellerId","SettlementStartDate","SettlementEndDate"'
HEADER_VALUES = '"A1SELLER","2015-05-18T14:37:01-0700","2015-05-21T14:37:03-0700"'
COLUMNS = ",".join(f'"{name}"' for name in BODY_COLUMNS)
ROW = (
    '"2015-05-18T15:48:50-0000","5044561311","P01-2400747-7777779-C084595","order-1",'
    '"Capture","P01-2400747-7777779","order-1","Shop","USD","14.00","-0.41","-0.30","-0.71",'
    '"13.29","Capture"'
)


async def _chunks(data: bytes, size: int = 7) -> AsyncIterator[bytes]:
    for start in range(0, len(data), size):
        yield data[start : start + size]


def _document(*rows: str, ending: str = "\n") -> bytes:
    return ending.join((HEADER_NAMES, HEADER_VALUES, COLUMNS, *rows)).encode() + ending.encode()


async def _parse(data: bytes, size: int = 7) -> tuple[SettlementReportHeader, list[SettlementLine]]:
    header, lines = await parse_settlement_report(_chunks(data, size))
    return header, [line async for line in lines]


async def _error(data: bytes) -> SettlementReportError:
    with pytest.raises(SettlementReportError) as info:
        await _parse(data)
    return info.value


def _row(**replace: str) -> str:
    values = dict(zip(BODY_COLUMNS, (v.strip('"') for v in ROW.split('","')), strict=True))
    values.update(replace)
    return ",".join(f'"{values[name]}"' for name in BODY_COLUMNS)


# --- what a well-formed report reads as ------------------------------------------------------


async def test_amazons_documented_example_values_read_as_typed_fields() -> None:
    header, (line,) = await _parse(_document(ROW))
    assert header == SettlementReportHeader(
        seller_id="A1SELLER",
        settlement_start=datetime(2015, 5, 18, 21, 37, 1, tzinfo=UTC),
        settlement_end=datetime(2015, 5, 21, 21, 37, 3, tzinfo=UTC),
    )
    assert header.settlement_start.tzinfo is not None
    assert line == SettlementLine(
        line_number=1,
        settlement_id="5044561311",
        posted_at=datetime(2015, 5, 18, 15, 48, 50, tzinfo=UTC),
        transaction_type="Capture",
        amazon_transaction_id="P01-2400747-7777779-C084595",
        seller_reference_id="order-1",
        amount=Decimal("14.00"),
        fee=Decimal("-0.71"),
        net=Decimal("13.29"),
        currency="USD",
    )
    assert line.raw["StoreName"] == "Shop"
    assert line.raw["AmazonOrderReferenceId"] == "P01-2400747-7777779"


async def test_crlf_endings_blank_lines_a_bom_and_no_final_newline_are_accepted() -> None:
    data = b"\xef\xbb\xbf" + _document(ROW, "", ROW, ending="\r\n").rstrip(b"\r\n")
    header, lines = await _parse(data, size=3)
    assert header.seller_id == "A1SELLER"
    assert [line.line_number for line in lines] == [1, 2]


async def test_columns_are_found_by_name_in_any_order_and_unknown_ones_are_kept() -> None:
    names = ["Extra", *reversed(BODY_COLUMNS)]
    values = dict(zip(BODY_COLUMNS, (v.strip('"') for v in ROW.split('","')), strict=True))
    values["Extra"] = "kept"
    data = "\n".join(
        (
            HEADER_NAMES,
            HEADER_VALUES,
            ",".join(names),
            ",".join(f'"{values[name]}"' for name in names),
        )
    ).encode()
    _, (line,) = await _parse(data)
    assert (line.amount, line.raw["Extra"]) == (Decimal("14.00"), "kept")


async def test_the_fee_is_the_sum_of_the_fee_columns_without_a_total_and_zero_without_any() -> None:
    _, (with_parts,) = await _parse(_document(_row(TotalTransactionFee="")))
    assert with_parts.fee == Decimal("-0.71")
    _, (without,) = await _parse(
        _document(_row(TotalTransactionFee="", TransactionPercentageFee="", TransactionFixedFee=""))
    )
    assert without.fee == Decimal(0)


async def test_empty_optional_ids_are_none() -> None:
    _, (line,) = await _parse(_document(_row(AmazonTransactionId="", SellerReferenceId=" ")))
    assert (line.amazon_transaction_id, line.seller_reference_id) == (None, None)


async def test_a_report_without_rows_has_a_header_and_no_lines() -> None:
    header, lines = await _parse(_document())
    assert (header.seller_id, lines) == ("A1SELLER", [])


# --- round trip --------------------------------------------------------------------------------

_text = st.text(
    st.characters(exclude_categories=("Cc", "Cs"), exclude_characters="\u2028\u2029"),
    max_size=30,
)
_ids = st.one_of(
    st.none(),
    st.text(st.characters(min_codepoint=33, max_codepoint=126), min_size=1, max_size=30)
    .map(str.strip)
    .filter(bool),
)
_amounts = st.decimals(
    min_value=Decimal("-1000000"), max_value=Decimal("1000000"), places=2, allow_nan=False
)
_instants = st.datetimes(
    min_value=datetime(2000, 1, 1), max_value=datetime(2100, 1, 1), timezones=st.just(UTC)
).map(lambda value: value.replace(microsecond=0))


@st.composite
def _lines(draw: st.DrawFn) -> SettlementLine:
    extra = {
        name: draw(_text)
        for name in (
            "AmazonOrderReferenceId",
            "SellerOrderId",
            "StoreName",
            "TransactionDescription",
        )
    }
    return SettlementLine(
        line_number=0,
        settlement_id=draw(_ids.filter(lambda value: value is not None)) or "1",
        posted_at=draw(_instants),
        transaction_type=draw(st.sampled_from(["Capture", "Refund", "Chargeback", "Adjustment"])),
        amazon_transaction_id=draw(_ids),
        seller_reference_id=draw(_ids),
        amount=draw(_amounts),
        fee=draw(_amounts),
        net=draw(_amounts),
        currency=draw(st.sampled_from(["USD", "EUR", "GBP", "JPY"])),
        raw=extra,
    )


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    seller=_ids.filter(lambda value: value is not None),
    start=_instants,
    lines=st.lists(_lines(), max_size=12),
    chunk=st.integers(min_value=1, max_value=97),
)
async def test_what_the_formatter_writes_the_parser_reads_back(
    seller: str | None, start: datetime, lines: list[SettlementLine], chunk: int
) -> None:
    header = SettlementReportHeader(
        seller_id=seller or "A1", settlement_start=start, settlement_end=start + timedelta(days=1)
    )
    data = b"".join(format_settlement_report(header, lines))
    parsed_header, parsed = await _parse(data, size=chunk)
    assert parsed_header == header
    assert [line.line_number for line in parsed] == list(range(1, len(lines) + 1))
    for original, back in zip(lines, parsed, strict=True):
        assert (back.settlement_id, back.posted_at, back.transaction_type) == (
            original.settlement_id,
            original.posted_at,
            original.transaction_type,
        )
        assert (back.amazon_transaction_id, back.seller_reference_id) == (
            original.amazon_transaction_id,
            original.seller_reference_id,
        )
        assert (back.amount, back.fee, back.net, back.currency) == (
            original.amount,
            original.fee,
            original.net,
            original.currency,
        )
        for name, value in original.raw.items():
            assert back.raw[name] == value
        assert set(back.raw) == set(BODY_COLUMNS)


# --- hostile input: every failure names the line and the column ------------------------------


async def test_a_control_character_in_a_field_names_its_line_and_column() -> None:
    error = await _error(_document(_row(StoreName="Sh\x07op")))
    assert (error.line, error.column) == (4, "StoreName")
    assert "U+0007" in str(error)
    assert isinstance(error, AmazonPayError)


async def test_a_lone_carriage_return_inside_a_line_is_a_control_character() -> None:
    error = await _error(_document(ROW.replace('"Shop"', '"Sh\rop"')))
    assert (error.line, error.column) == (4, "StoreName")


@pytest.mark.parametrize(
    ("row", "column"),
    [
        (ROW.rsplit(",", 1)[0], "TransactionDescription"),
        (ROW + ',"surplus"', "field 16"),
    ],
)
async def test_a_row_with_a_wrong_number_of_fields_names_the_first_missing_or_extra_one(
    row: str, column: str
) -> None:
    error = await _error(_document(ROW, row))
    assert (error.line, error.column) == (5, column)
    assert "fields" in error.detail


async def test_a_huge_field_is_refused_naming_its_column() -> None:
    error = await _error(_document(_row(TransactionDescription="x" * (MAX_FIELD_CHARS + 1))))
    assert (error.line, error.column) == (4, "TransactionDescription")


async def test_a_line_longer_than_the_bound_fails_before_the_rest_is_read() -> None:
    consumed = 0

    async def endless() -> AsyncIterator[bytes]:
        nonlocal consumed
        yield _document()
        yield b'"2015-05-18T15:48:50-0000","'
        while True:
            consumed += 4096
            yield b"x" * 4096

    _, lines = await parse_settlement_report(endless())
    with pytest.raises(SettlementReportError) as info:
        await anext(lines)
    assert (info.value.line, info.value.column) == (4, "SettlementId")
    assert consumed <= MAX_LINE_BYTES + 4096


async def test_bad_utf8_names_the_line_and_column_of_the_bad_bytes() -> None:
    data = _document(ROW, ROW).replace(b'"Shop"', b'"Sh\xffop"', 1)
    error = await _error(data)
    assert (error.line, error.column) == (4, "StoreName")
    assert "UTF-8" in error.detail


@pytest.mark.parametrize(
    ("replace", "column"),
    [
        ({"TransactionAmount": "14,00"}, "TransactionAmount"),
        ({"TransactionAmount": "1e3"}, "TransactionAmount"),
        ({"NetTransactionAmount": "NaN"}, "NetTransactionAmount"),
        ({"TotalTransactionFee": "--1"}, "TotalTransactionFee"),
        ({"TransactionPostedDate": "2015-05-18T15:48:50"}, "TransactionPostedDate"),
        ({"TransactionPostedDate": "2015-02-30T15:48:50Z"}, "TransactionPostedDate"),
        ({"TransactionPostedDate": "2015-05-18T15:48:50+2500"}, "TransactionPostedDate"),
        ({"CurrencyCode": "usd"}, "CurrencyCode"),
        ({"SettlementId": ""}, "SettlementId"),
        ({"TransactionType": " "}, "TransactionType"),
    ],
)
async def test_bad_values_name_their_column(replace: dict[str, str], column: str) -> None:
    error = await _error(_document(_row(**replace)))
    assert (error.line, error.column) == (4, column)


async def test_a_missing_required_column_is_named() -> None:
    columns = COLUMNS.replace('"CurrencyCode",', "")
    data = "\n".join((HEADER_NAMES, HEADER_VALUES, columns)).encode()
    error = await _error(data)
    assert (error.line, error.column) == (3, "CurrencyCode")


async def test_a_header_value_that_is_not_a_date_names_its_column() -> None:
    data = "\n".join((HEADER_NAMES, HEADER_VALUES.replace("2015-05-21", "21.05.2015"))).encode()
    error = await _error(data + b"\n" + COLUMNS.encode())
    assert (error.line, error.column) == (2, "SettlementEndDate")


@pytest.mark.parametrize("lines", [0, 1, 2])
async def test_a_report_cut_before_its_body_columns_is_refused(lines: int) -> None:
    data = "\n".join((HEADER_NAMES, HEADER_VALUES)[:lines]).encode()
    error = await _error(data)
    assert "ends before" in error.detail


async def test_malformed_quoting_names_the_field() -> None:
    error = await _error(_document(ROW.replace('"Shop"', '"Sh"op"')))
    assert (error.line, error.column) == (4, "StoreName")
    unterminated = await _error(_document(ROW.replace('"Capture"', '"Capture', 1)))
    assert unterminated.line == 4


async def test_a_column_named_twice_must_hold_one_value() -> None:
    data = "\n".join(
        (
            '"SellerId","SettlementStartDate","SettlementEndDate","SellerId"',
            '"A1","2015-05-18T14:37:01-0700","2015-05-21T14:37:03-0700","A2"',
            COLUMNS,
        )
    ).encode()
    error = await _error(data)
    assert (error.line, error.column) == (2, "SellerId")
    same = data.replace(b'"A2"', b'"A1"')
    header, _ = await _parse(same)
    assert header.seller_id == "A1"


async def test_chunks_that_are_not_bytes_are_refused() -> None:
    async def text() -> AsyncIterator[bytes]:
        yield "SellerId"  # type: ignore[misc]

    with pytest.raises(SettlementReportError, match="str, not bytes"):
        await parse_settlement_report(text())


# --- streaming -------------------------------------------------------------------------------


def _many(count: int) -> Iterable[SettlementLine]:
    posted = datetime(2024, 1, 1, tzinfo=UTC)
    for n in range(count):
        yield SettlementLine(
            line_number=0,
            settlement_id="5044561311",
            posted_at=posted,
            transaction_type="Capture",
            amazon_transaction_id=f"S01-0000000-0000000-C{n:06d}",
            seller_reference_id=None,
            amount=Decimal("14.00"),
            fee=Decimal("-0.71"),
            net=Decimal("13.29"),
            currency="USD",
        )


async def test_a_large_report_streams_in_bounded_memory() -> None:
    header = SettlementReportHeader(
        seller_id="A1",
        settlement_start=datetime(2024, 1, 1, tzinfo=UTC),
        settlement_end=datetime(2024, 1, 2, tzinfo=UTC),
    )

    async def source() -> AsyncIterator[bytes]:
        buffer = b""
        for piece in format_settlement_report(header, _many(20_000)):
            buffer += piece
            if len(buffer) >= 65536:
                yield buffer
                buffer = b""
        yield buffer

    tracemalloc.start()
    try:
        _, lines = await parse_settlement_report(source())
        count = 0
        async for _line in lines:
            count += 1
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert count == 20_000
    assert peak < 2 * 1024 * 1024, f"peak {peak} bytes for a ~2.6 MB report"


async def test_closing_the_lines_early_closes_the_download() -> None:
    closed = False

    async def download() -> AsyncIterator[bytes]:
        nonlocal closed
        try:
            yield _document(ROW, ROW, ROW)
        finally:
            closed = True

    _, lines = await parse_settlement_report(download())
    await anext(lines)
    await lines.aclose()
    assert closed


# --- writing ---------------------------------------------------------------------------------


def test_the_formatter_writes_amazons_column_names_and_quotes_every_field() -> None:
    header = SettlementReportHeader(
        seller_id="A1",
        settlement_start=datetime(2024, 1, 1, tzinfo=UTC),
        settlement_end=datetime(2024, 1, 2, tzinfo=UTC),
    )
    first, values, columns = list(format_settlement_report(header, []))
    assert first.decode().rstrip("\n").split(",") == [f'"{n}"' for n in HEADER_COLUMNS]
    assert values == b'"A1","2024-01-01T00:00:00+0000","2024-01-02T00:00:00+0000"\n'
    assert columns.decode().rstrip("\n") == COLUMNS


def test_the_formatter_refuses_what_the_parser_would_refuse() -> None:
    header = SettlementReportHeader(
        seller_id="A1",
        settlement_start=datetime(2024, 1, 1, tzinfo=UTC),
        settlement_end=datetime(2024, 1, 2, tzinfo=UTC),
    )
    (line,) = _many(1)
    bad = dataclasses.replace(line, raw={"StoreName": "a\nb"})
    with pytest.raises(SettlementReportError) as info:
        list(format_settlement_report(header, [line, bad]))
    assert (info.value.line, info.value.column) == (5, "StoreName")
    naive = SettlementReportHeader(
        seller_id="A1", settlement_start=datetime(2024, 1, 1), settlement_end=datetime(2024, 1, 2)
    )
    with pytest.raises(SettlementReportError, match="tz-aware"):
        list(format_settlement_report(naive, []))
