"""The exporter's own metrics: integration health, node counts per source, watch activity, build info.

A custom collector reads live state at scrape time (a few dozen series), in a registry of the app's own,
so nothing is mutated on refresh and tests get a fresh registry each.
"""

from __future__ import annotations

import platform
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from typing import Protocol

from exporter import __version__
from exporter.health import Health
from exporter.inventory.sharding import UNSHARDED, Shard
from exporter.metrics.live import Labels, LiveCollector, LiveFamily
from exporter.metrics.store import UNPRICED, NodeMetricsStore
from exporter.pricing.quote import Commitment


class WatchStats(Protocol):
    events: Counter[str]
    relists: int


class BillStats(Protocol):
    name: str
    scanned_bytes: int
    rows_ingested: int

    def commitments(self) -> tuple[Commitment, ...]: ...


class ExporterCollector(LiveCollector):
    def __init__(
        self,
        health: Health,
        store: NodeMetricsStore,
        ready: Callable[[], bool],
        watch: WatchStats | None = None,
        bills: Sequence[BillStats] = (),
        cache_persistent: Callable[[], bool] = lambda: False,
        shard: Callable[[], Shard] = lambda: UNSHARDED,
    ) -> None:
        """`cache_persistent`: whether the price cache is a file on disk (not memory, not disabled);
        `shard`: the nodes this replica serves now."""
        self._shard = shard
        self._bills = bills
        self._cache_persistent = cache_persistent
        self._health = health
        self._store = store
        self._ready = ready
        self._watch = watch

    def families(self) -> Iterator[LiveFamily]:
        yield from self._integrations()
        if self._bills:
            yield LiveFamily(
                "nodecost_billing_query_bytes",
                "counter",
                "Bytes billing queries scanned (Athena) or were billed for (BigQuery): what they cost.",
                [((("integration", bill.name),), bill.scanned_bytes) for bill in self._bills],
            )
            yield LiveFamily(
                "nodecost_billing_rows_ingested",
                "counter",
                "Bill rows read by billing queries.",
                [((("integration", bill.name),), bill.rows_ingested) for bill in self._bills],
            )
            yield from self._commitments()
        counts = self._store.source_counts()
        counts.setdefault(UNPRICED, 0)
        yield LiveFamily(
            "nodecost_nodes",
            "gauge",
            "Nodes by the source that priced them.",
            [((("source", source),), count) for source, count in sorted(counts.items())],
        )
        yield LiveFamily(
            "nodecost_invalid_inputs",
            "counter",
            "Inputs skipped as malformed (nodes, price rows), by kind.",
            [((("kind", kind),), count) for kind, count in sorted(self._health.invalid_counts().items())],
        )
        if self._watch is not None:
            yield LiveFamily(
                "nodecost_kubernetes_watch_events",
                "counter",
                "Node watch events received, by type.",
                [((("type", kind),), count) for kind, count in sorted(self._watch.events.items())],
            )
            yield LiveFamily(
                "nodecost_kubernetes_relists",
                "counter",
                "Full node relists after the first (e.g. after 410 Expired).",
                [((), self._watch.relists)],
            )
        yield LiveFamily(
            "nodecost_cache_persistent",
            "gauge",
            "1 if the price cache is a file on disk; 0 if in memory (unusable path, locked) or disabled.",
            [((), 1 if self._cache_persistent() else 0)],
        )
        yield LiveFamily(
            "nodecost_ready",
            "gauge",
            "1 once the first node list and the first price pass are done.",
            [((), 1 if self._ready() else 0)],
        )
        yield LiveFamily(
            "nodecost_build",
            "info",
            "Exporter version and Python runtime; value is always 1.",
            [((("version", __version__), ("python_version", platform.python_version())), 1)],
        )
        shard = self._shard()
        yield LiveFamily(
            "nodecost_exporter",
            "info",
            "The shard of the nodes this replica serves; value is always 1.",
            [((("shard", str(shard.index)), ("total_shards", str(shard.total))), 1)],
        )

    def _commitments(self) -> Iterator[LiveFamily]:
        """Each commitment's unused cost and utilization over its bill's latest settled days."""
        commitments = [
            ((("provider", c.provider), ("commitment", c.commitment)), c)
            for bill in self._bills
            for c in bill.commitments()
        ]
        yield LiveFamily(
            "nodecost_commitment_unused_hourly_cost",
            "gauge",
            "Cost per hour of a commitment (reservation, savings plan, committed use discount) that covered "
            "no usage, over the bill's latest settled days; in pricing.currency, never spread onto nodes.",
            [(labels, c.unused_hourly) for labels, c in commitments],
        )
        yield LiveFamily(
            "nodecost_commitment_utilization_ratio",
            "gauge",
            "Share (0-1) of a commitment's cost that covered usage, over the bill's latest settled days.",
            [(labels, c.utilization) for labels, c in commitments],
        )

    def _integrations(self) -> Iterator[LiveFamily]:
        up: list[tuple[Labels, float]] = []
        failure: list[tuple[Labels, float]] = []
        attempt: list[tuple[Labels, float]] = []
        success: list[tuple[Labels, float]] = []
        fresh: list[tuple[Labels, float]] = []
        duration: list[tuple[Labels, float]] = []
        requests: list[tuple[Labels, float]] = []
        errors: list[tuple[Labels, float]] = []
        for status in self._health.integrations():
            name = (("integration", status.name),)
            up.append((name, 1 if status.up else 0))
            if status.reason is not None and not status.up:
                failure.append(((*name, ("reason", status.reason.value)), 1))
            for samples, value in (
                (attempt, status.last_attempt),
                (success, status.last_success),
                (fresh, status.data_timestamp),
                (duration, status.last_duration_seconds),
            ):
                if value is not None:
                    samples.append((name, value))
            requests.append((name, status.requests))
            errors += [
                ((*name, ("reason", reason.value)), count) for reason, count in sorted(status.errors.items())
            ]
        yield LiveFamily(
            "nodecost_integration_up", "gauge", "1 if the integration's last attempt worked.", up
        )
        yield LiveFamily(
            "nodecost_integration_failure",
            "info",
            "Why a failing integration fails (bounded reason); 1 while failing.",
            failure,
        )
        yield LiveFamily(
            "nodecost_integration_last_attempt_timestamp_seconds",
            "gauge",
            "Unix time of the last attempt.",
            attempt,
        )
        yield LiveFamily(
            "nodecost_integration_last_success_timestamp_seconds",
            "gauge",
            "Unix time of the last success.",
            success,
        )
        yield LiveFamily(
            "nodecost_integration_data_timestamp_seconds",
            "gauge",
            "Unix time of the newest data the integration holds (freshness).",
            fresh,
        )
        yield LiveFamily(
            "nodecost_integration_last_duration_seconds", "gauge", "Duration of the last attempt.", duration
        )
        yield LiveFamily(
            "nodecost_integration_requests", "counter", "Attempts made by the integration.", requests
        )
        yield LiveFamily("nodecost_integration_errors", "counter", "Failed attempts, by reason.", errors)
