"""What every cloud's public price list ("shelf" prices) has in common, so each cloud module only says
how to key a node and how to fetch a batch of keys.

- Only what the cluster has is fetched: keys come from the nodes present (`wanted`) and from nodes seen
  for the first time (`quote` notes unknown keys, and the scheduler refreshes at once when some are pending).
- Prices live in memory for `quote` and in the SQLite cache with their fetch time: a restart serves the last
  known prices and refetches only what is older than `ttl_seconds`, so a warm restart makes no price calls.
- Fetches run in a small pool (`concurrency`), retry throttling, timeouts and 5xx with jittered backoff
  (honouring Retry-After), and never raise: a failed refresh keeps the last good prices, reports
  `up=0` with a reason, and is retried at the next refresh.
- "No price" is remembered too (as `null`), so an unknown instance type is not asked for on every refresh.
"""

from __future__ import annotations

import json
import logging
import threading
from abc import ABC, abstractmethod
from collections.abc import Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from decimal import Decimal
from typing import Generic, TypeVar

from exporter.config import ShelfSettings
from exporter.health import Reason
from exporter.inventory.node import Node
from exporter.pricing.money import parse_money
from exporter.pricing.quote import Basis, Quote
from exporter.pricing.sources.context import SourceContext
from exporter.pricing.sources.fetch import FetchError

Key = tuple[str, ...]
S = TypeVar("S", bound=ShelfSettings)


@dataclass(frozen=True, slots=True)
class ShelfPrice:
    """A list price for one key; per-unit prices only where the price list itself has them."""

    hourly: Decimal
    cpu_core_hourly: Decimal | None = None
    memory_gib_hourly: Decimal | None = None
    gpu_hourly: Decimal | None = None

    def dump(self) -> str:
        return json.dumps({k: format(v, "f") for k, v in self._fields().items() if v is not None})

    @classmethod
    def load(cls, text: str) -> ShelfPrice:
        data = json.loads(text)
        return cls(**{k: parse_money(v) for k, v in data.items()})

    def _fields(self) -> dict[str, Decimal | None]:
        return {
            "hourly": self.hourly,
            "cpu_core_hourly": self.cpu_core_hourly,
            "memory_gib_hourly": self.memory_gib_hourly,
            "gpu_hourly": self.gpu_hourly,
        }


class ShelfSource(ABC, Generic[S]):
    """Base of the AWS, GCP and Azure list-price sources, generic over their settings type. Subclasses set
    `name` and `basis` and implement `key` and `fetch` (and `batches` when the API prices many keys per
    call)."""

    kind = "shelf"
    name: str
    basis: Basis = Basis.ON_DEMAND

    def __init__(self, settings: S, context: SourceContext) -> None:
        self.settings = settings
        self.refresh_interval_seconds: float | None = settings.refresh_interval_seconds
        self.status = context.status(self.name)
        self.log = context.logger(type(self).__module__, self.name)
        self.currency = context.currency
        self.clock = context.clock
        # Each HTTP call is counted by the cloud module; retries of many batches at once log at debug.
        self._fetcher = context.fetcher(self.name, settings, count_calls=False, retry_log_level=logging.DEBUG)
        self._cache = context.cache
        self._lock = threading.Lock()
        self._prices: dict[Key, ShelfPrice | None] = {}
        self._fetched_at: dict[Key, float] = {}
        self._wanted: set[Key] = set()
        self._pending: set[Key] = set()
        self._failed_until: dict[Key, float] = {}  # a key whose fetch failed waits for the next interval
        self._load_cache()

    # -- what a cloud module implements ---------------------------------------------------------------

    @abstractmethod
    def key(self, node: Node) -> Key | None:
        """The price-list key of a node, or None when this source does not price such nodes."""

    @abstractmethod
    def fetch(self, keys: Sequence[Key]) -> Mapping[Key, ShelfPrice | None]:
        """Prices for one batch of keys; a key missing from the result has no price in the list.

        Raise FetchError on failure. Called from worker threads, one batch each: keep no shared state.
        """

    def batches(self, keys: Sequence[Key]) -> list[list[Key]]:
        """How keys are grouped into fetch calls; by default one call per key."""
        return [[key] for key in keys]

    def basis_of(self, key: Key) -> Basis:
        """On-demand or spot; sources pricing both from one list (GCP, Azure) decide it by key."""
        return self.basis

    # -- PriceSource ----------------------------------------------------------------------------------

    def quote(self, node: Node) -> Quote | None:
        key = self.key(node)
        if key is None:
            return None
        try:
            price = self._prices[key]
        except KeyError:
            if self._failed_until.get(key, 0.0) <= self.clock.monotonic():
                with self._lock:
                    self._pending.add(key)  # first sight: the scheduler fetches it at its next tick
            return None
        if price is None:
            return None
        return Quote(
            price.hourly,
            self.currency,
            self.basis_of(key),
            price.cpu_core_hourly,
            price.memory_gib_hourly,
            price.gpu_hourly,
        )

    def wanted(self, nodes: Iterable[Node]) -> None:
        keys = {key for node in nodes if (key := self.key(node)) is not None}
        with self._lock:
            self._wanted = keys

    def pending(self) -> bool:
        with self._lock:
            return bool(self._pending)

    def refresh(self) -> bool:
        """Fetch keys never fetched or older than the TTL; True when any price changed."""
        now = self.clock.time()
        with self._lock:
            keys = self._wanted | self._pending
            self._pending = set()
        due = sorted(k for k in keys if now - self._fetched_at.get(k, 0.0) >= self.settings.ttl_seconds)
        if not due:
            # Nothing to fetch is an answer too: all cached (said once), or nothing to price (said at every
            # refresh, so last success keeps moving): up, never down with no reason.
            if not keys or self.status.last_attempt is None:
                self.status.succeeded(data_timestamp=self._oldest(keys), count=False, now=now)
            return False
        started = self.clock.monotonic()
        results: dict[Key, ShelfPrice | None] = {}
        failures: list[FetchError] = []
        batches = self.batches(due)
        with ThreadPoolExecutor(max_workers=max(1, min(self.settings.concurrency, len(batches)))) as pool:
            for batch, outcome in zip(batches, pool.map(self._fetch_with_retries, batches), strict=True):
                if isinstance(outcome, FetchError):
                    failures.append(outcome)
                    retry_at = self.clock.monotonic() + (self.refresh_interval_seconds or 0.0)
                    self._failed_until.update(dict.fromkeys(batch, retry_at))
                else:
                    results.update({key: outcome.get(key) for key in batch})
        changed = self._store(results)
        duration, ended = self.clock.monotonic() - started, self.clock.time()
        if failures:
            first = failures[0]
            detail = first.detail if len(failures) == 1 else f"{first.detail} (and {len(failures) - 1} more)"
            self.status.failed(first.reason, detail, duration=duration, count=False, now=ended)
        else:
            oldest = self._oldest(keys)
            self.status.succeeded(duration=duration, data_timestamp=oldest, count=False, now=ended)
        return changed

    # -- internals ------------------------------------------------------------------------------------

    def _fetch_with_retries(self, batch: list[Key]) -> Mapping[Key, ShelfPrice | None] | FetchError:
        try:
            return self._fetcher.run(lambda: self.fetch(batch))
        except FetchError as err:
            return err
        except Exception as err:  # a bug or an unforeseen payload must not stop the other batches
            self.log.exception("fetching %s failed unexpectedly", batch[:3])
            return FetchError(Reason.BAD_RESPONSE, f"unexpected error: {err!r}")

    def _store(self, results: Mapping[Key, ShelfPrice | None]) -> bool:
        now = self.clock.time()
        changed = False
        with self._lock:
            for key, price in results.items():
                changed |= key not in self._prices or self._prices[key] != price
                self._prices[key] = price
                self._failed_until.pop(key, None)
                self._fetched_at[key] = now
        if self._cache is not None and results:
            self._cache.store(
                self.name,
                (
                    ("|".join(key), "null" if price is None else price.dump())
                    for key, price in results.items()
                ),
                fetched_at=now,
            )
        return changed

    def _load_cache(self) -> None:
        if self._cache is None:
            return
        for text, entry in self._cache.load(self.name).items():
            try:
                price = None if entry.value == "null" else ShelfPrice.load(entry.value)
            except (ValueError, TypeError) as err:
                self.log.warning("ignoring unreadable cached price %r: %s", text, err)
                continue
            key = tuple(text.split("|"))
            self._prices[key] = price
            self._fetched_at[key] = entry.fetched_at

    def _oldest(self, keys: Iterable[Key]) -> float | None:
        stamps = [self._fetched_at[k] for k in keys if k in self._fetched_at]
        return min(stamps) if stamps else None
