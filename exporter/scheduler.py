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

    `lookups` gives the nodes the sources must keep prices for; `reprice` re-prices every node; `priced` is
    set once every source but the bills has refreshed once and the nodes were re-priced with it.

    `run` gives every source its own refresh thread and re-prices on a thread of its own, so no source
    waits on another: a billing query that hangs until its deadline delays neither the shelf prices, nor
    the first pricing, nor readiness. Bills are not waited for at all: they land hours late, a new node is
    never on them, and a warm restart has the billed rates from the cache already. `tick` is one pass of
    the same steps in turn, for tests on a fake clock.
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
        self._sources = [s for s in sources if s.refresh_interval_seconds is not None]
        self._lookups = lookups
        self._reprice = reprice
        self._priced = priced
        self._clock = clock
        self._tick_seconds = tick_seconds
        self._due = {id(source): float("-inf") for source in self._sources}  # monotonic; due at once
        self._awaited = {id(source) for source in self._sources if source.kind != "billing"}
        self._lock = threading.Lock()  # guards _awaited and _changed between refresh threads
        self._changed = threading.Event()  # a refresh changed quotes (or a first refresh ended)

    def run(self, stop: threading.Event, synced: threading.Event) -> None:
        """Start one refresh thread per source, then re-price on this one until `stop` is set. Nothing
        starts before the first full node list (`synced`), so readiness means every node was priced with
        what the price lists could give it."""
        while not synced.wait(self._tick_seconds):
            if stop.is_set():
                return
        for source in self._sources:
            name = f"refresh-{source.name}"
            threading.Thread(target=self._refresh_loop, args=(source, stop), name=name, daemon=True).start()
        with self._lock:
            awaited = bool(self._awaited)
        if not awaited:  # nothing to wait for: the list priced every node with all there is to price with
            self._priced.set()
        while not stop.is_set():
            if self._changed.wait(self._tick_seconds):
                self._changed.clear()
                try:
                    self._reprice_if_needed(changed=True)
                except Exception:  # one node that cannot be priced or rendered must not end re-pricing
                    log.exception("re-pricing the nodes failed")

    def tick(self) -> None:
        """One pass: refresh the sources that are due, in order, then re-price if anything changed."""
        changed = False
        lookups: list[Node] | None = None  # gathered once a pass, and only when a source refreshes
        for source in self._sources:
            if self._is_due(source):
                lookups = self._lookups() if lookups is None else lookups
                changed |= self._refresh(source, lookups)
        self._reprice_if_needed(changed=changed)

    def _refresh_loop(self, source: PriceSource, stop: threading.Event) -> None:
        """One source's thread: refresh when due, tell the re-pricing thread when quotes changed."""
        while not stop.is_set():
            try:
                if self._is_due(source) and self._refresh(source, self._lookups()):
                    self._changed.set()
            except Exception:  # gathering the nodes failed: this source tries again next tick
                log.exception("refresh of price source %s failed", source.name)
            stop.wait(self._tick_seconds)

    def _is_due(self, source: PriceSource) -> bool:
        return self._due[id(source)] <= self._clock.monotonic() or source.pending()

    def _refresh(self, source: PriceSource, lookups: list[Node]) -> bool:
        """Refresh one source and set its next due time; True when quotes may have changed. Never raises."""
        started = self._clock.monotonic()
        source.wanted(lookups)
        try:
            changed = source.refresh()
        except Exception:  # a bug in one source must not stop the others' refreshes
            log.exception("refresh of price source %s failed", source.name)
            changed = False
        interval = source.refresh_interval_seconds or 0.0
        self._due[id(source)] = started + interval
        with self._lock:
            first = id(source) in self._awaited
            self._awaited.discard(id(source))
        return changed or (first and not self._priced.is_set())

    def _reprice_if_needed(self, *, changed: bool) -> None:
        with self._lock:
            ready = not self._awaited
        if changed or (ready and not self._priced.is_set()):
            self._reprice()
            if ready:
                self._priced.set()
