"""In-process measurements: cost of one watch event (2a) and our scrape path against a naive collector (4).

Both run on a real `App` wired for a cluster (its inventory is a `KubeNodeWatcher` whose sink is the App),
never started: no threads, no network. Events go through `KubeNodeWatcher._handle_event`, the watcher's
own per-line function (private, but it is exactly what the watch loop calls for each line), so each event
pays the msgspec decode (wire.py) → parse_wire_node → compare with the last seen Node → App.upsert (price +
render into the store).
"""

from __future__ import annotations

import gc
import re
import statistics
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from prometheus_client import ProcessCollector, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector, CollectorRegistry

from bench.cluster import event_line, node_object, raw, touch_capacity, touch_heartbeat
from exporter.app import App
from exporter.config import load_config
from exporter.inventory.kube import KubeNodeWatcher
from exporter.inventory.node import Node
from exporter.inventory.parse import parse_wire_node
from exporter.inventory.wire import EVENT
from exporter.metrics.collector import ExporterCollector
from exporter.metrics.exposition import render
from exporter.metrics.families import NODE_FAMILIES
from exporter.metrics.store import UNPRICED
from exporter.pricing.quote import NodePrice

WARMUP_EVENTS = 1000
BLOCK = 1000  # events per timed block: the spread of block means shows the noise


@dataclass
class EventCost:
    kind: str
    events: int
    mean: float  # seconds per event over all timed events
    blocks: list[float]  # seconds per event in each block of BLOCK events


@dataclass
class Step:
    name: str
    seconds: float  # per event


@dataclass
class ScrapeCompare:
    naive: float  # median seconds per generate_latest of the naive registry
    ours: float  # median seconds per render() with the store's cache warm
    ours_cold: float  # median seconds per render() right after one node's price changed
    ours_joined: float  # median seconds per render() plus joining its chunks into one bytes object
    naive_runs: int
    ours_runs: int
    node_lines: int  # per-node samples in our body
    same_samples: bool  # the naive body holds exactly our node samples


@dataclass
class InprocResult:
    n: int
    events: list[EventCost] = field(default_factory=list)
    steps: list[Step] = field(default_factory=list)
    scrape: ScrapeCompare | None = None
    node_bytes: float = 0.0  # mean size of a node object's JSON
    unpriced: int = 0  # nodes no source could price


def run_inproc(n: int, *, events: int) -> InprocResult:
    result = InprocResult(n)
    # Configured as in a pod (no kubeconfig); never started, so no credentials are ever loaded.
    app = App(load_config(None, env={}, overrides={"cache.enabled": False}))
    watcher = app.inventory
    assert isinstance(watcher, KubeNodeWatcher)
    total = 0
    for i in range(n):  # the initial state, through the same path (ADDED events)
        obj = node_object(i)
        total += len(raw(obj))
        watcher._handle_event(event_line("ADDED", obj))
    if len(app.store) != n:
        raise RuntimeError(f"store holds {len(app.store)} nodes, not {n}")
    result.node_bytes = total / n
    result.unpriced = app.store.source_counts()[UNPRICED]
    count = WARMUP_EVENTS + events
    # Unchanged first: its objects must still match what the watcher has seen (no label edits yet).
    result.events.append(
        _time_events(watcher._handle_event, "unchanged (heartbeat only)", _lines(n, count, touch_heartbeat))
    )
    changed = _lines(n, count, touch_capacity)
    result.events.append(_time_events(watcher._handle_event, "changed (memory capacity)", changed))
    result.steps = _steps(app, watcher, changed[WARMUP_EVENTS:])
    del changed
    result.scrape = _compare_scrape(app, watcher)
    return result


def _lines(n: int, count: int, touch: Callable[[dict[str, Any], int], None]) -> list[bytes]:
    """`count` MODIFIED event lines cycling over the cluster's nodes, each edited by `touch`."""
    lines = []
    for j in range(count):
        obj = node_object(j % n)
        touch(obj, 1_000_000 + j)
        obj["metadata"]["resourceVersion"] = str(1_000_000 + j)
        lines.append(event_line("MODIFIED", obj))
    return lines


def _time_events(handle: Callable[[bytes], None], kind: str, lines: list[bytes]) -> EventCost:
    for line in lines[:WARMUP_EVENTS]:
        handle(line)
    timed = lines[WARMUP_EVENTS:]
    blocks = []
    for start in range(0, len(timed), BLOCK):
        block = timed[start : start + BLOCK]
        t0 = time.perf_counter()
        for line in block:
            handle(line)
        blocks.append((time.perf_counter() - t0) / len(block))
    mean = statistics.fmean(blocks)  # blocks are equal-sized
    return EventCost(kind, len(timed), mean, blocks)


def _steps(app: App, watcher: KubeNodeWatcher, lines: list[bytes]) -> list[Step]:
    """Where a changed event's time goes: each stage alone over the same lines (for the analysis)."""
    spot, keep = watcher._spot_labels, watcher._keep_labels
    clock = time.perf_counter
    spent = [0.0] * 5
    for line in lines:  # one line at a time, nothing kept: as the watcher does
        t0 = clock()
        obj = EVENT.decode(line).object
        t1 = clock()
        node = parse_wire_node(obj, spot, keep)
        t2 = clock()
        price = app.engine.price(node)
        t3 = clock()
        app.store.render(node, price)
        t4 = clock()
        app.upsert(node)
        t5 = clock()
        for i, (a, b) in enumerate(((t0, t1), (t1, t2), (t2, t3), (t3, t4), (t4, t5))):
            spent[i] += b - a
    names = (
        "msgspec decode of the event line",
        "parse_wire_node",
        "PricingEngine.price",
        "NodeMetricsStore.render",
        "App.upsert (price + render + store.set)",
    )
    return [Step(name, total / len(lines)) for name, total in zip(names, spent, strict=True)]


class NaiveNodeCollector(Collector):
    """How exporters usually do it: build every node's families at collect time from current state.

    It is given each node's price, and why an unpriced node is unpriced, already computed (as our store
    is) and takes every family's samples from the same value functions (NODE_FAMILIES), so only exposition
    is compared.
    """

    def __init__(self, entries: Callable[[], list[tuple[Node, NodePrice | None, str]]]) -> None:
        self._entries = entries

    def collect(self) -> Iterator[Metric]:
        families = [(f, GaugeMetricFamily(f.name, f.help, labels=list(f.labels))) for f in NODE_FAMILIES]
        for node, price, why in self._entries():
            for spec, family in families:
                samples = spec.samples(node, price, why) if spec.with_reason else spec.samples(node, price)
                for values, value in samples:
                    family.add_metric(list(values), float(value))
        yield from (family for _, family in families)


def _median_time(fn: Callable[[], object], runs: int) -> float:
    fn()  # warm
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


_LABEL = re.compile(rb'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')


def _node_samples(body: bytes) -> set[tuple[bytes, tuple[tuple[bytes, bytes], ...], float]]:
    """Per-node samples as (name, sorted labels, value): prometheus_client sorts label names, we do not."""
    samples = set()
    for line in body.split(b"\n"):
        if line.startswith(b"nodecost_node_") and b"{" in line:
            name, _, rest = line.partition(b"{")
            labels, _, value = rest.rpartition(b"} ")
            samples.add((name, tuple(sorted(_LABEL.findall(labels))), float(value)))
    return samples


def _compare_scrape(app: App, watcher: KubeNodeWatcher) -> ScrapeCompare:
    priced = [
        (node, price, "" if price else app.engine.unpriced_reason(node))
        for node in app.nodes()
        for price in [app.engine.price(node)]
    ]
    naive = CollectorRegistry(auto_describe=False)
    naive.register(NaiveNodeCollector(lambda: list(priced)))
    # The same live part as ours, so both bodies carry the same series.
    naive.register(ExporterCollector(app.health, app.store, app.ready, watcher))
    ProcessCollector(registry=naive)

    def ours() -> list[bytes]:
        # The scrape path: the chunk list the HTTP handler writes in turn (the node section's cached
        # family chunks plus the freshly formatted live section); nothing joins them into one body.
        chunks, _ = render(app.store, app.registry, openmetrics_format=False, gzipped=False)
        return chunks

    ours_body, naive_body = b"".join(ours()), generate_latest(naive)
    ours_samples = _node_samples(ours_body)
    same = ours_samples == _node_samples(naive_body)

    node, price, _ = priced[0]
    assert price is not None, "the first benchmark node is priced"
    flip = [price, NodePrice(price.hourly * 2, price.currency, price.source, price.basis, None, None, None)]

    def ours_cold() -> list[bytes]:
        flip.reverse()
        app.store.set(node, flip[0])  # one node's price moved: the node section must be joined again
        return ours()

    gc.collect()
    naive_runs = 7 if len(priced) > 5000 else 11
    return ScrapeCompare(
        naive=_median_time(lambda: generate_latest(naive), naive_runs),
        ours=_median_time(ours, 51),
        ours_cold=_median_time(ours_cold, 21),
        ours_joined=_median_time(lambda: b"".join(ours()), 51),
        naive_runs=naive_runs,
        ours_runs=51,
        node_lines=len(ours_samples),
        same_samples=same,
    )
