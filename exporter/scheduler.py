"""The refresh scheduler: when each price source refreshes, and when every node is re-priced.

It lives apart from the app and reads time from an injected `Clock`, so a test drives one pass with
`tick()` and moves time with the clock instead of waiting for a thread's next turn.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence

from exporter.clock import SYSTEM_CLOCK, Clock
from exporter.inventory.node import Node
from exporter.pricing.source import PriceSource

log = logging.getLogger(__name__)


class RefreshScheduler:
    """Refreshes each source on its own interval, or at once when it saw a node it cannot price yet, and
    re-prices every node only when a refresh says quotes changed (or before the first priced pass).

    `lookups` gives the nodes the sources must keep prices for (called at most once a pass, and only when
    a source refreshes); `reprice` re-prices every node; `priced` is set after the first pass re-priced.

    One thread runs every source in turn, as the app always did. To give each source its own thread (so a
    hung billing call cannot hold shelf pricing), `run` would start one loop per source doing what `tick`
    does for one source (due or pending → `_refresh`, next due time), each setting a `changed` event that
    one re-pricing loop waits on; `_refresh` and the per-source due times (`_due`) stay as they are.
    """

    def __init__(
        self,
        sources: Sequence[PriceSource],
        lookups: Callable[[], list[Node]],
        reprice: Callable[[], None],
        priced: threading.Event,
        clock: Clock = SYSTEM_CLOCK,
        *,
        tick_seconds: float = 1.0,
    ) -> None:
        self._sources = list(sources)
        self._lookups = lookups
        self._reprice = reprice
        self._priced = priced
        self._clock = clock
        self._tick_seconds = tick_seconds
        self._due = {id(source): float("-inf") for source in self._sources}  # monotonic; due at once

    def run(self, stop: threading.Event, synced: threading.Event) -> None:
        """Tick every `tick_seconds` until `stop` is set. The first pass waits for the first full node list
        (`synced`), so readiness means every node was priced with what the sources could fetch for it
        (from the cache on a warm restart)."""
        while not synced.wait(self._tick_seconds):
            if stop.is_set():
                return
        while not stop.is_set():
            self.tick()
            stop.wait(self._tick_seconds)

    def tick(self) -> None:
        """One pass: refresh the sources that are due, in order, then re-price if anything changed."""
        now = self._clock.monotonic()
        lookups: list[Node] | None = None  # built once a pass, and only when a source refreshes
        changed = False
        for source in self._sources:
            interval = source.refresh_interval_seconds
            if interval is None or (self._due[id(source)] > now and not source.pending()):
                continue
            if lookups is None:
                lookups = self._lookups()
            changed |= self._refresh(source, lookups)
            self._due[id(source)] = now + interval
        if changed or not self._priced.is_set():
            self._reprice()
            self._priced.set()

    @staticmethod
    def _refresh(source: PriceSource, lookups: list[Node]) -> bool:
        """Refresh one source; True when its quotes may have changed. Never raises."""
        source.wanted(lookups)
        try:
            return source.refresh()
        except Exception:  # a bug in one source must not stop the others' refreshes
            log.exception("refresh of price source %s failed", source.name)
            return False
