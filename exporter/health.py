"""Health of each integration (Kubernetes API, cache, price and billing sources) and bad-input accounting.

Integrations report here; the metrics layer renders it. A failure never raises past the integration:
it becomes `up=0` with one reason from a bounded set, so alerts can name it without label explosion.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from enum import StrEnum

from exporter.logs import with_fields

log = logging.getLogger(__name__)
_COUNT_LOCK = threading.Lock()


class Reason(StrEnum):
    """Why an integration is down. Bounded on purpose: it becomes a label value."""

    AUTH = "auth"
    PERMISSION = "permission"
    NOT_FOUND = "not_found"
    THROTTLED = "throttled"
    TIMEOUT = "timeout"
    UNAVAILABLE = "unavailable"
    BAD_RESPONSE = "bad_response"
    NO_DATA = "no_data"
    CONFIG = "config"
    CORRUPT = "corrupt"
    LOCKED = "locked"


@dataclass
class IntegrationStatus:
    """Mutable health of one integration; written by its own thread, read by scrapes."""

    name: str
    up: bool = False
    reason: Reason | None = None
    detail: str = ""
    last_attempt: float | None = None
    last_success: float | None = None
    data_timestamp: float | None = None
    last_duration_seconds: float | None = None
    requests: int = 0
    errors: Counter[Reason] = field(default_factory=Counter)
    _log: logging.LoggerAdapter[logging.Logger] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        self._log = with_fields(log, integration=self.name)  # its lines carry integration=<name>

    def record_request(self, reason: Reason | None = None) -> None:
        """Count one API call (and its failure reason), for integrations that make many per attempt."""
        with _COUNT_LOCK:  # fetch workers of one source count concurrently
            self.requests += 1
            if reason is not None:
                self.errors[reason] += 1

    def succeeded(
        self,
        *,
        duration: float | None = None,
        data_timestamp: float | None = None,
        count: bool = True,
        now: float | None = None,
    ) -> None:
        """The attempt worked. `count=False` when its calls were counted with `record_request`; `now`: the
        caller's clock's epoch time (the real time when not given), so a fake clock's tests can assert it."""
        now = time.time() if now is None else now
        if not self.up and self.reason is not None:
            self._log.info("integration recovered")
        self.up, self.reason, self.detail = True, None, ""
        self.last_attempt = self.last_success = now
        if count:
            self.record_request()
        if duration is not None:
            self.last_duration_seconds = duration
        if data_timestamp is not None:
            self.data_timestamp = data_timestamp

    def restored(self, last_success: float, data_timestamp: float | None) -> None:
        """State read back from the cache at start: the last success was real, just not this process's."""
        self.up, self.last_success = True, last_success
        if data_timestamp is not None:
            self.data_timestamp = data_timestamp

    def failed(
        self,
        reason: Reason,
        detail: str,
        *,
        duration: float | None = None,
        count: bool = True,
        now: float | None = None,
    ) -> None:
        """The attempt failed; logged when the state or reason changes, not on every retry. `now` as for
        `succeeded`."""
        if self.up or self.reason != reason:
            self._log.warning("integration failing (%s): %s", reason.value, detail)
        self.up, self.reason, self.detail = False, reason, detail
        self.last_attempt = time.time() if now is None else now
        if count:
            self.record_request(reason)
        if duration is not None:
            self.last_duration_seconds = duration


class Health:
    """Every integration's status plus counts of input we had to skip (malformed nodes, price rows)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._integrations: dict[str, IntegrationStatus] = {}
        self._invalid: Counter[str] = Counter()
        self._logged: set[tuple[str, str]] = set()

    def integration(self, name: str) -> IntegrationStatus:
        with self._lock:
            status = self._integrations.get(name)
            if status is None:
                status = self._integrations[name] = IntegrationStatus(name)
            return status

    def integrations(self) -> list[IntegrationStatus]:
        with self._lock:
            return sorted(self._integrations.values(), key=lambda s: s.name)

    def invalid(self, kind: str, key: str, problem: str) -> None:
        """Count one skipped input; log it the first time this (kind, key) is seen, not on every event."""
        with self._lock:
            self._invalid[kind] += 1
            first = (kind, key) not in self._logged
            if first and len(self._logged) < 10_000:
                self._logged.add((kind, key))
        if first:
            log.warning("skipping invalid %s %r: %s", kind, key[:200], problem)

    def invalid_counts(self) -> dict[str, int]:
        with self._lock:
            return dict(self._invalid)
