"""What the ledger records of an Amazon object: a table per kind, not code per operation."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from service.amazonpay import parse_timestamp
from service.ledger import ObjectRecord

__all__ = ["KINDS", "Kind", "record_of"]


def _path(data: Mapping[str, Any], *keys: str) -> Any:
    current: Any = data
    for key in keys:
        if not isinstance(current, Mapping):
            return None
        value = current.get(key)
        if value is None and key.endswith("Details"):
            value = current.get(key[:-1])
        current = value
    return current


@dataclass(frozen=True)
class Kind:
    """How to read one kind of Amazon object."""

    name: str
    """Ledger kind: checkout_session, charge_permission, charge, refund, dispute."""
    id_field: str
    """JSON field holding the object's id."""
    final_states: frozenset[str]
    """States after which Amazon never changes the object again (no more polling)."""
    amount_path: tuple[str, ...]
    """Where the object's headline amount is."""
    getter: str
    """The `ENDPOINTS` row that reads one object of this kind (`GetCharge`)."""
    ipn_object_type: str | None = None
    """`ObjectType` of an IPN about this kind (Amazon sends none about checkout sessions)."""

    def state(self, data: Mapping[str, Any]) -> str | None:
        state = _path(data, "statusDetails", "state")
        return state if isinstance(state, str) else None

    def reason(self, data: Mapping[str, Any]) -> str | None:
        reason = _path(data, "statusDetails", "reasonCode")
        if reason is None:
            reasons = _path(data, "statusDetails", "reasons")
            if isinstance(reasons, list) and reasons and isinstance(reasons[0], Mapping):
                reason = reasons[0].get("reasonCode")
        return reason if isinstance(reason, str) else None


def _kind(
    name: str,
    final_states: set[str],
    amount_path: tuple[str, ...],
    ipn_object_type: str | None = None,
) -> Kind:
    """A kind whose id field and getter follow Amazon's naming of it (``charge_permission``:
    ``chargePermissionId``, ``GetChargePermission``)."""
    camel = "".join(part.capitalize() for part in name.split("_"))
    return Kind(
        name=name,
        id_field=f"{camel[0].lower()}{camel[1:]}Id",
        final_states=frozenset(final_states),
        amount_path=amount_path,
        getter=f"Get{camel}",
        ipn_object_type=ipn_object_type,
    )


KINDS: Mapping[str, Kind] = {
    k.name: k
    for k in (
        _kind("checkout_session", {"Completed", "Canceled"}, ("paymentDetails", "chargeAmount")),
        _kind("charge_permission", {"Closed"}, ("limits", "amountLimit"), "CHARGE_PERMISSION"),
        _kind("charge", {"Captured", "Canceled", "Declined"}, ("chargeAmount",), "CHARGE"),
        _kind("refund", {"Refunded", "Declined"}, ("refundAmount",), "REFUND"),
        _kind("dispute", {"Resolved", "Closed"}, ("disputeAmount",), "CHARGEBACK"),
    )
}


_NAMES_A_CHARGE = frozenset({"charge", "refund", "checkout_session", "dispute"})
"""Kinds whose `chargeId` the ledger keeps (a charge: its own id)."""


def _charge_permission_of(charge_id: str | None) -> str | None:
    """Amazon charge ids are `<charge permission id>-C<digits>`."""
    if charge_id and "-C" in charge_id:
        return charge_id.rsplit("-C", 1)[0]
    return None


def record_of(
    kind_name: str,
    data: Mapping[str, Any],
    merchant: str,
    *,
    object_id: str | None = None,
    amazon_request_id: str | None = None,
) -> ObjectRecord | None:
    """The ledger record for Amazon's JSON of one object (read from Amazon's answer with that
    `x-amz-pay-request-id`); None when it names no id or state."""
    kind = KINDS[kind_name]
    oid = data.get(kind.id_field) or object_id
    state = kind.state(data)
    if not isinstance(oid, str) or not oid or state is None:
        return None
    price = _path(data, *kind.amount_path)
    amount = price.get("amount") if isinstance(price, Mapping) else None
    currency = price.get("currencyCode") if isinstance(price, Mapping) else None
    charge_id = data.get("chargeId") if kind_name != "charge" else oid
    charge_permission_id = data.get("chargePermissionId")
    if kind_name == "charge_permission":
        charge_permission_id = oid
    elif charge_permission_id is None:
        charge_permission_id = _charge_permission_of(charge_id)
    return ObjectRecord(
        merchant=merchant,
        kind=kind_name,
        object_id=oid,
        state=state,
        reason_code=kind.reason(data),
        is_final=state in kind.final_states,
        snapshot=dict(data),
        checkout_session_id=oid if kind_name == "checkout_session" else None,
        charge_permission_id=charge_permission_id,
        charge_id=charge_id if kind_name in _NAMES_A_CHARGE else None,
        amount=str(amount) if amount is not None else None,
        currency_code=currency if isinstance(currency, str) else None,
        merchant_reference_id=_path(data, "merchantMetadata", "merchantReferenceId"),
        created_at=parse_timestamp(data.get("creationTimestamp")),
        amazon_expires_at=parse_timestamp(data.get("expirationTimestamp")),
        amazon_request_id=amazon_request_id,
    )
