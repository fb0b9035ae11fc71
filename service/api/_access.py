"""One JSON log line per RPC, the line an on-call engineer greps for.

Fields are JSON keys (never packed into the message): `rpc`, `code`, `reason` (ErrorInfo reason of
a failure), `merchant`, `caller`, `object_ids` (the Amazon ids the request named and the answer
carried), `amazon_request_ids` (every `x-amz-pay-request-id` Amazon answered this RPC with, retries
and follow-up reads included), `duration_ms` and `trace_id`. Only ids, aliases and codes: no
buyer data, no amounts, no request bodies.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager, nullcontext
from typing import Any

import grpc
from google.protobuf.message import Message
from google.rpc import error_details_pb2, status_pb2

from service.telemetry import (
    collect_amazon_request_ids,
    current_trace_ids,
    log_trace_ids,
    tracing_enabled,
)

from ._auth import current_caller

__all__ = ["RpcRecord", "reason_of", "rpc_record"]

_log = logging.getLogger("service.rpc")

ID_FIELDS = (
    "checkout_session_id",
    "charge_permission_id",
    "charge_id",
    "refund_id",
    "object_id",
)
_MAX_ID_CHARS = 128
_ERROR_CODES = frozenset({"INTERNAL", "UNKNOWN", "DATA_LOSS"})
_WARNING_CODES = frozenset({"UNAVAILABLE", "DEADLINE_EXCEEDED", "RESOURCE_EXHAUSTED"})


def reason_of(status: grpc.Status) -> str:
    """The ErrorInfo reason packed in a rich status ("" when there is none)."""
    for key, value in status.trailing_metadata or ():
        if key != "grpc-status-details-bin" or not isinstance(value, bytes):
            continue
        parsed = status_pb2.Status.FromString(value)
        for detail in parsed.details:
            if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
                info = error_details_pb2.ErrorInfo()
                detail.Unpack(info)
                return str(info.reason)
    return ""


def _ids_of(message: Message, found: dict[str, list[str]]) -> None:
    fields = message.DESCRIPTOR.fields_by_name
    for name in ID_FIELDS:
        if name in fields:
            value = getattr(message, name)
            if isinstance(value, str) and value:
                ids = found.setdefault(name, [])
                value = value[:_MAX_ID_CHARS]
                if value not in ids:
                    ids.append(value)


class RpcRecord:
    """What one RPC did, filled in while it runs and logged once when it ends."""

    def __init__(self, method: str) -> None:
        self.method = method
        self.code = "OK"
        self.reason = ""
        self.merchant: str | None = None
        self.request_ids: list[str] = []
        self.object_ids: dict[str, list[str]] = {}
        self.started = time.perf_counter()

    def request(self, message: Message) -> None:
        if "merchant" in message.DESCRIPTOR.fields_by_name:
            self.merchant = str(getattr(message, "merchant"))[:_MAX_ID_CHARS]  # noqa: B009
        _ids_of(message, self.object_ids)

    def response(self, message: Message) -> None:
        _ids_of(message, self.object_ids)
        for field in message.DESCRIPTOR.fields:
            if field.message_type is None:
                continue
            value = getattr(message, field.name)
            if isinstance(value, Message) and message.HasField(field.name):
                _ids_of(value, self.object_ids)

    def failed(self, status: grpc.Status) -> None:
        self.code = status.code.name
        self.reason = reason_of(status)

    def elapsed_s(self) -> float:
        return time.perf_counter() - self.started

    def log(self) -> None:
        ids = current_trace_ids()
        level = (
            logging.ERROR
            if self.code in _ERROR_CODES
            else logging.WARNING
            if self.code in _WARNING_CODES
            else logging.INFO
        )
        _log.log(
            level,
            "rpc",
            extra={
                "rpc": self.method,
                "code": self.code,
                "reason": self.reason or None,
                "merchant": self.merchant,
                "caller": current_caller.get(),
                "object_ids": self.object_ids,
                "amazon_request_ids": self.request_ids,
                "duration_ms": round(self.elapsed_s() * 1000, 3),
                "trace_id": ids[0] if ids is not None else None,
            },
        )


def _traceparent(metadata: Iterable[Any] | None) -> str | None:
    for key, value in metadata or ():
        if key == "traceparent" and isinstance(value, str):
            return value
    return None


@contextmanager
def rpc_record(method: str, metadata: Iterable[Any] | None = None) -> Iterator[RpcRecord]:
    """Collects the Amazon request ids of every Amazon answer inside the block. Without a tracer
    (no exporter), the block's log lines carry the caller's trace id from its `traceparent`
    metadata, or a fresh one."""
    record = RpcRecord(method)
    ids = nullcontext() if tracing_enabled() else log_trace_ids(_traceparent(metadata))
    with collect_amazon_request_ids(record.request_ids), ids:
        yield record
