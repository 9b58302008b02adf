"""docs/metrics.md is the contract: every exposed metric is in it, with the same type and labels."""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path

from prometheus_client.registry import CollectorRegistry

from exporter.config import tag_label
from exporter.health import Health, Reason
from exporter.metrics.collector import ExporterCollector
from exporter.metrics.families import NODE_FAMILIES, Family, billing_tags_family
from exporter.metrics.process import ProcessMetrics
from exporter.metrics.store import NodeMetricsStore
from exporter.pricing.quote import Commitment

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

    def commitments(self) -> tuple[Commitment, ...]:
        arn = "arn:aws:savingsplans::111122223333:savingsplan/3f1c2a9e-7d6e-4b5a-9c8d-1e2f3a4b5c6d"
        return (Commitment("aws", arn, 0.42, 0.9, ("2024-06-01",)),)


def documented() -> dict[str, tuple[str, frozenset[str]]]:
    out = {}
    for line in DOC.read_text().splitlines():
        match = ROW.match(line)
        if match:
            labels = frozenset(x.strip() for x in match["labels"].split(",") if x.strip())
            out[match["name"]] = (match["type"], labels)
    return out


def rows(families: tuple[Family, ...]) -> dict[str, tuple[str, frozenset[str]]]:
    """Name → (type, labels) of each family entry; the docs write a tag label as `tag_<key>`."""
    doc_label = {tag_label("<key>"): "tag_&lt;key&gt;"}
    return {f.name: (f.type, frozenset(doc_label.get(label, label) for label in f.labels)) for f in families}


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
    out = rows((*NODE_FAMILIES, billing_tags_family(("<key>",))))
    for metric in registry.collect():
        kind = "gauge" if metric.type == "info" else metric.type
        for sample in metric.samples:
            if sample.name.endswith("_created"):
                continue
            name = sample.name
            labels = out.get(name, (kind, frozenset()))[1] | frozenset(sample.labels)
            out[name] = (kind, labels)
    return out


def disagreements(
    docs: dict[str, tuple[str, frozenset[str]]], code: dict[str, tuple[str, frozenset[str]]]
) -> list[str]:
    out = [f"{name}: exposed but not documented" for name in sorted(set(code) - set(docs))]
    out += [f"{name}: documented but not exposed" for name in sorted(set(docs) - set(code))]
    out += [
        f"{name}: docs say {docs[name]}, code {code[name]}"
        for name in sorted(set(code) & set(docs))
        if docs[name] != code[name]
    ]
    return out


def test_docs_table_and_code_agree() -> None:
    assert disagreements(documented(), exposed()) == []


def test_a_family_entry_without_its_docs_row_or_with_other_labels_fails() -> None:
    new = Family("nodecost_node_new_hourly_cost", "gauge", "New.", ("node",), lambda node, price: ())
    relabelled = Family(NODE_FAMILIES[0].name, "gauge", "Info.", ("node",), lambda node, price: ())
    problems = disagreements(documented(), exposed() | rows((new, relabelled)))
    assert len(problems) == 2, problems
    assert problems[0] == "nodecost_node_new_hourly_cost: exposed but not documented"
    assert problems[1].startswith("nodecost_node_info: docs say ('gauge', frozenset({")
