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
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, tzinfo
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


def datetime_of(parts: Sequence[str | None], zone: tzinfo) -> datetime:
    """The date-time a pattern matched as year, month, day, hour, minute, second and the digits
    of a fraction of a second (None: none), in `zone`; ValueError for no calendar date-time."""
    year, month, day, hour, minute, second, fraction = (part or "0" for part in parts)
    return datetime(
        year=int(year),
        month=int(month),
        day=int(day),
        hour=int(hour),
        minute=int(minute),
        second=int(second),
        microsecond=int(fraction.ljust(6, "0")[:6]),
        tzinfo=zone,
    )


def parse_timestamp(value: object) -> datetime | None:
    """Aware UTC datetime from ``20191015T204313Z`` or ISO 8601; None when absent/unreadable."""
    if not isinstance(value, str) or not value:
        return None
    match = _COMPACT_TS.match(value)
    if match:
        try:
            return datetime_of(match.groups(), UTC)
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


def _json_metadata(json_name: str, parse: _Parser = _as_str, *aliases: str) -> dict[str, Any]:
    """Field metadata: the JSON name, its parser and aliases also read (e.g. the seed's
    singular ``statusDetail``)."""
    return {"json": json_name, "parse": parse, "aliases": aliases}


def _json(json_name: str, parse: _Parser = _as_str, *aliases: str, default: Any = None) -> Any:
    """A field read from and written to Amazon's JSON field `json_name` (see
    `_json_metadata`); `default` when Amazon's answer lacks it or it does not parse."""
    return field(default=default, metadata=_json_metadata(json_name, parse, *aliases))


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
    def from_json(cls, data: JSON, **extra: Any) -> Self | None:
        """Parse Amazon JSON; None if a required part (e.g. a Price's amount) is unusable.
        `extra`: fields that do not come from the JSON (an answer's HTTP status)."""
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
        return cls(raw=data, **values, **extra)

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

    amount: str = field(metadata=_json_metadata("amount", _amount_from_json))
    """Decimal string, e.g. ``"14.00"`` (int and Decimal are accepted and normalised)."""
    currency_code: str = field(metadata=_json_metadata("currencyCode"))
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

    name: str | None = _json("name")
    address_line1: str | None = _json("addressLine1")
    address_line2: str | None = _json("addressLine2")
    address_line3: str | None = _json("addressLine3")
    city: str | None = _json("city")
    county: str | None = _json("county")
    district: str | None = _json("district")
    state_or_region: str | None = _json("stateOrRegion")
    postal_code: str | None = _json("postalCode")
    country_code: str | None = _json("countryCode")
    phone_number: str | None = _json("phoneNumber")

    def __repr__(self) -> str:
        return f"Address(country_code={self.country_code!r}, <personal data redacted>)"


@dataclass(frozen=True, kw_only=True, slots=True)
class MerchantMetadata(Model):
    """Merchant-provided order info shown to the buyer (except ``custom_information``)."""

    merchant_reference_id: str | None = _json("merchantReferenceId")
    merchant_store_name: str | None = _json("merchantStoreName")
    note_to_buyer: str | None = _json("noteToBuyer")
    custom_information: str | None = _json("customInformation")


@dataclass(frozen=True, kw_only=True, slots=True)
class ProviderMetadata(Model):
    """Payment service provider order info."""

    provider_reference_id: str | None = _json("providerReferenceId")


@dataclass(frozen=True, kw_only=True, slots=True)
class WebCheckoutDetails(Model):
    """Checkout redirect URLs."""

    checkout_review_return_url: str | None = _json("checkoutReviewReturnUrl")
    checkout_result_return_url: str | None = _json("checkoutResultReturnUrl")
    checkout_cancel_url: str | None = _json("checkoutCancelUrl")
    amazon_pay_redirect_url: str | None = _json("amazonPayRedirectUrl")
    checkout_mode: str | None = _json("checkoutMode")


@dataclass(frozen=True, kw_only=True, slots=True)
class PaymentDetails(Model):
    """How and how much the buyer is charged."""

    payment_intent: str | None = _json("paymentIntent")
    """``Confirm``, ``Authorize`` or ``AuthorizeWithCapture``."""
    can_handle_pending_authorization: bool | None = _json("canHandlePendingAuthorization", _as_bool)
    charge_amount: Price | None = _json("chargeAmount", _nested(Price))
    total_order_amount: Price | None = _json("totalOrderAmount", _nested(Price))
    soft_descriptor: str | None = _json("softDescriptor")
    presentment_currency: str | None = _json("presentmentCurrency")
    allow_overcharge: bool | None = _json("allowOvercharge", _as_bool)
    extend_expiration: bool | None = _json("extendExpiration", _as_bool)


@dataclass(frozen=True, kw_only=True, slots=True)
class Frequency(Model):
    """Recurring frequency: ``unit`` Year|Month|Week|Day|Variable and a count."""

    unit: str | None = _json("unit")
    value: str | None = _json("value")


@dataclass(frozen=True, kw_only=True, slots=True)
class RecurringMetadata(Model):
    """Recurring charge plan of a Recurring charge permission."""

    frequency: Frequency | None = _json("frequency", _nested(Frequency))
    amount: Price | None = _json("amount", _nested(Price))


@dataclass(frozen=True, kw_only=True, slots=True)
class StatusReason(Model):
    """One reason of a state (charge permissions list several)."""

    reason_code: str | None = _json("reasonCode")
    reason_description: str | None = _json("reasonDescription")


@dataclass(frozen=True, kw_only=True, slots=True)
class StatusDetails(Model):
    """State of an object; reason codes stay plain strings so unknown ones pass through."""

    state: str | None = _json("state")
    reason_code: str | None = _json("reasonCode")
    reason_description: str | None = _json("reasonDescription")
    reasons: tuple[StatusReason, ...] = _json("reasons", _nested_tuple(StatusReason), default=())
    last_updated_timestamp: datetime | None = _json("lastUpdatedTimestamp", parse_timestamp)

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

    constraint_id: str | None = _json("constraintId")
    description: str | None = _json("description")


@dataclass(frozen=True, kw_only=True, slots=True)
class PaymentPreference(Model):
    """Buyer-selected payment instrument."""

    payment_descriptor: str | None = _json("paymentDescriptor")
    billing_address: Address | None = _json("billingAddress", _nested(Address))


@dataclass(frozen=True, kw_only=True, slots=True)
class Limits(Model):
    """Charge permission amount limit and remaining balance."""

    amount_limit: Price | None = _json("amountLimit", _nested(Price))
    amount_balance: Price | None = _json("amountBalance", _nested(Price))


@dataclass(frozen=True, kw_only=True, slots=True)
class DeliveryDetail(Model):
    """A shipment tracking reference."""

    tracking_number: str | None = _json("trackingNumber")
    carrier_code: str | None = _json("carrierCode")


# --- top-level objects ---------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True, slots=True)
class Buyer(ApiObject):
    """Buyer profile (embedded in sessions, or from Get Buyer)."""

    buyer_id: str | None = _json("buyerId")
    name: str | None = _json("name")
    email: str | None = _json("email")
    postal_code: str | None = _json("postalCode")
    country_code: str | None = _json("countryCode")
    phone_number: str | None = _json("phoneNumber")
    shipping_address: Address | None = _json("shippingAddress", _nested(Address))
    billing_address: Address | None = _json("billingAddress", _nested(Address))
    prime_membership_types: tuple[str, ...] = _json(
        "primeMembershipTypes", _as_str_tuple, default=()
    )

    def __repr__(self) -> str:
        return (
            f"Buyer(buyer_id={self.buyer_id!r}, http_status={self.http_status!r}, "
            f"request_id={self.request_id!r}, <personal data redacted>)"
        )


@dataclass(frozen=True, kw_only=True, slots=True)
class _Stateful(ApiObject):
    """What every object with a life cycle carries: its state, when it was made, and where."""

    status_details: StatusDetails | None = _json(
        "statusDetails", _nested(StatusDetails), "statusDetail"
    )
    creation_timestamp: datetime | None = _json("creationTimestamp", parse_timestamp)
    release_environment: str | None = _json("releaseEnvironment")

    @property
    def state(self) -> str | None:
        """Shortcut for ``status_details.state``."""
        return self.status_details.state if self.status_details else None


@dataclass(frozen=True, kw_only=True, slots=True)
class CheckoutSession(_Stateful):
    """A buyer's checkout session (Open → Completed | Canceled)."""

    checkout_session_id: str | None = _json("checkoutSessionId")
    web_checkout_details: WebCheckoutDetails | None = _json(
        "webCheckoutDetails", _nested(WebCheckoutDetails), "webCheckoutDetail"
    )
    product_type: str | None = _json("productType")
    payment_details: PaymentDetails | None = _json(
        "paymentDetails", _nested(PaymentDetails), "paymentDetail"
    )
    merchant_metadata: MerchantMetadata | None = _json(
        "merchantMetadata", _nested(MerchantMetadata)
    )
    platform_id: str | None = _json("platformId")
    provider_metadata: ProviderMetadata | None = _json(
        "providerMetadata", _nested(ProviderMetadata)
    )
    buyer: Buyer | None = _json("buyer", _nested(Buyer))
    shipping_address: Address | None = _json("shippingAddress", _nested(Address))
    billing_address: Address | None = _json("billingAddress", _nested(Address))
    payment_preferences: tuple[PaymentPreference, ...] = _json(
        "paymentPreferences", _nested_tuple(PaymentPreference), default=()
    )
    constraints: tuple[Constraint, ...] = _json(
        "constraints", _nested_tuple(Constraint), default=()
    )
    expiration_timestamp: datetime | None = _json("expirationTimestamp", parse_timestamp)
    charge_permission_id: str | None = _json("chargePermissionId")
    charge_id: str | None = _json("chargeId")
    store_id: str | None = _json("storeId")
    charge_permission_type: str | None = _json("chargePermissionType")
    recurring_metadata: RecurringMetadata | None = _json(
        "recurringMetadata", _nested(RecurringMetadata)
    )
    delivery_specifications: Mapping[str, Any] | None = _json(
        "deliverySpecifications", _raw_mapping
    )
    checkout_button_text: str | None = _json("checkoutButtonText")


@dataclass(frozen=True, kw_only=True, slots=True)
class ChargePermission(_Stateful):
    """The buyer's consent to be charged (Chargeable | NonChargeable | Closed)."""

    charge_permission_id: str | None = _json("chargePermissionId")
    charge_permission_reference_id: str | None = _json("chargePermissionReferenceId")
    buyer: Buyer | None = _json("buyer", _nested(Buyer))
    shipping_address: Address | None = _json("shippingAddress", _nested(Address))
    billing_address: Address | None = _json("billingAddress", _nested(Address))
    payment_preferences: tuple[PaymentPreference, ...] = _json(
        "paymentPreferences", _nested_tuple(PaymentPreference), default=()
    )
    expiration_timestamp: datetime | None = _json("expirationTimestamp", parse_timestamp)
    merchant_metadata: MerchantMetadata | None = _json(
        "merchantMetadata", _nested(MerchantMetadata)
    )
    platform_id: str | None = _json("platformId")
    limits: Limits | None = _json("limits", _nested(Limits))
    charge_permission_type: str | None = _json("chargePermissionType")
    recurring_metadata: RecurringMetadata | None = _json(
        "recurringMetadata", _nested(RecurringMetadata)
    )
    presentment_currency: str | None = _json("presentmentCurrency")


@dataclass(frozen=True, kw_only=True, slots=True)
class Charge(_Stateful):
    """An authorization and/or capture against a charge permission."""

    charge_id: str | None = _json("chargeId")
    charge_permission_id: str | None = _json("chargePermissionId")
    charge_amount: Price | None = _json("chargeAmount", _nested(Price))
    capture_amount: Price | None = _json("captureAmount", _nested(Price))
    refunded_amount: Price | None = _json("refundedAmount", _nested(Price))
    converted_amount: Price | None = _json("convertedAmount", _nested(Price))
    conversion_rate: str | None = _json("conversionRate")
    soft_descriptor: str | None = _json("softDescriptor")
    provider_metadata: ProviderMetadata | None = _json(
        "providerMetadata", _nested(ProviderMetadata)
    )
    merchant_metadata: MerchantMetadata | None = _json(
        "merchantMetadata", _nested(MerchantMetadata)
    )
    channel: str | None = _json("channel")
    charge_initiator: str | None = _json("chargeInitiator")
    expiration_timestamp: datetime | None = _json("expirationTimestamp", parse_timestamp)


@dataclass(frozen=True, kw_only=True, slots=True)
class Refund(_Stateful):
    """A refund of a captured charge (always asynchronous)."""

    refund_id: str | None = _json("refundId")
    charge_id: str | None = _json("chargeId")
    refund_amount: Price | None = _json("refundAmount", _nested(Price))
    soft_descriptor: str | None = _json("softDescriptor")


@dataclass(frozen=True, kw_only=True, slots=True)
class DeliveryTracker(ApiObject):
    """Shipment tracking sent to Amazon (lets Amazon notify the buyer)."""

    amazon_order_reference_id: str | None = _json("amazonOrderReferenceId")
    charge_permission_id: str | None = _json("chargePermissionId")
    delivery_details: tuple[DeliveryDetail, ...] = _json(
        "deliveryDetails", _nested_tuple(DeliveryDetail), default=()
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

    report_id: str | None = _json("reportId")
    report_type: str | None = _json("reportType")
    """E.g. ``_GET_FLAT_FILE_OFFAMAZONPAYMENTS_SANDBOX_SETTLEMENT_DATA_``."""
    start_time: datetime | None = _json("startTime", parse_timestamp)
    end_time: datetime | None = _json("endTime", parse_timestamp)
    created_time: datetime | None = _json("createdTime", parse_timestamp)
    processing_status: str | None = _json("processingStatus")
    """``IN_PROGRESS``, ``COMPLETED``, ``FAILED`` or ``CANCELLED``."""
    processing_start_time: datetime | None = _json("processingStartTime", parse_timestamp)
    processing_end_time: datetime | None = _json("processingEndTime", parse_timestamp)
    report_document_id: str | None = _json("reportDocumentId")
    """Set once the report is ``COMPLETED``: Get Report Document names its download URL."""


@dataclass(frozen=True, kw_only=True, slots=True)
class ReportList(ApiObject):
    """A page of Get Reports; ``next_token`` asks for the next page (alone, no other filter)."""

    reports: tuple[Report, ...] = _json("reports", _nested_tuple(Report), default=())
    next_token: str | None = _json("nextToken")


@dataclass(frozen=True, kw_only=True, slots=True)
class ReportDocument(ApiObject):
    """Where a report's content is: a pre-signed URL valid for 30 seconds, fetched unsigned."""

    report_document_id: str | None = _json("reportDocumentId")
    url: str | None = _json("url")
    compression_algorithm: str | None = _json("compressionAlgorithm")
    """Always ``N/A`` today (the content is not compressed)."""


@dataclass(frozen=True, kw_only=True, slots=True)
class ReportSchedule(ApiObject):
    """A schedule creating reports of one type (Create Report Schedule answers its id only)."""

    report_schedule_id: str | None = _json("reportScheduleId")
    report_type: str | None = _json("reportType")
    schedule_frequency: str | None = _json("scheduleFrequency")
    """An ISO 8601 period: ``PT5M`` … ``P1D`` … ``P30D``."""
    next_report_creation_time: datetime | None = _json("nextReportCreationTime", parse_timestamp)


@dataclass(frozen=True, kw_only=True, slots=True)
class ReportScheduleList(ApiObject):
    """Get Report Schedules."""

    report_schedules: tuple[ReportSchedule, ...] = _json(
        "reportSchedules", _nested_tuple(ReportSchedule), default=()
    )


@dataclass(frozen=True, kw_only=True, slots=True)
class Disbursement(ApiObject):
    """A payout of one settlement to the merchant's bank account."""

    seller_id: str | None = _json("sellerId")
    settlement_id: str | None = _json("settlementId")
    amazon_disbursement_reference_id: str | None = _json("amazonDisbursementReferenceId")
    """The identifier on the bank statement."""
    amount: str | None = _json("amount", _signed_amount_from_json)
    """Decimal string, e.g. ``"1000.50"``."""
    currency_code: str | None = _json("currencyCode")
    transaction_time: datetime | None = _json("transactionTime", parse_timestamp)


@dataclass(frozen=True, kw_only=True, slots=True)
class DisbursementList(ApiObject):
    """A page of Get Disbursements."""

    disbursements: tuple[Disbursement, ...] = _json(
        "disbursements", _nested_tuple(Disbursement), default=()
    )
    next_token: str | None = _json("nextToken")


@dataclass(frozen=True, kw_only=True, slots=True)
class DisputeStatusDetails(Model):
    """State of a dispute: ``UnderReview``, ``ActionRequired``, ``Resolved`` or ``Closed``."""

    state: str | None = _json("state")
    reason_code: str | None = _json("reasonCode")
    reason_description: str | None = _json("reasonDescription")
    resolution: str | None = _json("resolution")
    """``BuyerWon``, ``MerchantWon`` or ``NoFault`` once Resolved or Closed."""
    last_updated_timestamp: datetime | None = _json("lastUpdatedTimestamp", parse_timestamp)


@dataclass(frozen=True, kw_only=True, slots=True)
class Evidence(Model):
    """Evidence the merchant submitted for a dispute."""

    evidence_type: str | None = _json("evidenceType")
    file_id: str | None = _json("fileId")
    evidence_text: str | None = _json("evidenceText")


@dataclass(frozen=True, kw_only=True, slots=True)
class Dispute(ApiObject):
    """A buyer's chargeback on a charge (Get Dispute; IPN ``ObjectType`` ``CHARGEBACK``)."""

    dispute_id: str | None = _json("disputeId")
    charge_id: str | None = _json("chargeId")
    dispute_type: str | None = _json("disputeType")
    dispute_amount: Price | None = _json("disputeAmount", _nested(Price))
    filing_reason: str | None = _json("filingReason")
    status_details: DisputeStatusDetails | None = _json(
        "statusDetails", _nested(DisputeStatusDetails)
    )
    merchant_evidences: tuple[Evidence, ...] = _json(
        "merchantEvidences", _nested_tuple(Evidence), default=()
    )
    merchant_response_deadline: datetime | None = _json("merchantResponseDeadline", parse_timestamp)
    resolution_authority: str | None = _json("resolutionAuthority")
    creation_timestamp: datetime | None = _json("creationTimestamp", parse_timestamp)
    release_environment: str | None = _json("releaseEnvironment")

    @property
    def state(self) -> str | None:
        """Shortcut for ``status_details.state``."""
        return self.status_details.state if self.status_details else None
