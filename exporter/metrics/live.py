"""The live section's families (exporter health, process): plain values built at scrape time and written
out directly by `exposition.format_registry`, with no prometheus_client objects made per scrape.

Building prometheus_client Metric families and formatting their Sample tuples took ~0.36 ms of a scrape
with cold caches (a scrape comes every 15 s or more): more than serving the whole gzipped node section of
15,000 nodes. The same families are still offered to prometheus_client as Metrics (`collect`), so its tools
(`generate_latest`, a registry of its own) read exactly what /metrics shows.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from typing import NamedTuple

from prometheus_client.core import Metric
from prometheus_client.registry import Collector, CollectorRegistry

# (label name, value) pairs, in exposition order
Labels = tuple[tuple[str, str], ...]
SAMPLE_SUFFIX = {"gauge": "", "counter": "_total", "info": "_info"}


class LiveFamily(NamedTuple):
    """A NamedTuple, not a dataclass: a scrape makes a few dozen, and a tuple is made in half the time."""

    name: str  # without the suffix its samples take: `_total` for a counter, `_info` for an info
    kind: str  # "gauge", "counter" or "info"
    help: str
    samples: Sequence[tuple[Labels, float]] = ()


class LiveCollector(Collector):
    """A collector whose families are `LiveFamily` values."""

    def families(self) -> Iterable[LiveFamily]:
        raise NotImplementedError

    def collect(self) -> Iterator[Metric]:
        for family in self.families():
            metric = Metric(family.name, family.help, family.kind)
            name = family.name + SAMPLE_SUFFIX[family.kind]
            for labels, value in family.samples:
                metric.add_sample(name, dict(labels), value)
            yield metric


class LiveRegistry(CollectorRegistry):
    """A CollectorRegistry that also hands out its collectors in order, so the exposition can take the
    `LiveCollector`s' families directly."""

    def __init__(self) -> None:
        super().__init__(auto_describe=False)
        self._ordered: list[Collector] = []

    def register(self, collector: Collector) -> None:
        super().register(collector)
        self._ordered.append(collector)

    def unregister(self, collector: Collector) -> None:
        super().unregister(collector)
        self._ordered.remove(collector)

    def collectors(self) -> list[Collector]:
        return list(self._ordered)
