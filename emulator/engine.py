"""Amazon Pay v2 domain: objects, state machines and rules, free of any HTTP or I/O.

Objects are plain JSON dicts holding Amazon's field names; keys starting with `_` are the
emulator's private bookkeeping and never leave it. Every method runs synchronously, so one
request's checks and writes can't interleave with another's.
"""

from __future__ import annotations

import heapq
import random
import secrets
import uuid
from collections.abc import Callable
from decimal import Decimal
from typing import Any, NamedTuple
from urllib.parse import quote

from .clock import DAY, Clock, fmt
from .routing import Ctx, Route, route, routes_of
from .settlement import SettlementApi
from .validation import (
    CONVERSION_TO_EUR,
    REASON_MAX,
    SOFT_DESCRIPTOR_MAX,
    URL_MAX,
    ApiError,
    Obj,
    check_object,
    money,
    opt_bool,
    opt_str,
    parse_address,
    parse_merchant_metadata,
    parse_price,
    parse_provider_metadata,
    price,
    refund_ceiling,
    req_str,
)

SESSION_TTL = DAY
SESSION_RETENTION = 30 * DAY
BUYER_RETENTION = 30 * DAY
BUYER_TOKEN_TTL = DAY
SYNC_CAPTURE_WINDOW = 7 * DAY
AUTHORIZATION_TTL = 30 * DAY
ONE_TIME_CP_TTL = 180 * DAY
EXTENDED_CP_TTL = 395 * DAY
MAX_CHARGES_PER_ONE_TIME_CP = 25

SIMULATIONS: dict[str, frozenset[str]] = {
    "CompleteCheckoutSession": frozenset(
        {"BuyerCanceled", "AmazonCanceled", "Declined", "AuthorizationInitiated"}
    ),
    "FinalizeCheckoutSession": frozenset(
        {"BuyerCanceled", "AmazonCanceled", "Declined", "AuthorizationInitiated"}
    ),
    "CreateCharge": frozenset(
        {
            "SoftDeclined",
            "HardDeclined",
            "AmazonRejected",
            "TransactionTimedOut",
            "CaptureInitiated",
        }
    ),
    "CaptureCharge": frozenset({"CaptureInitiated", "AmazonRejected"}),
    "CloseChargePermission": frozenset({"AmazonClosed"}),
}


class Card(NamedTuple):
    """A sandbox wallet card: the brand its descriptor shows and how authorizations go."""

    brand: str
    behaviour: str


CARDS: dict[str, Card] = {  # by last four digits
    "1111": Card("Visa", "success"),
    "0005": Card("AmericanExpress", "success"),
    "4444": Card("MasterCard", "success"),
    "9424": Card("Discover", "success"),
    "0000": Card("Visa", "success"),
    "3064": Card("Visa", "buyer_canceled"),
    "3434": Card("Visa", "declined"),
    "0701": Card("Visa", "pending_authorized"),
    "4354": Card("Visa", "pending_declined"),
}

CONSTRAINT_TEXT: dict[str, str] = {
    "CheckoutReviewReturnUrlNotSet": "checkoutReviewReturnUrl is not set.",
    "BuyerNotAssociated": (
        "There is no buyer associated with the Checkout Session. Return the checkout session id "
        "to the Amazon Pay Button to allow buyer to login."
    ),
    "ChargeAmountNotSet": "chargeAmount is not set.",
    "CheckoutResultReturnUrlNotSet": "checkoutResultReturnUrl is not set.",
    "PaymentIntentNotSet": "paymentIntent is not set.",
}

DEFAULT_BUYER: Obj = {"name": "Susie Smith", "email": "susie.smith@example.com"}
DEFAULT_ADDRESS: Obj = {
    "name": "Susie Smith",
    "addressLine1": "10 Ditka Ave",
    "addressLine2": "Suite 2500",
    "addressLine3": None,
    "city": "Chicago",
    "county": None,
    "district": None,
    "stateOrRegion": "IL",
    "postalCode": "60602",
    "countryCode": "US",
    "phoneNumber": "800-000-0000",
}

NAMES: dict[str, str] = {
    "checkoutSessions": "Checkout Session",
    "chargePermissions": "Charge Permission",
    "charges": "Charge",
    "refunds": "Refund",
}
"""Amazon's name of each kind of object the engine keeps, as its messages say it."""

PENDING_CHARGE_STATES = frozenset({"AuthorizationInitiated", "Authorized", "CaptureInitiated"})
WEB_CHECKOUT_FIELDS = frozenset(
    {"checkoutReviewReturnUrl", "checkoutResultReturnUrl", "checkoutCancelUrl", "checkoutMode"}
)
PAYMENT_DETAIL_FIELDS = frozenset(
    {
        "paymentIntent",
        "canHandlePendingAuthorization",
        "chargeAmount",
        "totalOrderAmount",
        "softDescriptor",
        "presentmentCurrency",
        "allowOvercharge",
        "extendExpiration",
    }
)
SESSION_UPDATE_FIELDS = frozenset(
    {
        "webCheckoutDetails",
        "paymentDetails",
        "merchantMetadata",
        "platformId",
        "providerMetadata",
        "recurringMetadata",
        "chargePermissionType",
        "deliverySpecifications",
    }
)
SESSION_CREATE_FIELDS = SESSION_UPDATE_FIELDS | frozenset(
    {"storeId", "scopes", "addressDetails", "paymentMethodOnFileMetadata"}
)
SINGULAR_ALIASES = {
    "webCheckoutDetail": "webCheckoutDetails",
    "paymentDetail": "paymentDetails",
    "statusDetail": "statusDetails",
}


Notify = Callable[[str, str, str, str], None]
"""(objectType, objectId, chargePermissionId, merchantId) on every state change."""


def _public(obj: Obj) -> Obj:
    return {k: v for k, v in obj.items() if k[0] != "_"}


def _dec(value: Obj | None) -> Decimal:
    return Decimal(value["amount"]) if value else Decimal(0)


def _with_query(url: str, session_id: str) -> str:
    sep = "&" if "?" in url else "?"
    return f"{url}{sep}amazonCheckoutSessionId={quote(session_id)}"


def _status(state: str, reason: str | None, at: float, *, described: str) -> Obj:
    """`statusDetails` with at most one reason (`described`: its words, when there is one)."""
    return {
        "state": state,
        "reasonCode": reason,
        "reasonDescription": None if reason is None else described,
        "lastUpdatedTimestamp": fmt(at),
    }


def normalize_aliases(body: Obj) -> Obj:
    """Accept both the seed's singular and the live API's plural spellings."""
    out: Obj = {}
    for key, value in body.items():
        target = SINGULAR_ALIASES.get(key, key)
        if target in out:
            raise ApiError(400, "InvalidParameterCombination", f"'{target}' given twice")
        out[target] = value
    return out


class Engine(SettlementApi):
    """Amazon Pay's objects and their life cycles; each API operation is a method declared with
    `@route` (the settlement operations come with `SettlementApi`)."""

    def __init__(
        self,
        clock: Clock,
        notify: Notify | None = None,
        pending_seconds: float = 30.0,
        singular_aliases: bool = False,
        settlement_period_seconds: float = DAY,
    ) -> None:
        self.clock = clock
        self.notify: Notify = notify or (lambda *_: None)
        self.pending_seconds = pending_seconds
        self.singular_aliases = singular_aliases
        self.settlement_period_seconds = settlement_period_seconds
        self.tick_hooks: list[Callable[[float], int]] = []
        """Run after the due timers on every `tick` with the clock's time (settlement periods)."""
        self.data: Obj = {}
        self.reset()

    # ----------------------------------------------------------------- state & timers

    def reset(self) -> None:
        self.data = {
            "checkoutSessions": {},
            "chargePermissions": {},
            "charges": {},
            "refunds": {},
            "buyerTokens": {},
            "deliveryTrackers": [],
            "timers": [],
            "seq": 0,
            "settlement": {},
        }

    def load(self, data: Obj) -> None:
        self.reset()
        for key in self.data:
            if key in data:
                self.data[key] = data[key]
        heapq.heapify(self.data["timers"])

    def _schedule(self, due: float, action: str, target: str, arg: str = "") -> None:
        self.data["seq"] += 1
        heapq.heappush(self.data["timers"], [due, self.data["seq"], action, target, arg])

    def next_due(self) -> float | None:
        timers = self.data["timers"]
        return float(timers[0][0]) if timers else None

    def tick(self) -> int:
        """Apply every scheduled transition that is due, in due order, at its due time."""
        now = self.clock.now()
        timers = self.data["timers"]
        done = 0
        while timers and timers[0][0] <= now:
            due, _, action, target, arg = heapq.heappop(timers)
            getattr(self, f"_timer_{action}")(float(due), target, arg)
            done += 1
        for hook in self.tick_hooks:
            done += hook(now)
        return done

    def _timer_session_expire(self, due: float, sid: str, _: str) -> None:
        session = self.data["checkoutSessions"].get(sid)
        if session and session["statusDetails"]["state"] == "Open":
            self._set_session_state(session, "Canceled", "Expired", due)

    def _timer_session_delete(self, _due: float, sid: str, _: str) -> None:
        self.data["checkoutSessions"].pop(sid, None)

    def _timer_charge_settle(self, due: float, cid: str, outcome: str) -> None:
        charge = self.data["charges"].get(cid)
        if not charge or charge["statusDetails"]["state"] != "AuthorizationInitiated":
            return
        self._apply_authorization(charge, outcome, due)

    def _timer_capture_settle(self, due: float, cid: str, outcome: str) -> None:
        charge = self.data["charges"].get(cid)
        if not charge or charge["statusDetails"]["state"] != "CaptureInitiated":
            return
        if outcome == "Captured":
            self._set_charge_state(charge, "Captured", None, due)
            self._after_capture(charge, due)
        else:
            self._set_charge_state(charge, "Declined", outcome, due)

    def _timer_charge_expire(self, due: float, cid: str, _: str) -> None:
        charge = self.data["charges"].get(cid)
        if charge and charge["statusDetails"]["state"] == "Authorized":
            self._set_charge_state(charge, "Canceled", "ExpiredUnused", due)

    def _timer_refund_settle(self, due: float, rid: str, outcome: str) -> None:
        refund = self.data["refunds"].get(rid)
        if not refund or refund["statusDetails"]["state"] != "RefundInitiated":
            return
        if outcome == "Refunded":
            charge = self.data["charges"][refund["chargeId"]]
            currency = charge["chargeAmount"]["currencyCode"]
            total = _dec(charge["refundedAmount"]) + _dec(refund["refundAmount"])
            charge["refundedAmount"] = price(total, currency)
            self._set_refund_state(refund, "Refunded", None, due)
        else:
            self._set_refund_state(refund, "Declined", outcome, due)

    def _timer_cp_expire(self, due: float, cpid: str, _: str) -> None:
        cp = self.data["chargePermissions"].get(cpid)
        if cp and cp["statusDetails"]["state"] != "Closed":
            self._set_cp_state(cp, "Closed", [("Expired", "Charge permission expired")], due)

    # ----------------------------------------------------------------- state setters

    def _set_session_state(self, s: Obj, state: str, reason: str | None, at: float) -> None:
        s["statusDetails"] = _status(state, reason, at, described=f"Checkout session {reason}")

    def _set_charge_state(self, c: Obj, state: str, reason: str | None, at: float) -> None:
        c["statusDetails"] = _status(state, reason, at, described=f"Charge {state}: {reason}")
        self.notify("CHARGE", c["chargeId"], c["chargePermissionId"], c["_merchant"])

    def _set_refund_state(self, r: Obj, state: str, reason: str | None, at: float) -> None:
        r["statusDetails"] = _status(state, reason, at, described=f"Refund {state}: {reason}")
        self.notify("REFUND", r["refundId"], r["_chargePermissionId"], r["_merchant"])

    def _set_cp_state(
        self, cp: Obj, state: str, reasons: list[tuple[str, str | None]], at: float
    ) -> None:
        cp["statusDetails"] = {
            "state": state,
            "reasons": [{"reasonCode": c, "reasonDescription": d} for c, d in reasons] or None,
            "lastUpdatedTimestamp": fmt(at),
        }
        cp_id = cp["chargePermissionId"]
        self.notify("CHARGE_PERMISSION", cp_id, cp_id, cp["_merchant"])

    # ----------------------------------------------------------------- lookups

    def _find(self, kind: str, oid: str, ctx: Ctx) -> Obj:
        """The caller's object of `kind` (404, as for none, when it is another merchant's)."""
        obj: Obj | None = self.data[kind].get(oid)
        if obj is None or obj["_merchant"] != ctx.merchant_id or obj["_env"] != ctx.environment:
            raise ApiError(404, "ResourceNotFound", f"{NAMES[kind]} '{oid}' was not found")
        return obj

    def _new_cp_id(self, ctx: Ctx) -> str:
        prefix = "P01" if ctx.environment == "Live" else "S01"
        while True:
            cp_id = (
                f"{prefix}-{random.randint(0, 9_999_999):07d}-{random.randint(0, 9_999_999):07d}"
            )
            if cp_id not in self.data["chargePermissions"]:
                return cp_id

    def _new_child_id(self, cp_id: str, letter: str, kind: str) -> str:
        while True:
            oid = f"{cp_id}-{letter}{random.randint(0, 999_999):06d}"
            if oid not in self.data[kind]:
                return oid

    # ----------------------------------------------------------------- rendering

    def render_session(self, s: Obj) -> Obj:
        state = s["statusDetails"]["state"]
        if state == "Open":
            out = _public(s)
            out["constraints"] = [
                {"constraintId": c, "description": CONSTRAINT_TEXT[c]} for c in self._constraints(s)
            ]
            wcd = dict(s["webCheckoutDetails"])
            wcd["amazonPayRedirectUrl"] = (
                f"{s['_base']}/_emulator/checkoutSessions/{s['checkoutSessionId']}/pay"
                if not out["constraints"]
                else None
            )
            out["webCheckoutDetails"] = wcd
        else:
            out = {key: None for key in _public(s)}
            out["checkoutSessionId"] = s["checkoutSessionId"]
            out["statusDetails"] = s["statusDetails"]
            if state == "Completed":
                out["chargePermissionId"] = s["chargePermissionId"]
                out["chargeId"] = s["chargeId"]
                out["creationTimestamp"] = s["creationTimestamp"]
        return self._aliases(out)

    def _aliases(self, out: Obj) -> Obj:
        if self.singular_aliases:
            for singular, plural in SINGULAR_ALIASES.items():
                if plural in out:
                    out[singular] = out[plural]
        return out

    def render_cp(self, cp: Obj) -> Obj:
        out = _public(cp)
        if self.clock.now() - cp["_created"] > BUYER_RETENTION:
            for key in ("buyer", "shippingAddress", "billingAddress"):
                out[key] = None
        if cp["limits"] is not None:
            currency = cp["presentmentCurrency"]
            out["limits"] = {
                "amountLimit": cp["limits"]["amountLimit"],
                "amountBalance": price(self._cp_balance(cp), currency),
            }
        return self._aliases(out)

    def render_charge(self, c: Obj) -> Obj:
        return self._aliases(_public(c))

    def render_refund(self, r: Obj) -> Obj:
        return self._aliases(_public(r))

    def _constraints(self, s: Obj) -> list[str]:
        found = []
        wcd = s["webCheckoutDetails"]
        pd = s["paymentDetails"]
        if not wcd.get("checkoutReviewReturnUrl") and wcd.get("checkoutMode") != "ProcessOrder":
            found.append("CheckoutReviewReturnUrlNotSet")
        if s["buyer"] is None:
            found.append("BuyerNotAssociated")
        if pd.get("chargeAmount") is None:
            found.append("ChargeAmountNotSet")
        if not wcd.get("checkoutResultReturnUrl"):
            found.append("CheckoutResultReturnUrlNotSet")
        if not pd.get("paymentIntent"):
            found.append("PaymentIntentNotSet")
        return found

    # ----------------------------------------------------------------- checkout sessions

    @route("CreateCheckoutSession", "POST", "/checkoutSessions")
    def create_session(self, ctx: Ctx, raw: Obj) -> tuple[int, Obj]:
        body = check_object(normalize_aliases(raw), SESSION_CREATE_FIELDS, "")
        store_id = req_str(body, "storeId", "", 256)
        now = self.clock.now()
        sid = str(uuid.uuid4())
        session: Obj = {
            "checkoutSessionId": sid,
            "webCheckoutDetails": {
                "checkoutReviewReturnUrl": None,
                "checkoutResultReturnUrl": None,
                "checkoutCancelUrl": None,
                "amazonPayRedirectUrl": None,
                "checkoutMode": None,
            },
            "productType": "PayAndShip",
            "paymentDetails": {
                "paymentIntent": None,
                "canHandlePendingAuthorization": False,
                "chargeAmount": None,
                "totalOrderAmount": None,
                "softDescriptor": None,
                "presentmentCurrency": None,
                "allowOvercharge": None,
                "extendExpiration": None,
            },
            "chargePermissionType": "OneTime",
            "recurringMetadata": None,
            "merchantMetadata": {k: None for k in parse_merchant_metadata({}) or {}},
            "supplementaryData": None,
            "buyer": None,
            "billingAddress": None,
            "paymentPreferences": [],
            "statusDetails": {},
            "shippingAddress": None,
            "platformId": None,
            "chargePermissionId": None,
            "chargeId": None,
            "constraints": [],
            "creationTimestamp": fmt(now),
            "expirationTimestamp": fmt(now + SESSION_TTL),
            "storeId": store_id,
            "deliverySpecifications": None,
            "providerMetadata": {"providerReferenceId": None},
            "checkoutButtonText": None,
            "releaseEnvironment": ctx.environment,
            "_merchant": ctx.merchant_id,
            "_env": ctx.environment,
            "_region": ctx.region,
            "_created": now,
            "_base": ctx.base_url,
            "_confirmed": False,
            "_card": None,
        }
        if body.get("scopes") is not None and not isinstance(body["scopes"], list):
            raise ApiError(400, "InvalidParameterValue", "'scopes' must be a list")
        if isinstance(body.get("addressDetails"), dict) or body.get("scopes") == []:
            session["productType"] = (
                "PayOnly" if body.get("addressDetails") is None else "PayAndShip"
            )
        self._apply_session_fields(session, body, ctx)
        self._set_session_state(session, "Open", None, now)
        self.data["checkoutSessions"][sid] = session
        self._schedule(now + SESSION_TTL, "session_expire", sid)
        self._schedule(now + SESSION_RETENTION, "session_delete", sid)
        return 201, self.render_session(session)

    def _apply_session_fields(self, s: Obj, body: Obj, ctx: Ctx) -> None:
        """Validate everything first, then write, so a bad field changes nothing."""
        updates: list[tuple[Obj, str, Any]] = []
        if "webCheckoutDetails" in body:
            wcd = check_object(
                body["webCheckoutDetails"], WEB_CHECKOUT_FIELDS, "webCheckoutDetails"
            )
            for key in WEB_CHECKOUT_FIELDS:
                if key in wcd:
                    value = opt_str(wcd, key, "webCheckoutDetails", URL_MAX)
                    if key == "checkoutMode" and value not in (None, "ProcessOrder"):
                        raise ApiError(
                            400, "InvalidParameterValue", "'webCheckoutDetails.checkoutMode'"
                        )
                    updates.append((s["webCheckoutDetails"], key, value))
        if "paymentDetails" in body:
            pd = check_object(body["paymentDetails"], PAYMENT_DETAIL_FIELDS, "paymentDetails")
            target = s["paymentDetails"]
            intent = opt_str(pd, "paymentIntent", "paymentDetails")
            if intent is not None and intent not in (
                "Confirm",
                "Authorize",
                "AuthorizeWithCapture",
            ):
                raise ApiError(
                    400,
                    "InvalidParameterValue",
                    f"'paymentDetails.paymentIntent' value '{intent}' is invalid",
                )
            if "paymentIntent" in pd:
                updates.append((target, "paymentIntent", intent))
            for flag in ("canHandlePendingAuthorization", "allowOvercharge", "extendExpiration"):
                if flag in pd:
                    updates.append((target, flag, opt_bool(pd, flag, "paymentDetails")))
            if "softDescriptor" in pd:
                updates.append(
                    (
                        target,
                        "softDescriptor",
                        opt_str(pd, "softDescriptor", "paymentDetails", SOFT_DESCRIPTOR_MAX),
                    )
                )
            currency = None
            for field in ("chargeAmount", "totalOrderAmount"):
                if pd.get(field) is not None:
                    amount, currency = parse_price(pd[field], f"paymentDetails.{field}", ctx.region)
                    updates.append((target, field, price(amount, currency)))
            presentment = opt_str(pd, "presentmentCurrency", "paymentDetails", 3)
            existing = target.get("chargeAmount")
            effective = currency or (existing["currencyCode"] if existing else None)
            if presentment and effective and presentment != effective:
                raise ApiError(
                    400,
                    "CurrencyMismatch",
                    "'paymentDetails.presentmentCurrency' does not match chargeAmount currency",
                )
            if presentment or effective:
                updates.append((target, "presentmentCurrency", presentment or effective))
        if "merchantMetadata" in body:
            updates.append(
                (s, "merchantMetadata", parse_merchant_metadata(body["merchantMetadata"]))
            )
        if "providerMetadata" in body:
            updates.append(
                (s, "providerMetadata", parse_provider_metadata(body["providerMetadata"]))
            )
        if "platformId" in body:
            updates.append((s, "platformId", opt_str(body, "platformId", "", 32)))
        if "chargePermissionType" in body:
            cpt = opt_str(body, "chargePermissionType", "")
            if cpt not in ("OneTime", "Recurring", "PaymentMethodOnFile"):
                raise ApiError(400, "InvalidParameterValue", "'chargePermissionType' is invalid")
            updates.append((s, "chargePermissionType", cpt))
        if "recurringMetadata" in body:
            updates.append(
                (s, "recurringMetadata", self._recurring(body["recurringMetadata"], ctx))
            )
        if "deliverySpecifications" in body:
            if not isinstance(body["deliverySpecifications"], dict | None):
                raise ApiError(400, "InvalidParameterValue", "'deliverySpecifications'")
            updates.append((s, "deliverySpecifications", body["deliverySpecifications"]))
        for target_obj, key, value in updates:
            target_obj[key] = value

    def _recurring(self, value: Any, ctx: Ctx) -> Obj | None:
        if value is None:
            return None
        rm = check_object(value, frozenset({"frequency", "amount"}), "recurringMetadata")
        out: Obj = {"frequency": None, "amount": None}
        if rm.get("frequency") is not None:
            freq = check_object(rm["frequency"], frozenset({"unit", "value"}), "recurringMetadata")
            unit = opt_str(freq, "unit", "recurringMetadata.frequency")
            if unit not in (None, "Year", "Month", "Week", "Day", "Variable"):
                raise ApiError(
                    400, "InvalidParameterValue", "'recurringMetadata.frequency.unit' is invalid"
                )
            out["frequency"] = {"unit": unit, "value": freq.get("value")}
        if rm.get("amount") is not None:
            amount, currency = parse_price(rm["amount"], "recurringMetadata.amount", ctx.region)
            out["amount"] = price(amount, currency)
        return out

    @route("GetCheckoutSession", "GET", "/checkoutSessions/{checkoutSessionId}")
    def get_session(self, ctx: Ctx, sid: str) -> tuple[int, Obj]:
        return 200, self.render_session(self._find("checkoutSessions", sid, ctx))

    @route("UpdateCheckoutSession", "PATCH", "/checkoutSessions/{checkoutSessionId}")
    def update_session(self, ctx: Ctx, sid: str, raw: Obj) -> tuple[int, Obj]:
        session = self._find("checkoutSessions", sid, ctx)
        body = check_object(normalize_aliases(raw), SESSION_UPDATE_FIELDS, "")
        self._require_open(session)
        if session["_confirmed"]:
            raise ApiError(
                422,
                "InvalidCheckoutSessionStatus",
                "The Checkout Session can't be updated after the buyer was redirected "
                "to the amazonPayRedirectUrl",
            )
        self._apply_session_fields(session, body, ctx)
        return 200, self.render_session(session)

    def _require_open(self, session: Obj) -> None:
        state = session["statusDetails"]["state"]
        if state == "Canceled":
            raise ApiError(
                422,
                "CheckoutSessionCanceled",
                f"The Checkout Session was canceled ({session['statusDetails']['reasonCode']})",
            )
        if state != "Open":
            raise ApiError(
                422,
                "InvalidCheckoutSessionStatus",
                f"The Checkout Session is in state {state}; this operation is not allowed",
            )

    @route("CompleteCheckoutSession", "POST", "/checkoutSessions/{checkoutSessionId}/complete")
    def complete_session(self, ctx: Ctx, sid: str, raw: Obj) -> tuple[int, Obj]:
        session = self._find("checkoutSessions", sid, ctx)
        body = check_object(raw, frozenset({"chargeAmount", "totalOrderAmount"}), "")
        if body.get("chargeAmount") is None:
            raise ApiError(400, "MissingParameterValue", "'chargeAmount' is required")
        amount, currency = parse_price(body["chargeAmount"], "chargeAmount")
        total = None
        if body.get("totalOrderAmount") is not None:
            total = parse_price(body["totalOrderAmount"], "totalOrderAmount")
        self._require_completable(session)
        if not session["_confirmed"]:
            raise ApiError(
                422,
                "InvalidCheckoutSessionStatus",
                "The buyer has not confirmed the checkout at the amazonPayRedirectUrl yet",
            )
        expected = session["paymentDetails"]["chargeAmount"]
        if currency != expected["currencyCode"]:
            raise ApiError(400, "CurrencyMismatch", "chargeAmount currency differs from session")
        if amount != Decimal(expected["amount"]):
            raise ApiError(
                409,
                "AmountMismatch",
                f"chargeAmount {money(amount, currency)} does not match the Checkout Session "
                f"amount {expected['amount']}",
            )
        if total is not None:
            session["paymentDetails"]["totalOrderAmount"] = price(*total)
        return self._finish_checkout(ctx, session)

    @route("FinalizeCheckoutSession", "POST", "/checkoutSessions/{checkoutSessionId}/finalize")
    def finalize_session(self, ctx: Ctx, sid: str, raw: Obj) -> tuple[int, Obj]:
        """Buy Now: the merchant supplies amount and intent at the end instead of via Update."""
        session = self._find("checkoutSessions", sid, ctx)
        allowed = frozenset(
            {
                "shippingAddress",
                "billingAddress",
                "chargeAmount",
                "totalOrderAmount",
                "paymentIntent",
                "canHandlePendingAuthorization",
                "supplementaryData",
            }
        )
        body = check_object(raw, allowed, "")
        if body.get("chargeAmount") is None:
            raise ApiError(400, "MissingParameterValue", "'chargeAmount' is required")
        amount, currency = parse_price(body["chargeAmount"], "chargeAmount", ctx.region)
        intent = req_str(body, "paymentIntent", "")
        if intent not in ("Confirm", "Authorize", "AuthorizeWithCapture"):
            raise ApiError(400, "InvalidParameterValue", f"'paymentIntent' '{intent}' is invalid")
        shipping = parse_address(body.get("shippingAddress"), "shippingAddress")
        billing = parse_address(body.get("billingAddress"), "billingAddress")
        pending_ok = opt_bool(body, "canHandlePendingAuthorization", "")
        total = None
        if body.get("totalOrderAmount") is not None:
            total = parse_price(body["totalOrderAmount"], "totalOrderAmount", ctx.region)
        self._require_completable(session)
        if session["buyer"] is None:
            raise ApiError(
                422, "InvalidCheckoutSessionStatus", "No buyer is associated with the session"
            )
        pd = session["paymentDetails"]
        pd["chargeAmount"] = price(amount, currency)
        pd["presentmentCurrency"] = currency
        pd["paymentIntent"] = intent
        if pending_ok is not None:
            pd["canHandlePendingAuthorization"] = pending_ok
        if total is not None:
            pd["totalOrderAmount"] = price(*total)
        if shipping is not None:
            session["shippingAddress"] = shipping
        if billing is not None:
            session["billingAddress"] = billing
        if not session["_confirmed"]:
            self.buyer_confirm(sid)
            if session["statusDetails"]["state"] == "Canceled":
                self._require_completable(session)
        return self._finish_checkout(ctx, session)

    def _require_completable(self, session: Obj) -> None:
        """Complete and Finalize run once. Amazon's FAQ: on a Completed or Canceled session they
        answer 422 InvalidCheckoutSessionStatus. The first answer about a session the buyer's
        checkout canceled (declined, abandoned) is the failed transaction itself,
        CheckoutSessionCanceled; every later call, and one on an expired session, is a state
        error."""
        state = session["statusDetails"]["state"]
        if state == "Completed":
            raise ApiError(
                422,
                "InvalidCheckoutSessionStatus",
                "The Checkout Session is Completed: Complete Checkout Session has already been "
                "successfully requested",
            )
        if state == "Canceled":
            reason = session["statusDetails"]["reasonCode"]
            if session.get("_cancelAnswered") or reason == "Expired":
                raise ApiError(
                    422,
                    "InvalidCheckoutSessionStatus",
                    f"The Checkout Session is Canceled ({reason}); this operation is not allowed",
                )
            session["_cancelAnswered"] = True
            raise ApiError(
                422, "CheckoutSessionCanceled", f"The Checkout Session was canceled ({reason})"
            )
        self._require_open(session)

    def _finish_checkout(self, ctx: Ctx, session: Obj) -> tuple[int, Obj]:
        now = self.clock.now()
        sim = ctx.simulation
        if sim in ("BuyerCanceled", "AmazonCanceled", "Declined"):
            self._set_session_state(session, "Canceled", sim, now)
            session["_cancelAnswered"] = True
            raise ApiError(422, "CheckoutSessionCanceled", f"The Checkout Session was {sim}")
        pd = session["paymentDetails"]
        amount = Decimal(pd["chargeAmount"]["amount"])
        currency = pd["chargeAmount"]["currencyCode"]
        cp = self._create_cp(ctx, session, now)
        session["chargePermissionId"] = cp["chargePermissionId"]
        status = 200
        if pd["paymentIntent"] in ("Authorize", "AuthorizeWithCapture"):
            capture = pd["paymentIntent"] == "AuthorizeWithCapture"
            behaviour = CARDS[session["_card"] or "1111"].behaviour
            pending = sim == "AuthorizationInitiated" or (
                bool(pd["canHandlePendingAuthorization"])
                and behaviour in ("pending_authorized", "pending_declined")
            )
            fields = {
                "softDescriptor": pd["softDescriptor"],
                "merchantMetadata": session["merchantMetadata"],
            }
            charge = self._new_charge(
                ctx, cp, amount=amount, currency=currency, now=now, fields=fields
            )
            if pending:
                outcome = (
                    "Declined:HardDeclined" if behaviour == "pending_declined" else "Authorized"
                )
                if outcome == "Authorized" and capture:
                    outcome = "Captured"
                self._set_charge_state(charge, "AuthorizationInitiated", None, now)
                self._schedule(
                    now + self.pending_seconds, "charge_settle", charge["chargeId"], outcome
                )
                status = 202
            else:
                self._apply_authorization(charge, "Captured" if capture else "Authorized", now)
            session["chargeId"] = charge["chargeId"]
        self._set_session_state(session, "Completed", None, now)
        return status, self.render_session(session)

    def _create_cp(self, ctx: Ctx, session: Obj, now: float) -> Obj:
        pd = session["paymentDetails"]
        currency = pd["chargeAmount"]["currencyCode"]
        limit_amount = Decimal((pd["totalOrderAmount"] or pd["chargeAmount"])["amount"])
        if pd.get("allowOvercharge"):
            limit_amount = refund_ceiling(limit_amount, currency)
        cpt = session["chargePermissionType"]
        ttl = EXTENDED_CP_TTL if pd.get("extendExpiration") else ONE_TIME_CP_TTL
        cp_id = self._new_cp_id(ctx)
        cp: Obj = {
            "chargePermissionId": cp_id,
            "chargePermissionReferenceId": None,
            "buyer": session["buyer"],
            "shippingAddress": session["shippingAddress"],
            "billingAddress": session["billingAddress"],
            "paymentPreferences": session["paymentPreferences"],
            "statusDetails": {},
            "creationTimestamp": fmt(now),
            "expirationTimestamp": fmt(now + ttl) if cpt == "OneTime" else None,
            "merchantMetadata": session["merchantMetadata"],
            "platformId": session["platformId"],
            "limits": (
                {
                    "amountLimit": price(limit_amount, currency),
                    "amountBalance": price(limit_amount, currency),
                }
                if cpt == "OneTime"
                else None
            ),
            "chargePermissionType": cpt,
            "recurringMetadata": session["recurringMetadata"],
            "presentmentCurrency": pd["presentmentCurrency"] or currency,
            "releaseEnvironment": ctx.environment,
            "_merchant": ctx.merchant_id,
            "_env": ctx.environment,
            "_region": session["_region"],
            "_created": now,
            "_card": session["_card"] or "1111",
            "_sessionId": session["checkoutSessionId"],
            "_charges": [],
        }
        self.data["chargePermissions"][cp_id] = cp
        self._set_cp_state(cp, "Chargeable", [], now)
        if cpt == "OneTime":
            self._schedule(now + ttl, "cp_expire", cp_id)
        return cp

    def _conversion(self, currency: str, region: str) -> tuple[str, Decimal]:
        if region != "eu" or currency in ("EUR", "GBP"):
            return currency, Decimal("1.00")
        return "EUR", CONVERSION_TO_EUR[currency]

    def _new_charge(
        self,
        ctx: Ctx,
        cp: Obj,
        *,
        amount: Decimal,
        currency: str,
        now: float,
        fields: Obj,
    ) -> Obj:
        """A new charge of `amount` on `cp`; `fields` are the ones its request gave
        (softDescriptor, merchantMetadata, ...)."""
        cid = self._new_child_id(cp["chargePermissionId"], "C", "charges")
        ledger, rate = self._conversion(currency, cp["_region"])
        charge: Obj = {
            "chargeId": cid,
            "chargePermissionId": cp["chargePermissionId"],
            "chargeAmount": price(amount, currency),
            "captureAmount": None,
            "refundedAmount": price(Decimal(0), currency),
            "convertedAmount": money(amount * rate, ledger),
            "conversionRate": str(rate),
            "softDescriptor": None,
            "merchantMetadata": None,
            "providerMetadata": {"providerReferenceId": None},
            "platformId": None,
            "channel": None,
            "chargeInitiator": None,
            "statusDetails": {},
            "creationTimestamp": fmt(now),
            "expirationTimestamp": fmt(now + AUTHORIZATION_TTL),
            "releaseEnvironment": ctx.environment,
            "_merchant": ctx.merchant_id,
            "_env": ctx.environment,
            "_authorizedAt": None,
            "_created": now,
        }
        charge.update(fields)
        self.data["charges"][cid] = charge
        cp["_charges"].append(cid)
        return charge

    def _apply_authorization(self, charge: Obj, outcome: str, at: float) -> None:
        if outcome.startswith("Declined:"):
            reason = outcome.split(":", 1)[1]
            self._set_charge_state(charge, "Declined", reason, at)
            if reason == "HardDeclined":
                cp = self.data["chargePermissions"][charge["chargePermissionId"]]
                if cp["statusDetails"]["state"] == "Chargeable":
                    self._set_cp_state(
                        cp, "NonChargeable", [("PaymentMethodInvalid", "Hard decline")], at
                    )
            return
        charge["_authorizedAt"] = at
        if outcome == "Captured":
            charge["captureAmount"] = charge["chargeAmount"]
            self._set_charge_state(charge, "Captured", None, at)
            self._after_capture(charge, at)
        else:
            self._set_charge_state(charge, "Authorized", None, at)
            self._schedule(at + AUTHORIZATION_TTL, "charge_expire", charge["chargeId"])

    def _after_capture(self, charge: Obj, at: float) -> None:
        """A OneTime charge permission closes once its whole amount is captured."""
        cp = self.data["chargePermissions"][charge["chargePermissionId"]]
        if cp["limits"] is None or cp["statusDetails"]["state"] == "Closed":
            return
        open_charges = any(
            self.data["charges"][c]["statusDetails"]["state"] in PENDING_CHARGE_STATES
            for c in cp["_charges"]
        )
        if self._cp_balance(cp) <= 0 and not open_charges:
            self._set_cp_state(cp, "Closed", [], at)

    def _cp_balance(self, cp: Obj) -> Decimal:
        used = Decimal(0)
        for cid in cp["_charges"]:
            charge = self.data["charges"][cid]
            state = charge["statusDetails"]["state"]
            if state == "Captured":
                used += _dec(charge["captureAmount"])
            elif state in PENDING_CHARGE_STATES:
                used += _dec(charge["chargeAmount"])
        return Decimal(cp["limits"]["amountLimit"]["amount"]) - used

    # ----------------------------------------------------------------- buyer side

    def buyer_sign_in(self, sid: str, raw: Obj) -> Obj:
        session = self.data["checkoutSessions"].get(sid)
        if session is None:
            raise ApiError(404, "ResourceNotFound", f"Checkout Session '{sid}' was not found")
        body = check_object(
            raw, frozenset({"card", "buyer", "shippingAddress", "billingAddress"}), ""
        )
        self._require_open(session)
        card = str(body.get("card") or "1111")[-4:]
        if card not in CARDS:
            raise ApiError(
                400,
                "InvalidParameterValue",
                f"Unknown sandbox card {card}; use one of {list(CARDS)}",
            )
        buyer_in = check_object(
            body.get("buyer") or {},
            frozenset({"buyerId", "name", "email", "phoneNumber", "primeMembershipTypes"}),
            "buyer",
        )
        shipping = parse_address(body.get("shippingAddress"), "shippingAddress") or dict(
            DEFAULT_ADDRESS
        )
        billing = parse_address(body.get("billingAddress"), "billingAddress") or dict(shipping)
        buyer = {
            "buyerId": buyer_in.get("buyerId") or f"amzn1.account.{secrets.token_hex(10).upper()}",
            "name": buyer_in.get("name") or DEFAULT_BUYER["name"],
            "email": buyer_in.get("email") or DEFAULT_BUYER["email"],
            "phoneNumber": buyer_in.get("phoneNumber") or shipping.get("phoneNumber"),
            "primeMembershipTypes": buyer_in.get("primeMembershipTypes"),
        }
        brand = CARDS[card].brand
        session["buyer"] = buyer
        session["_card"] = card
        session["billingAddress"] = billing
        if session["productType"] == "PayAndShip":
            session["shippingAddress"] = shipping
        session["paymentPreferences"] = [
            {"paymentDescriptor": f"{brand} ****{card} (Amazon Pay)", "billingAddress": billing}
        ]
        token = secrets.token_urlsafe(24)
        self.data["buyerTokens"][token] = {
            **buyer,
            "postalCode": shipping.get("postalCode"),
            "countryCode": shipping.get("countryCode"),
            "shippingAddress": session["shippingAddress"],
            "billingAddress": billing,
            "_created": self.clock.now(),
            "_merchant": session["_merchant"],
        }
        review = session["webCheckoutDetails"]["checkoutReviewReturnUrl"]
        return {
            "redirectUrl": _with_query(review, sid) if review else None,
            "checkoutSessionId": sid,
            "buyerToken": token,
        }

    def buyer_confirm(self, sid: str) -> Obj:
        session = self.data["checkoutSessions"].get(sid)
        if session is None:
            raise ApiError(404, "ResourceNotFound", f"Checkout Session '{sid}' was not found")
        result = session["webCheckoutDetails"]["checkoutResultReturnUrl"]
        redirect = {"redirectUrl": _with_query(result, sid) if result else None}
        if session["_confirmed"]:
            return redirect
        self._require_open(session)
        missing = [
            c
            for c in self._constraints(session)
            if not (c == "CheckoutResultReturnUrlNotSet" and self._is_buy_now(session))
            and not (c == "ChargeAmountNotSet" and self._is_buy_now(session))
            and not (c == "PaymentIntentNotSet" and self._is_buy_now(session))
        ]
        if missing:
            raise ApiError(
                422,
                "InvalidCheckoutSessionStatus",
                f"The buyer can't confirm yet; open constraints: {', '.join(missing)}",
            )
        now = self.clock.now()
        behaviour = CARDS[session["_card"]].behaviour
        can_pend = bool(session["paymentDetails"]["canHandlePendingAuthorization"])
        intent = session["paymentDetails"]["paymentIntent"]
        if behaviour.startswith("pending_") and not (can_pend and intent == "Authorize"):
            # Amazon's sandbox page: these cards need paymentIntent Authorize and
            # canHandlePendingAuthorization true, "or using this payment method will result in
            # an error". The buyer stays on Amazon's page; the session is unchanged.
            raise ApiError(
                400,
                "InvalidParameterCombination",
                f"Card ...{session['_card']} simulates a pending authorization: it needs "
                "paymentIntent Authorize and canHandlePendingAuthorization true",
            )
        if behaviour == "buyer_canceled":
            self._set_session_state(session, "Canceled", "BuyerCanceled", now)
        elif behaviour == "declined":
            self._set_session_state(session, "Canceled", "Declined", now)
        else:
            session["_confirmed"] = True
        return redirect

    @staticmethod
    def _is_buy_now(session: Obj) -> bool:
        return bool(session["webCheckoutDetails"].get("checkoutMode") == "ProcessOrder")

    @route("GetBuyer", "GET", "/buyers/{buyerToken}")
    def get_buyer(self, ctx: Ctx, token: str) -> tuple[int, Obj]:
        record = self.data["buyerTokens"].get(token)
        if (
            record is None
            or record["_merchant"] != ctx.merchant_id
            or self.clock.now() - record["_created"] > BUYER_TOKEN_TTL
        ):
            raise ApiError(404, "ResourceNotFound", "The buyer token is unknown or expired")
        return 200, _public(record)

    # ----------------------------------------------------------------- charge permissions

    @route("GetChargePermission", "GET", "/chargePermissions/{chargePermissionId}")
    def get_cp(self, ctx: Ctx, cp_id: str) -> tuple[int, Obj]:
        return 200, self.render_cp(self._find("chargePermissions", cp_id, ctx))

    @route("UpdateChargePermission", "PATCH", "/chargePermissions/{chargePermissionId}")
    def update_cp(self, ctx: Ctx, cp_id: str, raw: Obj) -> tuple[int, Obj]:
        cp = self._find("chargePermissions", cp_id, ctx)
        body = check_object(raw, frozenset({"merchantMetadata", "recurringMetadata"}), "")
        metadata = parse_merchant_metadata(body.get("merchantMetadata"))
        recurring = self._recurring(body.get("recurringMetadata"), ctx)
        if cp["statusDetails"]["state"] == "Closed":
            raise ApiError(422, "InvalidChargePermissionStatus", "The Charge Permission is Closed")
        if metadata is not None:
            captured = any(
                self.data["charges"][c]["statusDetails"]["state"] == "Captured"
                for c in cp["_charges"]
            )
            if captured and metadata != cp["merchantMetadata"]:
                raise ApiError(
                    422,
                    "ChargePermissionNotModifiable",
                    "merchantMetadata can't change after a charge was captured",
                )
            cp["merchantMetadata"] = metadata
        if recurring is not None:
            if cp["chargePermissionType"] != "Recurring":
                raise ApiError(
                    400,
                    "InvalidParameterCombination",
                    "recurringMetadata applies to Recurring charge permissions only",
                )
            cp["recurringMetadata"] = recurring
        return 200, self.render_cp(cp)

    @route("CloseChargePermission", "DELETE", "/chargePermissions/{chargePermissionId}/close")
    def close_cp(self, ctx: Ctx, cp_id: str, raw: Obj) -> tuple[int, Obj]:
        cp = self._find("chargePermissions", cp_id, ctx)
        body = check_object(raw, frozenset({"closureReason", "cancelPendingCharges"}), "")
        reason = opt_str(body, "closureReason", "", REASON_MAX)
        cancel_pending = opt_bool(body, "cancelPendingCharges", "") or False
        if cp["statusDetails"]["state"] == "Closed":
            return 200, self.render_cp(cp)
        now = self.clock.now()
        code = "AmazonClosed" if ctx.simulation == "AmazonClosed" else "MerchantClosed"
        if cancel_pending:
            for cid in cp["_charges"]:
                charge = self.data["charges"][cid]
                if charge["statusDetails"]["state"] in ("AuthorizationInitiated", "Authorized"):
                    self._set_charge_state(charge, "Canceled", "ChargePermissionCanceled", now)
        self._set_cp_state(cp, "Closed", [(code, reason)], now)
        return 200, self.render_cp(cp)

    # ----------------------------------------------------------------- charges

    @route("CreateCharge", "POST", "/charges")
    def create_charge(self, ctx: Ctx, raw: Obj) -> tuple[int, Obj]:
        allowed = frozenset(
            {
                "chargePermissionId",
                "chargeAmount",
                "captureNow",
                "softDescriptor",
                "canHandlePendingAuthorization",
                "merchantMetadata",
                "providerMetadata",
                "platformId",
                "chargeInitiator",
                "channel",
            }
        )
        body = check_object(raw, allowed, "")
        cp_id = req_str(body, "chargePermissionId", "", 64)
        if body.get("chargeAmount") is None:
            raise ApiError(400, "MissingParameterValue", "'chargeAmount' is required")
        amount, currency = parse_price(body["chargeAmount"], "chargeAmount")
        capture_now = opt_bool(body, "captureNow", "") or False
        can_pend = opt_bool(body, "canHandlePendingAuthorization", "") or False
        soft = opt_str(body, "softDescriptor", "", SOFT_DESCRIPTOR_MAX)
        metadata = parse_merchant_metadata(body.get("merchantMetadata"))
        provider = parse_provider_metadata(body.get("providerMetadata"))
        platform = opt_str(body, "platformId", "", 32)
        initiator = opt_str(body, "chargeInitiator", "", 32)
        channel = body.get("channel")
        if soft is not None and not capture_now:
            raise ApiError(
                400,
                "InvalidParameterCombination",
                "softDescriptor may only be set when captureNow is true",
            )
        cp = self._find("chargePermissions", cp_id, ctx)
        if currency != cp["presentmentCurrency"]:
            raise ApiError(
                400,
                "CurrencyMismatch",
                f"chargeAmount currency {currency} differs from the Charge Permission currency "
                f"{cp['presentmentCurrency']}",
            )
        state = cp["statusDetails"]["state"]
        if state != "Chargeable":
            reasons = cp["statusDetails"]["reasons"] or []
            why = ", ".join(r["reasonCode"] for r in reasons)
            raise ApiError(
                422,
                "InvalidChargePermissionStatus",
                f"The Charge Permission is {state}" + (f" ({why})" if why else ""),
            )
        if cp["limits"] is not None:
            if len(cp["_charges"]) >= MAX_CHARGES_PER_ONE_TIME_CP:
                raise ApiError(
                    422,
                    "TransactionCountExceeded",
                    f"A OneTime Charge Permission allows at most {MAX_CHARGES_PER_ONE_TIME_CP} "
                    "charges",
                )
            balance = self._cp_balance(cp)
            if amount > balance:
                raise ApiError(
                    400,
                    "TransactionAmountExceeded",
                    f"chargeAmount {money(amount, currency)} exceeds the Charge Permission "
                    f"balance {money(balance, currency)}",
                )
        sim = ctx.simulation
        if sim == "CaptureInitiated" and not capture_now:
            raise ApiError(
                400,
                "InvalidSandboxSimulationSpecified",
                "CaptureInitiated simulation requires captureNow=true",
            )
        behaviour = CARDS[cp["_card"]].behaviour
        decline: str | None = None
        if sim in ("SoftDeclined", "HardDeclined", "AmazonRejected", "TransactionTimedOut"):
            decline = sim
        elif behaviour == "pending_declined" or behaviour == "declined":
            decline = "HardDeclined"
        pending = can_pend and (decline is not None or behaviour == "pending_authorized")
        now = self.clock.now()
        if decline is not None and not pending:
            if decline == "HardDeclined":
                self._set_cp_state(
                    cp, "NonChargeable", [("PaymentMethodInvalid", "Hard decline")], now
                )
            raise ApiError(422, decline, f"The authorization was declined ({decline})")
        fields = {
            "softDescriptor": soft,
            "merchantMetadata": metadata,
            "providerMetadata": provider or {"providerReferenceId": None},
            "platformId": platform,
            "chargeInitiator": initiator,
            "channel": channel,
        }
        charge = self._new_charge(ctx, cp, amount=amount, currency=currency, now=now, fields=fields)
        if pending:
            if decline is not None:
                outcome = f"Declined:{decline}"
            else:
                outcome = "Captured" if capture_now else "Authorized"
            self._set_charge_state(charge, "AuthorizationInitiated", None, now)
            self._schedule(now + self.pending_seconds, "charge_settle", charge["chargeId"], outcome)
            return 202, self.render_charge(charge)
        if sim == "CaptureInitiated":
            charge["_authorizedAt"] = now
            charge["captureAmount"] = charge["chargeAmount"]
            self._set_charge_state(charge, "CaptureInitiated", None, now)
            self._schedule(
                now + self.pending_seconds, "capture_settle", charge["chargeId"], "Captured"
            )
        else:
            self._apply_authorization(charge, "Captured" if capture_now else "Authorized", now)
        return 201, self.render_charge(charge)

    @route("GetCharge", "GET", "/charges/{chargeId}")
    def get_charge(self, ctx: Ctx, cid: str) -> tuple[int, Obj]:
        return 200, self.render_charge(self._find("charges", cid, ctx))

    @route("CaptureCharge", "POST", "/charges/{chargeId}/capture")
    def capture_charge(self, ctx: Ctx, cid: str, raw: Obj) -> tuple[int, Obj]:
        charge = self._find("charges", cid, ctx)
        body = check_object(raw, frozenset({"captureAmount", "softDescriptor"}), "")
        if body.get("captureAmount") is None:
            raise ApiError(400, "MissingParameterValue", "'captureAmount' is required")
        amount, currency = parse_price(body["captureAmount"], "captureAmount")
        soft = opt_str(body, "softDescriptor", "", SOFT_DESCRIPTOR_MAX)
        state = charge["statusDetails"]["state"]
        if state != "Authorized":
            raise ApiError(
                422,
                "InvalidChargeStatus",
                f"The Charge is {state}; only Authorized can be captured",
            )
        if currency != charge["chargeAmount"]["currencyCode"]:
            raise ApiError(400, "CurrencyMismatch", "captureAmount currency differs from charge")
        if amount > Decimal(charge["chargeAmount"]["amount"]):
            raise ApiError(
                400,
                "TransactionAmountExceeded",
                "captureAmount exceeds the authorized chargeAmount",
            )
        now = self.clock.now()
        charge["captureAmount"] = price(amount, currency)
        if soft is not None:
            charge["softDescriptor"] = soft
        late = now - float(charge["_authorizedAt"]) > SYNC_CAPTURE_WINDOW
        if ctx.simulation is not None or late:
            outcome = "AmazonRejected" if ctx.simulation == "AmazonRejected" else "Captured"
            self._set_charge_state(charge, "CaptureInitiated", None, now)
            self._schedule(now + self.pending_seconds, "capture_settle", cid, outcome)
        else:
            self._set_charge_state(charge, "Captured", None, now)
            self._after_capture(charge, now)
        return 200, self.render_charge(charge)

    @route("CancelCharge", "DELETE", "/charges/{chargeId}/cancel")
    def cancel_charge(self, ctx: Ctx, cid: str, raw: Obj) -> tuple[int, Obj]:
        charge = self._find("charges", cid, ctx)
        body = check_object(raw, frozenset({"cancellationReason"}), "")
        reason = opt_str(body, "cancellationReason", "", REASON_MAX)
        state = charge["statusDetails"]["state"]
        if state not in ("AuthorizationInitiated", "Authorized"):
            raise ApiError(422, "InvalidChargeStatus", f"The Charge is {state}; can't cancel")
        now = self.clock.now()
        self._set_charge_state(charge, "Canceled", "MerchantCanceled", now)
        if reason:
            charge["statusDetails"]["reasonDescription"] = reason
        return 200, self.render_charge(charge)

    # ----------------------------------------------------------------- refunds

    @route("CreateRefund", "POST", "/refunds")
    def create_refund(self, ctx: Ctx, raw: Obj) -> tuple[int, Obj]:
        body = check_object(raw, frozenset({"chargeId", "refundAmount", "softDescriptor"}), "")
        cid = req_str(body, "chargeId", "", 64)
        if body.get("refundAmount") is None:
            raise ApiError(400, "MissingParameterValue", "'refundAmount' is required")
        amount, currency = parse_price(body["refundAmount"], "refundAmount")
        soft = opt_str(body, "softDescriptor", "", SOFT_DESCRIPTOR_MAX)
        charge = self._find("charges", cid, ctx)
        state = charge["statusDetails"]["state"]
        if state != "Captured":
            raise ApiError(422, "InvalidChargeStatus", f"The Charge is {state}; can't refund")
        if currency != charge["chargeAmount"]["currencyCode"]:
            raise ApiError(400, "CurrencyMismatch", "refundAmount currency differs from charge")
        captured = _dec(charge["captureAmount"])
        refunded = sum(
            (
                _dec(r["refundAmount"])
                for r in self.data["refunds"].values()
                if r["chargeId"] == cid and r["statusDetails"]["state"] != "Declined"
            ),
            Decimal(0),
        )
        ceiling = refund_ceiling(captured, currency)
        if refunded + amount > ceiling:
            raise ApiError(
                400,
                "TransactionAmountExceeded",
                f"Total refunds would exceed {money(ceiling, currency)} {currency}",
            )
        now = self.clock.now()
        rid = self._new_child_id(charge["chargePermissionId"], "R", "refunds")
        refund: Obj = {
            "refundId": rid,
            "chargeId": cid,
            "refundAmount": price(amount, currency),
            "softDescriptor": soft,
            "statusDetails": {},
            "creationTimestamp": fmt(now),
            "releaseEnvironment": ctx.environment,
            "_merchant": ctx.merchant_id,
            "_env": ctx.environment,
            "_chargePermissionId": charge["chargePermissionId"],
            "_created": now,
        }
        self.data["refunds"][rid] = refund
        self._set_refund_state(refund, "RefundInitiated", None, now)
        self._schedule(now + self.pending_seconds, "refund_settle", rid, "Refunded")
        return 201, self.render_refund(refund)

    @route("GetRefund", "GET", "/refunds/{refundId}")
    def get_refund(self, ctx: Ctx, rid: str) -> tuple[int, Obj]:
        return 200, self.render_refund(self._find("refunds", rid, ctx))

    # ----------------------------------------------------------------- delivery trackers

    @route("CreateDeliveryTracker", "POST", "/deliveryTrackers")
    def create_delivery_tracker(self, ctx: Ctx, raw: Obj) -> tuple[int, Obj]:
        body = check_object(
            raw,
            frozenset({"amazonOrderReferenceId", "chargePermissionId", "deliveryDetails"}),
            "",
        )
        order_ref = opt_str(body, "amazonOrderReferenceId", "", 64)
        cp_id = opt_str(body, "chargePermissionId", "", 64)
        if not order_ref and not cp_id:
            raise ApiError(
                400,
                "MissingParameterValue",
                "'chargePermissionId' or 'amazonOrderReferenceId' is required",
            )
        if order_ref and cp_id:
            raise ApiError(
                400,
                "InvalidParameterCombination",
                "Give either chargePermissionId or amazonOrderReferenceId, not both",
            )
        if cp_id:
            self._find("chargePermissions", cp_id, ctx)
        details = body.get("deliveryDetails")
        if not isinstance(details, list) or not details:
            raise ApiError(400, "MissingParameterValue", "'deliveryDetails' is required")
        parsed = []
        for i, item in enumerate(details):
            where = f"deliveryDetails[{i}]"
            entry = check_object(item, frozenset({"trackingNumber", "carrierCode"}), where)
            parsed.append(
                {
                    "trackingNumber": req_str(entry, "trackingNumber", where, 100),
                    "carrierCode": req_str(entry, "carrierCode", where, 50),
                }
            )
        out: Obj = {
            "amazonOrderReferenceId": order_ref,
            "chargePermissionId": cp_id,
            "deliveryDetails": parsed,
        }
        self.data["deliveryTrackers"].append({**out, "_merchant": ctx.merchant_id})
        return 200, out

    # ----------------------------------------------------------------- inspection

    def objects(self, kind: str) -> list[Obj]:
        coll = self.data.get(kind)
        if isinstance(coll, dict):
            return list(coll.values())
        if isinstance(coll, list):
            return list(coll)
        raise KeyError(kind)


ROUTES: tuple[Route, ...] = routes_of(Engine)
"""Every operation of the API: the settlement mixin's, then the Engine's, in declaration order."""
