"""Request-body validation with Amazon's reason codes and the field limits of the reference."""

from __future__ import annotations

from decimal import Decimal, InvalidOperation
from typing import Any

Obj = dict[str, Any]


class ApiError(Exception):
    """An Amazon-style error response: HTTP status plus `{"reasonCode", "message"}`."""

    def __init__(self, status: int, reason_code: str, message: str) -> None:
        super().__init__(f"{status} {reason_code}: {message}")
        self.status = status
        self.reason_code = reason_code
        self.message = message

    def body(self) -> Obj:
        return {"reasonCode": self.reason_code, "message": self.message}


ADDRESS_LIMITS: dict[str, int] = {
    "name": 50,
    "addressLine1": 180,
    "addressLine2": 60,
    "addressLine3": 60,
    "city": 50,
    "county": 50,
    "district": 50,
    "stateOrRegion": 50,
    "postalCode": 20,
    "countryCode": 3,
    "phoneNumber": 20,
}
MERCHANT_METADATA_LIMITS: dict[str, int] = {
    "merchantReferenceId": 256,
    "merchantStoreName": 50,
    "noteToBuyer": 255,
    "customInformation": 4096,
}
SOFT_DESCRIPTOR_MAX = 16
URL_MAX = 1024
REASON_MAX = 255

MAX_CHARGE: dict[str, Decimal] = {"JPY": Decimal(10_000_000)}
DEFAULT_MAX_CHARGE = Decimal(150_000)
REFUND_EXTRA_CAP: dict[str, Decimal] = {"JPY": Decimal(8400)}
DEFAULT_REFUND_EXTRA_CAP = Decimal(75)
ZERO_DECIMAL_CURRENCIES = frozenset({"JPY"})
PRESENTMENT_CURRENCIES = frozenset(
    {"AUD", "GBP", "DKK", "EUR", "HKD", "JPY", "NZD", "NOK", "ZAR", "SEK", "CHF", "USD"}
)
REGION_CURRENCIES: dict[str, frozenset[str]] = {
    "na": frozenset({"USD"}),
    "jp": frozenset({"JPY"}),
    "eu": PRESENTMENT_CURRENCIES,
}
# Fixed, fake rates from presentment currency to the EUR/GBP ledger currency (multi-currency only).
CONVERSION_TO_EUR: dict[str, Decimal] = {
    "EUR": Decimal("1.00"),
    "GBP": Decimal("1.17"),
    "USD": Decimal("0.92"),
    "AUD": Decimal("0.61"),
    "CHF": Decimal("1.04"),
    "DKK": Decimal("0.13"),
    "HKD": Decimal("0.12"),
    "JPY": Decimal("0.0062"),
    "NOK": Decimal("0.087"),
    "NZD": Decimal("0.56"),
    "SEK": Decimal("0.088"),
    "ZAR": Decimal("0.05"),
}
REGION_ALIASES = {"na": "na", "us": "na", "eu": "eu", "uk": "eu", "de": "eu", "jp": "jp"}


def dotted(where: str, key: str) -> str:
    return f"{where}.{key}" if where else key


def check_object(value: Any, allowed: frozenset[str], where: str) -> Obj:
    if not isinstance(value, dict):
        raise ApiError(400, "InvalidParameterValue", f"'{where or 'body'}' must be a JSON object")
    for key in value:
        if key not in allowed:
            raise ApiError(400, "UnrecognizedField", f"Unrecognized field '{dotted(where, key)}'")
    return value


def opt_str(obj: Obj, key: str, where: str, max_len: int | None = None) -> str | None:
    value = obj.get(key)
    if value is None:
        return None
    name = dotted(where, key)
    if not isinstance(value, str):
        raise ApiError(400, "InvalidParameterValue", f"'{name}' must be a string")
    if max_len is not None and len(value) > max_len:
        raise ApiError(
            400,
            "InvalidParameterValue",
            f"The value provided for '{name}' exceeds the maximum length of {max_len}",
        )
    return value


def req_str(obj: Obj, key: str, where: str, max_len: int | None = None) -> str:
    value = opt_str(obj, key, where, max_len)
    if value is None or value == "":
        raise ApiError(400, "MissingParameterValue", f"'{dotted(where, key)}' is required")
    return value


def opt_bool(obj: Obj, key: str, where: str) -> bool | None:
    value = obj.get(key)
    if value is None:
        return None
    if not isinstance(value, bool):
        raise ApiError(400, "InvalidParameterValue", f"'{dotted(where, key)}' must be a boolean")
    return value


def parse_amount(value: Any, currency: str, name: str) -> Decimal:
    """Amounts may arrive as strings or JSON numbers; precision follows the currency."""
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise ApiError(400, "InvalidParameterValue", f"'{name}' must be a decimal string")
    try:
        amount = Decimal(str(value))
    except InvalidOperation as exc:
        raise ApiError(400, "InvalidParameterValue", f"'{name}' is not a valid amount") from exc
    if not amount.is_finite() or amount <= 0:
        raise ApiError(400, "InvalidParameterValue", f"'{name}' must be greater than zero")
    exponent = amount.normalize().as_tuple().exponent
    places = -exponent if isinstance(exponent, int) and exponent < 0 else 0
    allowed = 0 if currency in ZERO_DECIMAL_CURRENCIES else 2
    if places > allowed:
        raise ApiError(
            400,
            "InvalidParameterValue",
            f"'{name}' has more than {allowed} decimal places for {currency}",
        )
    limit = MAX_CHARGE.get(currency, DEFAULT_MAX_CHARGE)
    if amount > limit:
        raise ApiError(
            400, "InvalidParameterValue", f"'{name}' exceeds the maximum of {limit} {currency}"
        )
    return amount


def quantum(currency: str) -> Decimal:
    """The smallest amount of `currency` (1 yen, else a cent)."""
    return Decimal(1) if currency in ZERO_DECIMAL_CURRENCIES else Decimal("0.01")


def money(amount: Decimal, currency: str) -> str:
    return str(amount.quantize(quantum(currency)))


def price(amount: Decimal, currency: str) -> Obj:
    return {"amount": money(amount, currency), "currencyCode": currency}


def parse_price(value: Any, name: str, region: str | None = None) -> tuple[Decimal, str]:
    obj = check_object(value, frozenset({"amount", "currencyCode"}), name)
    currency = req_str(obj, "currencyCode", name, 3)
    if currency not in PRESENTMENT_CURRENCIES:
        raise ApiError(
            400, "InvalidParameterValue", f"'{name}.currencyCode' '{currency}' is not supported"
        )
    if region is not None and currency not in REGION_CURRENCIES[region]:
        raise ApiError(
            400,
            "CurrencyMismatch",
            f"'{name}.currencyCode' {currency} is not supported in region {region}",
        )
    if obj.get("amount") is None:
        raise ApiError(400, "MissingParameterValue", f"'{name}.amount' is required")
    return parse_amount(obj["amount"], currency, f"{name}.amount"), currency


def parse_address(value: Any, name: str) -> Obj | None:
    if value is None:
        return None
    obj = check_object(value, frozenset(ADDRESS_LIMITS), name)
    return {key: opt_str(obj, key, name, limit) for key, limit in ADDRESS_LIMITS.items()}


def parse_merchant_metadata(value: Any, name: str = "merchantMetadata") -> Obj | None:
    if value is None:
        return None
    obj = check_object(value, frozenset(MERCHANT_METADATA_LIMITS), name)
    return {key: opt_str(obj, key, name, limit) for key, limit in MERCHANT_METADATA_LIMITS.items()}


def parse_provider_metadata(value: Any) -> Obj | None:
    if value is None:
        return None
    obj = check_object(value, frozenset({"providerReferenceId"}), "providerMetadata")
    return {"providerReferenceId": opt_str(obj, "providerReferenceId", "providerMetadata", 256)}


def refund_ceiling(captured: Decimal, currency: str) -> Decimal:
    """Captured amount plus min(15 %, 75 USD/EUR/GBP or 8,400 JPY)."""
    extra = min(
        captured * Decimal("0.15"), REFUND_EXTRA_CAP.get(currency, DEFAULT_REFUND_EXTRA_CAP)
    )
    return captured + extra


def normalize_region(value: str | None) -> str:
    if not value:
        return "na"
    return REGION_ALIASES.get(value.strip().lower(), "na")
