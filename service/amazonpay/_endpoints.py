"""Every Amazon Pay v2 operation this client sends, one row each.

The row is the single place an operation's HTTP facts live: verb, path template under the
account's ``/v2`` prefix, which header parameters it takes, whether Amazon replays a repeat by
idempotency key, its query parameters, and the model of its answer. :meth:`AmazonPayClient.invoke` sends any row.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field

from ._models import (
    ApiObject,
    Buyer,
    Charge,
    ChargePermission,
    CheckoutSession,
    DeliveryTracker,
    DisbursementList,
    Dispute,
    Refund,
    Report,
    ReportDocument,
    ReportList,
    ReportSchedule,
    ReportScheduleList,
)

__all__ = ["ENDPOINTS", "Endpoint"]

_PLACEHOLDER = re.compile(r"\{([A-Za-z]+)\}")


@dataclass(frozen=True, slots=True)
class Endpoint:
    """One Amazon operation."""

    name: str
    """Amazon's name of the operation, e.g. ``CaptureCharge``."""
    method: str
    """HTTP verb."""
    path: str
    """Template under the API prefix, e.g. ``/charges/{chargeId}/capture``."""
    response: type[ApiObject] = ApiObject
    """Model of a successful answer (``ApiObject``, the JSON as it came, for one the service
    passes through without reading its fields)."""
    replayed_by_key: bool = False
    """Amazon answers a repeat with the same idempotency key with its first answer."""
    takes_simulation_code: bool = False
    """Sandbox accepts ``x-amz-pay-simulation-code`` for it."""
    refusals_once_applied: frozenset[str] = frozenset()
    """For an operation Amazon does not replay: the ``reasonCode`` a repeat gets once the first
    call was applied (the object's state moved on). Such a refusal is settled by reading it."""
    default_store_id: bool = False
    """``storeId`` is filled in from the account when the body lacks it."""
    query: frozenset[str] = frozenset()
    """Query parameters Amazon documents for it (``invoke(query=...)`` takes no others)."""
    label: str = field(init=False)
    """snake_case name used in metrics, logs and errors (``capture_charge``)."""
    path_params: tuple[str, ...] = field(init=False)
    """Placeholders of ``path``, in order."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "label", re.sub(r"(?<!^)(?=[A-Z])", "_", self.name).lower())
        object.__setattr__(self, "path_params", tuple(_PLACEHOLDER.findall(self.path)))

    @property
    def takes_idempotency_key(self) -> bool:
        """Every POST carries ``x-amz-pay-idempotency-key`` (Amazon requires it)."""
        return self.method == "POST"


def _table(*rows: Endpoint) -> Mapping[str, Endpoint]:
    table: dict[str, Endpoint] = {}
    for row in rows:
        if row.name in table:
            raise ValueError(f"endpoint {row.name} is listed twice")
        table[row.name] = row
    return table


def _payment_post(
    name: str, path: str, response: type[ApiObject], *, default_store_id: bool = False
) -> Endpoint:
    """A POST that starts a payment step: Amazon replays a repeat by idempotency key, and the
    sandbox simulates its outcomes."""
    return Endpoint(
        name,
        "POST",
        path,
        response,
        replayed_by_key=True,
        takes_simulation_code=True,
        default_store_id=default_store_id,
    )


_SESSION_STATE = frozenset({"InvalidCheckoutSessionStatus"})
_REPORT_FILTERS = frozenset(
    {"reportTypes", "processingStatuses", "createdSince", "createdUntil", "pageSize", "nextToken"}
)

ENDPOINTS: Mapping[str, Endpoint] = _table(
    _payment_post(
        "CreateCheckoutSession", "/checkoutSessions", CheckoutSession, default_store_id=True
    ),
    Endpoint("GetCheckoutSession", "GET", "/checkoutSessions/{checkoutSessionId}", CheckoutSession),
    Endpoint(
        "UpdateCheckoutSession",
        "PATCH",
        "/checkoutSessions/{checkoutSessionId}",
        CheckoutSession,
        refusals_once_applied=_SESSION_STATE,
    ),
    # Complete and Finalize are POSTs whose reference takes no idempotency key: a repeat is
    # refused as a state error, not replayed.
    Endpoint(
        "CompleteCheckoutSession",
        "POST",
        "/checkoutSessions/{checkoutSessionId}/complete",
        CheckoutSession,
        takes_simulation_code=True,
        refusals_once_applied=_SESSION_STATE,
    ),
    Endpoint(
        "FinalizeCheckoutSession",
        "POST",
        "/checkoutSessions/{checkoutSessionId}/finalize",
        CheckoutSession,
        takes_simulation_code=True,
        refusals_once_applied=_SESSION_STATE,
    ),
    Endpoint(
        "GetChargePermission", "GET", "/chargePermissions/{chargePermissionId}", ChargePermission
    ),
    Endpoint(
        "UpdateChargePermission",
        "PATCH",
        "/chargePermissions/{chargePermissionId}",
        ChargePermission,
        refusals_once_applied=frozenset(
            {"InvalidChargePermissionStatus", "ChargePermissionNotModifiable"}
        ),
    ),
    Endpoint(
        "CloseChargePermission",
        "DELETE",
        "/chargePermissions/{chargePermissionId}/close",
        ChargePermission,
        takes_simulation_code=True,
        refusals_once_applied=frozenset({"InvalidChargePermissionStatus"}),
    ),
    _payment_post("CreateCharge", "/charges", Charge),
    Endpoint("GetCharge", "GET", "/charges/{chargeId}", Charge),
    _payment_post("CaptureCharge", "/charges/{chargeId}/capture", Charge),
    Endpoint(
        "CancelCharge",
        "DELETE",
        "/charges/{chargeId}/cancel",
        Charge,
        refusals_once_applied=frozenset({"InvalidChargeStatus"}),
    ),
    _payment_post("CreateRefund", "/refunds", Refund),
    Endpoint("GetRefund", "GET", "/refunds/{refundId}", Refund),
    Endpoint("GetBuyer", "GET", "/buyers/{buyerToken}", Buyer),
    Endpoint(
        "CreateDeliveryTracker", "POST", "/deliveryTrackers", DeliveryTracker, replayed_by_key=True
    ),
    # Reports API (amazon-pay-api-v2/reports.html) and Get Disbursements
    # (amazon-pay-reports/request-disbursement-details.html). A POST with a key is replayed
    # (amazon-pay-api-v2/idempotency.html); a repeated cancel is a 404.
    Endpoint("GetReports", "GET", "/reports", ReportList, query=_REPORT_FILTERS),
    Endpoint("GetReportById", "GET", "/reports/{reportId}", Report),
    Endpoint("CreateReport", "POST", "/reports", Report, replayed_by_key=True),
    Endpoint("GetReportDocument", "GET", "/report-documents/{reportDocumentId}", ReportDocument),
    Endpoint(
        "GetReportSchedules",
        "GET",
        "/report-schedules",
        ReportScheduleList,
        query=frozenset({"reportTypes"}),
    ),
    Endpoint(
        "GetReportScheduleById", "GET", "/report-schedules/{reportScheduleId}", ReportSchedule
    ),
    Endpoint(
        "CreateReportSchedule", "POST", "/report-schedules", ReportSchedule, replayed_by_key=True
    ),
    Endpoint(
        "CancelReportSchedule", "DELETE", "/report-schedules/{reportScheduleId}", ReportSchedule
    ),
    Endpoint(
        "GetDisbursements",
        "GET",
        "/disbursements",
        DisbursementList,
        query=frozenset({"startTime", "endTime", "pageSize", "nextToken"}),
    ),
    # Dispute API (amazon-pay-api-v2/dispute.html): the merchant's read.
    Endpoint("GetDispute", "GET", "/disputes/{disputeId}", Dispute),
)
