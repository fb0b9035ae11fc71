"""The emulator clock: real time plus an offset that only ever moves forward."""

from __future__ import annotations

import time
from datetime import UTC, datetime

TIMESTAMP_FORMAT = "%Y%m%dT%H%M%SZ"


class Clock:
    def __init__(self, offset_seconds: float = 0.0) -> None:
        self.offset = offset_seconds

    def now(self) -> float:
        return time.time() + self.offset

    @staticmethod
    def real_now() -> float:
        """Request dates are checked against this, so advancing the clock never breaks signing."""
        return time.time()

    def advance(self, seconds: float) -> None:
        if seconds < 0:
            raise ValueError("the emulator clock cannot go backwards")
        self.offset += seconds


def fmt(epoch: float) -> str:
    """Amazon's compact body timestamp, e.g. 20191015T204313Z."""
    return datetime.fromtimestamp(epoch, UTC).strftime(TIMESTAMP_FORMAT)


def fmt_iso_ms(epoch: float) -> str:
    """SNS envelope timestamp, e.g. 2012-04-26T20:45:04.751Z."""
    dt = datetime.fromtimestamp(epoch, UTC)
    return dt.strftime("%Y-%m-%dT%H:%M:%S.") + f"{dt.microsecond // 1000:03d}Z"


def parse_pay_date(value: str) -> float | None:
    """Accept `20191015T204313Z` (most SDKs) and ISO `2019-10-15T20:43:13Z` (Node SDK)."""
    for pattern in (TIMESTAMP_FORMAT, "%Y-%m-%dT%H:%M:%SZ", "%Y-%m-%dT%H:%M:%S.%fZ"):
        try:
            return datetime.strptime(value, pattern).replace(tzinfo=UTC).timestamp()
        except ValueError:
            continue
    return None
