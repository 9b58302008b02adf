"""The live section is written by hand for speed: prove it parses to exactly what prometheus_client writes."""

from __future__ import annotations

import math
from collections import Counter

import pytest
from prometheus_client import exposition, openmetrics
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, InfoMetricFamily
from prometheus_client.openmetrics.parser import text_string_to_metric_families as parse_openmetrics
from prometheus_client.parser import text_string_to_metric_families as parse_text
from prometheus_client.registry import Collector, CollectorRegistry

from exporter.health import Health, Reason
from exporter.metrics.collector import ExporterCollector
from exporter.metrics.exposition import format_registry, wants_gzip, wants_openmetrics
from exporter.metrics.live import LiveRegistry
from exporter.metrics.process import ProcessMetrics
from exporter.metrics.store import NodeMetricsStore


class Odd(Collector):
    """Values and strings that need escaping or special spelling."""

    def collect(self):  # type: ignore[no-untyped-def]
        gauge = GaugeMetricFamily("odd_values", 'Help with \\ backslash and\nnewline "quotes".', labels=["k"])
        gauge.add_metric(['va"l\\ue\nx'], math.inf)
        gauge.add_metric(["neg"], -math.inf)
        gauge.add_metric(["big"], 1.5e300)
        gauge.add_metric(["tiny"], 2.5e-12)
        gauge.add_metric(["int"], 17)
        yield gauge
        yield CounterMetricFamily("odd_things", "A counter.", value=3)
        info = InfoMetricFamily("odd_build", "An info.")
        info.add_metric([], {"version": "1.2.3"})
        yield info


def registry() -> LiveRegistry:
    health = Health()
    health.integration("kubernetes").succeeded(duration=0.25, data_timestamp=1763800000.5)
    health.integration("cache").failed(Reason.LOCKED, "locked")
    health.invalid("node", "x", "no uid")

    class Stats:
        def __init__(self) -> None:
            self.events: Counter[str] = Counter({"ADDED": 2})
            self.relists = 1

    reg = LiveRegistry()  # ours are written from their plain values, Odd from its Metrics
    reg.register(ExporterCollector(health, NodeMetricsStore(), lambda: True, Stats()))
    reg.register(Odd())
    reg.register(ProcessMetrics())
    return reg


def samples(families):  # type: ignore[no-untyped-def]
    out = {}
    for family in families:
        for s in family.samples:
            if s.name.startswith("process_"):  # these change between two reads
                continue
            value = "nan" if math.isnan(s.value) else s.value
            out[(family.name, family.type, family.documentation, s.name, tuple(sorted(s.labels.items())))] = (
                value
            )
    return out


def test_text_format_parses_to_what_prometheus_client_writes() -> None:
    reg = registry()
    ours = samples(parse_text(format_registry(reg, openmetrics=False).decode()))
    theirs = samples(parse_text(exposition.generate_latest(reg).decode()))
    assert ours == theirs
    assert len(ours) > 15


def test_openmetrics_format_parses_to_what_prometheus_client_writes() -> None:
    reg = registry()
    ours_text = format_registry(reg, openmetrics=True).decode()
    assert ours_text.endswith("# EOF\n")
    ours = samples(parse_openmetrics(ours_text))
    theirs = samples(parse_openmetrics(openmetrics.exposition.generate_latest(reg).decode()))  # type: ignore[no-untyped-call]
    assert ours == theirs


@pytest.mark.parametrize(
    ("accept", "expected"),
    [
        ("application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5,*/*;q=0.1", True),
        ("text/plain;version=0.0.4", False),
        ("", False),
    ],
)
def test_content_negotiation(accept: str, expected: bool) -> None:
    assert wants_openmetrics(accept) is expected


@pytest.mark.parametrize(
    ("encoding", "expected"),
    [
        ("gzip", True),
        ("deflate, gzip;q=1.0", True),
        ("identity", False),
        ("gzipx", False),
        ("gzip;q=0", False),
        ("gzip; q=0.000, deflate", False),
        ("*;q=0", False),
        ("gzip;q=0.5", True),
        ("GZIP", True),
        ("identity;q=0", False),
        ("identity;q=0, gzip", True),
        ("gzip;q=bogus", False),
    ],
)
def test_gzip_negotiation(encoding: str, expected: bool) -> None:
    assert wants_gzip(encoding) is expected


def test_a_plain_prometheus_client_registry_is_written_the_same() -> None:
    """format_registry takes any registry: one that is not a LiveRegistry is read through its Metrics."""
    ours = registry()
    plain = CollectorRegistry(auto_describe=False)
    for collector in ours.collectors():
        plain.register(collector)
    assert samples(parse_text(format_registry(plain, openmetrics=False).decode())) == samples(
        parse_text(format_registry(ours, openmetrics=False).decode())
    )
