"""Buyer-data erasure in core, replayed by idempotency key, against a real ledger."""

from __future__ import annotations

import hashlib

import pytest

from service.core import ERASE_BUYER_DATA, BuyerDataErasure, ObjectNotFound
from service.ledger import ErasureRefused, Ledger, ObjectRecord, OperationConflict

PERMISSION = "S01-1111111-2222222"
BUYER_ID = "amzn1.account.TEST"


def _permission(state: str) -> ObjectRecord:
    return ObjectRecord(
        merchant="default",
        kind="charge_permission",
        object_id=PERMISSION,
        state=state,
        is_final=state == "Closed",
        charge_permission_id=PERMISSION,
        snapshot={
            "chargePermissionId": PERMISSION,
            "statusDetails": {"state": state},
            "buyer": {"buyerId": BUYER_ID, "name": "Ada Lovelace", "email": "ada@example.com"},
            "shippingAddress": {"name": "Ada Lovelace", "city": "London"},
        },
    )


def _hash(text: str) -> bytes:
    return hashlib.sha256(text.encode()).digest()


async def test_a_repeated_erasure_with_the_same_key_replays_the_first_answer(
    ledger: Ledger,
) -> None:
    await ledger.repository.record([_permission("Closed")], "api")
    erasure = BuyerDataErasure(ledger.repository)
    first = await erasure.erase(
        "default", charge_permission_id=PERMISSION, idempotency_key="k1", request_hash=_hash("a")
    )
    assert (first.objects, first.replayed) == (1, False)
    assert first.events > 0
    replay = await erasure.erase(
        "default", charge_permission_id=PERMISSION, idempotency_key="k1", request_hash=_hash("a")
    )
    assert replay.replayed
    assert (replay.objects, replay.events, replay.erased_at) == (
        first.objects,
        first.events,
        first.erased_at,
    )
    # Without a key, erasing again is a fresh erasure that finds nothing left to erase.
    again = await erasure.erase("default", buyer_id=BUYER_ID, request_hash=_hash("b"))
    assert (again.objects, again.events, again.replayed) == (0, 0, False)


async def test_a_key_reused_for_another_request_is_a_conflict(ledger: Ledger) -> None:
    await ledger.repository.record([_permission("Closed")], "api")
    erasure = BuyerDataErasure(ledger.repository)
    await erasure.erase(
        "default", charge_permission_id=PERMISSION, idempotency_key="k1", request_hash=_hash("a")
    )
    with pytest.raises(OperationConflict):
        await erasure.erase(
            "default", buyer_id=BUYER_ID, idempotency_key="k1", request_hash=_hash("other")
        )


async def test_a_refused_erasure_stores_no_answer_so_the_key_works_after_closing(
    ledger: Ledger,
) -> None:
    await ledger.repository.record([_permission("Chargeable")], "api")
    erasure = BuyerDataErasure(ledger.repository)
    with pytest.raises(ErasureRefused) as refused:
        await erasure.erase(
            "default",
            charge_permission_id=PERMISSION,
            idempotency_key="k1",
            request_hash=_hash("a"),
        )
    assert refused.value.open_permissions == [PERMISSION]
    assert await ledger.repository.get_operation("default", ERASE_BUYER_DATA, "k1") is None

    await ledger.repository.record([_permission("Closed")], "api")
    done = await erasure.erase(
        "default", charge_permission_id=PERMISSION, idempotency_key="k1", request_hash=_hash("a")
    )
    assert (done.objects, done.replayed) == (1, False)


async def test_erasing_what_the_ledger_never_recorded_is_not_found_and_stores_nothing(
    ledger: Ledger,
) -> None:
    erasure = BuyerDataErasure(ledger.repository)
    with pytest.raises(ObjectNotFound, match="nothing is recorded"):
        await erasure.erase(
            "default", buyer_id="amzn1.account.NOBODY", idempotency_key="k1", request_hash=b"x"
        )
    assert await ledger.repository.get_operation("default", ERASE_BUYER_DATA, "k1") is None


async def test_an_erasure_without_exactly_one_target_is_refused_before_the_ledger(
    ledger: Ledger,
) -> None:
    erasure = BuyerDataErasure(ledger.repository)
    with pytest.raises(ValueError, match="exactly one"):
        await erasure.erase("default", request_hash=b"x")
    with pytest.raises(ValueError, match="exactly one"):
        await erasure.erase(
            "default", charge_permission_id=PERMISSION, buyer_id=BUYER_ID, request_hash=b"x"
        )
