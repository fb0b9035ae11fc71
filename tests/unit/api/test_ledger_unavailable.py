"""The one error mapper answers UNAVAILABLE for exactly what the ledger calls unavailable."""

from __future__ import annotations

import asyncpg
import grpc

from service.api._errors import to_status


def test_too_many_connections_answers_unavailable() -> None:
    status = to_status(asyncpg.TooManyConnectionsError("sorry, too many clients already"))
    assert status is not None
    assert status.code == grpc.StatusCode.UNAVAILABLE
    assert "asyncpg" not in status.details
    assert "TooManyConnections" not in status.details


def test_a_pooled_connection_caught_by_a_shutdown_answers_unavailable() -> None:
    status = to_status(asyncpg.InternalClientError("cannot switch to state 15"))
    assert status is not None
    assert status.code == grpc.StatusCode.UNAVAILABLE


def test_a_constraint_violation_is_a_bug_not_an_outage() -> None:
    assert to_status(asyncpg.UniqueViolationError("duplicate key")) is None
