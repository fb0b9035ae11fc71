"""Request validation: every rule in tables, applied by walking the request message.

A rejected request never reaches the ledger or Amazon. Each violation names the field path as the
caller wrote it (`charge_amount.amount`) and the rule it broke; all violations are reported at
once as `google.rpc.BadRequest` field violations.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import timedelta
from decimal import Decimal, InvalidOperation
from typing import Any, cast
from urllib.parse import urlsplit

from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import Message

from payments.amazonpay.v1 import common_pb2, ledger_pb2, settlement_pb2

__all__ = ["CURRENCY_DECIMALS", "MAX_CHARGE", "Violation", "validate"]


@dataclass(frozen=True)
class Violation:
    field: str
    description: str


CURRENCY_DECIMALS: Mapping[str, int] = {"USD": 2, "EUR": 2, "GBP": 2, "JPY": 0}
MAX_CHARGE: Mapping[str, Decimal] = {
    "USD": Decimal("150000"),
    "EUR": Decimal("150000"),
    "GBP": Decimal("150000"),
    "JPY": Decimal("10000000"),
}

# Every pattern is applied with `fullmatch`: `$` alone also matches before a final newline, and
# "Declined\n" once reached an HTTP header.
_IDEMPOTENCY_KEY = re.compile(r"[A-Za-z0-9_-]{1,64}")
_OBJECT_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
_SIMULATION_CODE = re.compile(r"[A-Za-z0-9_]{1,64}")
_CURRENCY = re.compile(r"[A-Z]{3}")
_AMOUNT = re.compile(r"[0-9]{1,13}(\.[0-9]{1,8})?")
_COUNTRY = re.compile(r"[A-Z]{2,3}")
# Amazon's buyer tokens are opaque URL text; it travels in the request path, where anything else
# would be percent-encoded to many times its length.
_BUYER_TOKEN = re.compile(r"[\x21-\x7e]+")
# C0 controls, DEL and C1 controls: never part of a value Amazon takes. Only the button payload
# (JSON text that is signed, not sent) may hold JSON's own whitespace.
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
_JSON_TEXT_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")
MAX_REPEATED = 100
"""Entries of any repeated field (messages and strings alike)."""
# google.protobuf.Timestamp's valid range: 0001-01-01T00:00:00Z to 9999-12-31T23:59:59Z.
_MIN_SECONDS = -62_135_596_800
_MAX_SECONDS = 253_402_300_799

# Max lengths from Amazon's reference (section 3), by field name wherever the field appears.
MAX_LENGTHS: Mapping[str, int] = {
    "name": 50,
    "address_line1": 180,
    "address_line2": 60,
    "address_line3": 60,
    "city": 50,
    "county": 50,
    "district": 50,
    "state_or_region": 50,
    "postal_code": 20,
    "phone_number": 20,
    "merchant_reference_id": 256,
    "merchant_store_name": 50,
    "note_to_buyer": 255,
    "custom_information": 4096,
    "soft_descriptor": 16,
    "closure_reason": 255,
    "cancellation_reason": 255,
    "reason": 255,
    "platform_id": 64,
    "provider_reference_id": 256,
    "store_id": 128,
    "tracking_number": 64,
    "carrier_code": 64,
    "supplementary_data": 4096,
    "checkout_review_return_url": 1024,
    "checkout_result_return_url": 1024,
    "checkout_cancel_url": 1024,
    "state": 64,
    "channel": 64,
    "page_token": 1024,
    "payload": 16384,
    "buyer_token": 2048,
    "presentment_currency": 3,
    "merchant": 63,
}

_ID_FIELDS = frozenset(
    {
        "checkout_session_id",
        "charge_permission_id",
        "charge_id",
        "refund_id",
        "object_id",
        "amazon_order_reference_id",
        "buyer_id",
        "dispute_id",
        "settlement_id",
        "report_id",
    }
)
_URL_FIELDS = frozenset(
    {"checkout_review_return_url", "checkout_result_return_url", "checkout_cancel_url"}
)

# Fields each RPC cannot do without (dotted paths), besides the id its row in the servicers'
# tables addresses (`ADDRESSED`: a read's id, a mutation's path id), which `validate` is given.
# Idempotency keys are listed here too.
REQUIRED: Mapping[str, tuple[str, ...]] = {
    "CreateCheckoutSession": ("idempotency_key",),
    "CompleteCheckoutSession": ("idempotency_key", "charge_amount"),
    "FinalizeCheckoutSession": ("idempotency_key", "charge_amount"),
    "CloseChargePermission": ("closure_reason",),
    "CreateCharge": ("idempotency_key", "charge_permission_id", "charge_amount"),
    "CaptureCharge": ("idempotency_key", "capture_amount"),
    "CreateRefund": ("idempotency_key", "charge_id", "refund_amount"),
    "CreateDeliveryTracker": ("delivery_details",),
    "SignButtonPayload": ("payload",),
    "GetTransaction": ("kind", "object_id"),
}


def _price_violations(path: str, price: Message) -> Iterator[Violation]:
    amount = cast(str, getattr(price, "amount"))  # noqa: B009 - generated messages are untyped here
    currency = cast(str, getattr(price, "currency_code"))  # noqa: B009
    if not _CURRENCY.fullmatch(currency):
        yield Violation(
            f"{path}.currency_code", "must be an ISO 4217 code such as USD, EUR, GBP, JPY"
        )
    elif currency not in CURRENCY_DECIMALS:
        yield Violation(
            f"{path}.currency_code",
            f"must be one of {', '.join(sorted(CURRENCY_DECIMALS))} (Amazon Pay ledger currencies)",
        )
    if not _AMOUNT.fullmatch(amount):
        yield Violation(f"{path}.amount", 'must be a decimal string such as "14.00"')
        return
    try:
        value = Decimal(amount)
    except InvalidOperation:
        yield Violation(f"{path}.amount", 'must be a decimal string such as "14.00"')
        return
    if value <= 0:
        yield Violation(f"{path}.amount", "must be greater than zero")
    decimals = CURRENCY_DECIMALS.get(currency)
    if decimals is not None:
        exponent = value.normalize().as_tuple().exponent
        places = -exponent if isinstance(exponent, int) and exponent < 0 else 0
        if places > decimals:
            rule = "must be a whole number" if decimals == 0 else f"has at most {decimals} decimals"
            yield Violation(f"{path}.amount", f"{currency} {rule}")
        if value > MAX_CHARGE[currency]:
            yield Violation(f"{path}.amount", f"must not exceed {MAX_CHARGE[currency]} {currency}")


def _string_violations(path: str, name: str, value: str) -> Iterator[Violation]:
    limit = MAX_LENGTHS.get(name)
    if limit is not None and len(value) > limit:
        yield Violation(path, f"must be at most {limit} characters (got {len(value)})")
    if name == "idempotency_key" and not _IDEMPOTENCY_KEY.fullmatch(value):
        yield Violation(path, "must be 1-64 characters of letters, digits, '-' or '_'")
    elif name in _ID_FIELDS and not _OBJECT_ID.fullmatch(value):
        yield Violation(path, "must be an Amazon Pay id: letters, digits, '.', '-' or '_'")
    elif name == "sandbox_simulation_code" and not _SIMULATION_CODE.fullmatch(value):
        yield Violation(path, "must be an Amazon Pay simulation code such as HardDeclined")
    elif name == "buyer_token" and value and not _BUYER_TOKEN.fullmatch(value):
        yield Violation(path, "must be printable ASCII without spaces, as Amazon issues it")
    elif name == "country_code" and not _COUNTRY.fullmatch(value):
        yield Violation(path, "must be an ISO 3166 country code such as US or DE")
    elif name in _URL_FIELDS:
        parts = urlsplit(value)
        if parts.scheme not in ("https", "http") or not parts.netloc:
            yield Violation(path, "must be an absolute https URL")
    control = (_JSON_TEXT_CONTROL if name == "payload" else _CONTROL).search(value)
    if control is not None:
        yield Violation(path, f"must not contain control characters (U+{ord(control.group()):04X})")


def _walk(message: Message, prefix: str) -> Iterator[Violation]:
    descriptor = cast(Descriptor, message.DESCRIPTOR)
    if descriptor.full_name == "google.protobuf.Timestamp":
        seconds, nanos = getattr(message, "seconds"), getattr(message, "nanos")  # noqa: B009
        if not (_MIN_SECONDS <= seconds <= _MAX_SECONDS and 0 <= nanos <= 999_999_999):
            yield Violation(
                prefix.rstrip("."),
                "must be a valid timestamp (0001-01-01 to 9999-12-31, nanos 0 to 999999999)",
            )
        return
    if descriptor.full_name == "payments.amazonpay.v1.Price" and prefix:
        if message.ByteSize():
            yield from _price_violations(prefix.rstrip("."), message)
        return
    # Only the fields that are set (a default value breaks no rule), listed by protobuf itself.
    for field, value in message.ListFields():
        path = f"{prefix}{field.name}"
        if field.type == FieldDescriptor.TYPE_MESSAGE:
            msg_type = field.message_type
            assert msg_type is not None
            if msg_type.GetOptions().map_entry:
                value_field = msg_type.fields_by_name["value"]
                for key, item in value.items():
                    if len(str(key)) > 64:
                        yield Violation(path, "map keys must be at most 64 characters")
                    if _CONTROL.search(str(key)):
                        yield Violation(path, "map keys must not contain control characters")
                    if value_field.type == FieldDescriptor.TYPE_MESSAGE:
                        yield from _walk(item, f"{path}[{key}].")
            elif field.is_repeated:
                if len(value) > MAX_REPEATED:
                    yield Violation(path, f"must have at most {MAX_REPEATED} entries")
                for index, item in enumerate(value):
                    yield from _walk(item, f"{path}[{index}].")
            else:
                yield from _walk(value, f"{path}.")
        elif field.is_repeated and len(value) > MAX_REPEATED:
            yield Violation(path, f"must have at most {MAX_REPEATED} entries")
        elif field.type == FieldDescriptor.TYPE_ENUM:
            enum_type = field.enum_type
            assert enum_type is not None
            numbers = value if field.is_repeated else [value]
            for number in numbers:
                if number not in enum_type.values_by_number:
                    yield Violation(path, f"{number} is not a value of {enum_type.name}")
        elif field.type == FieldDescriptor.TYPE_STRING:
            for item in value if field.is_repeated else [value]:
                if item:
                    yield from _string_violations(path, field.name, item)
        elif field.name == "page_size" and value < 0:
            yield Violation(path, "must not be negative (values above the maximum are clamped)")
        elif field.name in {"after_event_id"} and value < 0:
            yield Violation(path, "must not be negative")


def _present(message: Message, dotted: str) -> bool:
    current: Any = message
    for part in dotted.split("."):
        descriptor = cast(Descriptor, current.DESCRIPTOR)
        field = descriptor.fields_by_name[part]
        if field.is_repeated:
            return len(getattr(current, part)) > 0
        if field.type == FieldDescriptor.TYPE_MESSAGE:
            if not current.HasField(part):
                return False
        elif not getattr(current, part):
            return False
        current = getattr(current, part)
    return True


Extra = Callable[[Message], Iterator[Violation]]


def _checkout_urls(request: Message) -> Iterator[Violation]:
    details: Any = getattr(request, "web_checkout_details")  # noqa: B009
    if not (details.checkout_review_return_url or details.checkout_result_return_url):
        yield Violation(
            "web_checkout_details.checkout_review_return_url",
            "is required (or checkout_result_return_url with checkout_mode ProcessOrder)",
        )


def _same_currency(*paths: str) -> Extra:
    def check(request: Message) -> Iterator[Violation]:
        currencies = set()
        for path in paths:
            if _present(request, path):
                node: Any = request
                for part in path.split("."):
                    node = getattr(node, part)
                currencies.add(node.currency_code)
        if len(currencies) > 1:
            yield Violation(paths[-1] + ".currency_code", f"must match {paths[0]}.currency_code")

    return check


def _buyer_source(request: Message) -> Iterator[Violation]:
    # Buyers are PII behind a 24-hour token and are never stored.
    if getattr(request, "source") == common_pb2.READ_SOURCE_LEDGER:  # noqa: B009
        yield Violation("source", "must be AUTO or AMAZON: buyers are not stored in the ledger")


def _erasure_target(request: Message) -> Iterator[Violation]:
    if not (_present(request, "charge_permission_id") or _present(request, "buyer_id")):
        yield Violation("target", "is required: charge_permission_id or buyer_id")


MAX_SETTLEMENT_PERIOD = timedelta(days=93)
"""Longest period one ReconcileSettlementPeriod covers (a quarter)."""


def _settlement_period(request: Message) -> Iterator[Violation]:
    """A period (both ends, end after start, at most a quarter) or a settlement_id."""
    req: Any = request
    has_start, has_end = req.HasField("period_start"), req.HasField("period_end")
    if req.settlement_id:
        if has_start or has_end:
            yield Violation("settlement_id", "give a settlement_id or a period, not both")
        return
    if not (has_start and has_end):
        yield Violation(
            "period_end" if has_start else "period_start",
            "is required (with the other end of the period) unless settlement_id is given",
        )
        return
    start, end = req.period_start.ToDatetime(), req.period_end.ToDatetime()
    if end <= start:
        yield Violation("period_end", "must be after period_start")
    elif end - start > MAX_SETTLEMENT_PERIOD:
        yield Violation(
            "period_end", f"must be at most {MAX_SETTLEMENT_PERIOD.days} days after period_start"
        )


def _settlement_target(request: Message) -> Iterator[Violation]:
    if cast(Any, request).WhichOneof("settlement") is None:
        yield Violation("settlement", "is required: settlement_id or report_id")


def _not_matched(request: Message) -> Iterator[Violation]:
    if getattr(request, "outcome") == settlement_pb2.MATCH_OUTCOME_MATCHED:  # noqa: B009
        yield Violation("outcome", "must not be MATCHED: this lists the lines that did not match")


def _object_kind(request: Message) -> Iterator[Violation]:
    # Settlement findings are events only, never Transactions.
    if getattr(request, "kind") == ledger_pb2.OBJECT_KIND_SETTLEMENT_LINE:  # noqa: B009
        yield Violation(
            "kind",
            "settlement lines are no transaction: read them with SettlementService, or their "
            "events with ListEvents",
        )


EXTRA_RULES: Mapping[str, tuple[Extra, ...]] = {
    "GetTransaction": (_object_kind,),
    "ListTransactions": (_object_kind,),
    "ReconcileSettlementPeriod": (_settlement_period,),
    "GetSettlement": (_settlement_target,),
    "ListUnmatchedLines": (_not_matched,),
    "GetBuyer": (_buyer_source,),
    "EraseBuyerData": (_erasure_target,),
    "CreateCheckoutSession": (
        _checkout_urls,
        _same_currency("payment_details.charge_amount", "payment_details.total_order_amount"),
    ),
    "CompleteCheckoutSession": (_same_currency("charge_amount", "total_order_amount"),),
    "FinalizeCheckoutSession": (_same_currency("charge_amount", "total_order_amount"),),
}


def validate(method: str, request: Message, *, addressed: Sequence[str] = ()) -> list[Violation]:
    """All violations of `request` for RPC `method` (empty when valid); `addressed` are the ids
    the RPC's table row addresses, required before `REQUIRED`'s fields."""
    violations = [
        Violation(path, "is required")
        for path in (*addressed, *REQUIRED.get(method, ()))
        if not _present(request, path)
    ]
    violations.extend(_walk(request, ""))
    for rule in EXTRA_RULES.get(method, ()):
        violations.extend(rule(request))
    seen: set[tuple[str, str]] = set()
    unique = []
    for v in violations:
        if (v.field, v.description) not in seen:
            seen.add((v.field, v.description))
            unique.append(v)
    return unique
