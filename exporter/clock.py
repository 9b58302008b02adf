"""Time, injected: every time read and every sleep of the price sources goes through a `Clock`, so tests
move time instead of waiting for it, and can assert on the sleeps a retry policy asked for."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Protocol


class Clock(Protocol):
    def time(self) -> float:
        """Wall-clock time, epoch seconds: what is stored, compared with bills and shown."""

    def monotonic(self) -> float:
        """Seconds from an arbitrary origin that never jumps: deadlines and durations."""

    def sleep(self, seconds: float) -> None:
        """Wait: backoff between retries, polls of a running query."""


class SystemClock:
    """The real clock."""

    def time(self) -> float:
        return time.time()

    def monotonic(self) -> float:
        return time.monotonic()

    def sleep(self, seconds: float) -> None:
        time.sleep(seconds)


SYSTEM_CLOCK = SystemClock()


def parse_time(value: object) -> datetime | None:
    """An ISO 8601 / RFC 3339 time as APIs write it ("2026-11-20T08:14:03Z"), read as UTC when it names no
    zone; None when absent or unreadable."""
    if not isinstance(value, str):
        return None
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        return None
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)
