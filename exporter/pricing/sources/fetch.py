"""The fetch layer every source shares: the one error type a source raises (`FetchError`, carrying a
reason from the closed `Reason` set and the server's Retry-After), the one Retry-After parser, which
reasons are worth retrying, and `Fetcher`, which runs a source's calls under its retry policy."""

from __future__ import annotations

import email.utils
import logging
import random
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Protocol, TypeVar

from exporter.clock import Clock
from exporter.health import IntegrationStatus, Reason
from exporter.logs import with_fields
from exporter.tls import untrusted_certificate

log = logging.getLogger(__name__)

MAX_RETRY_AFTER = 300.0
RETRYABLE = frozenset({Reason.THROTTLED, Reason.TIMEOUT, Reason.UNAVAILABLE})

T = TypeVar("T")


class FetchError(Exception):
    """A fetch failed; `reason` is what an operator acts on, `detail` says what to fix."""

    def __init__(self, reason: Reason, detail: str, *, retry_after: float | None = None) -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail
        self.retry_after = retry_after


def parse_retry_after(value: str | None, now: float) -> float | None:
    """Seconds to wait from a Retry-After value: delta-seconds or an HTTP date (relative to `now`, epoch
    seconds), never negative; None when absent or unreadable. The one parser every cloud's mapping uses."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - now)  # an HTTP date without a zone is read as UTC


# What a bare HTTP status says when the body names no more precise cause. 400 is a request the API refused
# as asked (a filter, a currency, a query): configuration, not the server's fault.
_STATUS_REASONS = {
    400: Reason.CONFIG,
    401: Reason.AUTH,
    403: Reason.PERMISSION,
    404: Reason.NOT_FOUND,
    408: Reason.TIMEOUT,
    429: Reason.THROTTLED,
}


def reason_for_status(status: int) -> Reason:
    """The Reason for a non-2xx HTTP status: the one table every cloud's mapping falls back on, so a 401
    is `auth` and a 503 `unavailable` on every cloud alike."""
    return _STATUS_REASONS.get(status, Reason.UNAVAILABLE if status >= 500 else Reason.BAD_RESPONSE)


@contextmanager
def trusted_tls(host: str) -> Iterator[None]:
    """Raise a certificate failure from inside as a CONFIG FetchError naming the fix: whatever layer of an
    SDK it surfaces from (a connection error, a failed token request), retrying will not heal it."""
    try:
        yield
    except Exception as err:
        if untrusted_certificate(err):
            raise untrusted_tls_error(host) from err
        raise


def untrusted_tls_error(host: str) -> FetchError:
    return FetchError(
        Reason.CONFIG,
        f"the TLS certificate of {host} is not trusted (certificate verify failed); behind a "
        "TLS-inspecting proxy set tls.ca_file to the proxy's CA",
    )


def retry_delay(err: FetchError, attempt: int, backoff: float, backoff_max: float) -> float:
    """Seconds before retry `attempt` (0-based): jittered exponential backoff, or the server's
    Retry-After when longer, within reason."""
    ceiling = min(backoff_max, backoff * 2**attempt)
    return max(random.uniform(ceiling / 2, ceiling), min(err.retry_after or 0.0, MAX_RETRY_AFTER))


class RetryPolicy(Protocol):
    """What a source's settings say about retrying (shelf and billing settings both carry it)."""

    @property
    def retries(self) -> int: ...
    @property
    def backoff_seconds(self) -> float: ...
    @property
    def backoff_max_seconds(self) -> float: ...


class Fetcher:
    """Runs one source's calls: a retryable FetchError is retried up to `policy.retries` times after a
    jittered backoff (or the server's Retry-After), slept on the source's clock.

    `count_calls`: record each attempt's outcome on the integration status. Billing sources count one
    request per query this way; shelf sources count every HTTP call inside their cloud module instead.
    `retry_log_level`: shelf sources retry many batches at once and log each retry at debug only.
    """

    def __init__(
        self,
        status: IntegrationStatus,
        clock: Clock,
        policy: RetryPolicy,
        *,
        count_calls: bool,
        retry_log_level: int = logging.INFO,
    ) -> None:
        self.status = status
        self._log = with_fields(log, integration=status.name, source=status.name)
        self._clock = clock
        self._policy = policy
        self._count_calls = count_calls
        self._retry_log_level = retry_log_level

    def run(self, call: Callable[[], T]) -> T:
        """`call()`'s result, or the FetchError of its last attempt. Any other exception is not retried."""
        attempt = 0
        while True:
            try:
                result = call()
            except FetchError as err:
                if self._count_calls:
                    self.status.record_request(err.reason)
                if err.reason not in RETRYABLE or attempt >= self._policy.retries:
                    raise
                delay = retry_delay(
                    err, attempt, self._policy.backoff_seconds, self._policy.backoff_max_seconds
                )
                self._log.log(self._retry_log_level, "%s; retrying in %.2fs", err.detail, delay)
                self._clock.sleep(delay)
                attempt += 1
            else:
                if self._count_calls:
                    self.status.record_request()
                return result
