"""The emulator clock: real time plus an offset that only ever moves forward."""

from __future__ import annotations

import calendar
import re
import time
from datetime import UTC, datetime

TIMESTAMP_FORMAT = "%Y%m%dT%H%M%SZ"
DAY = 86_400.0
"""Seconds in a day of the emulator clock."""


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


_PAY_DATE = re.compile(r"^(\d{4})-?(\d{2})-?(\d{2})T(\d{2}):?(\d{2}):?(\d{2})(?:\.\d{1,9})?Z$")


def parse_pay_date(value: str) -> float | None:
    """Accept `20191015T204313Z` (most SDKs) and ISO `2019-10-15T20:43:13Z` (Node SDK).

    Hand-rolled instead of strptime: it runs on every request and strptime costs ~60 us.
    """
    match = _PAY_DATE.match(value)
    if match is None:
        return None
    year, month, day, hour, minute, second = (int(g) for g in match.groups())
    if not (1 <= month <= 12 and 1 <= day <= 31 and hour < 24 and minute < 60 and second < 61):
        return None
    return float(calendar.timegm((year, month, day, hour, minute, second, 0, 0, 0)))
