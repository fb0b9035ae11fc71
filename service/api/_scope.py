"""What the authenticated caller may see: its merchants, buyer PII, and its own idempotency keys.

The interceptor decides who the caller is and which RPCs it may call; this module applies the
caller's scope to each request and response. Without caller authentication (development) every
check passes and nothing is scrubbed.
"""

from __future__ import annotations

import logging
from typing import Any

import grpc
from google.protobuf.message import Message

from service.core import MerchantRegistry

from ._auth import current_scope
from ._errors import RpcFailure

__all__ = ["allowed_merchant", "hide_buyer_pii", "pii_allowed", "scoped_idempotency_key"]

_log = logging.getLogger("service.api.auth")

_ADDRESS = "payments.amazonpay.v1.Address"
_BUYER = "payments.amazonpay.v1.Buyer"
_BUYER_PII_FIELDS = ("name", "email", "phone_number", "postal_code")
"""Buyer fields that identify or reach a person; `buyer_id` and `country_code` stay."""


def allowed_merchant(merchants: MerchantRegistry, alias: str) -> str:
    """The merchant alias a request acts for (empty: the default), if the caller may use it.

    A caller limited to some merchants is refused any other alias, configured or not, so the
    refusal does not reveal which merchants this service holds.
    """
    caller = current_scope.get()
    resolved = alias or merchants.default_alias
    if caller is None or "*" in caller.merchants:
        return resolved
    if resolved not in caller.merchants:
        _log.warning(
            "merchant denied",
            extra={"caller": caller.name, "merchant": resolved, "reason": "MERCHANT_NOT_ALLOWED"},
        )
        raise RpcFailure(
            grpc.StatusCode.PERMISSION_DENIED,
            f"caller {caller.name!r} may not act for merchant {resolved!r}",
            "MERCHANT_NOT_ALLOWED",
            metadata={"caller": caller.name, "merchant": resolved},
        )
    return resolved


def pii_allowed() -> bool:
    caller = current_scope.get()
    return caller is None or caller.pii


def scoped_idempotency_key(key: str) -> str:
    """`caller:key` when callers are configured, so one caller cannot take another's key.

    Keys match `[A-Za-z0-9_-]{1,64}` and caller names hold no ':', so scoped keys never collide
    with each other or with the unscoped keys of a deployment without callers.
    """
    caller = current_scope.get()
    if caller is None or not key:
        return key
    return f"{caller.name}:{key}"


def hide_buyer_pii(message: Message) -> None:
    """Empty every address and the buyer's name, e-mail, phone and postal code, in place."""
    _scrub(message, message.DESCRIPTOR)


def _may_hold_pii(descriptor: Any, seen: frozenset[str] = frozenset()) -> bool:
    if descriptor.full_name in (_ADDRESS, _BUYER):
        return True
    if descriptor.full_name in seen:
        return False
    inner = seen | {descriptor.full_name}
    return any(
        f.message_type is not None and _may_hold_pii(f.message_type, inner)
        for f in descriptor.fields
    )


_HOLDS_PII: dict[str, bool] = {}


def _holds_pii(descriptor: Any) -> bool:
    known = _HOLDS_PII.get(descriptor.full_name)
    if known is None:
        known = _HOLDS_PII[descriptor.full_name] = _may_hold_pii(descriptor)
    return known


def _scrub(message: Message, descriptor: Any) -> None:
    if descriptor.full_name == _BUYER:
        for name in _BUYER_PII_FIELDS:
            message.ClearField(name)
    for field in descriptor.fields:
        sub = field.message_type
        if sub is None or not _holds_pii(sub):
            continue
        if sub.full_name == _ADDRESS:
            message.ClearField(field.name)
            continue
        if sub.GetOptions().map_entry:
            continue
        if field.is_repeated:
            for item in getattr(message, field.name):
                _scrub(item, sub)
        elif message.HasField(field.name):
            _scrub(getattr(message, field.name), sub)
