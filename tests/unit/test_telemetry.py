from __future__ import annotations

import json
import logging
import re

import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader, NumberDataPoint, Sum
from opentelemetry.sdk.trace import TracerProvider

from service.telemetry import (
    REDACTED,
    JsonFormatter,
    Metrics,
    current_trace_ids,
    log_trace_ids,
    redact,
)


def test_sensitive_keys_are_redacted_at_any_depth() -> None:
    data = {"order": {"buyer": {"name": "A"}, "amount": "1.00"}, "items": [{"phoneNumber": "1"}]}
    assert redact(data) == {
        "order": {"buyer": REDACTED, "amount": "1.00"},
        "items": [{"phoneNumber": REDACTED}],
    }


def test_log_lines_inside_a_span_carry_its_trace_id() -> None:
    tracer = TracerProvider().get_tracer("test")
    record = logging.LogRecord("t", logging.INFO, __file__, 1, "hello", None, None)
    record.email = "someone@example.com"
    with tracer.start_as_current_span("work") as span:
        line = json.loads(JsonFormatter().format(record))
    assert line["trace_id"] == format(span.get_span_context().trace_id, "032x")
    assert line["email"] == REDACTED
    outside = json.loads(JsonFormatter().format(record))
    assert "trace_id" not in outside


def test_without_a_tracer_an_rpcs_lines_carry_the_callers_traceparent_trace_id() -> None:
    record = logging.LogRecord("t", logging.INFO, __file__, 1, "hello", None, None)
    traceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
    with log_trace_ids(traceparent):
        first = json.loads(JsonFormatter().format(record))
        second = json.loads(JsonFormatter().format(record))
    assert first["trace_id"] == "4bf92f3577b34da6a3ce929d0e0e4736"
    assert re.fullmatch(r"[0-9a-f]{16}", first["span_id"])
    assert (second["trace_id"], second["span_id"]) == (first["trace_id"], first["span_id"])
    assert "trace_id" not in json.loads(JsonFormatter().format(record))


@pytest.mark.parametrize(
    "traceparent",
    [
        None,
        "",
        "garbage",
        "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
        "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
    ],
)
def test_a_missing_or_invalid_traceparent_gets_a_fresh_trace_id(traceparent: str | None) -> None:
    with log_trace_ids(traceparent):
        ids = current_trace_ids()
    assert ids is not None
    assert re.fullmatch(r"[0-9a-f]{32}", ids[0])
    assert ids[0] not in (traceparent or "")


def test_a_local_counter_exports_the_same_series_a_counter_would() -> None:
    reader = InMemoryMetricReader()
    metrics = Metrics(MeterProvider(metric_readers=[reader]))
    metrics.known_rpcs(["GetCharge"])
    for _ in range(3):
        metrics.rpc_calls.add(1, {"rpc": "CreateCharge", "code": "OK"})
    metrics.rpc_calls.add(1, {"rpc": "CreateCharge", "code": "UNAVAILABLE"})
    data = reader.get_metrics_data()
    assert data is not None
    [calls] = [
        m
        for rm in data.resource_metrics
        for sm in rm.scope_metrics
        for m in sm.metrics
        if m.name == "amazonpay.rpc.calls"
    ]
    assert isinstance(calls.data, Sum)
    assert calls.data.is_monotonic
    points = {
        tuple(sorted((p.attributes or {}).items())): p.value
        for p in calls.data.data_points
        if isinstance(p, NumberDataPoint)
    }
    assert points == {
        (("code", "OK"), ("rpc", "GetCharge")): 0,
        (("code", "OK"), ("rpc", "CreateCharge")): 3,
        (("code", "UNAVAILABLE"), ("rpc", "CreateCharge")): 1,
    }
