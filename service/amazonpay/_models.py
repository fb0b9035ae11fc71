"""Typed Amazon Pay v2 objects (answers; request bodies are camelCase mappings).

Every model is a frozen dataclass built from (and serialisable to) Amazon's camelCase JSON. Parsing
is lenient on purpose: a missing or oddly typed field becomes None, and the untouched JSON dict is
kept in ``raw`` so a field Amazon adds tomorrow is neither lost nor able to break us. Amounts are
decimal strings, never floats; timestamps are timezone-aware UTC datetimes.
"""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from typing import Any, ClassVar, Self

from ._errors import AmazonPayRequestError

__all__ = [
    "Address",
    "ApiObject",
    "Buyer",
    "Charge",
    "ChargePermission",
    "CheckoutSession",
    "Constraint",
    "DeliveryDetail",
    "DeliveryTracker",
    "Disbursement",
    "DisbursementList",
    "Dispute",
    "DisputeStatusDetails",
    "Evidence",
    "Frequency",
    "Limits",
    "MerchantMetadata",
    "Model",
    "PaymentDetails",
    "PaymentPreference",
    "Price",
    "ProviderMetadata",
    "RecurringMetadata",
    "Refund",
    "Report",
    "ReportDocument",
    "ReportList",
    "ReportSchedule",
    "ReportScheduleList",
    "StatusDetails",
    "StatusReason",
    "WebCheckoutDetails",
    "format_timestamp",
    "normalize_amount",
    "parse_timestamp",
]

JSON = Mapping[str, Any]
_Parser = Callable[[Any], Any]

_AMOUNT = re.compile(r"^[0-9]+(\.[0-9]+)?$")
_SIGNED_AMOUNT = re.compile(r"-?[0-9]+(\.[0-9]+)?")
_COMPACT_TS = re.compile(r"^(\d{4})(\d{2})(\d{2})T(\d{2})(\d{2})(\d{2})(?:\.(\d{1,9}))?Z$")


# --- scalar conversions ------------------------------------------------------------------------


def normalize_amount(value: object, *, allow_float: bool = False) -> str:
    """Decimal string of an amount given as str, int or Decimal (float only from Amazon's JSON).

    Floats come only from JSON numbers Amazon sent; their shortest repr is the literal, so the
    value is exact (a trailing zero such as ``14.10`` cannot be recovered and reads ``14.1``).
    """
    if isinstance(value, bool):
        raise AmazonPayRequestError("an amount cannot be a boolean")
    if isinstance(value, float):
        if not allow_float:
            raise AmazonPayRequestError("amounts must be str, int or Decimal, never float")
        if not math.isfinite(value):
            raise AmazonPayRequestError("amount is not a finite number")
        value = Decimal(repr(value))
    if isinstance(value, int):
        text = str(value)
    elif isinstance(value, Decimal):
        if not value.is_finite():
            raise AmazonPayRequestError("amount is not a finite number")
        text = format(value, "f")
    elif isinstance(value, str):
        text = value.strip()
    else:
        raise AmazonPayRequestError(f"unsupported amount type {type(value).__name__}")
    if not _AMOUNT.match(text):
        raise AmazonPayRequestError(f"amount {text[:40]!r} is not a non-negative decimal")
    return text


def parse_timestamp(value: object) -> datetime | None:
    """Aware UTC datetime from ``20191015T204313Z`` or ISO 8601; None when absent/unreadable."""
    if not isinstance(value, str) or not value:
        return None
    match = _COMPACT_TS.match(value)
    if match:
        year, month, day, hour, minute, second, fraction = match.groups()
        micro = int((fraction or "0").ljust(6, "0")[:6])
        try:
            return datetime(
                int(year),
                int(month),
                int(day),
                int(hour),
                int(minute),
                int(second),
                micro,
                tzinfo=UTC,
            )
        except ValueError:
            return None
    text = value[:-1] + "+00:00" if value.endswith(("Z", "z")) else value
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        return None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.astimezone(UTC)


def format_timestamp(value: datetime) -> str:
    """Amazon's compact UTC form ``yyyyMMddTHHmmssZ`` (naive datetimes are taken as UTC)."""
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.astimezone(UTC).strftime("%Y%m%dT%H%M%SZ")


def _as_str(value: Any) -> str | None:
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | Decimal):
        return str(value)
    if isinstance(value, float) and math.isfinite(value):
        return repr(value)
    return None


def _as_bool(value: Any) -> bool | None:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("true", "false"):
        return value.lower() == "true"
    return None


def _as_str_tuple(value: Any) -> tuple[str, ...]:
    if not isinstance(value, list | tuple):
        return ()
    return tuple(item for item in (_as_str(v) for v in value) if item is not None)


def _nested(cls: type[Model]) -> _Parser:
    def parse(value: Any) -> Any:
        return cls.from_json(value) if isinstance(value, Mapping) else None

    return parse


def _nested_tuple(cls: type[Model]) -> _Parser:
    def parse(value: Any) -> Any:
        if not isinstance(value, list | tuple):
            return ()
        return tuple(
            item
            for item in (cls.from_json(v) if isinstance(v, Mapping) else None for v in value)
            if item is not None
        )

    return parse


def _raw_mapping(value: Any) -> Any:
    return value if isinstance(value, Mapping) else None


def _j(json_name: str, parse: _Parser = _as_str, *aliases: str) -> dict[str, Any]:
    """Field metadata: the JSON name, its parser and aliases also read (e.g. the seed's
    singular ``statusDetail``)."""
    return {"json": json_name, "parse": parse, "aliases": aliases}


def _to_json_value(value: Any) -> Any:
    if isinstance(value, Model):
        return value.to_json()
    if isinstance(value, datetime):
        return format_timestamp(value)
    if isinstance(value, tuple | list):
        return [_to_json_value(v) for v in value]
    if isinstance(value, Decimal):
        return format(value, "f")
    return value


# --- base classes ------------------------------------------------------------------------------

# Per model class: (attribute, JSON names to try, parser, required, value when absent). Built once:
# walking dataclasses.fields() on every answer was a measurable share of a call's CPU.
_Step = tuple[str, tuple[str, ...], _Parser, bool, Any]
_PLANS: dict[type, tuple[_Step, ...]] = {}


def _plan_of(cls: type[Model]) -> tuple[_Step, ...]:
    plan = _PLANS.get(cls)
    if plan is None:
        plan = tuple(
            (
                f.name,
                (f.metadata["json"], *f.metadata["aliases"]),
                f.metadata["parse"],
                f.name in cls._required,
                f.default if isinstance(f.default, tuple) else None,
            )
            for f in dataclasses.fields(cls)
            if "json" in f.metadata
        )
        _PLANS[cls] = plan
    return plan


@dataclass(frozen=True, kw_only=True, slots=True)
class Model:
    """Base of every Amazon object: JSON in, JSON out, nothing lost."""

    raw: Mapping[str, Any] = field(default_factory=dict, repr=False, compare=False)
    """The JSON object this model was read from, untouched (unknown fields included)."""

    _required: ClassVar[tuple[str, ...]] = ()

    @classmethod
    def from_json(cls, data: JSON) -> Self | None:
        """Parse Amazon JSON; None if a required part (e.g. a Price's amount) is unusable."""
        values: dict[str, Any] = {}
        for name, keys, parse, required, default in _plan_of(cls):
            raw_value = None
            for key in keys:
                if data.get(key) is not None:
                    raw_value = data[key]
                    break
            parsed = parse(raw_value) if raw_value is not None else None
            if parsed is None:
                if required:
                    return None
                parsed = default
            values[name] = parsed
        return cls(raw=data, **values)

    def to_json(self) -> dict[str, Any]:
        """camelCase JSON: ``raw`` with every known, set field written over it."""
        out = dict(self.raw)
        for f in dataclasses.fields(self):
            if "json" not in f.metadata:
                continue
            value = getattr(self, f.name)
            if value is None or (isinstance(value, tuple) and not value):
                continue
            for alias in f.metadata["aliases"]:
                out.pop(alias, None)
            out[f.metadata["json"]] = _to_json_value(value)
        return out


@dataclass(frozen=True, kw_only=True, slots=True)
class ApiObject(Model):
    """A top-level answer: also carries the HTTP status and Amazon's request id."""

    http_status: int | None = field(default=None, compare=False)
    """HTTP status of the answer (201 created, 202 authorization pending, 200 ...)."""
    request_id: str | None = field(default=None, compare=False)
    """``x-amz-pay-request-id`` of the answer, for Amazon support and logs."""


# --- parts ---------------------------------------------------------------------------------------


def _amount_from_json(value: Any) -> str | None:
    try:
        return normalize_amount(value, allow_float=True)
    except AmazonPayRequestError:
        return None


@dataclass(frozen=True, kw_only=True, slots=True)
class Price(Model):
    """A money amount: decimal string plus ISO 4217 currency."""

    amount: str = field(metadata=_j("amount", _amount_from_json))
    """Decimal string, e.g. ``"14.00"`` (int and Decimal are accepted and normalised)."""
    currency_code: str = field(metadata=_j("currencyCode"))
    """ISO 4217 code, e.g. ``USD``."""

    _required: ClassVar[tuple[str, ...]] = ("amount", "currency_code")

    def __post_init__(self) -> None:
        object.__setattr__(self, "amount", normalize_amount(self.amount))
        if not isinstance(self.currency_code, str) or not self.currency_code:
            raise AmazonPayRequestError("currency_code is required")

    @classmethod
    def of(cls, amount: str | int | Decimal, currency_code: str) -> Price:
        """Shorthand: ``Price.of("14.00", "USD")``."""
        return cls(amount=normalize_amount(amount), currency_code=currency_code)

    @property
    def decimal(self) -> Decimal:
        """The amount as a Decimal for arithmetic."""
        try:
            return Decimal(self.amount)
        except InvalidOperation:  # pragma: no cover - normalize_amount guarantees the format
            raise AmazonPayRequestError("invalid amount") from None


@dataclass(frozen=True, kw_only=True, slots=True)
class Address(Model):
    """A postal address (shipping or billing)."""

    name: str | None = field(default=None, metadata=_j("name"))
    address_line1: str | None = field(default=None, metadata=_j("addressLine1"))
    address_line2: str | None = field(default=None, metadata=_j("addressLine2"))
    address_line3: str | None = field(default=None, metadata=_j("addressLine3"))
    city: str | None = field(default=None, metadata=_j("city"))
    county: str | None = field(default=None, metadata=_j("county"))
    district: str | None = field(default=None, metadata=_j("district"))
    state_or_region: str | None = field(default=None, metadata=_j("stateOrRegion"))
    postal_code: str | None = field(default=None, metadata=_j("postalCode"))
    country_code: str | None = field(default=None, metadata=_j("countryCode"))
    phone_number: str | None = field(default=None, metadata=_j("phoneNumber"))

    def __repr__(self) -> str:
        return f"Address(country_code={self.country_code!r}, <personal data redacted>)"


@dataclass(frozen=True, kw_only=True, slots=True)
class MerchantMetadata(Model):
    """Merchant-provided order info shown to the buyer (except ``custom_information``)."""

    merchant_reference_id: str | None = field(default=None, metadata=_j("merchantReferenceId"))
    merchant_store_name: str | None = field(default=None, metadata=_j("merchantStoreName"))
    note_to_buyer: str | None = field(default=None, metadata=_j("noteToBuyer"))
    custom_information: str | None = field(default=None, metadata=_j("customInformation"))


@dataclass(frozen=True, kw_only=True, slots=True)
class ProviderMetadata(Model):
    """Payment service provider order info."""

    provider_reference_id: str | None = field(default=None, metadata=_j("providerReferenceId"))


@dataclass(frozen=True, kw_only=True, slots=True)
class WebCheckoutDetails(Model):
    """Checkout redirect URLs."""

    checkout_review_return_url: str | None = field(
        default=None, metadata=_j("checkoutReviewReturnUrl")
    )
    checkout_result_return_url: str | None = field(
        default=None, metadata=_j("checkoutResultReturnUrl")
    )
    checkout_cancel_url: str | None = field(default=None, metadata=_j("checkoutCancelUrl"))
    amazon_pay_redirect_url: str | None = field(default=None, metadata=_j("amazonPayRedirectUrl"))
    checkout_mode: str | None = field(default=None, metadata=_j("checkoutMode"))


@dataclass(frozen=True, kw_only=True, slots=True)
class PaymentDetails(Model):
    """How and how much the buyer is charged."""

    payment_intent: str | None = field(default=None, metadata=_j("paymentIntent"))
    """``Confirm``, ``Authorize`` or ``AuthorizeWithCapture``."""
    can_handle_pending_authorization: bool | None = field(
        default=None, metadata=_j("canHandlePendingAuthorization", _as_bool)
    )
    charge_amount: Price | None = field(default=None, metadata=_j("chargeAmount", _nested(Price)))
    total_order_amount: Price | None = field(
        default=None, metadata=_j("totalOrderAmount", _nested(Price))
    )
    soft_descriptor: str | None = field(default=None, metadata=_j("softDescriptor"))
    presentment_currency: str | None = field(default=None, metadata=_j("presentmentCurrency"))
    allow_overcharge: bool | None = field(default=None, metadata=_j("allowOvercharge", _as_bool))
    extend_expiration: bool | None = field(default=None, metadata=_j("extendExpiration", _as_bool))


@dataclass(frozen=True, kw_only=True, slots=True)
class Frequency(Model):
    """Recurring frequency: ``unit`` Year|Month|Week|Day|Variable and a count."""

    unit: str | None = field(default=None, metadata=_j("unit"))
    value: str | None = field(default=None, metadata=_j("value"))


@dataclass(frozen=True, kw_only=True, slots=True)
class RecurringMetadata(Model):
    """Recurring charge plan of a Recurring charge permission."""

    frequency: Frequency | None = field(default=None, metadata=_j("frequency", _nested(Frequency)))
    amount: Price | None = field(default=None, metadata=_j("amount", _nested(Price)))


@dataclass(frozen=True, kw_only=True, slots=True)
class StatusReason(Model):
    """One reason of a state (charge permissions list several)."""

    reason_code: str | None = field(default=None, metadata=_j("reasonCode"))
    reason_description: str | None = field(default=None, metadata=_j("reasonDescription"))


@dataclass(frozen=True, kw_only=True, slots=True)
class StatusDetails(Model):
    """State of an object; reason codes stay plain strings so unknown ones pass through."""

    state: str | None = field(default=None, metadata=_j("state"))
    reason_code: str | None = field(default=None, metadata=_j("reasonCode"))
    reason_description: str | None = field(default=None, metadata=_j("reasonDescription"))
    reasons: tuple[StatusReason, ...] = field(
        default=(), metadata=_j("reasons", _nested_tuple(StatusReason))
    )
    last_updated_timestamp: datetime | None = field(
        default=None, metadata=_j("lastUpdatedTimestamp", parse_timestamp)
    )

    @property
    def reason_codes(self) -> tuple[str, ...]:
        """Every reason code, whether given singly or as a ``reasons`` list."""
        codes = [r.reason_code for r in self.reasons if r.reason_code]
        if self.reason_code and self.reason_code not in codes:
            codes.insert(0, self.reason_code)
        return tuple(codes)


@dataclass(frozen=True, kw_only=True, slots=True)
class Constraint(Model):
    """Something that still blocks checkout (e.g. ``ChargeAmountNotSet``)."""

    constraint_id: str | None = field(default=None, metadata=_j("constraintId"))
    description: str | None = field(default=None, metadata=_j("description"))


@dataclass(frozen=True, kw_only=True, slots=True)
class PaymentPreference(Model):
    """Buyer-selected payment instrument."""

    payment_descriptor: str | None = field(default=None, metadata=_j("paymentDescriptor"))
    billing_address: Address | None = field(
        default=None, metadata=_j("billingAddress", _nested(Address))
    )


@dataclass(frozen=True, kw_only=True, slots=True)
class Limits(Model):
    """Charge permission amount limit and remaining balance."""

    amount_limit: Price | None = field(default=None, metadata=_j("amountLimit", _nested(Price)))
    amount_balance: Price | None = field(default=None, metadata=_j("amountBalance", _nested(Price)))


@dataclass(frozen=True, kw_only=True, slots=True)
class DeliveryDetail(Model):
    """A shipment tracking reference."""

    tracking_number: str | None = field(default=None, metadata=_j("trackingNumber"))
    carrier_code: str | None = field(default=None, metadata=_j("carrierCode"))


# --- top-level objects ---------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True, slots=True)
class Buyer(ApiObject):
    """Buyer profile (embedded in sessions, or from Get Buyer)."""

    buyer_id: str | None = field(default=None, metadata=_j("buyerId"))
    name: str | None = field(default=None, metadata=_j("name"))
    email: str | None = field(default=None, metadata=_j("email"))
    postal_code: str | None = field(default=None, metadata=_j("postalCode"))
    country_code: str | None = field(default=None, metadata=_j("countryCode"))
    phone_number: str | None = field(default=None, metadata=_j("phoneNumber"))
    shipping_address: Address | None = field(
        default=None, metadata=_j("shippingAddress", _nested(Address))
    )
    billing_address: Address | None = field(
        default=None, metadata=_j("billingAddress", _nested(Address))
    )
    prime_membership_types: tuple[str, ...] = field(
        default=(), metadata=_j("primeMembershipTypes", _as_str_tuple)
    )

    def __repr__(self) -> str:
        return (
            f"Buyer(buyer_id={self.buyer_id!r}, http_status={self.http_status!r}, "
            f"request_id={self.request_id!r}, <personal data redacted>)"
        )


@dataclass(frozen=True, kw_only=True, slots=True)
class CheckoutSession(ApiObject):
    """A buyer's checkout session (Open → Completed | Canceled)."""

    checkout_session_id: str | None = field(default=None, metadata=_j("checkoutSessionId"))
    web_checkout_details: WebCheckoutDetails | None = field(
        default=None,
        metadata=_j("webCheckoutDetails", _nested(WebCheckoutDetails), "webCheckoutDetail"),
    )
    product_type: str | None = field(default=None, metadata=_j("productType"))
    payment_details: PaymentDetails | None = field(
        default=None, metadata=_j("paymentDetails", _nested(PaymentDetails), "paymentDetail")
    )
    merchant_metadata: MerchantMetadata | None = field(
        default=None, metadata=_j("merchantMetadata", _nested(MerchantMetadata))
    )
    platform_id: str | None = field(default=None, metadata=_j("platformId"))
    provider_metadata: ProviderMetadata | None = field(
        default=None, metadata=_j("providerMetadata", _nested(ProviderMetadata))
    )
    buyer: Buyer | None = field(default=None, metadata=_j("buyer", _nested(Buyer)))
    shipping_address: Address | None = field(
        default=None, metadata=_j("shippingAddress", _nested(Address))
    )
    billing_address: Address | None = field(
        default=None, metadata=_j("billingAddress", _nested(Address))
    )
    payment_preferences: tuple[PaymentPreference, ...] = field(
        default=(), metadata=_j("paymentPreferences", _nested_tuple(PaymentPreference))
    )
    status_details: StatusDetails | None = field(
        default=None, metadata=_j("statusDetails", _nested(StatusDetails), "statusDetail")
    )
    constraints: tuple[Constraint, ...] = field(
        default=(), metadata=_j("constraints", _nested_tuple(Constraint))
    )
    creation_timestamp: datetime | None = field(
        default=None, metadata=_j("creationTimestamp", parse_timestamp)
    )
    expiration_timestamp: datetime | None = field(
        default=None, metadata=_j("expirationTimestamp", parse_timestamp)
    )
    charge_permission_id: str | None = field(default=None, metadata=_j("chargePermissionId"))
    charge_id: str | None = field(default=None, metadata=_j("chargeId"))
    store_id: str | None = field(default=None, metadata=_j("storeId"))
    charge_permission_type: str | None = field(default=None, metadata=_j("chargePermissionType"))
    recurring_metadata: RecurringMetadata | None = field(
        default=None, metadata=_j("recurringMetadata", _nested(RecurringMetadata))
    )
    delivery_specifications: Mapping[str, Any] | None = field(
        default=None, metadata=_j("deliverySpecifications", _raw_mapping)
    )
    checkout_button_text: str | None = field(default=None, metadata=_j("checkoutButtonText"))
    release_environment: str | None = field(default=None, metadata=_j("releaseEnvironment"))

    @property
    def state(self) -> str | None:
        """Shortcut for ``status_details.state``."""
        return self.status_details.state if self.status_details else None


@dataclass(frozen=True, kw_only=True, slots=True)
class ChargePermission(ApiObject):
    """The buyer's consent to be charged (Chargeable | NonChargeable | Closed)."""

    charge_permission_id: str | None = field(default=None, metadata=_j("chargePermissionId"))
    charge_permission_reference_id: str | None = field(
        default=None, metadata=_j("chargePermissionReferenceId")
    )
    buyer: Buyer | None = field(default=None, metadata=_j("buyer", _nested(Buyer)))
    shipping_address: Address | None = field(
        default=None, metadata=_j("shippingAddress", _nested(Address))
    )
    billing_address: Address | None = field(
        default=None, metadata=_j("billingAddress", _nested(Address))
    )
    payment_preferences: tuple[PaymentPreference, ...] = field(
        default=(), metadata=_j("paymentPreferences", _nested_tuple(PaymentPreference))
    )
    status_details: StatusDetails | None = field(
        default=None, metadata=_j("statusDetails", _nested(StatusDetails), "statusDetail")
    )
    creation_timestamp: datetime | None = field(
        default=None, metadata=_j("creationTimestamp", parse_timestamp)
    )
    expiration_timestamp: datetime | None = field(
        default=None, metadata=_j("expirationTimestamp", parse_timestamp)
    )
    merchant_metadata: MerchantMetadata | None = field(
        default=None, metadata=_j("merchantMetadata", _nested(MerchantMetadata))
    )
    platform_id: str | None = field(default=None, metadata=_j("platformId"))
    limits: Limits | None = field(default=None, metadata=_j("limits", _nested(Limits)))
    charge_permission_type: str | None = field(default=None, metadata=_j("chargePermissionType"))
    recurring_metadata: RecurringMetadata | None = field(
        default=None, metadata=_j("recurringMetadata", _nested(RecurringMetadata))
    )
    presentment_currency: str | None = field(default=None, metadata=_j("presentmentCurrency"))
    release_environment: str | None = field(default=None, metadata=_j("releaseEnvironment"))

    @property
    def state(self) -> str | None:
        """Shortcut for ``status_details.state``."""
        return self.status_details.state if self.status_details else None


@dataclass(frozen=True, kw_only=True, slots=True)
class Charge(ApiObject):
    """An authorization and/or capture against a charge permission."""

    charge_id: str | None = field(default=None, metadata=_j("chargeId"))
    charge_permission_id: str | None = field(default=None, metadata=_j("chargePermissionId"))
    charge_amount: Price | None = field(default=None, metadata=_j("chargeAmount", _nested(Price)))
    capture_amount: Price | None = field(default=None, metadata=_j("captureAmount", _nested(Price)))
    refunded_amount: Price | None = field(
        default=None, metadata=_j("refundedAmount", _nested(Price))
    )
    converted_amount: Price | None = field(
        default=None, metadata=_j("convertedAmount", _nested(Price))
    )
    conversion_rate: str | None = field(default=None, metadata=_j("conversionRate"))
    soft_descriptor: str | None = field(default=None, metadata=_j("softDescriptor"))
    provider_metadata: ProviderMetadata | None = field(
        default=None, metadata=_j("providerMetadata", _nested(ProviderMetadata))
    )
    merchant_metadata: MerchantMetadata | None = field(
        default=None, metadata=_j("merchantMetadata", _nested(MerchantMetadata))
    )
    channel: str | None = field(default=None, metadata=_j("channel"))
    charge_initiator: str | None = field(default=None, metadata=_j("chargeInitiator"))
    status_details: StatusDetails | None = field(
        default=None, metadata=_j("statusDetails", _nested(StatusDetails), "statusDetail")
    )
    creation_timestamp: datetime | None = field(
        default=None, metadata=_j("creationTimestamp", parse_timestamp)
    )
    expiration_timestamp: datetime | None = field(
        default=None, metadata=_j("expirationTimestamp", parse_timestamp)
    )
    release_environment: str | None = field(default=None, metadata=_j("releaseEnvironment"))

    @property
    def state(self) -> str | None:
        """Shortcut for ``status_details.state``."""
        return self.status_details.state if self.status_details else None


@dataclass(frozen=True, kw_only=True, slots=True)
class Refund(ApiObject):
    """A refund of a captured charge (always asynchronous)."""

    refund_id: str | None = field(default=None, metadata=_j("refundId"))
    charge_id: str | None = field(default=None, metadata=_j("chargeId"))
    refund_amount: Price | None = field(default=None, metadata=_j("refundAmount", _nested(Price)))
    soft_descriptor: str | None = field(default=None, metadata=_j("softDescriptor"))
    status_details: StatusDetails | None = field(
        default=None, metadata=_j("statusDetails", _nested(StatusDetails), "statusDetail")
    )
    creation_timestamp: datetime | None = field(
        default=None, metadata=_j("creationTimestamp", parse_timestamp)
    )
    release_environment: str | None = field(default=None, metadata=_j("releaseEnvironment"))

    @property
    def state(self) -> str | None:
        """Shortcut for ``status_details.state``."""
        return self.status_details.state if self.status_details else None


@dataclass(frozen=True, kw_only=True, slots=True)
class DeliveryTracker(ApiObject):
    """Shipment tracking sent to Amazon (lets Amazon notify the buyer)."""

    amazon_order_reference_id: str | None = field(
        default=None, metadata=_j("amazonOrderReferenceId")
    )
    charge_permission_id: str | None = field(default=None, metadata=_j("chargePermissionId"))
    delivery_details: tuple[DeliveryDetail, ...] = field(
        default=(), metadata=_j("deliveryDetails", _nested_tuple(DeliveryDetail))
    )


# --- reports, disbursements and disputes -----------------------------------------------------


def _signed_amount_from_json(value: Any) -> str | None:
    """A decimal string that may be negative (a disbursement can be), else None."""
    text = _as_str(value)
    if text is None or isinstance(value, bool):
        return None
    text = text.strip()
    return text if _SIGNED_AMOUNT.fullmatch(text) else None


@dataclass(frozen=True, kw_only=True, slots=True)
class Report(ApiObject):
    """A report Amazon generated or was asked to generate (Create Report answers its id only)."""

    report_id: str | None = field(default=None, metadata=_j("reportId"))
    report_type: str | None = field(default=None, metadata=_j("reportType"))
    """E.g. ``_GET_FLAT_FILE_OFFAMAZONPAYMENTS_SANDBOX_SETTLEMENT_DATA_``."""
    start_time: datetime | None = field(default=None, metadata=_j("startTime", parse_timestamp))
    end_time: datetime | None = field(default=None, metadata=_j("endTime", parse_timestamp))
    created_time: datetime | None = field(default=None, metadata=_j("createdTime", parse_timestamp))
    processing_status: str | None = field(default=None, metadata=_j("processingStatus"))
    """``IN_PROGRESS``, ``COMPLETED``, ``FAILED`` or ``CANCELLED``."""
    processing_start_time: datetime | None = field(
        default=None, metadata=_j("processingStartTime", parse_timestamp)
    )
    processing_end_time: datetime | None = field(
        default=None, metadata=_j("processingEndTime", parse_timestamp)
    )
    report_document_id: str | None = field(default=None, metadata=_j("reportDocumentId"))
    """Set once the report is ``COMPLETED``: Get Report Document names its download URL."""


@dataclass(frozen=True, kw_only=True, slots=True)
class ReportList(ApiObject):
    """A page of Get Reports; ``next_token`` asks for the next page (alone, no other filter)."""

    reports: tuple[Report, ...] = field(default=(), metadata=_j("reports", _nested_tuple(Report)))
    next_token: str | None = field(default=None, metadata=_j("nextToken"))


@dataclass(frozen=True, kw_only=True, slots=True)
class ReportDocument(ApiObject):
    """Where a report's content is: a pre-signed URL valid for 30 seconds, fetched unsigned."""

    report_document_id: str | None = field(default=None, metadata=_j("reportDocumentId"))
    url: str | None = field(default=None, metadata=_j("url"))
    compression_algorithm: str | None = field(default=None, metadata=_j("compressionAlgorithm"))
    """Always ``N/A`` today (the content is not compressed)."""


@dataclass(frozen=True, kw_only=True, slots=True)
class ReportSchedule(ApiObject):
    """A schedule creating reports of one type (Create Report Schedule answers its id only)."""

    report_schedule_id: str | None = field(default=None, metadata=_j("reportScheduleId"))
    report_type: str | None = field(default=None, metadata=_j("reportType"))
    schedule_frequency: str | None = field(default=None, metadata=_j("scheduleFrequency"))
    """An ISO 8601 period: ``PT5M`` … ``P1D`` … ``P30D``."""
    next_report_creation_time: datetime | None = field(
        default=None, metadata=_j("nextReportCreationTime", parse_timestamp)
    )


@dataclass(frozen=True, kw_only=True, slots=True)
class ReportScheduleList(ApiObject):
    """Get Report Schedules."""

    report_schedules: tuple[ReportSchedule, ...] = field(
        default=(), metadata=_j("reportSchedules", _nested_tuple(ReportSchedule))
    )


@dataclass(frozen=True, kw_only=True, slots=True)
class Disbursement(ApiObject):
    """A payout of one settlement to the merchant's bank account."""

    seller_id: str | None = field(default=None, metadata=_j("sellerId"))
    settlement_id: str | None = field(default=None, metadata=_j("settlementId"))
    amazon_disbursement_reference_id: str | None = field(
        default=None, metadata=_j("amazonDisbursementReferenceId")
    )
    """The identifier on the bank statement."""
    amount: str | None = field(default=None, metadata=_j("amount", _signed_amount_from_json))
    """Decimal string, e.g. ``"1000.50"``."""
    currency_code: str | None = field(default=None, metadata=_j("currencyCode"))
    transaction_time: datetime | None = field(
        default=None, metadata=_j("transactionTime", parse_timestamp)
    )


@dataclass(frozen=True, kw_only=True, slots=True)
class DisbursementList(ApiObject):
    """A page of Get Disbursements."""

    disbursements: tuple[Disbursement, ...] = field(
        default=(), metadata=_j("disbursements", _nested_tuple(Disbursement))
    )
    next_token: str | None = field(default=None, metadata=_j("nextToken"))


@dataclass(frozen=True, kw_only=True, slots=True)
class DisputeStatusDetails(Model):
    """State of a dispute: ``UnderReview``, ``ActionRequired``, ``Resolved`` or ``Closed``."""

    state: str | None = field(default=None, metadata=_j("state"))
    reason_code: str | None = field(default=None, metadata=_j("reasonCode"))
    reason_description: str | None = field(default=None, metadata=_j("reasonDescription"))
    resolution: str | None = field(default=None, metadata=_j("resolution"))
    """``BuyerWon``, ``MerchantWon`` or ``NoFault`` once Resolved or Closed."""
    last_updated_timestamp: datetime | None = field(
        default=None, metadata=_j("lastUpdatedTimestamp", parse_timestamp)
    )


@dataclass(frozen=True, kw_only=True, slots=True)
class Evidence(Model):
    """Evidence the merchant submitted for a dispute."""

    evidence_type: str | None = field(default=None, metadata=_j("evidenceType"))
    file_id: str | None = field(default=None, metadata=_j("fileId"))
    evidence_text: str | None = field(default=None, metadata=_j("evidenceText"))


@dataclass(frozen=True, kw_only=True, slots=True)
class Dispute(ApiObject):
    """A buyer's chargeback on a charge (Get Dispute; IPN ``ObjectType`` ``CHARGEBACK``)."""

    dispute_id: str | None = field(default=None, metadata=_j("disputeId"))
    charge_id: str | None = field(default=None, metadata=_j("chargeId"))
    dispute_type: str | None = field(default=None, metadata=_j("disputeType"))
    dispute_amount: Price | None = field(default=None, metadata=_j("disputeAmount", _nested(Price)))
    filing_reason: str | None = field(default=None, metadata=_j("filingReason"))
    status_details: DisputeStatusDetails | None = field(
        default=None, metadata=_j("statusDetails", _nested(DisputeStatusDetails))
    )
    merchant_evidences: tuple[Evidence, ...] = field(
        default=(), metadata=_j("merchantEvidences", _nested_tuple(Evidence))
    )
    merchant_response_deadline: datetime | None = field(
        default=None, metadata=_j("merchantResponseDeadline", parse_timestamp)
    )
    resolution_authority: str | None = field(default=None, metadata=_j("resolutionAuthority"))
    creation_timestamp: datetime | None = field(
        default=None, metadata=_j("creationTimestamp", parse_timestamp)
    )
    release_environment: str | None = field(default=None, metadata=_j("releaseEnvironment"))

    @property
    def state(self) -> str | None:
        """Shortcut for ``status_details.state``."""
        return self.status_details.state if self.status_details else None
