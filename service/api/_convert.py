"""Proto <-> Amazon JSON, in one table-driven place.

The protos mirror Amazon's objects field for field in snake_case, so conversion walks the message
descriptor: `charge_amount` <-> `chargeAmount`. The few places where the shapes differ are tables
below, not per-RPC code:
- an enum field `x` with a sibling `raw_x` carries Amazon's string; the enum value is derived from it
  (`"AuthorizationInitiated"` -> `CHARGE_STATE_AUTHORIZATION_INITIATED`), and an unknown string
  keeps the enum at 0 while `raw_x` still says what Amazon sent;
- timestamps are Amazon's compact `20191015T204313Z` (ISO accepted);
- amounts are decimal strings; JSON numbers from Amazon become strings;
- request envelope fields (merchant, idempotency key, path ids) never go into a body.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import cache, lru_cache
from typing import Any, TypeVar, cast

from google.protobuf.descriptor import Descriptor, EnumDescriptor, FieldDescriptor
from google.protobuf.message import Message
from google.protobuf.timestamp_pb2 import Timestamp

from service.amazonpay import format_timestamp, parse_timestamp

__all__ = [
    "ENVELOPE_FIELDS",
    "enum_from_amazon",
    "enum_to_amazon",
    "json_to_message",
    "message_to_json",
]

ENVELOPE_FIELDS = frozenset(
    {"merchant", "idempotency_key", "sandbox_simulation_code", "source", "update_mask"}
)

# Amazon spells some detail objects both ways (the seed pages use the singular).
_JSON_ALIASES: Mapping[str, tuple[str, ...]] = {
    "statusDetails": ("statusDetail",),
    "webCheckoutDetails": ("webCheckoutDetail",),
    "paymentDetails": ("paymentDetail",),
}

# Enum value names whose Amazon spelling is not plain PascalCase of the suffix.
_ENUM_SPELLINGS: Mapping[str, str] = {
    "CITU": "CITU",
    "MITU": "MITU",
    "MIT": "MIT",
    "MFA_FAILED": "MFAFailed",
}

M = TypeVar("M", bound=Message)
_CAMEL_BOUNDARY = re.compile(r"(?<=[a-z0-9])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])")


@cache
def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(part[:1].upper() + part[1:] for part in rest)


def _enum_prefix(enum: EnumDescriptor) -> str:
    return re.sub(_CAMEL_BOUNDARY, "_", enum.name).upper() + "_"


def enum_from_amazon(enum: EnumDescriptor, value: str) -> int:
    """Amazon's string -> enum number; 0 (`*_UNSPECIFIED`) for a value we do not know yet."""
    suffix = {v: k for k, v in _ENUM_SPELLINGS.items()}.get(value)
    if suffix is None:
        suffix = re.sub(_CAMEL_BOUNDARY, "_", value).upper()
    found = enum.values_by_name.get(_enum_prefix(enum) + suffix)
    return found.number if found is not None else 0


def enum_to_amazon(enum: EnumDescriptor, number: int) -> str | None:
    """Enum number -> Amazon's string; None for 0 or a number this build does not know."""
    value = enum.values_by_number.get(number)
    if value is None or number == 0:
        return None
    suffix = value.name.removeprefix(_enum_prefix(enum))
    if suffix in _ENUM_SPELLINGS:
        return _ENUM_SPELLINGS[suffix]
    return "".join(part.capitalize() for part in suffix.split("_"))


def _message_type(field: FieldDescriptor) -> Descriptor:
    assert field.message_type is not None
    return field.message_type


def _enum_type(field: FieldDescriptor) -> EnumDescriptor:
    assert field.enum_type is not None
    return field.enum_type


def _is_timestamp(field: FieldDescriptor) -> bool:
    return (
        field.type == FieldDescriptor.TYPE_MESSAGE
        and _message_type(field).full_name == "google.protobuf.Timestamp"
    )


def _is_map(field: FieldDescriptor) -> bool:
    return (
        field.type == FieldDescriptor.TYPE_MESSAGE and _message_type(field).GetOptions().map_entry
    )


@cache
def _raw_companions(descriptor: Descriptor) -> frozenset[str]:
    return frozenset(f.name for f in descriptor.fields if f.name.startswith("raw_"))


@cache
def _readable_fields(descriptor: Descriptor) -> tuple[FieldDescriptor, ...]:
    """Fields filled from JSON: all but the `raw_x` companions, which their enum fills."""
    return tuple(
        f
        for f in descriptor.fields
        if not (f.name.startswith("raw_") and f.name[4:] in descriptor.fields_by_name)
    )


def _scalar_to_proto(field: FieldDescriptor, value: Any) -> Any:
    if field.type == FieldDescriptor.TYPE_STRING:
        if isinstance(value, bool):
            return "true" if value else "false"
        return value if isinstance(value, str) else str(value)
    if field.type == FieldDescriptor.TYPE_BOOL:
        return bool(value)
    if field.cpp_type in (FieldDescriptor.CPPTYPE_INT32, FieldDescriptor.CPPTYPE_INT64):
        return int(value)
    return value


_ENUM, _MAP, _TIMESTAMP, _MESSAGE, _MESSAGES, _SCALARS, _SCALAR = range(7)


@dataclass(frozen=True, slots=True)
class _Step:
    """How one field is filled from JSON, worked out once per message type: deciding it per
    field and per row was most of ListTransactions' CPU."""

    field: FieldDescriptor
    name: str
    keys: tuple[str, ...]
    kind: int
    raw: str | None = None
    """For an enum: its `raw_` companion, which keeps Amazon's exact string."""
    map_value: FieldDescriptor | None = None


@cache
def _plan(descriptor: Descriptor) -> tuple[_Step, ...]:
    raw_companions = _raw_companions(descriptor)
    steps = []
    for field in _readable_fields(descriptor):
        camel = _camel(field.name)
        keys = (camel, *_JSON_ALIASES.get(camel, ()))
        raw: str | None = None
        map_value: FieldDescriptor | None = None
        if field.type == FieldDescriptor.TYPE_ENUM:
            kind = _ENUM
            raw = f"raw_{field.name}" if f"raw_{field.name}" in raw_companions else None
        elif _is_map(field):
            kind = _MAP
            map_value = _message_type(field).fields_by_name["value"]
        elif _is_timestamp(field):
            kind = _TIMESTAMP
        elif field.type == FieldDescriptor.TYPE_MESSAGE:
            kind = _MESSAGES if field.is_repeated else _MESSAGE
        else:
            kind = _SCALARS if field.is_repeated else _SCALAR
        steps.append(
            _Step(field=field, name=field.name, keys=keys, kind=kind, raw=raw, map_value=map_value)
        )
    return tuple(steps)


@lru_cache(maxsize=4096)
def _enum_number(enum: EnumDescriptor, value: str) -> int:
    return enum_from_amazon(enum, value)


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


@lru_cache(maxsize=8192)
def _timestamp_parts(value: str) -> tuple[int, int] | None:
    """Amazon's timestamp text as a Timestamp's (seconds, nanos); None when unreadable. Cached:
    an object read again carries the same few timestamps (creation, state change, expiry), and
    `Timestamp.FromDatetime` is pure Python."""
    moment = parse_timestamp(value)
    return None if moment is None else _since_epoch(moment)


def _since_epoch(moment: datetime) -> tuple[int, int]:
    """An aware datetime as a Timestamp's (seconds, nanos), what `FromDatetime` computes."""
    since = moment - _EPOCH
    return since.days * 86_400 + since.seconds, since.microseconds * 1000


def json_to_message(data: Mapping[str, Any], message: M) -> M:
    """Fill `message` from Amazon JSON; unknown JSON keys are ignored (the snapshot keeps them)."""
    for step in _plan(cast(Descriptor, message.DESCRIPTOR)):
        value = None
        for key in step.keys:
            if key in data:
                value = data[key]
                break
        if value is None:
            continue
        kind = step.kind
        field = step.field
        if kind == _SCALAR:
            setattr(message, step.name, _scalar_to_proto(field, value))
        elif kind == _ENUM:
            if not isinstance(value, str):
                continue
            if step.raw is not None:
                setattr(message, step.raw, value)
            if not field.is_repeated:
                setattr(message, step.name, _enum_number(_enum_type(field), value))
        elif kind == _MESSAGE:
            if isinstance(value, Mapping):
                json_to_message(value, getattr(message, step.name))
        elif kind == _TIMESTAMP:
            # Longer text is no timestamp, and stays out of the cache.
            parts = _timestamp_parts(value) if isinstance(value, str) and len(value) <= 64 else None
            if parts is not None:
                stamp = getattr(message, step.name)
                stamp.seconds, stamp.nanos = parts
        elif kind == _MESSAGES:
            target = getattr(message, step.name)
            for item in value if isinstance(value, list) else [value]:
                if isinstance(item, Mapping):
                    json_to_message(item, target.add())
        elif kind == _MAP:
            target = getattr(message, step.name)
            value_field = step.map_value
            assert value_field is not None
            for key, item in dict(value).items():
                if value_field.type == FieldDescriptor.TYPE_MESSAGE:
                    json_to_message(item, target[key])
                else:
                    target[key] = _scalar_to_proto(value_field, item)
        else:
            getattr(message, step.name).extend(
                _scalar_to_proto(field, v) for v in (value if isinstance(value, list) else [value])
            )
    return message


def _has(message: Message, field: FieldDescriptor) -> bool:
    if field.is_repeated:
        return len(getattr(message, field.name)) > 0
    if field.has_presence:
        return message.HasField(field.name)
    return bool(getattr(message, field.name))


def message_to_json(
    message: Message, *, skip: Iterable[str] = (), only: Iterable[str] | None = None
) -> dict[str, Any]:
    """Amazon JSON for the set fields of `message`.

    `skip` drops top-level fields (envelope and path ids); `only` (an update mask's top-level
    paths) keeps just those. Enums are sent as Amazon's spelling of the enum value; `raw_*`
    strings are output-only (documented in the protos) and ignored here.
    """
    skipped = set(skip)
    wanted = None if only is None else set(only)
    descriptor = cast(Descriptor, message.DESCRIPTOR)
    out: dict[str, Any] = {}
    for field in descriptor.fields:
        name = field.name
        if name in skipped or (wanted is not None and name not in wanted):
            continue
        if name.startswith("raw_") and name[4:] in descriptor.fields_by_name:
            continue
        key = _camel(name)
        if field.type == FieldDescriptor.TYPE_ENUM:
            if field.is_repeated:
                values = [enum_to_amazon(_enum_type(field), n) for n in getattr(message, name)]
                if values:
                    out[key] = [v for v in values if v]
                continue
            text = enum_to_amazon(_enum_type(field), getattr(message, name))
            if text:
                out[key] = text
            continue
        if not _has(message, field):
            continue
        value = getattr(message, name)
        if _is_map(field):
            value_field = _message_type(field).fields_by_name["value"]
            out[key] = {
                k: message_to_json(v) if value_field.type == FieldDescriptor.TYPE_MESSAGE else v
                for k, v in value.items()
            }
        elif _is_timestamp(field):
            out[key] = format_timestamp(value.ToDatetime(tzinfo=UTC))
        elif field.type == FieldDescriptor.TYPE_MESSAGE:
            if field.is_repeated:
                out[key] = [message_to_json(v) for v in value]
            else:
                nested = message_to_json(value)
                if nested or field.has_presence:
                    out[key] = nested
        elif field.is_repeated:
            out[key] = list(value)
        else:
            out[key] = value
    return out


def timestamp_of(value: datetime) -> Timestamp:
    """An aware datetime as a Timestamp."""
    seconds, nanos = _since_epoch(value.astimezone(UTC))
    return Timestamp(seconds=seconds, nanos=nanos)
