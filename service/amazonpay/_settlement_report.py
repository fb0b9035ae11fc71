"""Amazon Pay settlement report flat file: a streaming parser and its inverse.

Amazon documents the report's data elements on "Settlement Report Details"
(https://developer.amazon.com/docs/amazon-pay-reports/settlement-reports.html): a header of
``SellerId``, ``SettlementStartDate`` and ``SettlementEndDate``, then a body with one row per
transaction (``TransactionPostedDate``, ``SettlementId``, ``AmazonTransactionId``, …). The
Sandbox Settlement report (``_GET_FLAT_FILE_OFFAMAZONPAYMENTS_SANDBOX_SETTLEMENT_DATA_``) is a
comma-separated flat file. The layout read and written here:

- UTF-8 text (a leading byte order mark is skipped), one record per line, LF or CRLF;
- fields separated by commas, optionally enclosed in double quotes (a quote inside a quoted field
  is doubled); no field may hold a control character (a line break included);
- line 1 names the header columns, line 2 holds their values; the next line names the body
  columns and every further line is one transaction. Blank lines are skipped.

Columns are found by name, in any order; a column the table below does not know is kept in
``raw``. Memory is bounded by one line (:data:`MAX_LINE_BYTES`), whatever the report's size.
Every malformed input raises :class:`SettlementReportError` naming the line and the column.

Usage::

    header, lines = await parse_settlement_report(client.stream_report_document(url))
    async for line in lines:          # iterate to the end, or call `await lines.aclose()`
        ...
"""

from __future__ import annotations

import csv
import re
from collections.abc import (
    AsyncGenerator,
    AsyncIterable,
    AsyncIterator,
    Iterable,
    Iterator,
    Mapping,
)
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal

from ._config import Environment
from ._errors import AmazonPayError
from ._models import datetime_of

__all__ = [
    "BODY_COLUMNS",
    "HEADER_COLUMNS",
    "MAX_FIELD_CHARS",
    "MAX_LINE_BYTES",
    "REQUIRED_BODY_COLUMNS",
    "SETTLEMENT_REPORT_TYPES",
    "SettlementLine",
    "SettlementReportError",
    "SettlementReportHeader",
    "format_settlement_report",
    "parse_settlement_report",
]

SETTLEMENT_REPORT_TYPES: Mapping[Environment, str] = {
    Environment.SANDBOX: "_GET_FLAT_FILE_OFFAMAZONPAYMENTS_SANDBOX_SETTLEMENT_DATA_",
    Environment.LIVE: "_GET_FLAT_FILE_OFFAMAZONPAYMENTS_SETTLEMENT_DATA_",
}
"""The settlement report's ``reportType`` per environment (Get Reports' ``reportTypes``): one is
created with each settlement (amazon-pay-api-v2/reports.html, Enum ReportTypes)."""

HEADER_COLUMNS: tuple[str, ...] = ("SellerId", "SettlementStartDate", "SettlementEndDate")
"""The header's columns, every one required, in the order the formatter writes them."""

BODY_COLUMNS: tuple[str, ...] = (
    "TransactionPostedDate",
    "SettlementId",
    "AmazonTransactionId",
    "SellerReferenceId",
    "TransactionType",
    "AmazonOrderReferenceId",
    "SellerOrderId",
    "StoreName",
    "CurrencyCode",
    "TransactionAmount",
    "TransactionPercentageFee",
    "TransactionFixedFee",
    "TotalTransactionFee",
    "NetTransactionAmount",
    "TransactionDescription",
)
"""The body's columns in the order the formatter writes them. ``AmazonTransactionId`` is the
charge, refund or dispute id; ``AmazonOrderReferenceId`` the charge permission id."""

REQUIRED_BODY_COLUMNS: frozenset[str] = frozenset(
    {
        "TransactionPostedDate",
        "SettlementId",
        "TransactionType",
        "CurrencyCode",
        "TransactionAmount",
        "NetTransactionAmount",
    }
)
"""Columns a report must name; the others may be absent or empty."""

_FEE_PARTS = ("TransactionPercentageFee", "TransactionFixedFee")

MAX_LINE_BYTES = 64 * 1024
"""Longest line accepted (bytes, without its line break): the parser's memory bound."""
MAX_FIELD_CHARS = 4096
"""Longest field accepted."""

_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
_AMOUNT = re.compile(r"[+-]?[0-9]{1,30}(?:\.[0-9]{1,10})?")
_CURRENCY = re.compile(r"[A-Z]{3}")
_DATETIME = re.compile(
    r"(\d{4})-(\d{2})-(\d{2})T(\d{2}):(\d{2}):(\d{2})(?:\.(\d{1,9}))?"
    r"(Z|[+-]\d{2}(?::?\d{2})?)"
)
_BOM = "\ufeff"


class SettlementReportError(AmazonPayError):
    """A settlement report that does not follow the format; names the line and the column."""

    def __init__(self, detail: str, *, line: int | None = None, column: str | None = None) -> None:
        where = ", ".join(
            part
            for part in (
                f"line {line}" if line is not None else "",
                f"column {column}" if column is not None else "",
            )
            if part
        )
        super().__init__(f"settlement report {where}: {detail}" if where else detail)
        self.line = line
        """1-based line of the document (blank lines counted), None when not tied to one."""
        self.column = column
        """Amazon's column name, or ``field N`` (1-based) where the name is not known."""
        self.detail = detail


@dataclass(frozen=True, slots=True)
class SettlementReportHeader:
    """The report's header: whose settlement, and the period it covers."""

    seller_id: str
    settlement_start: datetime
    """Tz-aware (UTC)."""
    settlement_end: datetime
    """Tz-aware (UTC)."""
    raw: Mapping[str, str] = field(default_factory=dict, compare=False, repr=False)
    """Every header column by Amazon's name, as written."""


@dataclass(frozen=True, slots=True)
class SettlementLine:
    """One body row: a capture, refund, fee, chargeback or adjustment Amazon settled."""

    line_number: int
    """1-based over the body rows (blank lines not counted): stable for a given report."""
    settlement_id: str
    posted_at: datetime
    """``TransactionPostedDate``, tz-aware (UTC)."""
    transaction_type: str
    """Amazon's ``TransactionType`` as written (``Capture``, ``Refund``, ``Chargeback`` …)."""
    amazon_transaction_id: str | None
    """``AmazonTransactionId`` (charge, refund or dispute id); None when empty."""
    seller_reference_id: str | None
    amount: Decimal
    """``TransactionAmount``, signed as Amazon writes it (refunds and chargebacks negative)."""
    fee: Decimal
    """``TotalTransactionFee`` (else the sum of the fee columns), signed; 0 when none."""
    net: Decimal
    """``NetTransactionAmount``."""
    currency: str
    """``CurrencyCode`` (ISO 4217)."""
    raw: Mapping[str, str] = field(default_factory=dict, compare=False, repr=False)
    """Every column of the row by Amazon's column name, as written."""


# --- reading ---------------------------------------------------------------------------------


def _field_name(columns: tuple[str, ...] | None, index: int) -> str:
    if columns is not None and index < len(columns):
        return columns[index]
    return f"field {index + 1}"


def _fields_before(prefix: str) -> int:
    """How many field separators a (possibly cut) line has before its end: the 0-based index of
    the field its last character belongs to."""
    count, quoted = 0, False
    for ch in prefix:
        if ch == '"':
            quoted = not quoted
        elif ch == "," and not quoted:
            count += 1
    return count


def _split(text: str, number: int, columns: tuple[str, ...] | None) -> list[str]:
    """The fields of one line, validated: quoting, control characters, field length."""
    bad = _CONTROL.search(text)
    if bad is not None:
        index = _fields_before(text[: bad.start()])
        raise SettlementReportError(
            f"control character U+{ord(bad.group()):04X} in a field",
            line=number,
            column=_field_name(columns, index),
        )
    try:
        fields = next(csv.reader((text,), strict=True))
    except csv.Error:
        index = _fields_before(text)
        raise SettlementReportError(
            "malformed quoting (a quote must open and close a whole field)",
            line=number,
            column=_field_name(columns, index),
        ) from None
    for index, value in enumerate(fields):
        if len(value) > MAX_FIELD_CHARS:
            raise SettlementReportError(
                f"field is longer than {MAX_FIELD_CHARS} characters",
                line=number,
                column=_field_name(columns, index),
            )
    return fields


def _decode(raw: bytes, number: int, columns: tuple[str, ...] | None) -> str:
    if raw.endswith(b"\r"):
        raw = raw[:-1]
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        prefix = raw[: exc.start].decode("utf-8", "replace")
        raise SettlementReportError(
            "not valid UTF-8", line=number, column=_field_name(columns, _fields_before(prefix))
        ) from None
    if number == 1 and text.startswith(_BOM):
        text = text[1:]
    return text


def _too_long(number: int, prefix: bytes, columns: tuple[str, ...] | None) -> SettlementReportError:
    text = prefix[:MAX_LINE_BYTES].decode("utf-8", "replace")
    return SettlementReportError(
        f"line is longer than {MAX_LINE_BYTES} bytes",
        line=number,
        column=_field_name(columns, _fields_before(text)),
    )


class _Lines:
    """Complete lines out of arbitrary chunks, never holding more than one line."""

    def __init__(self, chunks: AsyncIterable[bytes]) -> None:
        self._chunks = chunks
        self.columns: tuple[str, ...] | None = None
        """Names used for errors about the line being read (set once the names are known)."""

    async def __call__(self) -> AsyncGenerator[tuple[int, bytes], None]:
        buffer = bytearray()
        number = 0
        async for chunk in self._chunks:
            if not isinstance(chunk, bytes | bytearray | memoryview):
                raise SettlementReportError(
                    f"the document arrived as {type(chunk).__name__}, not bytes"
                )
            buffer += chunk
            start = 0
            while (end := buffer.find(b"\n", start)) >= 0:
                number += 1
                if end - start > MAX_LINE_BYTES:
                    raise _too_long(number, bytes(buffer[start:end]), self.columns)
                yield number, bytes(buffer[start:end])
                start = end + 1
            del buffer[:start]
            if len(buffer) > MAX_LINE_BYTES:
                raise _too_long(number + 1, bytes(buffer), self.columns)
        if buffer:
            yield number + 1, bytes(buffer)


def _record(names: tuple[str, ...], fields: list[str], number: int, what: str) -> dict[str, str]:
    if len(fields) != len(names):
        column = names[len(fields)] if len(fields) < len(names) else f"field {len(fields)}"
        raise SettlementReportError(
            f"{what} has {len(fields)} fields, the column line names {len(names)}",
            line=number,
            column=column,
        )
    record: dict[str, str] = {}
    for name, value in zip(names, fields, strict=True):
        if name in record and record[name] != value:
            raise SettlementReportError(
                "column named twice with two different values", line=number, column=name
            )
        record[name] = value
    return record


def _names(fields: list[str], number: int, required: Iterable[str]) -> tuple[str, ...]:
    names = tuple(value.strip() for value in fields)
    for index, name in enumerate(names):
        if not name:
            raise SettlementReportError(
                "column name is empty", line=number, column=f"field {index + 1}"
            )
    missing = [name for name in required if name not in names]
    if missing:
        raise SettlementReportError(
            f"required column {missing[0]} is missing", line=number, column=missing[0]
        )
    return names


def _datetime(value: str, number: int, column: str) -> datetime:
    match = _DATETIME.fullmatch(value.strip())
    if match is None:
        raise SettlementReportError(
            f"{value[:40]!r} is not an ISO 8601 date-time with an offset (2015-05-18T15:48:50-0000)",
            line=number,
            column=column,
        )
    *fields, offset = match.groups()
    if offset == "Z":
        zone: timezone = UTC
    else:
        digits = offset[1:].replace(":", "")
        hours, minutes = int(digits[:2]), int(digits[2:] or "0")
        if hours > 23 or minutes > 59:
            raise SettlementReportError(
                f"{value[:40]!r} has an impossible UTC offset", line=number, column=column
            )
        delta = timedelta(hours=hours, minutes=minutes)
        zone = timezone(-delta if offset[0] == "-" else delta)
    try:
        parsed = datetime_of(fields, zone)
    except ValueError:
        raise SettlementReportError(
            f"{value[:40]!r} is not a calendar date-time", line=number, column=column
        ) from None
    return parsed.astimezone(UTC)


def _amount(value: str, number: int, column: str) -> Decimal:
    text = value.strip()
    if not _AMOUNT.fullmatch(text):
        raise SettlementReportError(
            f"{value[:40]!r} is not a decimal amount (e.g. -12.34)", line=number, column=column
        )
    return Decimal(text)


def _optional_amount(record: Mapping[str, str], column: str, number: int) -> Decimal | None:
    value = record.get(column, "")
    return _amount(value, number, column) if value.strip() else None


def _text(record: Mapping[str, str], column: str, number: int) -> str:
    value = record[column].strip()
    if not value:
        raise SettlementReportError("required value is empty", line=number, column=column)
    return value


def _header(record: Mapping[str, str], number: int) -> SettlementReportHeader:
    return SettlementReportHeader(
        seller_id=_text(record, "SellerId", number),
        settlement_start=_datetime(record["SettlementStartDate"], number, "SettlementStartDate"),
        settlement_end=_datetime(record["SettlementEndDate"], number, "SettlementEndDate"),
        raw=record,
    )


def _line(record: Mapping[str, str], number: int, body_row: int) -> SettlementLine:
    currency = record["CurrencyCode"].strip()
    if not _CURRENCY.fullmatch(currency):
        raise SettlementReportError(
            f"{currency[:40]!r} is not an ISO 4217 currency code",
            line=number,
            column="CurrencyCode",
        )
    fee = _optional_amount(record, "TotalTransactionFee", number)
    if fee is None:
        parts = [_optional_amount(record, name, number) for name in _FEE_PARTS]
        fee = sum((part for part in parts if part is not None), Decimal(0))
    return SettlementLine(
        line_number=body_row,
        settlement_id=_text(record, "SettlementId", number),
        posted_at=_datetime(record["TransactionPostedDate"], number, "TransactionPostedDate"),
        transaction_type=_text(record, "TransactionType", number),
        amazon_transaction_id=record.get("AmazonTransactionId", "").strip() or None,
        seller_reference_id=record.get("SellerReferenceId", "").strip() or None,
        amount=_amount(record["TransactionAmount"], number, "TransactionAmount"),
        fee=fee,
        net=_amount(record["NetTransactionAmount"], number, "NetTransactionAmount"),
        currency=currency,
        raw=record,
    )


async def _next_record(
    lines: AsyncIterator[tuple[int, bytes]], reader: _Lines, what: str
) -> tuple[int, list[str]]:
    """The next non-blank line's fields; a report ending first is an error."""
    async for number, raw in lines:
        text = _decode(raw, number, reader.columns)
        if text.strip():
            return number, _split(text, number, reader.columns)
    raise SettlementReportError(f"the report ends before its {what}")


async def parse_settlement_report(
    chunks: AsyncIterable[bytes],
) -> tuple[SettlementReportHeader, AsyncGenerator[SettlementLine, None]]:
    """Read the header from ``chunks`` (the document's bytes, in pieces of any size) and return
    it with an async iterator of the body rows, read as they are iterated.

    Raises :class:`SettlementReportError` for a malformed header here, and from the iterator for
    a malformed row. Closing the iterator early (``aclose``) also closes ``chunks`` when it can
    be closed, releasing the download.
    """
    reader = _Lines(chunks)
    lines = reader()
    try:
        number, fields = await _next_record(lines, reader, "header's column line")
        header_names = _names(fields, number, HEADER_COLUMNS)
        reader.columns = header_names
        number, fields = await _next_record(lines, reader, "header's values")
        header = _header(_record(header_names, fields, number, "the header"), number)
        reader.columns = None
        number, fields = await _next_record(lines, reader, "body's column line")
        body_names = _names(fields, number, sorted(REQUIRED_BODY_COLUMNS))
    except BaseException:
        await _close(lines, chunks)
        raise
    reader.columns = body_names
    return header, _body(lines, chunks, body_names)


async def _body(
    lines: AsyncGenerator[tuple[int, bytes], None],
    chunks: AsyncIterable[bytes],
    names: tuple[str, ...],
) -> AsyncGenerator[SettlementLine, None]:
    row = 0
    try:
        async for number, raw in lines:
            text = _decode(raw, number, names)
            if not text.strip():
                continue
            row += 1
            record = _record(names, _split(text, number, names), number, "the row")
            yield _line(record, number, row)
    finally:
        await _close(lines, chunks)


async def _close(
    lines: AsyncGenerator[tuple[int, bytes], None], chunks: AsyncIterable[bytes]
) -> None:
    await lines.aclose()
    close = getattr(chunks, "aclose", None)
    if close is not None:
        await close()


# --- writing ---------------------------------------------------------------------------------


def _format_datetime(value: datetime) -> str:
    if value.tzinfo is None:
        raise SettlementReportError("date-times must be tz-aware")
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S+0000")


def _quote(value: str, number: int, column: str) -> str:
    if _CONTROL.search(value):
        raise SettlementReportError("control character in a field", line=number, column=column)
    if len(value) > MAX_FIELD_CHARS:
        raise SettlementReportError(
            f"field is longer than {MAX_FIELD_CHARS} characters", line=number, column=column
        )
    return '"' + value.replace('"', '""') + '"'


def _row(values: Iterable[tuple[str, str]], number: int) -> bytes:
    text = ",".join(_quote(value, number, column) for column, value in values)
    data = (text + "\n").encode("utf-8")
    if len(data) > MAX_LINE_BYTES:
        raise SettlementReportError(f"line is longer than {MAX_LINE_BYTES} bytes", line=number)
    return data


def _body_values(line: SettlementLine) -> dict[str, str]:
    values = {name: line.raw.get(name, "") for name in BODY_COLUMNS}
    values.update(
        TransactionPostedDate=_format_datetime(line.posted_at),
        SettlementId=line.settlement_id,
        AmazonTransactionId=line.amazon_transaction_id or "",
        SellerReferenceId=line.seller_reference_id or "",
        TransactionType=line.transaction_type,
        CurrencyCode=line.currency,
        TransactionAmount=format(line.amount, "f"),
        TotalTransactionFee=format(line.fee, "f"),
        NetTransactionAmount=format(line.net, "f"),
    )
    return values


def format_settlement_report(
    header: SettlementReportHeader, lines: Iterable[SettlementLine]
) -> Iterator[bytes]:
    """The report's bytes, one line per chunk: what :func:`parse_settlement_report` reads back.

    Typed fields win over ``raw``; ``raw`` fills the columns the line has no field for
    (``StoreName``, ``TransactionPercentageFee`` …). ``line_number`` is not written: rows are
    numbered in the order given. Date-times are written in UTC to the second.
    """
    yield _row(((name, name) for name in HEADER_COLUMNS), 1)
    header_values = {
        "SellerId": header.seller_id,
        "SettlementStartDate": _format_datetime(header.settlement_start),
        "SettlementEndDate": _format_datetime(header.settlement_end),
    }
    yield _row(header_values.items(), 2)
    yield _row(((name, name) for name in BODY_COLUMNS), 3)
    for number, line in enumerate(lines, start=4):
        yield _row(_body_values(line).items(), number)
