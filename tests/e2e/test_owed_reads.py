"""Reads the reconciler owes: what a completed checkout named, when the follow-up read failed."""

from __future__ import annotations

import logging

import pytest

from service.app import Application
from service.core import OWED_READ_ATTEMPTS
from tests._emulator import EmulatorProcess
from tests.e2e._flows import checkout, record_completed_session_naming
from tests.e2e.conftest import Stubs


async def _owed(app: Application) -> list[tuple[str, int]]:
    assert app.ledger is not None
    rows = await app.ledger.pool.fetch("SELECT kind, attempts FROM owed_reads ORDER BY kind")
    return [(r["kind"], r["attempts"]) for r in rows]


async def _make_due(app: Application) -> None:
    assert app.ledger is not None
    await app.ledger.pool.execute("UPDATE owed_reads SET due_at = now()")


async def test_objects_a_checkout_named_are_read_later_when_the_follow_up_failed(
    app: Application, api: Stubs, clean_emulator: EmulatorProcess
) -> None:
    assert app.payments is not None
    assert app.ledger is not None
    for operation in ("GetChargePermission", "GetCharge"):
        await clean_emulator.control(
            "POST",
            "faults",
            {
                "operation": operation,
                "count": None,
                "status": 404,
                "reasonCode": "ResourceNotFound",
            },
        )
    done = await checkout(api, clean_emulator)
    repo = app.ledger.repository
    assert await repo.get_object("default", "charge", done.charge_id) is None

    assert await app.payments.read_missing_related() == 2
    assert await _owed(app) == [("charge", 1), ("charge_permission", 1)]
    assert await app.payments.read_missing_related() == 0  # backing off, not hammering Amazon

    await clean_emulator.control("DELETE", "faults")
    await _make_due(app)
    assert await app.payments.read_missing_related() == 2
    charge = await repo.get_object("default", "charge", done.charge_id)
    permission = await repo.get_object("default", "charge_permission", done.charge_permission_id)
    assert charge is not None
    assert permission is not None
    assert await _owed(app) == []


async def test_an_object_amazon_does_not_have_is_given_up_after_bounded_attempts(
    app: Application, clean_emulator: EmulatorProcess, caplog: pytest.LogCaptureFixture
) -> None:
    assert app.payments is not None
    assert app.ledger is not None
    gone = "S01-0000000-0000404"
    await record_completed_session_naming(app, "session-of-a-deleted-charge", f"{gone}-C000001")
    with caplog.at_level(logging.WARNING, logger="service.core.operations"):
        for attempt in range(1, OWED_READ_ATTEMPTS):
            assert await app.payments.read_missing_related() == 1
            assert await _owed(app) == [("charge", attempt)]
            await _make_due(app)
        assert await app.payments.read_missing_related() == 1
    assert await _owed(app) == []
    assert await app.payments.read_missing_related() == 0
    gave_up = [
        r
        for r in caplog.records
        if r.getMessage() == "gave up reading an object the ledger is owed"
    ]
    assert len(gave_up) == 1
    assert gave_up[0].levelno == logging.ERROR
