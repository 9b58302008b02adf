"""The exporter's own metrics: integration health, node counts per source, watch activity, build info.

A custom collector reads live state at scrape time (a few dozen series), in a registry of the app's own,
so nothing is mutated on refresh and tests get a fresh registry each.
"""

from __future__ import annotations

import platform
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from typing import Protocol

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    InfoMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from exporter import __version__
from exporter.health import Health
from exporter.inventory.sharding import UNSHARDED, Shard
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


class ExporterCollector(Collector):
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

    def collect(self) -> Iterator[Metric]:
        yield from self._integrations()
        if self._bills:
            scanned = CounterMetricFamily(
                "nodecost_billing_query_bytes",
                "Bytes billing queries scanned (Athena) or were billed for (BigQuery): what they cost.",
                labels=["integration"],
            )
            rows = CounterMetricFamily(
                "nodecost_billing_rows_ingested", "Bill rows read by billing queries.", labels=["integration"]
            )
            for bill in self._bills:
                scanned.add_metric([bill.name], bill.scanned_bytes)
                rows.add_metric([bill.name], bill.rows_ingested)
            yield scanned
            yield rows
            yield from self._commitments()
        nodes = GaugeMetricFamily(
            "nodecost_nodes", "Nodes by the source that priced them.", labels=["source"]
        )
        counts = self._store.source_counts()
        counts.setdefault(UNPRICED, 0)
        for source, count in sorted(counts.items()):
            nodes.add_metric([source], count)
        yield nodes
        invalid = CounterMetricFamily(
            "nodecost_invalid_inputs",
            "Inputs skipped as malformed (nodes, price rows), by kind.",
            labels=["kind"],
        )
        for kind, count in sorted(self._health.invalid_counts().items()):
            invalid.add_metric([kind], count)
        yield invalid
        if self._watch is not None:
            events = CounterMetricFamily(
                "nodecost_kubernetes_watch_events", "Node watch events received, by type.", labels=["type"]
            )
            for kind, count in sorted(self._watch.events.items()):
                events.add_metric([kind], count)
            yield events
            yield CounterMetricFamily(
                "nodecost_kubernetes_relists",
                "Full node relists after the first (e.g. after 410 Expired).",
                value=self._watch.relists,
            )
        yield GaugeMetricFamily(
            "nodecost_cache_persistent",
            "1 if the price cache is a file on disk; 0 if in memory (unusable path, locked) or disabled.",
            value=1 if self._cache_persistent() else 0,
        )
        yield GaugeMetricFamily(
            "nodecost_ready",
            "1 once the first node list and the first price pass are done.",
            value=1 if self._ready() else 0,
        )
        build = InfoMetricFamily("nodecost_build", "Exporter version and Python runtime; value is always 1.")
        build.add_metric([], {"version": __version__, "python_version": platform.python_version()})
        yield build
        shard = self._shard()
        exporter = InfoMetricFamily(
            "nodecost_exporter", "The shard of the nodes this replica serves; value is always 1."
        )
        exporter.add_metric([], {"shard": str(shard.index), "total_shards": str(shard.total)})
        yield exporter

    def _commitments(self) -> Iterator[Metric]:
        """Each commitment's unused cost and utilization over its bill's latest settled days."""
        unused = GaugeMetricFamily(
            "nodecost_commitment_unused_hourly_cost",
            "Cost per hour of a commitment (reservation, savings plan, committed use discount) that covered "
            "no usage, over the bill's latest settled days; in pricing.currency, never spread onto nodes.",
            labels=["provider", "commitment"],
        )
        utilization = GaugeMetricFamily(
            "nodecost_commitment_utilization_ratio",
            "Share (0-1) of a commitment's cost that covered usage, over the bill's latest settled days.",
            labels=["provider", "commitment"],
        )
        for bill in self._bills:
            for commitment in bill.commitments():
                labels = [commitment.provider, commitment.commitment]
                unused.add_metric(labels, commitment.unused_hourly)
                utilization.add_metric(labels, commitment.utilization)
        yield unused
        yield utilization

    def _integrations(self) -> Iterator[Metric]:
        labels = ["integration"]
        up = GaugeMetricFamily(
            "nodecost_integration_up", "1 if the integration's last attempt worked.", labels=labels
        )
        failure = InfoMetricFamily(
            "nodecost_integration_failure",
            "Why a failing integration fails (bounded reason); 1 while failing.",
            labels=labels,
        )
        attempt = GaugeMetricFamily(
            "nodecost_integration_last_attempt_timestamp_seconds",
            "Unix time of the last attempt.",
            labels=labels,
        )
        success = GaugeMetricFamily(
            "nodecost_integration_last_success_timestamp_seconds",
            "Unix time of the last success.",
            labels=labels,
        )
        fresh = GaugeMetricFamily(
            "nodecost_integration_data_timestamp_seconds",
            "Unix time of the newest data the integration holds (freshness).",
            labels=labels,
        )
        duration = GaugeMetricFamily(
            "nodecost_integration_last_duration_seconds", "Duration of the last attempt.", labels=labels
        )
        requests = CounterMetricFamily(
            "nodecost_integration_requests", "Attempts made by the integration.", labels=labels
        )
        errors = CounterMetricFamily(
            "nodecost_integration_errors", "Failed attempts, by reason.", labels=["integration", "reason"]
        )
        for status in self._health.integrations():
            name = [status.name]
            up.add_metric(name, 1 if status.up else 0)
            if status.reason is not None and not status.up:
                failure.add_metric(name, {"reason": status.reason.value}, 1)
            for family, value in (
                (attempt, status.last_attempt),
                (success, status.last_success),
                (fresh, status.data_timestamp),
                (duration, status.last_duration_seconds),
            ):
                if value is not None:
                    family.add_metric(name, value)
            requests.add_metric(name, status.requests)
            for reason, count in sorted(status.errors.items()):
                errors.add_metric([status.name, reason.value], count)
        yield from (up, failure, attempt, success, fresh, duration, requests, errors)
