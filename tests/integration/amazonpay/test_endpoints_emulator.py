"""Every row of ``ENDPOINTS`` sent by ``AmazonPayClient.invoke`` to the emulator over real HTTP."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from cryptography.hazmat.primitives import serialization

from emulator import EmulatorConfig, RunningEmulator, run_emulator
from emulator.testing import generate_key
from service.amazonpay import (
    ENDPOINTS,
    AmazonPayClient,
    ApiObject,
    AttemptEvent,
    MerchantAccount,
    PrivateKey,
)

KEY_ID = "AHENDPOINTTABLE"
STORE_ID = "amzn1.application-oa2-client.endpointtable"
USD = {"amount": "100.00", "currencyCode": "USD"}
SANDBOX_SETTLEMENT = "_GET_FLAT_FILE_OFFAMAZONPAYMENTS_SANDBOX_SETTLEMENT_DATA_"


@pytest.fixture
async def emulated() -> AsyncIterator[tuple[RunningEmulator, MerchantAccount]]:
    key, public_pem = generate_key()
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    async with run_emulator(EmulatorConfig(keys={KEY_ID: public_pem})) as running:
        account = MerchantAccount(
            public_key_id=KEY_ID,
            private_key=PrivateKey.from_pem(pem),
            endpoint=running.url,
            store_id=STORE_ID,
        )
        yield running, account


class Buyer:
    """The buyer's side of a checkout: the emulator's control plane."""

    def __init__(self, http: aiohttp.ClientSession, base_url: str) -> None:
        self.http = http
        self.base_url = base_url

    async def act(self, path: str, body: Any = None) -> dict[str, Any]:
        async with self.http.post(f"{self.base_url}/_emulator{path}", json=body or {}) as resp:
            assert resp.status == 200, await resp.text()
            result: dict[str, Any] = await resp.json()
            return result


async def test_every_endpoint_row_is_answered_by_the_emulator(
    emulated: tuple[RunningEmulator, MerchantAccount],
) -> None:
    running, account = emulated
    sent: list[AttemptEvent] = []
    answered: dict[str, ApiObject] = {}
    async with (
        aiohttp.ClientSession() as http,
        AmazonPayClient(account, on_attempt=sent.append) as client,
    ):
        buyer = Buyer(http, running.url)
        keys = iter(f"endpoint-table-{n}" for n in range(100))

        async def call(name: str, **kwargs: Any) -> dict[str, Any]:
            if ENDPOINTS[name].takes_idempotency_key:
                kwargs["idempotency_key"] = next(keys)
            answer = await client.invoke(name, timeout=10.0, **kwargs)
            assert isinstance(answer, ENDPOINTS[name].response), name
            assert answer.http_status is not None
            assert 200 <= answer.http_status < 300
            answered[name] = answer
            return dict(answer.raw)

        review = {"webCheckoutDetails": {"checkoutReviewReturnUrl": "https://shop.example/r"}}
        session = await call("CreateCheckoutSession", body=review)
        sid = {"checkoutSessionId": session["checkoutSessionId"]}
        assert session["storeId"] == STORE_ID
        await call("GetCheckoutSession", path_params=sid)
        signed_in = await buyer.act(f"/checkoutSessions/{sid['checkoutSessionId']}/signIn")
        await call("GetBuyer", path_params={"buyerToken": signed_in["buyerToken"]})
        await call(
            "UpdateCheckoutSession",
            path_params=sid,
            body={
                "webCheckoutDetails": {"checkoutResultReturnUrl": "https://shop.example/done"},
                "paymentDetails": {"paymentIntent": "Authorize", "chargeAmount": USD},
            },
        )
        await buyer.act(f"/checkoutSessions/{sid['checkoutSessionId']}/confirm")
        completed = await call(
            "CompleteCheckoutSession", path_params=sid, body={"chargeAmount": USD}
        )
        charge = {"chargeId": completed["chargeId"]}
        permission = {"chargePermissionId": completed["chargePermissionId"]}
        await call("GetCharge", path_params=charge)
        await call("GetChargePermission", path_params=permission)
        await call(
            "UpdateChargePermission",
            path_params=permission,
            body={"merchantMetadata": {"merchantReferenceId": "order-1"}},
        )
        await call("CaptureCharge", path_params=charge, body={"captureAmount": USD})
        refund = await call(
            "CreateRefund",
            body={"chargeId": charge["chargeId"], "refundAmount": {**USD, "amount": "10.00"}},
        )
        await call("GetRefund", path_params={"refundId": refund["refundId"]})
        await call(
            "CreateDeliveryTracker",
            body={
                "chargePermissionId": permission["chargePermissionId"],
                "deliveryDetails": [{"trackingNumber": "1Z999", "carrierCode": "UPS"}],
            },
        )

        both_urls = {
            "webCheckoutDetails": {
                **review["webCheckoutDetails"],
                "checkoutResultReturnUrl": "https://shop.example/done",
            }
        }
        second = await call("CreateCheckoutSession", body=both_urls)
        second_id = {"checkoutSessionId": second["checkoutSessionId"]}
        await buyer.act(f"/checkoutSessions/{second_id['checkoutSessionId']}/signIn")
        finalized = await call(
            "FinalizeCheckoutSession",
            path_params=second_id,
            body={"chargeAmount": USD, "paymentIntent": "Authorize"},
        )
        second_permission = {"chargePermissionId": finalized["chargePermissionId"]}
        await call(
            "CancelCharge",
            path_params={"chargeId": finalized["chargeId"]},
            body={"cancellationReason": "out of stock"},
        )
        new_charge = await call(
            "CreateCharge",
            body={**second_permission, "chargeAmount": USD, "captureNow": False},
        )
        assert new_charge["chargePermissionId"] == second_permission["chargePermissionId"]
        await call(
            "CloseChargePermission",
            path_params=second_permission,
            body={"closureReason": "order done", "cancelPendingCharges": True},
        )

        async with http.post(
            f"{running.url}/_emulator/disputes", json={"chargeId": charge["chargeId"]}
        ) as resp:
            assert resp.status == 201, await resp.text()
            dispute = await resp.json()
        await call("GetDispute", path_params={"disputeId": dispute["disputeId"]})
        closed = await buyer.act("/settlement/close")
        settlement_type = {"reportTypes": SANDBOX_SETTLEMENT}
        listed = await call("GetReports", query={**settlement_type, "pageSize": "5"})
        assert [r["reportId"] for r in listed["reports"]] == [closed["reportId"]]
        await call("GetReportById", path_params={"reportId": closed["reportId"]})
        await call(
            "GetReportDocument", path_params={"reportDocumentId": closed["reportDocumentId"]}
        )
        span = {"startTime": "20000101T000000Z", "endTime": "20991231T000000Z"}
        await call("CreateReport", body={"reportType": SANDBOX_SETTLEMENT, **span})
        schedule = await call(
            "CreateReportSchedule",
            body={"reportType": SANDBOX_SETTLEMENT, "scheduleFrequency": "P1D"},
        )
        schedule_id = {"reportScheduleId": schedule["reportScheduleId"]}
        await call("GetReportSchedules", query=settlement_type)
        await call("GetReportScheduleById", path_params=schedule_id)
        await call("CancelReportSchedule", path_params=schedule_id)
        paid = await call("GetDisbursements", query=span)
        assert [d["settlementId"] for d in paid["disbursements"]] == [closed["settlementId"]]

    assert set(answered) == set(ENDPOINTS)
    assert {event.operation for event in sent} == {row.label for row in ENDPOINTS.values()}
