"""The reconciler: a background task in every replica that makes sure the ledger never misses an
outcome, IPN or not.

Each pass:
1. re-drives operations whose process died between Amazon's answer and the ledger commit;
2. retries IPN follow-up reads that never finished, claimed with SKIP LOCKED and backed off per
   notification until given up;
3. polls non-final objects that are due, leased with `FOR UPDATE SKIP LOCKED` so no object is
   polled by two replicas at once, on an exponential schedule per object (reset when its state
   changes);
4. refreshes the lag gauge (age of the oldest pending object).

Amazon expires objects itself (sessions 24 h, authorizations 30 days, one-time charge permissions
180 days); polling records those expiries like any other transition, with source `poll`.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from datetime import UTC, datetime

from opentelemetry import trace

from service.amazonpay import AmazonPayError
from service.core import Payments
from service.ledger import Repository, StoredObject
from service.telemetry import Metrics

from ._ipn import OBJECT_TYPES, IpnReceiver, Notification
from ._loop import Worker

__all__ = ["PassResult", "Reconciler", "ReconcilerSettings"]

_log = logging.getLogger("service.workers.reconciler")
_tracer = trace.get_tracer(__name__)


@dataclass(frozen=True)
class ReconcilerSettings:
    interval_s: float = 5.0
    """Pause between passes."""
    poll_base_s: float = 30.0
    """First re-poll delay of a pending object; doubles per unchanged poll."""
    poll_max_s: float = 3600.0
    """Longest delay between polls of a pending charge, refund or session (Amazon suggests
    hourly). Charge permissions, which change rarely and are announced by IPN, use 24 times it."""
    batch: int = 50
    """Objects leased per pass."""
    lease_s: float = 60.0
    """How long a replica owns a leased object before another may take it."""
    pii_retention_days: int | None = None
    """Erase buyer PII recorded longer ago than this (None: keep)."""
    retention_every_s: float = 3600.0
    """How often the retention sweep runs."""


@dataclass(frozen=True)
class PassResult:
    redriven: int
    ipn_retried: int
    polled: int
    changed: int


class Reconciler(Worker[PassResult], name="reconciler", max_backoff_s=30.0):
    def __init__(
        self,
        payments: Payments,
        repository: Repository,
        metrics: Metrics,
        settings: ReconcilerSettings,
        ipn: IpnReceiver | None = None,
    ) -> None:
        self._payments = payments
        self._repo = repository
        self._metrics = metrics
        self._settings = settings
        self._ipn = ipn
        self._owner = payments.instance_id
        self.interval_s = settings.interval_s
        self._next_retention = 0.0

    async def _pass(self) -> PassResult:
        redriven = await self._payments.redrive_orphans()
        if redriven:
            self._metrics.redriven_operations.add(redriven)
        ipn_retried = await self._retry_ipns()
        await self._payments.read_missing_related()
        objects = await self._repo.lease_due_objects(
            owner=self._owner, lease_s=self._settings.lease_s, limit=self._settings.batch
        )
        changed = 0
        for obj in objects:
            changed += await self._poll(obj)
        self._metrics.oldest_pending_age_s = await self._repo.oldest_pending_age_s()
        self._metrics.owed_reads = await self._repo.owed_read_counts()
        self._metrics.backlog = await self._repo.backlog()
        await self._retention()
        return PassResult(
            redriven=redriven, ipn_retried=ipn_retried, polled=len(objects), changed=changed
        )

    async def _retention(self) -> None:
        days = self._settings.pii_retention_days
        if days is None or time.monotonic() < self._next_retention:
            return
        self._next_retention = time.monotonic() + self._settings.retention_every_s
        erased = await self._repo.erase_expired_pii(older_than_days=days)
        if erased:
            _log.info("buyer PII past retention erased", extra={"values": erased})

    async def _retry_ipns(self) -> int:
        if self._ipn is None:
            return 0
        pending = await self._repo.claim_ipns(
            limit=self._settings.batch, lease_s=self._settings.lease_s
        )
        for row in pending:
            await self._ipn.process(
                Notification(
                    notification_id=row["notification_id"],
                    kind=OBJECT_TYPES.get(row["object_type"]),
                    object_id=row["object_id"],
                    merchant=row["merchant"],
                    charge_permission_id=row["charge_permission_id"],
                    amazon_merchant_id=row["amazon_merchant_id"],
                )
            )
        return len(pending)

    async def _poll(self, obj: StoredObject) -> int:
        before = (obj.state, obj.reason_code)
        next_in: float | None
        outcome = "unchanged"
        try:
            await self._payments.read(
                obj.merchant,
                obj.kind,
                obj.object_id,
                source="amazon",
                deadline=time.monotonic() + 30,
                record_source="poll",
            )
            stored = await self._repo.get_object(obj.merchant, obj.kind, obj.object_id)
            if stored is not None and (stored.state, stored.reason_code) != before:
                outcome = "changed"
            next_in = self._next_poll(stored or obj, 0 if outcome == "changed" else None)
        except AmazonPayError as exc:
            if exc.http_status == 404:
                outcome = "gone"
                next_in = None
                _log.info(
                    "object no longer at Amazon; the ledger keeps its last state",
                    extra={"kind": obj.kind},
                )
            else:
                outcome = "failed"
                next_in = self._next_poll(obj, None)
        except LookupError:
            outcome = "unknown_merchant"
            next_in = None
        self._metrics.reconciler_polls.add(1, {"kind": obj.kind, "outcome": outcome})
        await self._repo.finish_poll(
            obj.merchant, obj.kind, obj.object_id, owner=self._owner, next_poll_in_s=next_in
        )
        return 1 if outcome == "changed" else 0

    def _next_poll(self, obj: StoredObject, attempts: int | None) -> float:
        """Exponential per object; an open checkout session waits for its 24 h expiry instead."""
        s = self._settings
        tries = min(obj.poll_attempts if attempts is None else attempts, 40)
        cap = s.poll_max_s * 24 if obj.kind == "charge_permission" else s.poll_max_s
        delay: float = min(s.poll_base_s * float(2**tries), cap)
        if obj.kind == "checkout_session" and obj.state == "Open" and obj.amazon_expires_at:
            until_expiry = (obj.amazon_expires_at - datetime.now(UTC)).total_seconds()
            delay = max(delay, min(until_expiry + 60, s.poll_max_s * 24))
        return delay
