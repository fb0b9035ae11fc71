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
from collections.abc import Mapping
from typing import Any

from aiohttp import web
from opentelemetry import trace

from service.amazonpay import AmazonPayError
from service.core import Payments
from service.ledger import Repository
from service.telemetry import Metrics

from ._sns import SnsError, SnsVerifier

__all__ = ["OBJECT_TYPES", "IpnReceiver"]

_log = logging.getLogger("service.workers.ipn")
_tracer = trace.get_tracer(__name__)

OBJECT_TYPES: Mapping[str, str] = {
    "CHARGE_PERMISSION": "charge_permission",
    "CHARGE": "charge",
    "REFUND": "refund",
}


class IpnReceiver:
    def __init__(
        self,
        payments: Payments,
        repository: Repository,
        verifier: SnsVerifier,
        metrics: Metrics,
        *,
        max_body_bytes: int = 64 * 1024,
    ) -> None:
        self._payments = payments
        self._repo = repository
        self._verifier = verifier
        self._metrics = metrics
        self._max_body = max_body_bytes
        self._tasks: set[asyncio.Task[None]] = set()
        self._runner: web.AppRunner | None = None
        self.port = 0

    def app(self) -> web.Application:
        app = web.Application(client_max_size=self._max_body)
        app.router.add_post("/ipn", self._traced)
        return app

    async def start(self, host: str, port: int) -> int:
        self._runner = web.AppRunner(self.app(), access_log=None, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, host, port)
        await site.start()
        server: Any = site._server
        self.port = int(server.sockets[0].getsockname()[1])
        return self.port

    async def stop(self) -> None:
        if self._runner is not None:
            runner, self._runner = self._runner, None
            await runner.cleanup()
        if self._tasks:
            await asyncio.wait(self._tasks, timeout=10)
        await self._verifier.close()

    def _reject(self, status: int, reason: str) -> web.Response:
        self._metrics.ipn_messages.add(1, {"outcome": "rejected", "reason": reason})
        _log.warning("IPN rejected", extra={"reason": reason})
        return web.json_response({"error": reason}, status=status)

    async def _traced(self, request: web.Request) -> web.Response:
        """Each IPN is one trace: verification, the follow-up read (a task started inside the
        span inherits it) and its SQL are children of this span."""
        with _tracer.start_as_current_span("ipn.receive", kind=trace.SpanKind.SERVER) as span:
            response = await self.handle(request)
            span.set_attribute("http.response.status_code", response.status)
            return response

    async def handle(self, request: web.Request) -> web.Response:
        self._metrics.ipn_messages.add(1, {"outcome": "received"})
        if request.content_length is not None and request.content_length > self._max_body:
            return self._reject(413, "too_large")
        try:
            raw = await request.read()
        except web.HTTPRequestEntityTooLarge:
            return self._reject(413, "too_large")
        try:
            envelope = json.loads(raw)
        except ValueError:
            return self._reject(400, "malformed")
        if not isinstance(envelope, dict):
            return self._reject(400, "malformed")
        try:
            await self._verifier.verify(envelope)
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
        except (ValueError, KeyError, TypeError):
            return self._reject(400, "malformed_message")
        self._metrics.ipn_messages.add(1, {"outcome": "verified"})
        kind = OBJECT_TYPES.get(object_type)
        charge_permission_id = message.get("ChargePermissionId")
        merchant = None
        if kind is not None:
            merchant = await self._repo.merchant_of(kind, object_id, charge_permission_id)
        fresh = await self._repo.record_ipn(
            notification_id=notification_id,
            message_id=envelope["MessageId"],
            merchant=merchant or self._payments.merchants.default_alias,
            object_type=object_type,
            object_id=object_id,
            charge_permission_id=charge_permission_id,
            notification_type=str(message.get("NotificationType") or ""),
            topic_arn=envelope["TopicArn"],
            envelope=envelope,
        )
        if not fresh:
            self._metrics.ipn_messages.add(1, {"outcome": "duplicate"})
            return web.json_response({"status": "duplicate"})
        task = asyncio.create_task(
            self.process(
                notification_id,
                merchant or self._payments.merchants.default_alias,
                kind,
                object_id,
            )
        )
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return web.json_response({"status": "accepted"})

    async def process(
        self, notification_id: str, merchant: str, kind: str | None, object_id: str
    ) -> None:
        """Read the object the notification names and record it; mark the notification done."""
        with _tracer.start_as_current_span(
            "ipn.process",
            attributes={
                "amazonpay.merchant": merchant,
                "amazonpay.object_kind": kind or "",
                "amazonpay.object_id": object_id,
            },
        ):
            await self._process(notification_id, merchant, kind, object_id)

    async def _process(
        self, notification_id: str, merchant: str, kind: str | None, object_id: str
    ) -> None:
        if kind is not None:
            try:
                await self._payments.read(
                    merchant, kind, object_id, source="amazon", deadline=None, record_source="ipn"
                )
            except (AmazonPayError, OSError, TimeoutError) as exc:
                _log.warning(
                    "IPN follow-up read failed; the reconciler will retry",
                    extra={"kind": kind, "error": type(exc).__name__},
                )
                return
        await self._repo.mark_ipn_processed(notification_id)
