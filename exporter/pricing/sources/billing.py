"""What the three clouds' bills have in common, so each cloud module only says how to key a node and how
to query its bill (AWS CUR through Athena, GCP's BigQuery export, Azure Cost Management).

Reconciliation rules (docs/pricing.md, "Billing"):
- Every `refresh_interval_seconds` the bill is queried once for the cluster's resources over the last few
  UTC days: rows of (resource, day, cost in the configured basis, billed hours, network cost, tags).
- Billing lands 6 to 24 h late and a half-billed day would deflate a rate, so a day counts only when it is
  complete: the bill holds usage ending after it (its watermark) and it ended `settle_hours` ago.
- A node's billed rate is Σ cost ÷ Σ billed hours over its latest `lookback_days` complete days. A node
  with no complete day on the bill gets no quote, so the engine prices it from the shelf until it has one.
- Rates persist in SQLite and are served while the last successful query is at most
  `max_staleness_seconds` old; then quotes stop (the engine falls back to shelf prices and the `source`
  label says so) until a query succeeds again, with no restart.
- The hours each node was seen are kept per UTC day (`presence.py`): Azure apportions a scale set's
  cost over its observed instance-hours with them, and `backfill` writes hourly series with them.
"""

from __future__ import annotations

import json
import math
import sys
from abc import ABC, abstractmethod
from array import array
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Generic, TypeVar

from exporter.config import BillingSettings
from exporter.health import Reason
from exporter.inventory.node import Node
from exporter.pricing.quote import Basis, BillFacts, Quote
from exporter.pricing.sources.context import SourceContext
from exporter.pricing.sources.fetch import FetchError
from exporter.pricing.sources.presence import Presence

# The scheduler calls `refresh` this often; the source decides itself when a query is due.
TICK_SECONDS = 60.0
_DAY = timedelta(days=1)
S = TypeVar("S", bound=BillingSettings)


def midnight(day: date) -> datetime:
    """The start of a UTC day: bills count days in UTC."""
    return datetime(day.year, day.month, day.day, tzinfo=UTC)


@dataclass(frozen=True, slots=True)
class BillRow:
    """One resource's billed usage on one UTC day, as a cloud module reads it from its bill."""

    resource: str
    day: date
    end: datetime  # newest usage end among the row's line items: the bill's watermark is their maximum
    cost: float  # in the configured cost basis
    hours: float  # billed instance-hours (0 where the bill has none: Azure uses observed hours)
    on_demand_cost: float = 0.0  # part of `cost` billed at undiscounted on-demand rates
    network_cost: float = 0.0
    currency: str = ""
    tags: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True, slots=True)
class DayTotals:
    cost: float
    hours: float
    on_demand_cost: float
    network_cost: float


class Bill:
    """A query's rows folded per (resource, day) into flat arrays: at 15,000 nodes a dict of 75,000
    small objects would cost the exporter ~15 MiB more while a refresh runs."""

    def __init__(self, resources: Sequence[str]) -> None:
        self.resources = list(resources)
        self._index = {resource: i for i, resource in enumerate(self.resources)}
        self._days: dict[date, tuple[array[float], ...]] = {}  # cost, hours, on-demand, network, rows
        self.tags: dict[str, dict[str, str]] = {}
        self.watermark: datetime | None = None

    def add(self, row: BillRow) -> None:
        """Fold one row in; a resource not asked for (a broader filter let it through) is ignored."""
        i = self._index.get(row.resource)
        if i is None:
            return
        columns = self._days.get(row.day)
        if columns is None:
            columns = self._days[row.day] = tuple(
                array("d", bytes(8 * len(self.resources))) for _ in range(5)
            )
        for column, value in zip(
            columns, (row.cost, row.hours, row.on_demand_cost, row.network_cost, 1.0), strict=True
        ):
            column[i] += value
        if self.watermark is None or row.end > self.watermark:
            self.watermark = row.end
        if row.tags:
            self.tags.setdefault(self.resources[i], {}).update((k, sys.intern(v)) for k, v in row.tags if v)

    def days(self) -> list[date]:
        return sorted(self._days)

    def totals(self, resource: str, day: date) -> DayTotals | None:
        i, columns = self._index.get(resource), self._days.get(day)
        if i is None or columns is None or not columns[4][i]:
            return None
        return DayTotals(columns[0][i], columns[1][i], columns[2][i], columns[3][i])


class BillingSource(ABC, Generic[S]):
    """Base of the billing sources, generic over their settings type. Subclasses set `name` and
    `resource_kind` and implement `resource`, `query` and `where` (and `billed_hours` when the bill has no
    usable hours)."""

    kind = "billing"
    name: str
    resource_kind: str  # "EC2 instance id", … for messages
    attributes_network = True  # False where the bill cannot tell a node's network cost apart

    def __init__(self, settings: S, context: SourceContext) -> None:
        self.settings = settings
        self.refresh_interval_seconds: float | None = TICK_SECONDS
        self.status = context.status(self.name)
        self.log = context.logger(type(self).__module__, self.name)
        self.currency = context.currency
        self.clock = context.clock
        self.scanned_bytes = 0  # query cost: bytes scanned (Athena) or billed (BigQuery)
        self.rows_ingested = 0
        self._health = context.health
        self._cache = context.cache
        self._fetcher = context.fetcher(self.name, settings, count_calls=True)
        self._billed: dict[str, BillFacts] = {}
        self._resources: set[str] = set()
        self._last_success: float | None = None
        self._next_query = 0.0
        self._served_fresh = False
        self._presence = Presence(context.cache, f"{self.name}.presence", settings.presence_retention_days)
        self._load_cache()

    # -- what a cloud module implements ---------------------------------------------------------------

    @abstractmethod
    def resource(self, node: Node) -> str | None:
        """The bill's resource key of a node (instance id, VM, scale set), or None if not this cloud's."""

    @abstractmethod
    def query(self, resources: Sequence[str], start: datetime, end: datetime) -> Iterator[BillRow]:
        """Rows for these resources with usage in [start, end), aggregated per resource and UTC day.

        Raise FetchError on failure (also midway: the rows so far are discarded). A malformed row is
        reported with `invalid_row` and skipped. Add the query's cost to `scanned_bytes`.
        """

    @abstractmethod
    def where(self) -> str:
        """Where this source reads its bill, for messages ("Athena table cur.data in us-east-1")."""

    def billed_hours(self, resource: str, day: date, hours: float) -> float | None:
        """The hours a day's cost is divided by; None when unknown (the day is then not used)."""
        return hours

    # -- PriceSource ----------------------------------------------------------------------------------

    def quote(self, node: Node) -> Quote | None:
        if not self._fresh(self.clock.time()):
            return None
        resource = self.resource(node)
        facts = self._billed.get(resource) if resource is not None else None
        if facts is None:
            return None
        return Quote(
            Decimal(repr(facts.hourly)),
            self.currency,
            Basis.BILLED,
            on_demand_hourly=Decimal(repr(facts.on_demand_hourly)) if facts.on_demand_hourly else None,
        )

    def facts(self, node: Node) -> BillFacts | None:
        """The node's billed days, network cost and tags, held even when too stale to price with."""
        resource = self.resource(node)
        return self._billed.get(resource) if resource is not None else None

    def wanted(self, nodes: Iterable[Node]) -> None:
        seen = [(node.name, r) for node in nodes if (r := self.resource(node)) is not None]
        self._resources = {r for _, r in seen}
        self._presence.mark(seen, self.clock.time())

    def pending(self) -> bool:
        return False  # a new node cannot be on a bill that lands hours late: nothing to fetch at once

    def refresh(self) -> bool:
        """Query the bill when due; True when quotes changed (new rates, or staleness crossed)."""
        now = self.clock.time()
        self._presence.flush(now)
        fresh = self._fresh(now)
        changed, self._served_fresh = fresh != self._served_fresh, fresh
        if now < self._next_query:
            return changed
        self._next_query = now + self.settings.retry_interval_seconds
        started = self.clock.monotonic()
        try:
            billed, newest = self._fetch(sorted(self._resources), now)
        except Exception as err:  # a refresh never raises: the last rates stay, the status says why
            if not isinstance(err, FetchError):  # a bug or an answer no mapping foresaw
                self.log.exception("querying the bill failed unexpectedly")
                err = FetchError(Reason.BAD_RESPONSE, f"unexpected error: {err!r}")
            took = self.clock.monotonic() - started
            self.status.failed(err.reason, err.detail, duration=took, count=False, now=self.clock.time())
            return changed
        self._next_query = now + self.settings.refresh_interval_seconds
        changed |= billed != self._billed or not self._served_fresh
        self._billed, self._last_success, self._served_fresh = billed, now, True
        self._persist(newest)
        took = self.clock.monotonic() - started
        self.status.succeeded(duration=took, data_timestamp=newest, count=False, now=self.clock.time())
        return changed

    # -- presence -------------------------------------------------------------------------------------

    def observe(self, nodes: Iterable[Node], at: float) -> None:
        """Note the UTC hour in which these nodes (and the exporter) were seen."""
        self._presence.mark([(n.name, r) for n in nodes if (r := self.resource(n)) is not None], at)

    def presence(self, day: date) -> dict[str, tuple[int, str]]:
        """Node name → (mask of UTC hours seen, resource) on a day; key "" is the exporter's own."""
        return self._presence.day(day)

    # -- querying -------------------------------------------------------------------------------------

    def window(self, now: float) -> tuple[datetime, datetime]:
        """The days one refresh asks for: the lookback, the days still settling, and one day of slack
        for a bill later than usual."""
        today = datetime.fromtimestamp(now, UTC).replace(hour=0, minute=0, second=0, microsecond=0)
        settling = math.ceil(self.settings.settle_hours / 24)
        return today - (self.settings.lookback_days + settling + 1) * _DAY, today + _DAY

    def bill(self, resources: Sequence[str], start: datetime, end: datetime) -> Bill:
        """The bill for [start, end), folded per (resource, day), with retries of transient failures."""
        return self._fetcher.run(lambda: self._fold(self.query(resources, start, end), resources))

    def complete(self, day: date, watermark: datetime, now: float) -> bool:
        """A day is trusted once the bill holds later usage and it ended `settle_hours` ago."""
        end = midnight(day) + _DAY
        return end < watermark and end.timestamp() + self.settings.settle_hours * 3600 <= now

    def invalid_row(self, key: str, problem: str) -> None:
        """Count (and log once) a bill row that cannot be read; the other rows still count."""
        self._health.invalid("billing_row", f"{self.name}:{key}", problem)

    def _fetch(self, resources: Sequence[str], now: float) -> tuple[dict[str, BillFacts], float]:
        if not resources:
            raise FetchError(Reason.NO_DATA, f"no node in the cluster has a {self.resource_kind} to look up")
        start, end = self.window(now)
        bill = self.bill(resources, start, end)
        assert bill.watermark is not None  # _fold raises NO_DATA otherwise
        complete = [day for day in reversed(bill.days()) if self.complete(day, bill.watermark, now)]
        if not complete:
            raise FetchError(
                Reason.NO_DATA,
                f"{self.where()}: the newest usage of the cluster's resources ends "
                f"{bill.watermark:%Y-%m-%d %H:%M} UTC; no day since {start:%Y-%m-%d} is complete yet",
            )
        shared: dict[tuple[str, ...], tuple[str, ...]] = {}  # most nodes use the same days: one tuple
        billed = {}
        for resource in bill.resources:
            facts = self._facts(resource, bill, complete, shared)
            if facts is not None:
                billed[resource] = facts
        newest = complete[0]
        return billed, (midnight(newest) + _DAY).timestamp()

    def _fold(self, rows: Iterator[BillRow], wanted: Sequence[str]) -> Bill:
        bill = Bill(wanted)
        foreign: set[str] = set()
        count = 0
        for row in rows:
            count += 1
            if row.currency and row.currency != self.currency:
                foreign.add(row.currency)
                continue
            numbers = (row.cost, row.hours, row.on_demand_cost, row.network_cost)
            if not all(math.isfinite(x) for x in numbers) or row.hours < 0:
                self.invalid_row(row.resource, f"non-finite or negative amounts on {row.day}: {numbers}")
                continue
            bill.add(row)
        self.rows_ingested += count
        if foreign and bill.watermark is None:
            raise FetchError(
                Reason.CONFIG,
                f"{self.where()} is in {', '.join(sorted(foreign))}, not pricing.currency {self.currency}",
            )
        if bill.watermark is None:
            raise FetchError(
                Reason.NO_DATA,
                f"{self.where()} has no usage of any of the cluster's {len(wanted)} {self.resource_kind}s "
                "in the last days: check that it is this account's bill and that its export is running",
            )
        return bill

    def _facts(
        self, resource: str, bill: Bill, complete: list[date], shared: dict[tuple[str, ...], tuple[str, ...]]
    ) -> BillFacts | None:
        used: list[tuple[date, DayTotals, float]] = []
        for day in complete:  # newest first
            totals = bill.totals(resource, day)
            hours = self.billed_hours(resource, day, totals.hours) if totals is not None else None
            if totals is not None and hours is not None and hours > 0:
                used.append((day, totals, hours))
                if len(used) == self.settings.lookback_days:
                    break
        if not used:
            return None
        used.reverse()
        hours = sum(h for _, _, h in used)
        names = tuple(day.isoformat() for day, _, _ in used)
        tags = bill.tags.get(resource, {})
        return BillFacts(
            self.name,
            sum(t.cost for _, t, _ in used) / hours,
            sum(t.on_demand_cost for _, t, _ in used) / hours,
            hours,
            shared.setdefault(names, names),
            tuple(t.cost for _, t, _ in used),
            sum(t.network_cost for _, t, _ in used) / hours if self.attributes_network else None,
            tuple((k, tags[k]) for k in self.settings.tags if k in tags),
        )

    # -- staleness and the cache ----------------------------------------------------------------------

    def _fresh(self, now: float) -> bool:
        last = self._last_success
        return last is not None and now - last <= self.settings.max_staleness_seconds

    def _persist(self, newest: float) -> None:
        if self._cache is None:
            return
        self._cache.store(self.name, ((r, _dump(f)) for r, f in self._billed.items()), replace=True)
        meta = {"last_success": self._last_success, "newest": newest}
        self._cache.store(f"{self.name}.meta", [("state", json.dumps(meta))])

    def _load_cache(self) -> None:
        if self._cache is None:
            return
        state = self._cache.load(f"{self.name}.meta").get("state")
        if state is None:
            return
        try:
            meta = json.loads(state.value)
            last, newest = float(meta["last_success"]), float(meta["newest"])
        except (ValueError, KeyError, TypeError) as err:
            self.log.warning("ignoring unreadable cached state: %s", err)
            return
        for resource, entry in self._cache.load(self.name).items():
            try:
                self._billed[resource] = _load(self.name, entry.value)
            except (ValueError, KeyError, TypeError) as err:
                self.log.warning("ignoring unreadable cached rate of %s: %s", resource, err)
        self._last_success = last
        self._next_query = last + self.settings.refresh_interval_seconds
        self.status.restored(last, newest)


def _dump(facts: BillFacts) -> str:
    return json.dumps(
        [
            facts.hourly,
            facts.on_demand_hourly,
            facts.hours,
            facts.day_names,
            facts.day_costs,
            facts.network_hourly,
            facts.tags,
        ]
    )


def _load(source: str, text: str) -> BillFacts:
    hourly, on_demand, hours, names, costs, network, tags = json.loads(text)
    return BillFacts(
        source,
        float(hourly),
        float(on_demand),
        float(hours),
        tuple(str(d) for d in names),
        tuple(float(c) for c in costs),
        None if network is None else float(network),
        tuple((str(k), str(v)) for k, v in tags),
    )
