from __future__ import annotations

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from service.core._operations import _span


def test_without_a_recording_tracer_the_payment_path_makes_no_span(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """No exporter configured: the span is the shared no-op one and no context is attached, so
    the hot path pays for neither (bench/results/profile.md, round 4)."""
    monkeypatch.setattr(trace, "get_tracer_provider", trace.NoOpTracerProvider)
    with _span("payments.CreateCharge", "", "CreateCharge", None) as span:
        assert span is trace.INVALID_SPAN
        assert not span.is_recording()
        assert trace.get_current_span() is trace.INVALID_SPAN


def test_a_recording_tracer_gets_the_payment_span_with_its_ids() -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(trace, "get_tracer_provider", lambda: provider)
        patch.setattr("service.core._operations._tracer", provider.get_tracer("test"))
        with _span(
            "payments.read.charge",
            "eu",
            "Get/charge",
            "S01-1-1-C1",
            extra={"amazonpay.read_source": "ledger"},
        ) as span:
            assert span.is_recording()
    (finished,) = exporter.get_finished_spans()
    assert finished.name == "payments.read.charge"
    assert dict(finished.attributes or {}) == {
        "amazonpay.merchant": "eu",
        "amazonpay.operation": "Get/charge",
        "amazonpay.object_id": "S01-1-1-C1",
        "amazonpay.read_source": "ledger",
    }
