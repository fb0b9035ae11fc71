"""IPN v2: SNS-enveloped notifications, signed like Amazon SNS, delivered off the request path."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import uuid
from typing import Any

import aiohttp
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from .clock import Clock, fmt_iso_ms
from .tls import sns_signing_identity

Obj = dict[str, Any]
SIGNED_KEYS_NOTIFICATION = ("Message", "MessageId", "Subject", "Timestamp", "TopicArn", "Type")


def sns_string_to_sign(envelope: Obj) -> bytes:
    """SNS canonical form: `Key\\nValue\\n` for each present key, in SNS's fixed order."""
    parts = []
    for key in SIGNED_KEYS_NOTIFICATION:
        if key in envelope and envelope[key] is not None:
            parts.append(f"{key}\n{envelope[key]}\n")
    return "".join(parts).encode()


class IpnDispatcher:
    def __init__(
        self,
        clock: Clock,
        urls: list[str] | None = None,
        signature_version: str = "2",
        max_attempts: int = 6,
        retry_base_seconds: float = 0.5,
    ) -> None:
        self.clock = clock
        self.subscriptions: list[str] = list(urls or [])
        self.enabled = True
        self.signature_version = signature_version
        self.max_attempts = max_attempts
        self.retry_base_seconds = retry_base_seconds
        self.base_url = "http://127.0.0.1"
        self.deliveries: list[Obj] = []
        self._signing_key, self.cert_pem = sns_signing_identity()
        self._queue: asyncio.Queue[Obj] | None = None
        self._worker: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._session: aiohttp.ClientSession | None = None

    @property
    def signing_key(self) -> rsa.RSAPrivateKey:
        return self._signing_key

    def settings(self) -> Obj:
        return {
            "enabled": self.enabled,
            "subscriptions": self.subscriptions,
            "signatureVersion": self.signature_version,
            "maxAttempts": self.max_attempts,
            "retryBaseSeconds": self.retry_base_seconds,
            "signingCertUrl": f"{self.base_url}/_emulator/sns/cert.pem",
        }

    def envelope(self, *, merchant_id: str, object_type: str, object_id: str, cp_id: str) -> Obj:
        message = {
            "MerchantID": merchant_id,
            "ObjectType": object_type,
            "ObjectId": object_id,
            "ChargePermissionId": cp_id,
            "NotificationType": "STATE_CHANGE",
            "NotificationId": uuid.uuid4().hex,
            "NotificationVersion": "V2",
        }
        message_id = str(uuid.uuid4())
        topic = f"arn:aws:sns:us-east-1:000000000000:{merchant_id}"
        env: Obj = {
            "Type": "Notification",
            "MessageId": message_id,
            "TopicArn": topic,
            "Message": json.dumps(message),
            "Timestamp": fmt_iso_ms(self.clock.now()),
            "SignatureVersion": self.signature_version,
            "Signature": "",
            "SigningCertURL": f"{self.base_url}/_emulator/sns/cert.pem",
            "UnsubscribeURL": (
                f"{self.base_url}/_emulator/sns/unsubscribe?SubscriptionArn={topic}:{message_id}"
            ),
        }
        digest: hashes.HashAlgorithm = (
            hashes.SHA1() if self.signature_version == "1" else hashes.SHA256()  # noqa: S303
        )
        signature = self._signing_key.sign(sns_string_to_sign(env), padding.PKCS1v15(), digest)
        env["Signature"] = base64.b64encode(signature).decode()
        return env

    def notify(self, object_type: str, object_id: str, cp_id: str, merchant_id: str) -> None:
        """Called synchronously by the engine; only records and enqueues, never waits."""
        if not self.subscriptions:
            return
        envelope = self.envelope(
            merchant_id=merchant_id, object_type=object_type, object_id=object_id, cp_id=cp_id
        )
        for url in self.subscriptions:
            record: Obj = {
                "id": len(self.deliveries) + 1,
                "url": url,
                "objectType": object_type,
                "objectId": object_id,
                "chargePermissionId": cp_id,
                "messageId": envelope["MessageId"],
                "notificationId": json.loads(envelope["Message"])["NotificationId"],
                "status": "pending" if self.enabled else "disabled",
                "attempts": 0,
                "lastStatus": None,
                "lastError": None,
                "envelope": envelope,
            }
            self.deliveries.append(record)
            if self.enabled and self._queue is not None:
                self._queue.put_nowait(record)

    async def start(self) -> None:
        self._queue = asyncio.Queue()
        self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10))
        self._worker = asyncio.create_task(self._run())
        for record in self.deliveries:
            if record["status"] == "pending":
                self._queue.put_nowait(record)

    async def stop(self) -> None:
        tasks = [t for t in (self._worker, *self._tasks) if t is not None]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self._session is not None:
            await self._session.close()

    async def _run(self) -> None:
        assert self._queue is not None
        while True:
            record = await self._queue.get()
            task = asyncio.create_task(self._deliver(record))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _deliver(self, record: Obj) -> None:
        assert self._session is not None
        body = json.dumps(record["envelope"])
        headers = {
            "content-type": "text/plain; charset=UTF-8",
            "x-amz-sns-message-type": "Notification",
            "x-amz-sns-message-id": record["messageId"],
            "x-amz-sns-topic-arn": record["envelope"]["TopicArn"],
        }
        while record["attempts"] < self.max_attempts:
            record["attempts"] += 1
            try:
                async with self._session.post(record["url"], data=body, headers=headers) as resp:
                    record["lastStatus"] = resp.status
                    if 200 <= resp.status < 300:
                        record["status"] = "delivered"
                        return
                    record["lastError"] = f"HTTP {resp.status}"
            except (aiohttp.ClientError, TimeoutError) as exc:
                record["lastError"] = f"{type(exc).__name__}: {exc}"
            if record["attempts"] < self.max_attempts:
                await asyncio.sleep(
                    min(30.0, self.retry_base_seconds * 2 ** (record["attempts"] - 1))
                )
        record["status"] = "failed"

    def listing(self) -> Obj:
        return {**self.settings(), "deliveries": self.deliveries}
