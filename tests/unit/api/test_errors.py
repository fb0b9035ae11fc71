"""The one error mapper: refusals raised below the edge become rich statuses."""

from __future__ import annotations

import grpc
from google.rpc import error_details_pb2, status_pb2

from service.api._errors import SERVICE_DOMAIN, SERVICE_REASONS, to_status
from service.core import ObjectNotFound
from service.ledger import ErasureRefused


def _info(status: grpc.Status) -> error_details_pb2.ErrorInfo:
    details = dict(status.trailing_metadata)["grpc-status-details-bin"]
    assert isinstance(details, bytes)
    for detail in status_pb2.Status.FromString(details).details:
        if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            detail.Unpack(info)
            return info
    raise AssertionError("no ErrorInfo")


def test_an_erasure_refused_for_open_permissions_names_them_and_says_close_first() -> None:
    status = to_status(ErasureRefused(["S01-1111111-2222222", "S01-3333333-4444444"]))
    assert status is not None
    assert status.code == grpc.StatusCode.FAILED_PRECONDITION
    assert status.details == (
        "close the charge permission before erasing its buyer data: "
        "S01-1111111-2222222, S01-3333333-4444444"
    )
    info = _info(status)
    assert (info.reason, info.domain) == ("CHARGE_PERMISSION_OPEN", SERVICE_DOMAIN)
    assert info.reason in SERVICE_REASONS
    assert "ErasureRefused" not in status.details


def test_an_erasure_with_nothing_recorded_is_not_in_ledger() -> None:
    status = to_status(ObjectNotFound("nothing is recorded for this charge permission or buyer"))
    assert status is not None
    assert status.code == grpc.StatusCode.NOT_FOUND
    assert status.details == "nothing is recorded for this charge permission or buyer"
    assert _info(status).reason == "NOT_IN_LEDGER"
