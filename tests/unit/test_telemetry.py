from __future__ import annotations

import json
import logging

from opentelemetry.sdk.trace import TracerProvider

from service.telemetry import REDACTED, JsonFormatter, redact


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
