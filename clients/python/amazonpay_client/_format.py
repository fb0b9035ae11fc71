"""Plain-text tables and JSON for the CLI (no dependencies: on-call laptops and pods alike)."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from google.protobuf.json_format import MessageToDict
from google.protobuf.message import Message

from ._services import kind_name

__all__ = [
    "EVENT_COLUMNS",
    "event_row",
    "flatten",
    "key_values",
    "order_verdict",
    "table",
    "to_json",
    "transaction_row",
]

TRANSACTION_COLUMNS = (
    "KIND",
    "OBJECT ID",
    "STATE",
    "REASON",
    "AMOUNT",
    "CAPTURED",
    "REFUNDED",
    "REFERENCE",
    "CREATED (UTC)",
    "FINAL",
)
EVENT_COLUMNS = (
    "EVENT",
    "OCCURRED (UTC)",
    "KIND",
    "OBJECT ID",
    "STATE",
    "REASON",
    "SOURCE",
    "AMAZON REQUEST ID",
)


def to_dict(message: Message) -> dict[str, Any]:
    return MessageToDict(message, preserving_proto_field_name=True)


def to_json(value: Message | Sequence[Message]) -> str:
    """Proto3 JSON with the proto field names (what grpcurl and other languages print)."""
    if isinstance(value, Message):
        return json.dumps(to_dict(value), indent=2, sort_keys=True)
    return json.dumps([to_dict(m) for m in value], indent=2, sort_keys=True)


def flatten(data: Mapping[str, Any], prefix: str = "") -> list[tuple[str, str]]:
    """Dotted paths and scalar values, e.g. ("status_details.raw_state", "Authorized")."""
    rows: list[tuple[str, str]] = []
    for key, value in data.items():
        path = f"{prefix}{key}"
        if isinstance(value, Mapping):
            rows.extend(flatten(value, f"{path}."))
        elif isinstance(value, list):
            for i, item in enumerate(value):
                if isinstance(item, Mapping):
                    rows.extend(flatten(item, f"{path}[{i}]."))
                else:
                    rows.append((f"{path}[{i}]", str(item)))
        else:
            rows.append((path, str(value).lower() if isinstance(value, bool) else str(value)))
    return rows


def table(columns: Sequence[str], rows: Iterable[Sequence[str]]) -> str:
    """Left-aligned columns separated by two spaces; "-" for empty cells."""
    materialized = [[cell or "-" for cell in row] for row in rows]
    widths = [len(c) for c in columns]
    for row in materialized:
        widths = [max(w, len(cell)) for w, cell in zip(widths, row, strict=True)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(columns, widths, strict=True)).rstrip()]
    lines.extend(
        "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
        for row in materialized
    )
    return "\n".join(lines)


def key_values(rows: Sequence[tuple[str, str]]) -> str:
    if not rows:
        return "(empty)"
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"{k.ljust(width)}  {v}" for k, v in rows)


def _money(price: Any) -> str:
    return f"{price.amount} {price.currency_code}".strip() if price.amount else ""


def _time(stamp: Any) -> str:
    if not stamp.seconds and not stamp.nanos:
        return ""
    return str(stamp.ToDatetime().replace(microsecond=0).isoformat())


def transaction_row(tx: Any) -> list[str]:
    return [
        kind_name(tx.kind),
        tx.object_id,
        tx.raw_state,
        tx.raw_reason_code,
        _money(tx.amount),
        _money(tx.captured_amount),
        _money(tx.refunded_amount),
        tx.merchant_reference_id,
        _time(tx.created_at),
        "yes" if tx.is_final else "no",
    ]


def transaction_summary(tx: Any) -> list[tuple[str, str]]:
    """The ledger row without its snapshot (the snapshot is what `get` shows)."""
    row = dict(zip(TRANSACTION_COLUMNS, transaction_row(tx), strict=True))
    extra = {
        "MERCHANT": tx.merchant,
        "CHECKOUT SESSION": tx.checkout_session_id,
        "CHARGE PERMISSION": tx.charge_permission_id,
        "CHARGE": tx.charge_id,
        "UPDATED (UTC)": _time(tx.updated_at),
        "AMAZON EXPIRES (UTC)": _time(tx.amazon_expiration_timestamp),
        "ENVIRONMENT": tx.release_environment,
        "BUYER DATA ERASED": _time(tx.buyer_data_erased_at),
    }
    return [(k, v) for k, v in {**row, **extra}.items() if v]


def order_verdict(transactions: Sequence[Any]) -> list[str]:
    """The answer to "was it charged, captured, refunded?" in words, from the ledger rows."""
    charges = [t for t in transactions if kind_name(t.kind) == "charge"]
    refunds = [t for t in transactions if kind_name(t.kind) == "refund"]
    lines = []
    if not charges:
        lines.append("charged:  no charge in the ledger")
    for charge in charges:
        lines.append(f"charge {charge.object_id}: {charge.raw_state} {_money(charge.amount)}")
        if _money(charge.captured_amount):
            lines.append(f"  captured: {_money(charge.captured_amount)}")
        if _money(charge.refunded_amount):
            lines.append(f"  refunded: {_money(charge.refunded_amount)}")
    for refund in refunds:
        lines.append(f"refund {refund.object_id}: {refund.raw_state} {_money(refund.amount)}")
    return lines


def event_row(event: Any) -> list[str]:
    source = {1: "api", 2: "poll", 3: "ipn", 4: "recovery"}.get(event.source, "")
    transition = (
        f"{event.previous_raw_state} -> {event.raw_state}"
        if event.previous_raw_state
        else event.raw_state
    )
    return [
        str(event.event_id),
        _time(event.occurred_at),
        kind_name(event.kind),
        event.object_id,
        transition,
        event.raw_reason_code,
        source,
        event.amazon_request_id,
    ]


def event_line(event: Any) -> str:
    """One streamed event on one line (widths cannot be known in advance for a stream)."""
    eid, occurred, kind, object_id, transition, reason, source, request_id = event_row(event)
    text = f"#{eid}  {occurred}  {kind} {object_id}  {transition}"
    if reason:
        text += f" ({reason})"
    text += f"  via {source or '?'}"
    if request_id:
        text += f"  amazon_request_id={request_id}"
    return text
