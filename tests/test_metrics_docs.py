"""docs/metrics.md is the contract: every exposed metric is in it, with the same type and labels."""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path

from prometheus_client.registry import CollectorRegistry

from exporter.health import Health, Reason
from exporter.metrics.collector import ExporterCollector
from exporter.metrics.process import ProcessMetrics
from exporter.metrics.store import NODE_FAMILIES, NodeMetricsStore, tags_family

DOC = Path(__file__).resolve().parents[1] / "docs" / "metrics.md"
ROW = re.compile(r"^\| `(?P<name>[a-z_]+)` \| (?P<type>\w+) \|[^|]+\|(?P<labels>[^|]*)\| .+ \|$")


class Stats:
    def __init__(self) -> None:
        self.events: Counter[str] = Counter({"ADDED": 3, "MODIFIED": 7})
        self.relists = 1


class Bill:
    name = "aws_cur"
    scanned_bytes = 10_485_760
    rows_ingested = 42


def documented() -> dict[str, tuple[str, frozenset[str]]]:
    out = {}
    for line in DOC.read_text().splitlines():
        match = ROW.match(line)
        if match:
            labels = frozenset(x.strip() for x in match["labels"].split(",") if x.strip())
            out[match["name"]] = (match["type"], labels)
    return out


def exposed() -> dict[str, tuple[str, frozenset[str]]]:
    """Every series name the exporter can emit, with every integration field filled in."""
    health = Health()
    failing = health.integration("kubernetes")
    failing.succeeded(duration=0.2, data_timestamp=1.0)
    failing.failed(Reason.TIMEOUT, "list timed out")
    health.invalid("node", "bad", "no uid")
    registry = CollectorRegistry(auto_describe=False)
    registry.register(ExporterCollector(health, NodeMetricsStore(), lambda: True, Stats(), [Bill()]))
    registry.register(ProcessMetrics())
    tags = tags_family(("<key>",))
    out: dict[str, tuple[str, frozenset[str]]] = {
        f.name: (f.type, frozenset(f.labels)) for f in (*NODE_FAMILIES, tags)
    }
    out[tags.name] = (tags.type, frozenset({"node", "tag_&lt;key&gt;"}))
    for metric in registry.collect():
        kind = "gauge" if metric.type == "info" else metric.type
        for sample in metric.samples:
            if sample.name.endswith("_created"):
                continue
            name = sample.name
            labels = out.get(name, (kind, frozenset()))[1] | frozenset(sample.labels)
            out[name] = (kind, labels)
    return out


def test_docs_table_and_code_agree() -> None:
    docs, code = documented(), exposed()
    assert sorted(set(code) - set(docs)) == [], "exposed but not documented"
    assert sorted(set(docs) - set(code)) == [], "documented but not exposed"
    for name, (kind, labels) in code.items():
        assert docs[name] == (kind, labels), name
