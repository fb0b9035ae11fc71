"""The stored form of an erasure's answer: pure logic of `ErasureResult`."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

from service.core import ErasureResult
from service.ledger import Erasure

ERASED_AT = datetime(2026, 12, 1, 20, 15, 30, 123456, tzinfo=UTC)


def test_an_answer_stored_before_erasure_moved_into_core_still_replays() -> None:
    stored = {"objects": 3, "events": 7, "erasedAt": "2026-12-01T20:15:30.123456+00:00"}
    replay = ErasureResult.from_answer(stored, replayed=True)
    assert replay == ErasureResult(objects=3, events=7, erased_at=ERASED_AT, replayed=True)


def test_the_stored_answer_round_trips_and_keeps_its_shape() -> None:
    first = ErasureResult.of(Erasure(objects=2, events=5, erased_at=ERASED_AT))
    assert not first.replayed
    answer = first.to_answer()
    assert answer == {"objects": 2, "events": 5, "erasedAt": "2026-12-01T20:15:30.123456+00:00"}
    replay = ErasureResult.from_answer(answer, replayed=True)
    assert (replay.objects, replay.events, replay.erased_at) == (2, 5, ERASED_AT)
    assert replay.replayed


def test_the_erasure_time_keeps_its_instant_across_time_zones() -> None:
    local = ERASED_AT.astimezone(timezone(timedelta(hours=-5)))
    replay = ErasureResult.from_answer(
        ErasureResult(objects=0, events=0, erased_at=local).to_answer(), replayed=True
    )
    assert replay.erased_at == ERASED_AT
    assert replay.erased_at.utcoffset() is not None
