"""The client's WatchEvents resume, over a real gRPC server that drops the stream on purpose.

The service delivers events in position order, where event ids are not increasing (a transaction
that took a lower id can commit later). This endpoint replays such a history and cuts the stream
with UNAVAILABLE (and RetryInfo) every few events: the client must resume after the LAST event it
received, so it ends with every event exactly once, in order.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import grpc
from amazonpay_client import AmazonPayClient, RetryPolicy
from google.protobuf import duration_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status

from payments.amazonpay.v1 import ledger_pb2

# Delivery order of a history whose ids commit out of order.
HISTORY = [3, 1, 2, 6, 4, 5, 9, 7, 8, 10, 12, 11]


async def _endpoint(requests: list[int]) -> tuple[grpc.aio.Server, int]:
    server = grpc.aio.server()

    async def watch(
        request: Any, context: grpc.aio.ServicerContext[Any, Any]
    ) -> AsyncIterator[Any]:
        requests.append(request.after_event_id)
        start = HISTORY.index(request.after_event_id) + 1 if request.after_event_id else 0
        for sent, event_id in enumerate(HISTORY[start:]):
            if sent == 2:
                retry = error_details_pb2.RetryInfo(
                    retry_delay=duration_pb2.Duration(nanos=10_000_000)
                )
                status = status_pb2.Status(code=code_pb2.UNAVAILABLE, message="replica restarting")
                status.details.add().Pack(retry)
                await context.abort_with_status(rpc_status.to_status(status))  # type: ignore[attr-defined]  # grpc-stubs lags grpc.aio
            yield ledger_pb2.WatchEventsResponse(event=ledger_pb2.LedgerEvent(event_id=event_id))

    handler = grpc.method_handlers_generic_handler(
        "payments.amazonpay.v1.LedgerService",
        {
            "WatchEvents": grpc.unary_stream_rpc_method_handler(
                watch,
                request_deserializer=ledger_pb2.WatchEventsRequest.FromString,
                response_serializer=ledger_pb2.WatchEventsResponse.SerializeToString,
            )
        },
    )
    server.add_generic_rpc_handlers((handler,))
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    return server, port


async def test_watch_events_resumes_after_the_last_event_received_not_the_largest_id() -> None:
    requests: list[int] = []
    server, port = await _endpoint(requests)
    try:
        async with AmazonPayClient(
            f"127.0.0.1:{port}", retry=RetryPolicy(max_attempts=5)
        ) as client:
            received: list[int] = []
            async for event in client.ledger.watch_events():
                received.append(event.event_id)
                if len(received) == len(HISTORY):
                    break
    finally:
        await server.stop(None)
    assert received == HISTORY
    assert requests == [0, 1, 6, 5, 7, 10]
