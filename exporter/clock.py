"""Time, injected: every time read and every sleep of the price sources goes through a `Clock`, so tests
move time instead of waiting for it, and can assert on the sleeps a retry policy asked for."""

from __future__ import annotations

import time
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
