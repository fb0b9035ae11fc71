"""The IPN receiver: an aiohttp endpoint on its own port.

It answers fast and does the slow part afterwards: verify the SNS envelope, store the notification
(unique by NotificationId, so a redelivery is a no-op), answer 200, then read the object from Amazon
and record what changed with source `ipn`. A notification is a hint, never the truth: the ledger
only ever records what a GET returned. If that read fails or the process dies, the stored,
unprocessed notification is retried by the reconciler.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
from collections.abc import Mapping
from dataclasses import KW_ONLY, dataclass, field
from typing import Any

from aiohttp import web
from aiohttp.web_protocol import RequestHandler
from opentelemetry import trace

from service._listen import listen
from service.amazonpay import AmazonPayError
from service.core import KINDS, Overloaded, Payments
from service.ledger import Repository
from service.telemetry import Metrics

from ._sns import SnsError, SnsVerifier

__all__ = ["IPN_ATTEMPTS", "OBJECT_TYPES", "IpnReceiver", "ipn_backoff_s"]

_log = logging.getLogger("service.workers.ipn")
_tracer = trace.get_tracer(__name__)

IPN_ATTEMPTS = 10
"""Failed follow-ups of one notification before it is given up (about four hours with
`ipn_backoff_s`); an object the ledger knows is polled by the reconciler regardless."""


def ipn_backoff_s(attempts: int) -> float:
    """30 s, 1, 2, 4 ... minutes after each failed follow-up, at most an hour."""
    return float(min(30 * 2 ** (attempts - 1), 3600))


OBJECT_TYPES: Mapping[str, str] = {
    kind.ipn_object_type: kind.name for kind in KINDS.values() if kind.ipn_object_type
}
"""IPN `ObjectType` -> ledger kind, from core's table of kinds."""


@dataclass(frozen=True)
class Notification:
    """A stored notification's follow-up: the object to read and who it may belong to."""

    notification_id: str
    kind: str | None
    """Ledger kind of the object (None: a type the ledger does not keep, marked done at once)."""
    object_id: str
    merchant: str | None = None
    """The merchant that recorded the object or its charge permission, if known."""
    charge_permission_id: str | None = None
    amazon_merchant_id: str | None = None
    """The notification's `MerchantID`."""


class _GuardedServer(web.Server):
    """aiohttp's low-level server with a cap on open connections and a deadline per request.

    The port faces the internet (SNS delivers to it), so nobody may hold it open: a connection
    beyond `max_connections` is closed at once, and one that has not delivered its whole request
    (headers and body) within `read_timeout_s` of connecting is closed; an idle kept-alive one
    is closed after the same time, and a closed one does not linger. All are quiet (a metric,
    not a traceback, and no access log): slow or dropped connections are what an exposed port
    sees all day.
    """

    def __init__(
        self,
        handler: Any,
        *,
        max_connections: int,
        read_timeout_s: float,
        on_refused: Any,
        **kwargs: Any,
    ) -> None:
        super().__init__(
            handler,
            access_log=None,
            keepalive_timeout=read_timeout_s,
            lingering_time=0,
            **kwargs,
        )
        self._max_connections = max_connections
        self._read_timeout_s = read_timeout_s
        self._on_refused = on_refused
        self._deadlines: dict[RequestHandler, asyncio.TimerHandle] = {}

    def connection_made(self, handler: RequestHandler, transport: asyncio.Transport) -> None:
        super().connection_made(handler, transport)
        if len(self._connections) > self._max_connections:
            self._on_refused("too_many_connections")
            # Soon, not now: aiohttp starts the connection's task right after this returns, and
            # a connection lost before that task ran trips an assertion in aiohttp.
            asyncio.get_running_loop().call_soon(transport.abort)
            return
        self._deadlines[handler] = asyncio.get_running_loop().call_later(
            self._read_timeout_s, self._expire, handler
        )

    def connection_lost(self, handler: RequestHandler, exc: BaseException | None = None) -> None:
        self.request_read(handler)
        super().connection_lost(handler, exc)

    def request_read(self, handler: RequestHandler) -> None:
        """The request arrived in full: what follows is our own work, not the peer's."""
        timer = self._deadlines.pop(handler, None)
        if timer is not None:
            timer.cancel()

    def _expire(self, handler: RequestHandler) -> None:
        self._deadlines.pop(handler, None)
        transport = self._connections.get(handler)
        if transport is not None:
            self._on_refused("read_timeout")
            transport.abort()


@dataclass(eq=False, repr=False)
class IpnReceiver:
    """The IPN endpoint (see the module docstring) and the follow-up reads it starts."""

    payments: Payments
    repository: Repository
    verifier: SnsVerifier
    metrics: Metrics
    _: KW_ONLY
    max_body_bytes: int = 64 * 1024
    retry_in_s: float = 30.0
    """A notification still unprocessed after this long is the reconciler's to retry."""
    read_timeout_s: float = 10.0
    """A connection must deliver its request within this long."""
    max_connections: int = 256
    port: int = field(init=False, default=0)
    _tasks: set[asyncio.Task[bool]] = field(init=False, default_factory=set)
    _runner: web.ServerRunner | None = field(init=False, default=None)
    _server: _GuardedServer | None = field(init=False, default=None)

    async def start(self, host: str, port: int, *, reuse_port: bool = False) -> int:
        """Listen on `host:port`; with `reuse_port` the port is shared with the other workers of
        this replica (`GRPC_WORKERS`), each answering the connections the kernel gives it."""
        self._server = _GuardedServer(
            self._dispatch,
            max_connections=self.max_connections,
            read_timeout_s=self.read_timeout_s,
            on_refused=self._refused,
            request_factory=self._make_request,
        )
        self._runner = web.ServerRunner(self._server, handle_signals=False)
        self.port = await listen(self._runner, host, port, reuse_port=reuse_port)
        return self.port

    def _refused(self, reason: str) -> None:
        self.metrics.ipn_messages.add(1, {"outcome": "rejected", "reason": reason})

    def _make_request(
        self, message: Any, payload: Any, protocol: Any, writer: Any, task: Any
    ) -> web.BaseRequest:
        return web.BaseRequest(
            message,
            payload,
            protocol,
            writer,
            task,
            asyncio.get_running_loop(),
            client_max_size=self.max_body_bytes,
        )

    async def _dispatch(self, request: web.BaseRequest) -> web.StreamResponse:
        """`POST /ipn` only; the body is read under the connection's deadline, then handled.

        Every answer closes the connection: SNS opens one per delivery, and an idle kept-alive
        connection would be one more thing a stranger could hold.
        """
        response: web.StreamResponse
        if request.path != "/ipn":
            response = web.json_response({"error": "not_found"}, status=404)
        elif request.method != "POST":
            response = web.json_response({"error": "method_not_allowed"}, status=405)
        else:
            try:
                await request.read()
            except web.HTTPRequestEntityTooLarge:
                response = self._reject(413, "too_large")
            except (OSError, asyncio.IncompleteReadError, ValueError):
                # The peer went away (or was cut off by the deadline) mid-body.
                self._refused("incomplete_request")
                response = web.Response(status=400)
            else:
                if self._server is not None:
                    self._server.request_read(request.protocol)
                response = await self._traced(request)
        response.force_close()
        return response

    async def stop(self) -> None:
        if self._runner is not None:
            runner, self._runner = self._runner, None
            await runner.cleanup()
        if self._tasks:
            await asyncio.wait(self._tasks, timeout=10)
        await self.verifier.close()

    def _reject(self, status: int, reason: str) -> web.Response:
        self.metrics.ipn_messages.add(1, {"outcome": "rejected", "reason": reason})
        _log.warning("IPN rejected", extra={"reason": reason})
        return web.json_response({"error": reason}, status=status)

    async def _traced(self, request: web.BaseRequest) -> web.Response:
        """Each IPN is one trace: verification, the follow-up read (a task started inside the
        span inherits it) and its SQL are children of this span."""
        with _tracer.start_as_current_span("ipn.receive", kind=trace.SpanKind.SERVER) as span:
            response = await self.handle(request)
            span.set_attribute("http.response.status_code", response.status)
            return response

    async def handle(self, request: web.BaseRequest) -> web.Response:
        self.metrics.ipn_messages.add(1, {"outcome": "received"})
        if request.content_length is not None and request.content_length > self.max_body_bytes:
            return self._reject(413, "too_large")
        try:
            raw = await request.read()
        except web.HTTPRequestEntityTooLarge:
            return self._reject(413, "too_large")
        try:
            envelope = json.loads(raw)
        except (ValueError, RecursionError):
            return self._reject(400, "malformed")
        if not isinstance(envelope, dict):
            return self._reject(400, "malformed")
        try:
            await self.verifier.verify(envelope)
        except SnsError as exc:
            status = 503 if exc.reason == "certificate_unavailable" else 403
            if exc.reason in ("malformed", "unsupported_type"):
                status = 400
            return self._reject(status, exc.reason)
        try:
            message = json.loads(envelope["Message"])
            notification_id = str(message["NotificationId"])
            object_type = str(message["ObjectType"])
            object_id = str(message["ObjectId"])
        except (ValueError, KeyError, TypeError, RecursionError):
            return self._reject(400, "malformed_message")
        if not all(_FIELD.fullmatch(v) for v in (notification_id, object_type, object_id)):
            return self._reject(400, "malformed_message")
        self.metrics.ipn_messages.add(1, {"outcome": "verified"})
        kind = OBJECT_TYPES.get(object_type)
        charge_permission_id = _text(message.get("ChargePermissionId"))
        notification = Notification(
            notification_id=notification_id,
            kind=kind,
            object_id=object_id,
            merchant=(
                None
                if kind is None
                else await self.repository.merchant_of(kind, object_id, charge_permission_id)
            ),
            charge_permission_id=charge_permission_id,
            amazon_merchant_id=_text(message.get("MerchantID")),
        )
        fresh = await self.repository.record_ipn(
            notification_id=notification_id,
            message_id=envelope["MessageId"],
            merchant=notification.merchant,
            object_type=object_type,
            object_id=object_id,
            charge_permission_id=charge_permission_id,
            notification_type=str(message.get("NotificationType") or ""),
            topic_arn=envelope["TopicArn"],
            envelope=envelope,
            amazon_merchant_id=notification.amazon_merchant_id,
            retry_in_s=self.retry_in_s,
        )
        if not fresh:
            self.metrics.ipn_messages.add(1, {"outcome": "duplicate"})
            return web.json_response({"status": "duplicate"})
        task = asyncio.create_task(self.process(notification))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return web.json_response({"status": "accepted"})

    async def process(self, notification: Notification) -> bool:
        """Read the object the notification names, for the merchant it belongs to, and record
        it; mark the notification done. A failure backs off (`IPN_ATTEMPTS`, then given up with
        an ERROR log and the `given_up` outcome). Returns whether it was processed."""
        merchant = notification.merchant
        with _tracer.start_as_current_span(
            "ipn.process",
            attributes={
                **({"amazonpay.merchant": merchant} if merchant else {}),
                "amazonpay.object_kind": notification.kind or "",
                "amazonpay.object_id": notification.object_id,
            },
        ):
            return await self._process(notification)

    async def _process(self, notification: Notification) -> bool:
        notification_id, kind = notification.notification_id, notification.kind
        if kind is None:
            await self.repository.mark_ipn_processed(notification_id)
            return True
        error: str | None = None
        try:
            for alias in await self._merchants_for(notification, kind):
                try:
                    await self.payments.read(
                        alias,
                        kind,
                        notification.object_id,
                        source="amazon",
                        deadline=None,
                        record_source="ipn",
                    )
                except AmazonPayError as exc:
                    error = type(exc).__name__ + (f"/{exc.http_status}" if exc.http_status else "")
                    if exc.http_status == 404:
                        continue  # another account's object, or none Amazon has
                    break
                await self.repository.mark_ipn_processed(notification_id, alias)
                trace.get_current_span().set_attribute("amazonpay.merchant", alias)
                return True
        except (AmazonPayError, Overloaded, LookupError, OSError, TimeoutError) as exc:
            error = type(exc).__name__
        tries = await self.repository.settle_ipn(
            notification_id,
            error=error or "no merchant",
            max_attempts=IPN_ATTEMPTS,
            backoff_s=ipn_backoff_s,
        )
        extra = {
            "kind": kind,
            "error": error,
            "attempts": tries,
            "merchant": notification.merchant,
        }
        if tries >= IPN_ATTEMPTS:
            self.metrics.ipn_messages.add(1, {"outcome": "given_up"})
            _log.error("gave up an IPN whose object could not be read", extra=extra)
        else:
            self.metrics.ipn_messages.add(1, {"outcome": "retry_later"})
            _log.warning("IPN follow-up read failed; retried later", extra=extra)
        return False

    async def _merchants_for(self, notification: Notification, kind: str) -> list[str]:
        """Who to read the object as: the merchant that recorded it (or its charge permission),
        else the account earlier notifications with the same MerchantID were for, else every
        configured account in turn (Amazon answers 404 to the others)."""
        known = notification.merchant or await self.repository.merchant_of(
            kind, notification.object_id, notification.charge_permission_id
        )
        if known is None and notification.amazon_merchant_id is not None:
            known = await self.repository.merchant_of_amazon_id(notification.amazon_merchant_id)
        if known is not None:
            return [known]
        registry = self.payments.merchants
        others = sorted(m.alias for m in registry if m.alias != registry.default_alias)
        return [registry.default_alias, *others]


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) and _FIELD.fullmatch(value) else None


_FIELD = re.compile(r"[\x21-\x7e]{1,256}")
