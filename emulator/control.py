"""Control plane under /_emulator/ (no signature): keys, clock, faults, IPN, state, buyer steps,
settlement and disputes, and the pre-signed report documents."""

from __future__ import annotations

import json
import math
from collections.abc import Awaitable, Callable
from decimal import Decimal, InvalidOperation
from typing import Any
from urllib.parse import quote

from aiohttp import web

from . import settlement
from .clock import DAY, fmt
from .engine import CARDS
from .state import EMULATOR_KEY, Emulator, Fault, escape
from .state import json_response as _json
from .validation import ApiError, Obj, check_object, opt_str, req_str

Route = Callable[[web.Request], Awaitable[web.StreamResponse]]
_OPERATIONS_KEY = web.AppKey("operations", frozenset)
"""The API's operation names, which a fault may target; `app` hands them over in `add_routes`."""
KINDS = ("checkoutSessions", "chargePermissions", "charges", "refunds", "deliveryTrackers")


def _guard(fn: Callable[[web.Request, Emulator], Awaitable[web.StreamResponse]]) -> Route:
    async def wrapped(request: web.Request) -> web.StreamResponse:
        em = request.app[EMULATOR_KEY]
        try:
            if em.engine.data["timers"] and em.engine.tick():
                em.dirty = True
            return await fn(request, em)
        except ApiError as exc:
            return _json(exc.status, exc.body())

    return wrapped


async def _body(request: web.Request) -> Obj:
    raw = await request.read()
    if not raw.strip():
        return {}
    try:
        parsed = json.loads(raw)
    except ValueError as exc:
        raise ApiError(400, "InvalidRequestFormat", "Body is not valid JSON") from exc
    if not isinstance(parsed, dict):
        raise ApiError(400, "InvalidRequestFormat", "Body must be a JSON object")
    return parsed


def _clock_view(em: Emulator) -> Obj:
    now = em.clock.now()
    return {"now": fmt(now), "epochSeconds": now, "offsetSeconds": em.clock.offset}


# ------------------------------------------------------------------------------- keys


async def add_key(request: web.Request, em: Emulator) -> web.StreamResponse:
    body = await _body(request)
    key_id, pem = body.get("publicKeyId"), body.get("publicKeyPem")
    if not isinstance(key_id, str) or not key_id or not isinstance(pem, str):
        raise ApiError(400, "MissingParameterValue", "publicKeyId and publicKeyPem are required")
    merchant = body.get("merchantId")
    key = em.add_key(key_id, pem, merchant if isinstance(merchant, str) else None)
    return _json(201, {"publicKeyId": key.key_id, "merchantId": key.merchant_id})


async def list_keys(request: web.Request, em: Emulator) -> web.StreamResponse:
    return _json(
        200, {"keys": [{"publicKeyId": k, "merchantId": v.merchant_id} for k, v in em.keys.items()]}
    )


async def delete_key(request: web.Request, em: Emulator) -> web.StreamResponse:
    if em.keys.pop(request.match_info["id"], None) is None:
        raise ApiError(404, "ResourceNotFound", "No such key")
    em.dirty = True
    return _json(200, {"deleted": request.match_info["id"]})


# ------------------------------------------------------------------------------- clock


async def get_clock(request: web.Request, em: Emulator) -> web.StreamResponse:
    return _json(200, _clock_view(em))


async def post_clock(request: web.Request, em: Emulator) -> web.StreamResponse:
    body = await _body(request)
    seconds = body.get("advanceSeconds")
    if isinstance(seconds, bool) or not isinstance(seconds, int | float) or seconds < 0:
        raise ApiError(400, "InvalidParameterValue", "advanceSeconds must be a number >= 0")
    em.clock.advance(float(seconds))
    transitions = em.engine.tick()
    em.dirty = True
    return _json(200, {**_clock_view(em), "transitionsApplied": transitions})


# ------------------------------------------------------------------------------- faults


async def add_fault(request: web.Request, em: Emulator) -> web.StreamResponse:
    body = await _body(request)
    operation = body.get("operation", "*")
    operations: frozenset[str] = request.app[_OPERATIONS_KEY]
    if operation != "*" and operation not in operations:
        raise ApiError(
            400, "InvalidParameterValue", f"operation must be '*' or one of {sorted(operations)}"
        )
    count: Any = body.get("count", 1)
    if count is not None and (not isinstance(count, int) or count < 1):
        raise ApiError(400, "InvalidParameterValue", "count must be a positive integer or null")
    status = body.get("status")
    if status is not None and (not isinstance(status, int) or not 400 <= status <= 599):
        raise ApiError(400, "InvalidParameterValue", "status must be an HTTP error status")
    latency = body.get("latencyMs", 0)
    if isinstance(latency, bool) or not isinstance(latency, int | float) or latency < 0:
        raise ApiError(400, "InvalidParameterValue", "latencyMs must be a number >= 0")
    drop = bool(body.get("drop", False))
    if status is None and not drop and not latency:
        raise ApiError(400, "MissingParameterValue", "give status, drop or latencyMs")
    if status is not None and drop:
        raise ApiError(400, "InvalidParameterCombination", "status and drop exclude each other")
    reason = body.get("reasonCode")
    fault = Fault(
        operation=str(operation),
        remaining=count,
        latency_ms=float(latency),
        status=status,
        reason_code=str(reason) if reason else None,
        drop=drop,
    )
    em.faults.append(fault)
    return _json(201, fault.describe())


async def list_faults(request: web.Request, em: Emulator) -> web.StreamResponse:
    return _json(200, {"faults": [f.describe() for f in em.faults]})


async def clear_faults(request: web.Request, em: Emulator) -> web.StreamResponse:
    em.faults.clear()
    return _json(200, {"faults": []})


# ------------------------------------------------------------------------------- IPN


async def get_ipn(request: web.Request, em: Emulator) -> web.StreamResponse:
    return _json(200, em.ipn.listing())


async def ipn_envelope(request: web.Request, em: Emulator) -> web.StreamResponse:
    """A signed notification naming any object, not delivered: for tests of what a receiver does
    with notifications Amazon could send about objects it does not (or no longer) have."""
    body = await _body(request)
    fields = {
        name: body.get(name)
        for name in ("objectType", "objectId", "chargePermissionId", "merchantId")
    }
    if not isinstance(fields["objectType"], str) or not isinstance(fields["objectId"], str):
        raise ApiError(400, "MissingParameterValue", "objectType and objectId are required")
    envelope = em.ipn.envelope(
        merchant_id=str(fields["merchantId"] or em.config.merchant_id),
        object_type=fields["objectType"],
        object_id=fields["objectId"],
        cp_id=str(fields["chargePermissionId"] or fields["objectId"]),
    )
    return _json(200, envelope)


async def post_ipn(request: web.Request, em: Emulator) -> web.StreamResponse:
    body = await _body(request)
    if "enabled" in body:
        em.ipn.enabled = bool(body["enabled"])
    if "signatureVersion" in body:
        version = str(body["signatureVersion"])
        if version not in ("1", "2"):
            raise ApiError(400, "InvalidParameterValue", "signatureVersion must be '1' or '2'")
        em.ipn.signature_version = version
    if "maxAttempts" in body:
        em.ipn.max_attempts = max(1, int(body["maxAttempts"]))
    if "retryBaseSeconds" in body:
        em.ipn.retry_base_seconds = max(0.0, float(body["retryBaseSeconds"]))
    em.dirty = True
    return _json(200, em.ipn.settings())


async def add_subscription(request: web.Request, em: Emulator) -> web.StreamResponse:
    body = await _body(request)
    url = body.get("url")
    if not isinstance(url, str) or not url.startswith(("http://", "https://")):
        raise ApiError(400, "InvalidParameterValue", "url must be an http(s) URL")
    if url not in em.ipn.subscriptions:
        em.ipn.subscriptions.append(url)
    em.dirty = True
    return _json(201, em.ipn.settings())


async def delete_subscription(request: web.Request, em: Emulator) -> web.StreamResponse:
    body = await _body(request)
    url = body.get("url")
    if url is None:
        em.ipn.subscriptions.clear()
    elif url in em.ipn.subscriptions:
        em.ipn.subscriptions.remove(url)
    em.dirty = True
    return _json(200, em.ipn.settings())


async def sns_cert(request: web.Request, em: Emulator) -> web.StreamResponse:
    return web.Response(body=em.ipn.cert_pem, content_type="application/x-pem-file")


async def sns_unsubscribe(request: web.Request, em: Emulator) -> web.StreamResponse:
    return _json(200, {"unsubscribed": False, "note": "use DELETE /_emulator/ipn/subscriptions"})


# ------------------------------------------------------------------------------- state


async def get_state(request: web.Request, em: Emulator) -> web.StreamResponse:
    return _json(
        200,
        {
            "clock": _clock_view(em),
            **{kind: em.engine.objects(kind) for kind in KINDS},
            "idempotencyRecords": len(em.idempotency),
            "pendingTimers": len(em.engine.data["timers"]),
            "faults": [f.describe() for f in em.faults],
        },
    )


async def list_objects(request: web.Request, em: Emulator) -> web.StreamResponse:
    kind = request.match_info["kind"]
    if kind not in KINDS:
        raise ApiError(404, "ResourceNotFound", f"kind must be one of {KINDS}")
    return _json(200, {kind: em.engine.objects(kind)})


async def get_object(request: web.Request, em: Emulator) -> web.StreamResponse:
    kind, oid = request.match_info["kind"], request.match_info["id"]
    coll = em.engine.data.get(kind)
    if kind == "deliveryTrackers" or not isinstance(coll, dict) or oid not in coll:
        raise ApiError(404, "ResourceNotFound", f"{kind}/{oid} not found")
    return _json(200, coll[oid])


async def reset(request: web.Request, em: Emulator) -> web.StreamResponse:
    body = await _body(request)
    em.reset(keys=bool(body.get("keys", False)))
    return _json(200, {"reset": True})


async def health(request: web.Request, em: Emulator) -> web.StreamResponse:
    return _json(200, {"status": "ok"})


# ------------------------------------------------------------------------------- buyer


def _is_form(request: web.Request) -> bool:
    return request.content_type == "application/x-www-form-urlencoded"


async def sign_in(request: web.Request, em: Emulator) -> web.StreamResponse:
    sid = request.match_info["id"]
    if _is_form(request):
        form = await request.post()
        result = em.engine.buyer_sign_in(sid, {"card": str(form.get("card", "1111"))})
        em.dirty = True
        raise web.HTTPSeeOther(result["redirectUrl"] or f"/_emulator/checkoutSessions/{sid}/pay")
    result = em.engine.buyer_sign_in(sid, await _body(request))
    em.dirty = True
    return _json(200, result)


async def confirm(request: web.Request, em: Emulator) -> web.StreamResponse:
    sid = request.match_info["id"]
    if not _is_form(request):
        await _body(request)
    result = em.engine.buyer_confirm(sid)
    em.dirty = True
    if _is_form(request):
        raise web.HTTPSeeOther(result["redirectUrl"] or f"/_emulator/checkoutSessions/{sid}/pay")
    return _json(200, result)


_PAGE = """<!doctype html><html><head><meta charset="utf-8"><title>{title}</title></head>
<body style="font-family:sans-serif;max-width:40em;margin:2em auto">
<h1>Amazon Pay emulator</h1><h2>{title}</h2>{content}</body></html>"""


def _page(title: str, content: str) -> web.Response:
    return web.Response(
        text=_PAGE.format(title=escape(title), content=content), content_type="text/html"
    )


async def sign_in_page(request: web.Request, em: Emulator) -> web.StreamResponse:
    sid = request.match_info["id"]
    session = em.engine.data["checkoutSessions"].get(sid)
    if session is None:
        return _page("Unknown checkout session", "<p>Not found.</p>")
    options = "".join(
        f'<option value="{c}">{escape(brand)} ****{c} ({escape(kind)})</option>'
        for c, (brand, kind) in CARDS.items()
    )
    form = (
        f'<form method="post" action="/_emulator/checkoutSessions/{quote(sid)}/signIn">'
        f'<label>Wallet card <select name="card">{options}</select></label> '
        '<button type="submit">Sign in and continue</button></form>'
    )
    return _page(f"Sign in for checkout {sid}", form)


async def pay_page(request: web.Request, em: Emulator) -> web.StreamResponse:
    sid = request.match_info["id"]
    session = em.engine.data["checkoutSessions"].get(sid)
    if session is None:
        return _page("Unknown checkout session", "<p>Not found.</p>")
    pd = session["paymentDetails"]
    amount = pd["chargeAmount"] or {"amount": "?", "currencyCode": ""}
    state = session["statusDetails"]["state"]
    info = (
        f"<p>State: {escape(state)}</p><p>Amount: {escape(amount['amount'])} "
        f"{escape(amount['currencyCode'])}; intent {escape(pd['paymentIntent'])}</p>"
        f"<p>Payment: {escape((session['paymentPreferences'] or [{}])[0].get('paymentDescriptor'))}</p>"
    )
    form = (
        f'<form method="post" action="/_emulator/checkoutSessions/{quote(sid)}/confirm">'
        '<button type="submit">Pay now</button></form>'
    )
    return _page(f"Confirm checkout {sid}", info + form)


# ------------------------------------------------------------------------------- settlement


def _settling(call: Callable[[web.Request, Emulator, Obj], Obj | tuple[int, Obj]]) -> Route:
    """A settlement control call: `call` gets the request's JSON object once the periods that
    are due are closed (`tick`), and the state is saved after it."""

    async def handle(request: web.Request, em: Emulator) -> web.StreamResponse:
        body = await _body(request)
        em.engine.tick()
        result = call(request, em, body)
        em.dirty = True
        status, payload = result if isinstance(result, tuple) else (200, result)
        return _json(status, payload)

    return _guard(handle)


def close_settlement(request: web.Request, em: Emulator, body: Obj) -> Obj:
    check_object(body, frozenset({"merchantId", "environment"}), "")
    merchant = opt_str(body, "merchantId", "", 64) or em.config.merchant_id
    env = opt_str(body, "environment", "", 16) or "Sandbox"
    if env not in ("Sandbox", "Live"):
        raise ApiError(400, "InvalidParameterValue", "environment must be Sandbox or Live")
    return settlement.close_now(em.engine, merchant, env)


def settlement_view(request: web.Request, em: Emulator, body: Obj) -> Obj:
    state = settlement.state_of(em.engine)
    return {
        "periodSeconds": settlement.period_seconds(em.engine),
        "nextBoundary": fmt(state["nextBoundary"]) if state["nextBoundary"] else None,
        "settlements": list(state["settlements"].values()),
        "faults": state["faults"],
    }


def configure_settlement(request: web.Request, em: Emulator, body: Obj) -> Obj:
    check_object(body, frozenset({"periodSeconds"}), "")
    seconds = body.get("periodSeconds")
    if (
        isinstance(seconds, bool)
        or not isinstance(seconds, int | float)
        or not 60 <= seconds <= 31 * DAY
    ):
        raise ApiError(
            400, "InvalidParameterValue", "periodSeconds must be a number in [60, 2678400]"
        )
    state = settlement.state_of(em.engine)
    state["periodSeconds"] = float(seconds)
    now = em.clock.now()
    state["nextBoundary"] = (math.floor(now / seconds) + 1) * float(seconds)
    return settlement_view(request, em, {})


def add_settlement_fault(request: web.Request, em: Emulator, body: Obj) -> tuple[int, Obj]:
    check_object(body, frozenset({"skipRefund", "alterAmount"}), "")
    faults = settlement.state_of(em.engine)["faults"]
    if not body:
        raise ApiError(400, "MissingParameterValue", "give skipRefund or alterAmount")
    if "skipRefund" in body:
        refund_id = req_str(body, "skipRefund", "", 64)
        if refund_id not in faults["skipRefund"]:
            faults["skipRefund"].append(refund_id)
    if "alterAmount" in body:
        alter = check_object(
            body["alterAmount"], frozenset({"transactionId", "amount"}), "alterAmount"
        )
        tx_id = req_str(alter, "transactionId", "alterAmount", 64)
        amount = req_str(alter, "amount", "alterAmount", 32)
        try:
            value = Decimal(amount)
        except InvalidOperation:
            raise ApiError(
                400, "InvalidParameterValue", "'alterAmount.amount' is not a decimal"
            ) from None
        if not value.is_finite():
            raise ApiError(400, "InvalidParameterValue", "'alterAmount.amount' is not a decimal")
        faults["alterAmount"][tx_id] = amount
    return 201, faults


def list_settlement_faults(request: web.Request, em: Emulator, body: Obj) -> Obj:
    return dict(settlement.state_of(em.engine)["faults"])


def clear_settlement_faults(request: web.Request, em: Emulator, body: Obj) -> Obj:
    settlement.state_of(em.engine)["faults"] = {"skipRefund": [], "alterAmount": {}}
    return dict(settlement.state_of(em.engine)["faults"])


def open_dispute(request: web.Request, em: Emulator, body: Obj) -> tuple[int, Obj]:
    return 201, settlement.open_dispute(em.engine, body)


def update_dispute(request: web.Request, em: Emulator, body: Obj) -> Obj:
    return settlement.update_dispute(em.engine, request.match_info["id"], body)


def list_disputes(request: web.Request, em: Emulator, body: Obj) -> Obj:
    return {
        "disputes": [
            settlement.render_dispute(d)
            for d in settlement.state_of(em.engine)["disputes"].values()
        ]
    }


_SETTLEMENT_ROUTES: tuple[
    tuple[str, str, Callable[[web.Request, Emulator, Obj], Obj | tuple[int, Obj]]], ...
] = (
    ("GET", "/settlement", settlement_view),
    ("POST", "/settlement", configure_settlement),
    ("POST", "/settlement/close", close_settlement),
    ("POST", "/settlement/faults", add_settlement_fault),
    ("GET", "/settlement/faults", list_settlement_faults),
    ("DELETE", "/settlement/faults", clear_settlement_faults),
    ("POST", "/disputes", open_dispute),
    ("GET", "/disputes", list_disputes),
    ("POST", "/disputes/{id}", update_dispute),
)
"""The settlement and dispute control plane under `/_emulator`: verb, path, and the call that
gets the request's JSON object (`_settling`)."""


def _s3_error(status: int, code: str, message: str) -> web.Response:
    body = f'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>{code}</Code><Message>{message}</Message></Error>'
    return web.Response(status=status, body=body.encode(), content_type="application/xml")


async def report_document(request: web.Request) -> web.StreamResponse:
    """A pre-signed document URL (`settlement.document_refusal`), streamed line by line."""
    em = request.app[EMULATOR_KEY]
    doc_id = request.match_info["id"]
    query = request.rel_url.query
    refusal = settlement.document_refusal(
        em.engine,
        doc_id,
        date=query.get("X-Amz-Date", ""),
        signature=query.get("X-Amz-Signature", ""),
    )
    if refusal is not None:
        return _s3_error(*refusal)
    response = web.StreamResponse(headers={"content-type": "text/csv; charset=UTF-8"})
    await response.prepare(request)
    for line in settlement.document_lines(em.engine, doc_id):
        await response.write(line)
    await response.write_eof()
    return response


def add_routes(app: web.Application, *, operations: frozenset[str]) -> None:
    """Mount `/_emulator/`; `operations` are the API's operation names a fault may name."""
    app[_OPERATIONS_KEY] = operations
    r = app.router
    p = "/_emulator"
    r.add_get(f"{p}/health", _guard(health))
    r.add_post(f"{p}/keys", _guard(add_key))
    r.add_get(f"{p}/keys", _guard(list_keys))
    r.add_delete(f"{p}/keys/{{id}}", _guard(delete_key))
    r.add_get(f"{p}/clock", _guard(get_clock))
    r.add_post(f"{p}/clock", _guard(post_clock))
    r.add_post(f"{p}/faults", _guard(add_fault))
    r.add_get(f"{p}/faults", _guard(list_faults))
    r.add_delete(f"{p}/faults", _guard(clear_faults))
    r.add_get(f"{p}/ipn", _guard(get_ipn))
    r.add_post(f"{p}/ipn", _guard(post_ipn))
    r.add_post(f"{p}/ipn/subscriptions", _guard(add_subscription))
    r.add_post(f"{p}/ipn/envelope", _guard(ipn_envelope))
    r.add_delete(f"{p}/ipn/subscriptions", _guard(delete_subscription))
    r.add_get(f"{p}/sns/cert.pem", _guard(sns_cert))
    r.add_get(f"{p}/sns/unsubscribe", _guard(sns_unsubscribe))
    r.add_get(f"{p}/state", _guard(get_state))
    r.add_get(f"{p}/objects/{{kind}}", _guard(list_objects))
    r.add_get(f"{p}/objects/{{kind}}/{{id}}", _guard(get_object))
    r.add_post(f"{p}/reset", _guard(reset))
    r.add_post(f"{p}/checkoutSessions/{{id}}/signIn", _guard(sign_in))
    r.add_get(f"{p}/checkoutSessions/{{id}}/signIn", _guard(sign_in_page))
    r.add_post(f"{p}/checkoutSessions/{{id}}/confirm", _guard(confirm))
    r.add_get(f"{p}/checkoutSessions/{{id}}/pay", _guard(pay_page))
    for method, path, call in _SETTLEMENT_ROUTES:
        r.add_route(method, p + path, _settling(call))
    r.add_get(f"{p}/report-documents/{{id}}", report_document)
