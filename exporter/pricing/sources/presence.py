"""The hours each node was seen, per UTC day: a 24-bit mask per node name, persisted in the SQLite cache.

Bills count in UTC days and some (Azure scale sets) give a day's cost for many instances at once, so a
node's share, and the hours `backfill` writes for it, come from when the exporter saw it. The exporter's
own hours are kept under the name "", so a day it did not watch whole can be told from a short-lived node.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

from exporter.cache import PriceCache


class Presence:
    """Today's masks in memory (written back on `flush`), older days read from the cache on demand."""

    def __init__(self, cache: PriceCache | None, namespace: str, retention_days: int) -> None:
        self._cache = cache
        self._namespace = namespace  # the cache section: "<source>.presence"
        self._retention_days = retention_days
        self._day = ""
        self._masks: dict[str, tuple[int, str]] = {}  # node name → (hour mask, resource), today only
        self._dirty: set[str] = set()

    def mark(self, seen: list[tuple[str, str]], at: float) -> None:
        """Set the hour's bit of each (node name, resource), and of the exporter itself (name "")."""
        moment = datetime.fromtimestamp(at, UTC)
        day, bit = moment.date().isoformat(), 1 << moment.hour
        if day != self._day:
            self.flush(at)
            self._day, self._masks = day, self._load(day)
        for name, resource in [("", ""), *seen]:
            mask, _ = self._masks.get(name, (0, ""))
            if mask & bit == 0:
                self._masks[name] = (mask | bit, resource)
                self._dirty.add(name)

    def day(self, day: date) -> dict[str, tuple[int, str]]:
        """Node name → (mask of UTC hours seen, resource) on a day; key "" is the exporter's own."""
        if day.isoformat() == self._day:
            return dict(self._masks)
        return self._load(day.isoformat())

    def flush(self, now: float) -> None:
        """Write today's changed masks, and drop days older than the retention."""
        if self._cache is None or not self._dirty:
            return
        oldest = datetime.fromtimestamp(now, UTC).date() - timedelta(days=self._retention_days)
        items = [
            (f"{self._day}|{name}", f"{mask}|{resource}")
            for name in self._dirty
            for mask, resource in [self._masks[name]]
        ]
        self._cache.store(self._namespace, items, drop_before=oldest.isoformat())
        self._dirty.clear()

    def _load(self, day: str) -> dict[str, tuple[int, str]]:
        if self._cache is None:
            return {}
        out = {}
        for key, entry in self._cache.load(self._namespace, f"{day}|").items():
            mask, _, resource = entry.value.partition("|")
            if mask.isdigit():
                out[key.partition("|")[2]] = (int(mask), resource)
        return out
