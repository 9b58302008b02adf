"""The fetch layer every source shares: the one error type a source raises (`FetchError`, carrying a
reason from the closed `Reason` set and the server's Retry-After), which reasons are worth retrying, and
the backoff between retries."""

from __future__ import annotations

import random

from exporter.health import Reason

MAX_RETRY_AFTER = 300.0
RETRYABLE = frozenset({Reason.THROTTLED, Reason.TIMEOUT, Reason.UNAVAILABLE})


def retry_delay(err: FetchError, attempt: int, backoff: float, backoff_max: float) -> float:
    """Seconds before retry `attempt` (0-based): jittered exponential backoff, or the server's
    Retry-After when longer, within reason."""
    ceiling = min(backoff_max, backoff * 2**attempt)
    return max(random.uniform(ceiling / 2, ceiling), min(err.retry_after or 0.0, MAX_RETRY_AFTER))


class FetchError(Exception):
    """A fetch failed; `reason` is what an operator acts on, `detail` says what to fix."""

    def __init__(self, reason: Reason, detail: str, *, retry_after: float | None = None) -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail
        self.retry_after = retry_after
