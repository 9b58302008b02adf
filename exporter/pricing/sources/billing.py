"""What the three clouds' bills have in common, so each cloud module only says how to key a node and how
to query its bill (AWS CUR through Athena, GCP's BigQuery export, Azure Cost Management).

Reconciliation rules (docs/pricing.md, "Billing"):
- Every `refresh_interval_seconds` the bill is queried once for the cluster's resources over the last few
  UTC days: rows of (resource, day, cost in the configured basis, billed hours, network cost, tags).
- Bills land 6 to 24 h late and fill in line items at different times, so an export-wide watermark says
  nothing about one resource. A day's bill is usable for a node when the day ended `settle_hours` ago and
  its billed hours cover every hour the node was alive that day (from `metadata.creationTimestamp` to the
  deletion the exporter saw; `SLACK_HOURS` per node for the minutes between a VM's start or stop and its
  Node object's). A day still being filled is skipped: it never pushes an older usable day out.
- A node's billed rate is Σ cost ÷ Σ billed hours over its latest `lookback_days` usable days. A node
  with no usable day gets no quote, so the engine prices it from the shelf until it has one.
- Where one bill resource holds many nodes (an Azure scale set), a day's rate is the resource's cost ÷
  its billed instance-hours, and each node's share of the day is that rate times the hours it was alive.
- Rates persist in SQLite and are served while the last successful query is at most
  `max_staleness_seconds` old; then quotes stop (the engine falls back to shelf prices and the `source`
  label says so) until a query succeeds again, with no restart.
- The hours each node was seen are kept per UTC day (`presence.py`) for `backfill`.
"""

from __future__ import annotations

import dataclasses
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
from exporter.pricing.quote import Basis, BillFacts, Commitment, Quote
from exporter.pricing.sources.context import SourceContext
from exporter.pricing.sources.fetch import FetchError
from exporter.pricing.sources.presence import Presence

# The scheduler calls `refresh` this often; the source decides itself when a query is due.
TICK_SECONDS = 60.0
# Per node and day, how far billed hours may fall short of the node's alive hours: a VM is billed from its
# start, minutes before its Node object is created, and its deletion is seen up to a tick late.
SLACK_HOURS = 0.25
CACHE_VERSION = 3  # 2: billed facts keyed by node uid (1: by bill resource); 3: with commitment coverage
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
    hours: float  # billed instance-hours (of every instance, where the resource is a scale set)
    on_demand_cost: float = 0.0  # part of `cost` billed at undiscounted on-demand rates
    network_cost: float = 0.0
    currency: str = ""
    tags: tuple[tuple[str, str], ...] = ()
    covered_hours: float = (
        0.0  # the part of `hours` a commitment covered (RI, savings plan, CUD, reservation)
    )


@dataclass(frozen=True, slots=True)
class CommitmentDay:
    """One commitment's day, as a cloud module reads it from its bill (`commitment_days`)."""

    commitment: str  # the bill's id of the commitment
    day: date
    committed: float  # what the commitment cost that day (its fee, amortized), in the source's cost basis
    used: float  # the part of that which covered usage


@dataclass(frozen=True, slots=True)
class DayTotals:
    cost: float
    hours: float
    on_demand_cost: float
    network_cost: float
    covered_hours: float = 0.0


class Bill:
    """A query's rows folded per (resource, day) into flat arrays: at 15,000 nodes a dict of 75,000
    small objects would cost the exporter ~15 MiB more while a refresh runs."""

    def __init__(self, resources: Sequence[str]) -> None:
        self.resources = list(resources)
        self._index = {resource: i for i, resource in enumerate(self.resources)}
        # per day: cost, hours, on-demand, network, covered hours, rows
        self._days: dict[date, tuple[array[float], ...]] = {}
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
                array("d", bytes(8 * len(self.resources))) for _ in range(6)
            )
        values = (row.cost, row.hours, row.on_demand_cost, row.network_cost, row.covered_hours, 1.0)
        for column, value in zip(columns, values, strict=True):
            column[i] += value
        if self.watermark is None or row.end > self.watermark:
            self.watermark = row.end
        if row.tags:
            self.tags.setdefault(self.resources[i], {}).update((k, sys.intern(v)) for k, v in row.tags if v)

    def days(self) -> list[date]:
        return sorted(self._days)

    def totals(self, resource: str, day: date) -> DayTotals | None:
        i, columns = self._index.get(resource), self._days.get(day)
        if i is None or columns is None or not columns[5][i]:
            return None
        return DayTotals(columns[0][i], columns[1][i], columns[2][i], columns[3][i], columns[4][i])


@dataclass(frozen=True, slots=True)
class Member:
    """A node of a bill resource, alive from its creation to `gone` (None: still in the cluster)."""

    node: Node
    gone: float | None = None

    def alive_hours(self, day: date) -> float:
        start = midnight(day).timestamp()
        return self.node.alive_seconds(start, start + 86_400, self.gone) / 3600


@dataclass(frozen=True, slots=True)
class NodeDay:
    """One usable day of one node: its share of the resource's bill."""

    day: date
    cost: float
    hours: float
    on_demand_cost: float
    network_cost: float
    covered_hours: float


class BillingSource(ABC, Generic[S]):
    """Base of the billing sources, generic over their settings type. Subclasses set `name` and
    `resource_kind` and implement `resource`, `query` and `where` (and `shared` where one bill resource
    holds several nodes)."""

    kind = "billing"
    name: str
    provider: str  # "aws", "gcp", "azure": the `provider` label of its commitments
    resource_kind: str  # "EC2 instance id", … for messages
    attributes_network = True  # False where the bill cannot tell a node's network cost apart
    reports_coverage = False  # True where BillRow.covered_hours says what commitments covered
    reports_commitments = False  # True where `commitment_days` reads the commitments off the bill

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
        self._account_wide = context.account_wide
        self._billed: dict[str, BillFacts] = {}  # node uid → facts
        self._commitments: tuple[Commitment, ...] = ()
        self._members: dict[str, Member] = {}  # node uid → the node, for the nodes in the cluster
        self._resources: dict[str, str] = {}  # node uid → bill resource
        self._gone: dict[str, tuple[Member, str]] = {}  # nodes seen leaving, while their days can be billed
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

    def commitment_days(self, start: datetime, end: datetime) -> Iterator[CommitmentDay]:
        """Each commitment's committed and used cost per UTC day in [start, end); none by default. Raise
        FetchError on failure: the node rates still update, the last commitments are kept."""
        return iter(())

    def shared(self, resource: str) -> bool:
        """Whether the resource is billed for several nodes at once (a scale set), so that each node's
        share of a day is the day's rate times its own alive hours, not the resource's whole cost."""
        return False

    # -- PriceSource ----------------------------------------------------------------------------------

    def quote(self, node: Node) -> Quote | None:
        if not self._fresh(self.clock.time()):
            return None
        facts = self._billed.get(node.uid)
        if facts is None:
            return None
        return Quote(
            Decimal(repr(facts.hourly)),
            self.currency,
            Basis.BILLED,
            on_demand_hourly=Decimal(repr(facts.on_demand_hourly)) if facts.on_demand_hourly else None,
        )

    def commitments(self) -> tuple[Commitment, ...]:
        """The commitments of the last successful refresh (or the cache), while fresh enough to serve; on
        shard 0 only (another replica's would be counted twice)."""
        if not self._account_wide():
            return ()
        return self._commitments if self._fresh(self.clock.time()) else ()

    def facts(self, node: Node) -> BillFacts | None:
        """The node's billed days, network cost and tags, held even when too stale to price with."""
        return self._billed.get(node.uid)

    def wanted(self, nodes: Iterable[Node]) -> None:
        """Take the cluster's nodes; a node that left since the last call is kept as gone at this time,
        so that its hours still count against its resource's bill (a churned scale set)."""
        now = self.clock.time()
        members, resources = {}, {}
        for node in nodes:
            resource = self.resource(node)
            if resource is not None:
                members[node.uid], resources[node.uid] = Member(node), resource
                self._gone.pop(node.uid, None)
        for uid, member in self._members.items():
            if uid not in members:
                self._gone[uid] = (Member(member.node, now), self._resources[uid])
        horizon = self.window(now)[0].timestamp()
        self._gone = {uid: g for uid, g in self._gone.items() if (g[0].gone or now) >= horizon}
        self._members, self._resources = members, resources
        self._presence.mark([(m.node.name, resources[uid]) for uid, m in members.items()], now)

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
            billed, newest = self._fetch(now)
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
        self._refresh_commitments(now)
        self._persist(newest)
        took = self.clock.monotonic() - started
        self.status.succeeded(duration=took, data_timestamp=newest, count=False, now=self.clock.time())
        return changed

    # -- presence -------------------------------------------------------------------------------------

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

    def settled(self, day: date, now: float) -> bool:
        """A day may be used once it ended `settle_hours` ago (and then only where its bill is full)."""
        return (midnight(day) + _DAY).timestamp() + self.settings.settle_hours * 3600 <= now

    def _refresh_commitments(self, now: float) -> None:
        """Commitments over their latest `lookback_days` settled days; a failure keeps the last ones. Not
        queried on a shard other than 0, which does not export them."""
        if not self.reports_commitments or not self._account_wide():
            return
        start, end = self.window(now)
        try:
            days = self._fetcher.run(lambda: list(self.commitment_days(start, end)))
        except FetchError as err:
            self.log.warning(
                "querying commitments failed (%s): %s; keeping the last figures", err.reason, err.detail
            )
            return
        per: dict[str, dict[date, tuple[float, float]]] = {}
        for entry in days:
            committed, used = per.setdefault(entry.commitment, {}).get(entry.day, (0.0, 0.0))
            per[entry.commitment][entry.day] = (committed + entry.committed, used + entry.used)
        commitments = []
        for commitment, by_day in sorted(per.items()):
            settled = [d for d in sorted(by_day, reverse=True) if self.settled(d, now)]
            used_days = sorted(settled[: self.settings.lookback_days])
            committed = sum(by_day[d][0] for d in used_days)
            if not used_days or committed <= 0:
                continue
            used = min(sum(by_day[d][1] for d in used_days), committed)
            unused_hourly = (committed - used) / (24 * len(used_days))
            days_used = tuple(d.isoformat() for d in used_days)
            commitments.append(
                Commitment(self.provider, commitment, unused_hourly, used / committed, days_used)
            )
        self._commitments = tuple(commitments)

    def node_day(
        self, resource: str, day: date, totals: DayTotals, alive: Sequence[float], own: float
    ) -> NodeDay | None:
        """A node's share of its resource's bill on a day, or None when the day is not usable for it.

        `alive` are the hours each node of the resource (the cluster's and those seen leaving) was alive
        that day, `own` the node's own. The day is usable when the billed hours cover them all, and only
        for a node that existed that day.
        """
        if totals.hours <= 0:
            return None
        needed = sum(alive) - SLACK_HOURS * sum(1 for hours in alive if hours > 0)
        if totals.hours < needed:
            return None  # still being filled in: used once it is complete
        if own <= 0:  # billed, but not for this node: a scale set's other instances, or a reused name
            return None
        if not self.shared(resource):
            return NodeDay(
                day,
                totals.cost,
                totals.hours,
                totals.on_demand_cost,
                totals.network_cost,
                totals.covered_hours,
            )
        share = own / totals.hours
        return NodeDay(
            day,
            totals.cost * share,
            own,
            totals.on_demand_cost * share,
            totals.network_cost * share,
            totals.covered_hours * share,
        )

    def invalid_row(self, key: str, problem: str) -> None:
        """Count (and log once) a bill row that cannot be read; the other rows still count."""
        self._health.invalid("billing_row", f"{self.name}:{key}", problem)

    def _fetch(self, now: float) -> tuple[dict[str, BillFacts], float]:
        resources = sorted(set(self._resources.values()))
        if not resources:
            raise FetchError(Reason.NO_DATA, f"no node in the cluster has a {self.resource_kind} to look up")
        start, end = self.window(now)
        bill = self.bill(resources, start, end)
        assert bill.watermark is not None  # _fold raises NO_DATA otherwise
        settled = [day for day in reversed(bill.days()) if self.settled(day, now)]
        if not settled:
            raise FetchError(
                Reason.NO_DATA,
                f"{self.where()}: no day since {start:%Y-%m-%d} ended {self.settings.settle_hours:g} h ago "
                f"(the newest usage of the cluster's resources ends {bill.watermark:%Y-%m-%d %H:%M} UTC)",
            )
        members: dict[str, list[Member]] = {}
        for uid, member in self._members.items():
            members.setdefault(self._resources[uid], []).append(member)
        for member, resource in self._gone.values():
            members.setdefault(resource, []).append(member)
        shared: dict[tuple[str, ...], tuple[str, ...]] = {}  # most nodes use the same days: one tuple
        billed = {}
        for uid, member in self._members.items():
            resource = self._resources[uid]
            facts = self._facts(member, resource, members[resource], bill, settled, shared)
            if facts is not None:
                billed[uid] = facts
        if not billed:
            raise FetchError(
                Reason.NO_DATA,
                f"{self.where()}: on no day since {start:%Y-%m-%d} that ended "
                f"{self.settings.settle_hours:g} h ago do the billed hours of a node's resource cover "
                "the hours the node was alive: "
                "the bill is still being filled in",
            )
        newest = max(date.fromisoformat(facts.day_names[-1]) for facts in billed.values())
        return billed, (midnight(newest) + _DAY).timestamp()

    def _fold(self, rows: Iterator[BillRow], wanted: Sequence[str]) -> Bill:
        bill = Bill(wanted)
        foreign: set[str] = set()
        count = 0
        deadline = self.clock.monotonic() + self.settings.timeout_seconds
        for row in rows:
            count += 1
            if self.clock.monotonic() > deadline:  # each call has its own deadline; this bounds the paging
                raise FetchError(
                    Reason.TIMEOUT,
                    f"{self.where()}: the query's answer took longer than {self.settings.timeout_seconds:g}s "
                    f"to read ({count - 1} rows so far); raise {self.settings.section_key}.timeout_seconds",
                )
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
        self,
        member: Member,
        resource: str,
        members: list[Member],
        bill: Bill,
        settled: list[date],
        shared: dict[tuple[str, ...], tuple[str, ...]],
    ) -> BillFacts | None:
        used: list[NodeDay] = []
        for day in settled:  # newest first
            totals = bill.totals(resource, day)
            if totals is None:
                continue
            alive = [m.alive_hours(day) for m in members]
            node_day = self.node_day(resource, day, totals, alive, member.alive_hours(day))
            if node_day is not None:
                used.append(node_day)
                if len(used) == self.settings.lookback_days:
                    break
        if not used:
            return None
        used.reverse()
        hours = sum(d.hours for d in used)
        names = tuple(d.day.isoformat() for d in used)
        tags = bill.tags.get(resource, {})
        return BillFacts(
            self.name,
            sum(d.cost for d in used) / hours,
            sum(d.on_demand_cost for d in used) / hours,
            hours,
            shared.setdefault(names, names),
            tuple(d.cost for d in used),
            sum(d.network_cost for d in used) / hours if self.attributes_network else None,
            tuple((k, tags[k]) for k in self.settings.tags if k in tags),
            min(1.0, sum(d.covered_hours for d in used) / hours) if self.reports_coverage else None,
        )

    # -- staleness and the cache ----------------------------------------------------------------------

    def _fresh(self, now: float) -> bool:
        last = self._last_success
        return last is not None and now - last <= self.settings.max_staleness_seconds

    def _persist(self, newest: float) -> None:
        if self._cache is None:
            return
        self._cache.store(self.name, ((r, _dump(f)) for r, f in self._billed.items()), replace=True)
        meta = {"last_success": self._last_success, "newest": newest, "version": CACHE_VERSION}
        commitments = json.dumps([dataclasses.astuple(c) for c in self._commitments])
        self._cache.store(f"{self.name}.meta", [("state", json.dumps(meta)), ("commitments", commitments)])

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
        if meta.get("version") != CACHE_VERSION:  # rates of an older release: query the bill at once
            self.log.info("cached billed rates are from an older release; querying the bill again")
            return
        for resource, entry in self._cache.load(self.name).items():
            try:
                self._billed[resource] = _load(self.name, entry.value)
            except (ValueError, KeyError, TypeError) as err:
                self.log.warning("ignoring unreadable cached rate of %s: %s", resource, err)
        saved = self._cache.load(f"{self.name}.meta").get("commitments")
        try:
            self._commitments = tuple(
                Commitment(str(p), str(c), float(u), float(r), tuple(str(d) for d in days))
                for p, c, u, r, days in (json.loads(saved.value) if saved else [])
            )
        except (ValueError, TypeError) as err:
            self.log.warning("ignoring unreadable cached commitments: %s", err)
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
            facts.coverage,
        ]
    )


def _load(source: str, text: str) -> BillFacts:
    hourly, on_demand, hours, names, costs, network, tags, coverage = json.loads(text)
    return BillFacts(
        source,
        float(hourly),
        float(on_demand),
        float(hours),
        tuple(str(d) for d in names),
        tuple(float(c) for c in costs),
        None if network is None else float(network),
        tuple((str(k), str(v)) for k, v in tags),
        None if coverage is None else float(coverage),
    )
