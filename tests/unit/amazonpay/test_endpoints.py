"""The endpoint table: one row per Amazon operation, and every operation core sends is a row."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest
from yarl import URL

from service.amazonpay import (
    ENDPOINTS,
    AmazonPayClient,
    AmazonPayError,
    AmazonPayRequestError,
    Endpoint,
    HttpRequest,
    HttpResponse,
    MerchantAccount,
    MockTransport,
    PrivateKey,
    ReportList,
    _endpoints,
    canonical_request,
    parse_authorization_header,
    verify_signature,
)
from service.core._operations import GETTERS, NOT_REPLAYED, SPECS

PRIVATE_PEM = Path(__file__).resolve().parents[2] / "data/signing-vectors/test-key-private.pem"
PUBLIC_PEM = PRIVATE_PEM.with_name("test-key-public.pem")
NOWHERE = "http://127.0.0.1:9"
"""Never reached: every call here is refused before it is sent."""


def test_every_operation_the_core_sends_is_in_the_table_exactly_once() -> None:
    used = [*SPECS, *GETTERS.values(), "GetBuyer"]
    assert set(used) <= set(ENDPOINTS)
    assert Counter(row.name for row in ENDPOINTS.values()) == Counter(set(ENDPOINTS))
    assert all(name == row.name for name, row in ENDPOINTS.items())
    assert len({(row.method, row.path) for row in ENDPOINTS.values()}) == len(ENDPOINTS)


def test_a_table_naming_an_operation_twice_is_refused() -> None:
    row = Endpoint("GetCharge", "GET", "/charges/{chargeId}", ENDPOINTS["GetCharge"].response)
    with pytest.raises(ValueError, match="GetCharge"):
        _endpoints._table(row, row)


def test_rows_derive_their_metric_label_and_path_parameters() -> None:
    capture = ENDPOINTS["CaptureCharge"]
    assert capture.label == "capture_charge"
    assert capture.path_params == ("chargeId",)
    assert ENDPOINTS["CreateDeliveryTracker"].label == "create_delivery_tracker"
    assert ENDPOINTS["CreateCharge"].path_params == ()


def test_what_amazon_does_not_replay_is_read_from_the_table() -> None:
    assert set(NOT_REPLAYED) == {
        name
        for name, row in ENDPOINTS.items()
        if name in SPECS and row.method != "GET" and not row.replayed_by_key
    }
    for name, (_kind, refusals) in NOT_REPLAYED.items():
        assert refusals == ENDPOINTS[name].refusals_once_applied
    assert all(
        row.refusals_once_applied == frozenset()
        for row in ENDPOINTS.values()
        if row.replayed_by_key or row.method == "GET"
    )


def test_only_posts_carry_idempotency_keys() -> None:
    for row in ENDPOINTS.values():
        assert row.takes_idempotency_key == (row.method == "POST")
        assert not (row.method == "GET" and row.takes_simulation_code)


async def _refusal(client: AmazonPayClient, **kwargs: object) -> str:
    with pytest.raises(AmazonPayRequestError) as info:
        await client.invoke(**kwargs)  # type: ignore[arg-type]
    return info.value.message


async def test_invoke_refuses_calls_that_do_not_fit_the_row() -> None:
    account = MerchantAccount(
        public_key_id="AHKEY", private_key=PrivateKey.from_file(PRIVATE_PEM), endpoint=NOWHERE
    )
    async with AmazonPayClient(account) as client:
        assert "unknown" in await _refusal(client, endpoint="GetNothing")
        assert "idempotency_key is required" in await _refusal(
            client, endpoint="CreateCharge", body={}
        )
        assert "takes no idempotency_key" in await _refusal(
            client, endpoint="GetCharge", path_params={"chargeId": "C1"}, idempotency_key="k"
        )
        assert "takes no simulation_code" in await _refusal(
            client, endpoint="GetCharge", path_params={"chargeId": "C1"}, simulation_code="X"
        )
        assert "needs chargeId" in await _refusal(client, endpoint="GetCharge")
        assert "no path parameter refundId" in await _refusal(
            client, endpoint="GetCharge", path_params={"chargeId": "C1", "refundId": "R"}
        )
        assert "chargeId must be" in await _refusal(
            client, endpoint="GetCharge", path_params={"chargeId": "../x"}
        )
        assert "takes no body" in await _refusal(
            client, endpoint="GetCharge", path_params={"chargeId": "C1"}, body={}
        )


def test_the_settlement_operations_are_rows_at_amazons_paths() -> None:
    expected = {
        "GetReports": ("GET", "/reports"),
        "GetReportById": ("GET", "/reports/{reportId}"),
        "CreateReport": ("POST", "/reports"),
        "GetReportDocument": ("GET", "/report-documents/{reportDocumentId}"),
        "GetReportSchedules": ("GET", "/report-schedules"),
        "GetReportScheduleById": ("GET", "/report-schedules/{reportScheduleId}"),
        "CreateReportSchedule": ("POST", "/report-schedules"),
        "CancelReportSchedule": ("DELETE", "/report-schedules/{reportScheduleId}"),
        "GetDisbursements": ("GET", "/disbursements"),
        "GetDispute": ("GET", "/disputes/{disputeId}"),
    }
    assert {name: (ENDPOINTS[name].method, ENDPOINTS[name].path) for name in expected} == expected
    assert ENDPOINTS["GetReports"].query == {
        "reportTypes",
        "processingStatuses",
        "createdSince",
        "createdUntil",
        "pageSize",
        "nextToken",
    }
    assert ENDPOINTS["GetDisbursements"].query == {"startTime", "endTime", "pageSize", "nextToken"}
    assert ENDPOINTS["GetReportSchedules"].query == {"reportTypes"}


async def test_invoke_refuses_query_parameters_the_row_does_not_document() -> None:
    account = MerchantAccount(
        public_key_id="AHKEY", private_key=PrivateKey.from_file(PRIVATE_PEM), endpoint=NOWHERE
    )
    async with AmazonPayClient(account) as client:
        assert "no query parameter startTime" in await _refusal(
            client, endpoint="GetReports", query={"startTime": "20240101T000000Z"}
        )
        assert "no query parameter reportTypes" in await _refusal(
            client, endpoint="GetCharge", path_params={"chargeId": "C1"}, query={"reportTypes": "x"}
        )
        for value in ("", "a\nb", "\x7f", "x" * 2049, 10):
            assert "query parameter pageSize must be" in await _refusal(
                client, endpoint="GetReports", query={"pageSize": value}
            )


async def test_report_document_urls_are_checked_before_anything_is_sent() -> None:
    account = MerchantAccount(
        public_key_id="AHKEY",
        private_key=PrivateKey.from_file(PRIVATE_PEM),
        endpoint="https://127.0.0.1:9",
    )
    async with AmazonPayClient(account) as client:
        for url in ("ftp://host/doc", "https://", "not a url", "https://u@host/x", "https://h/a b"):
            with pytest.raises(AmazonPayRequestError, match="absolute http"):
                await anext(client.stream_report_document(url))
        with pytest.raises(AmazonPayRequestError, match="must use https"):
            await anext(client.stream_report_document("http://bucket.example/doc?sig=secret"))
        with pytest.raises(AmazonPayRequestError, match="chunk_size"):
            await anext(client.stream_report_document("https://bucket.example/d", chunk_size=0))


def _answering(sent: list[HttpRequest], *answers: tuple[int, bytes]) -> MockTransport:
    """Answers the requests in turn with `answers` (status, body), keeping each in `sent`."""
    pending = list(answers)

    def amazon(request: HttpRequest) -> HttpResponse:
        sent.append(request)
        status, body = pending.pop(0)
        return HttpResponse.build(status, {"x-amz-request-id": "S3REQ"}, body)

    return MockTransport(amazon)


async def test_query_parameters_are_sent_as_the_canonical_query_that_was_signed() -> None:
    sent: list[HttpRequest] = []
    transport = _answering(sent, (200, b'{"reports": [], "nextToken": "n1"}'))
    account = MerchantAccount(
        public_key_id="AHKEY", private_key=PrivateKey.from_file(PRIVATE_PEM), endpoint=NOWHERE
    )
    async with AmazonPayClient(account, transport=transport) as client:
        answer = await client.invoke(
            "GetReports",
            query={
                "reportTypes": "_A_,_B_",
                "createdSince": "2024-01-01T00:00:00Z",
                "pageSize": "5",
            },
        )
    assert isinstance(answer, ReportList)
    assert answer.next_token == "n1"
    (request,) = sent
    url = URL(request.url, encoded=True)
    assert url.raw_query_string == (
        "createdSince=2024-01-01T00%3A00%3A00Z&pageSize=5&reportTypes=_A_%2C_B_"
    )
    auth = parse_authorization_header(request.headers["authorization"])
    signed = {name: request.headers[name] for name in auth.signed_headers}
    canonical = canonical_request(
        "GET", url.raw_path, list(url.query.items()), signed, request.body, path_is_canonical=True
    )
    assert verify_signature(PUBLIC_PEM.read_bytes(), canonical.string_to_sign(), auth.signature)


async def test_a_refused_document_download_is_an_error_naming_s3s_code_but_not_the_url() -> None:
    refusal = b"<Error><Code>AccessDenied</Code><Message>Request has expired</Message></Error>"
    sent: list[HttpRequest] = []
    transport = _answering(sent, (403, refusal), (200, b"abcdefg"))
    account = MerchantAccount(
        public_key_id="AHKEY", private_key=PrivateKey.from_file(PRIVATE_PEM), endpoint=NOWHERE
    )
    url = "http://127.0.0.1:9/doc?X-Amz-Signature=secret"
    async with AmazonPayClient(account, transport=transport) as client:
        with pytest.raises(AmazonPayError) as info:
            await anext(client.stream_report_document(url))
        pieces = [chunk async for chunk in client.stream_report_document(url, chunk_size=3)]
    assert (info.value.http_status, info.value.reason_code) == (403, "AccessDenied")
    assert info.value.request_id == "S3REQ"
    assert "secret" not in str(info.value)
    assert not info.value.retryable
    assert pieces == [b"abc", b"def", b"g"]
    assert len(sent) == 2
    assert "authorization" not in sent[-1].headers
    assert not any(name.startswith("x-amz-pay") for name in sent[-1].headers)
