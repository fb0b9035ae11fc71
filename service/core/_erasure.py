"""Erasing buyer data: a ledger-only operation, answered once per idempotency key.

No Amazon call is made, so there is nothing to re-drive: the first answer stored for a key is the
answer every repeat of the same request gets. No gRPC and no SQL in here.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from service.ledger import Erasure, Repository

from ._operations import ObjectNotFound

__all__ = ["ERASE_BUYER_DATA", "BuyerDataErasure", "ErasureResult"]

_log = logging.getLogger("service.core.erasure")

ERASE_BUYER_DATA = "EraseBuyerData"
"""The operation name its answers are stored under (with the caller's idempotency key)."""


@dataclass(frozen=True)
class ErasureResult:
    """What an erasure changed, and whether this answer is a replay of a stored one."""

    objects: int
    events: int
    erased_at: datetime
    replayed: bool = False

    def to_answer(self) -> dict[str, Any]:
        """The stored form; answers stored before this module existed have the same shape."""
        return {
            "objects": self.objects,
            "events": self.events,
            "erasedAt": self.erased_at.isoformat(),
        }

    @classmethod
    def from_answer(cls, answer: Mapping[str, Any], *, replayed: bool) -> ErasureResult:
        return cls(
            objects=int(answer["objects"]),
            events=int(answer["events"]),
            erased_at=datetime.fromisoformat(answer["erasedAt"]),
            replayed=replayed,
        )

    @classmethod
    def of(cls, erasure: Erasure) -> ErasureResult:
        return cls(objects=erasure.objects, events=erasure.events, erased_at=erasure.erased_at)


class BuyerDataErasure:
    """Erases the buyer data of a charge permission or of a buyer, once per idempotency key.

    `service.ledger.ErasureRefused` (a charge permission involved is not Closed) and
    `service.ledger.OperationConflict` (the key was used for another request) pass through to the
    caller's error mapping; nothing recorded for the target is `ObjectNotFound`.
    """

    def __init__(self, repository: Repository) -> None:
        self.repository = repository

    async def erase(
        self,
        merchant: str,
        *,
        charge_permission_id: str | None = None,
        buyer_id: str | None = None,
        idempotency_key: str | None = None,
        request_hash: bytes,
        reason_given: bool = False,
    ) -> ErasureResult:
        """Erase for `merchant` (its alias), or replay the answer stored for the key."""
        if (charge_permission_id is None) == (buyer_id is None):
            raise ValueError("name exactly one of charge_permission_id and buyer_id")
        if idempotency_key:
            stored = await self.repository.stored_answer(
                merchant=merchant,
                operation=ERASE_BUYER_DATA,
                idempotency_key=idempotency_key,
                request_hash=request_hash,
            )
            if stored is not None:
                return ErasureResult.from_answer(stored, replayed=True)
        try:
            erasure = await self.repository.erase_buyer_data(
                merchant, charge_permission_id=charge_permission_id, buyer_id=buyer_id
            )
        except LookupError:
            raise ObjectNotFound(
                "nothing is recorded for this charge permission or buyer"
            ) from None
        _log.info(
            "buyer data erased",
            extra={
                "target": "charge_permission_id" if charge_permission_id else "buyer_id",
                "objects": erasure.objects,
                "reason_given": reason_given,
            },
        )
        result = ErasureResult.of(erasure)
        if not idempotency_key:
            return result
        # A concurrent twin may have stored its answer first: every caller gets that one.
        stored = await self.repository.store_answer(
            merchant=merchant,
            operation=ERASE_BUYER_DATA,
            idempotency_key=idempotency_key,
            request_hash=request_hash,
            answer=result.to_answer(),
        )
        return ErasureResult.from_answer(stored, replayed=False)
