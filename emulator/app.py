"""aiohttp application: the signed Amazon Pay API, with the control plane (`control`) mounted beside it."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import itertools
import json
import re
import uuid
from collections.abc import Awaitable, Callable
from typing import NamedTuple

from aiohttp import web

from . import control, settlement, signing
from .clock import Clock, parse_pay_date
from .engine import ROUTES, SIMULATIONS
from .routing import Ctx, Route
from .state import EMULATOR_KEY, JSON_TYPE, Emulator, EmulatorConfig, Fault, Key
from .state import json_response as _json
from .validation import ApiError, Obj, normalize_region

DATE_TOLERANCE_SECONDS = 15 * 60
IDEMPOTENCY_KEY_RE = re.compile(r"^[A-Za-z0-9_-]{1,32}$")
IDEMPOTENCY_REQUIRED = frozenset(
    {"CreateCheckoutSession", "CreateCharge", "CaptureCharge", "CreateRefund"}
)
STORED_STATUSES = frozenset({200, 201, 202, 404, 409, 422})
NOT_REPLAYED = frozenset({"CompleteCheckoutSession", "FinalizeCheckoutSession"})
"""POSTs whose Amazon reference takes no idempotency key: a key sent anyway is checked for its
format and otherwise ignored, so a repeat runs again (and is refused on a finished session)."""

_REQUEST_ID_PREFIX = uuid.uuid4().hex[:20]
_REQUEST_COUNTER = itertools.count(1)


def _error(exc: ApiError | signing.SignatureError) -> web.Response:
    return _json(exc.status, {"reasonCode": exc.reason_code, "message": exc.message})


def _environment(prefix_env: str | None, key_id: str) -> str:
    if prefix_env is not None:
        return prefix_env
    return "Live" if key_id.upper().startswith("LIVE") else "Sandbox"


def _authenticate(em: Emulator, request: web.Request, body: bytes) -> Key:
    headers = request.headers
    auth_value = headers.get("authorization")
    if not auth_value:
        raise ApiError(400, "MissingHeader", "The 'authorization' header is missing")
    date_value = headers.get("x-amz-pay-date")
    if not date_value:
        raise ApiError(400, "MissingHeader", "The 'x-amz-pay-date' header is missing")
    try:
        auth = signing.parse_authorization(auth_value)
    except signing.SignatureError as exc:
        raise ApiError(exc.status, exc.reason_code, exc.message) from exc
    key = em.keys.get(auth.public_key_id)
    if key is None:
        raise ApiError(
            403, "InvalidAuthentication", f"Unknown public key id '{auth.public_key_id}'"
        )
    if "x-amz-pay-date" not in auth.signed_headers:
        raise ApiError(403, "InvalidRequestSignature", "x-amz-pay-date must be a signed header")
    sent_at = parse_pay_date(date_value.strip())
    if sent_at is None:
        raise ApiError(400, "InvalidHeaderValue", "x-amz-pay-date is not a valid timestamp")
    if abs(Clock.real_now() - sent_at) > DATE_TOLERANCE_SECONDS:
        raise ApiError(
            403, "InvalidRequestSignature", "x-amz-pay-date is more than 15 minutes from now"
        )
    url = request.rel_url
    try:
        canonical = signing.canonical_request(
            request.method,
            signing.canonical_uri(url.raw_path),
            signing.canonical_query(url.raw_query_string),
            auth.signed_headers,
            headers.get,
            hashlib.sha256(body).hexdigest(),
        )
    except signing.SignatureError as exc:
        raise ApiError(exc.status, exc.reason_code, exc.message) from exc
    to_sign = signing.string_to_sign(auth.algorithm, canonical)
    if not signing.verify_signature(key.public_key, auth.algorithm, to_sign, auth.signature):
        raise ApiError(403, "InvalidRequestSignature", "The request signature does not match")
    return key


def _parse_body(body: bytes, method: str) -> Obj:
    if not body.strip():
        return {}
    try:
        parsed = json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ApiError(400, "InvalidRequestFormat", "The request body is not valid JSON") from exc
    if not isinstance(parsed, dict):
        raise ApiError(400, "InvalidRequestFormat", "The request body must be a JSON object")
    return parsed


def _fingerprint(operation: str, request: web.Request, *, body: Obj, simulation: str | None) -> str:
    tail = "/".join(request.match_info.values())
    canon = json.dumps([operation, tail, body, simulation], sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canon.encode()).hexdigest()


def _drop_connection(request: web.Request) -> None:
    transport = request.transport
    if transport is not None:
        transport.abort()


def _api_handler(
    route: Route, prefix_env: str | None
) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
    operation = route.operation

    async def handle(request: web.Request) -> web.StreamResponse:
        em = request.app[EMULATOR_KEY]
        raw = await request.read()
        fault: Fault | None = None
        try:
            key = _authenticate(em, request, raw)
            fault = em.take_fault(operation) if em.faults else None
            if fault is not None:
                if fault.latency_ms:
                    await asyncio.sleep(fault.latency_ms / 1000)
                if fault.status is not None:
                    raise ApiError(
                        fault.status,
                        fault.reason_code or "InternalServerError",
                        "Injected fault",
                    )
            env = _environment(prefix_env, key.key_id)
            simulation = request.headers.get("x-amz-pay-simulation-code")
            if simulation is not None:
                simulation = simulation.strip()
                if env == "Live" or simulation not in SIMULATIONS.get(operation, frozenset()):
                    raise ApiError(
                        400,
                        "InvalidSandboxSimulationSpecified",
                        f"Simulation code '{simulation}' is not valid for {operation}",
                    )
            body = _parse_body(raw, request.method)
            record_key = None
            fingerprint = ""
            if request.method == "POST":
                idem = request.headers.get("x-amz-pay-idempotency-key")
                if idem is None:
                    if operation in IDEMPOTENCY_REQUIRED:
                        raise ApiError(
                            400,
                            "MissingHeader",
                            "The 'x-amz-pay-idempotency-key' header is missing",
                        )
                elif not IDEMPOTENCY_KEY_RE.match(idem):
                    raise ApiError(
                        400,
                        "InvalidHeaderValue",
                        "x-amz-pay-idempotency-key must be 1-32 characters of [A-Za-z0-9_-]",
                    )
                elif operation not in NOT_REPLAYED:
                    record_key = f"{key.merchant_id}|{env}|{idem}"
                    fingerprint = _fingerprint(operation, request, body=body, simulation=simulation)
                    stored = em.idempotency.get(record_key)
                    if stored is not None:
                        if stored["fingerprint"] != fingerprint:
                            raise ApiError(
                                400,
                                "DuplicateIdempotencyKey",
                                "This idempotency key was used with a different request",
                            )
                        return web.Response(
                            status=stored["status"],
                            body=stored["body"].encode(),
                            content_type=JSON_TYPE,
                            headers={"x-amz-pay-request-id": stored["requestId"]},
                        )
            ctx = Ctx(
                merchant_id=key.merchant_id,
                environment=env,
                region=normalize_region(request.headers.get("x-amz-pay-region")),
                simulation=simulation,
                base_url=f"{request.scheme}://{request.host}",
                query=tuple(request.rel_url.query.items())
                if request.rel_url.raw_query_string
                else (),
            )
            if em.engine.data["timers"]:
                em.engine.tick()
            request_id = f"{_REQUEST_ID_PREFIX}{next(_REQUEST_COUNTER):012d}"
            try:
                status, result = route(em.engine, ctx, path_params=request.match_info, body=body)
                payload = json.dumps(result)
            except ApiError as exc:
                status, payload = exc.status, json.dumps(exc.body())
            if request.method != "GET":
                em.dirty = True
            if record_key is not None and status in STORED_STATUSES:
                em.idempotency[record_key] = {
                    "fingerprint": fingerprint,
                    "status": status,
                    "body": payload,
                    "requestId": request_id,
                }
            return web.Response(
                status=status,
                body=payload.encode(),
                content_type=JSON_TYPE,
                headers={"x-amz-pay-request-id": request_id},
            )
        except ApiError as exc:
            return _error(exc)
        finally:
            # Whatever the answer (new work, a replay, a refusal), a drop loses it: a replay that
            # got through would let `count: null` leak a success to a retry.
            if fault is not None and fault.drop:
                _drop_connection(request)

    return handle


OPERATIONS = frozenset(route.operation for route in ROUTES)


class Prefix(NamedTuple):
    """Where the API is mounted, and the environment that path selects (None: the key's)."""

    path: str
    environment: str | None


PREFIXES = (
    Prefix(path="/sandbox/v2", environment="Sandbox"),
    Prefix(path="/live/v2", environment="Live"),
    Prefix(path="/v2", environment=None),
)


def _paths(route: Route) -> tuple[str, ...]:
    """Where a route is mounted: its path, and a listing's (a GET without placeholders) also
    with a trailing slash, which the Java SDK sends (`/v2/reports/?…`)."""
    if route.method == "GET" and not route.path_params:
        return route.path, route.path + "/"
    return (route.path,)


_ROUTE_PATTERNS = [
    re.compile("^" + re.sub(r"\\{[A-Za-z]+\\}", "[^/]+", re.escape(path)) + "$")
    for route in ROUTES
    for path in _paths(route)
]


async def _fallback(request: web.Request) -> web.StreamResponse:
    """Unknown paths and methods answer in Amazon's error format, not aiohttp's text.

    A catch-all route rather than a middleware keeps the per-request hot path lean.
    """
    path = request.path
    for prefix in PREFIXES:
        if path.startswith(prefix.path + "/"):
            tail = path[len(prefix.path) :]
            if any(pattern.match(tail) for pattern in _ROUTE_PATTERNS):
                return _json(
                    405, {"reasonCode": "UnsupportedOperation", "message": "Method not allowed"}
                )
            break
    return _json(404, {"reasonCode": "ResourceNotFound", "message": "Unknown resource path"})


async def _ticker(app: web.Application) -> None:
    """Drive real-time transitions (~30 s pending states) and debounced persistence."""
    em = app[EMULATOR_KEY]
    while True:
        due = em.engine.next_due()
        delay = em.config.persist_interval
        if due is not None:
            delay = max(0.01, min(delay, due - em.clock.now()))
        await asyncio.sleep(delay)
        if em.engine.tick():
            em.dirty = True
        await em.save()


def create_app(config: EmulatorConfig | None = None) -> web.Application:
    """Build the emulator app; run it with `run_emulator` or any aiohttp runner."""
    em = Emulator(config or EmulatorConfig())
    app = web.Application(client_max_size=2 * 1024 * 1024)
    app[EMULATOR_KEY] = em
    for prefix in PREFIXES:
        for route in ROUTES:
            for path in _paths(route):
                app.router.add_route(
                    route.method, prefix.path + path, _api_handler(route, prefix.environment)
                )
    control.add_routes(app, operations=OPERATIONS)
    em.engine.tick_hooks.append(lambda now: settlement.close_due(em.engine, now))
    app.router.add_route("*", "/{tail:.*}", _fallback)

    ticker_key = web.AppKey("ticker", asyncio.Task[None])

    async def on_startup(app: web.Application) -> None:
        await em.ipn.start()
        app[ticker_key] = asyncio.create_task(_ticker(app))

    async def on_cleanup(app: web.Application) -> None:
        task = app[ticker_key]
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await em.ipn.stop()
        em.dirty = True
        em.save_sync()

    app.on_startup.append(on_startup)
    app.on_cleanup.append(on_cleanup)
    return app
