"""Sharded replicas seen by a real Prometheus: two shards of the demo cluster give the cost recipes of
docs/promql.md the same answers as one unsharded exporter, and each replica names its shard.

Two Prometheus servers run the recipes verbatim: one scrapes the two shard processes (`--shard 0/1
--total-shards 2`), the other the unsharded process, all of the same demo nodes.
"""

from __future__ import annotations

import json
import time
import urllib.parse
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.test_prometheus import (
    Process,
    close,
    exporter_env,
    free_port,
    get,
    prometheus_binary,
    recipes,
    start_exporter,
    wait_for,
)

pytestmark = pytest.mark.slow  # starts three exporters and two Prometheus servers

# The recipes whose answer is about nodes, not replicas: the same sharded as not. Each must be in
# docs/promql.md (a renamed recipe fails here, not silently).
NODE_RECIPES = (
    "Cluster hourly cost",
    "Projected monthly cost",
    "Cost by instance type",
    "Price of a CPU core by instance type",
    "Cost by pricing source",
    "Cost by price basis",
    "Spot savings against on-demand, per hour",
    "Cost and node count by capacity type",
    "Priced nodes by capacity type",
    "Spot nodes priced at the on-demand list price",
    "Nodes no source could price",
    "How many nodes are unpriced",
)
REPLICA_LABELS = ("job", "instance")  # which replica a series came from: not part of the answer


class _Prometheus:
    def __init__(self, name: str, tmp: Path, targets: list[str]) -> None:
        directory = tmp / name
        directory.mkdir()
        config = {
            "global": {"scrape_interval": "1s", "scrape_timeout": "1s"},
            "scrape_configs": [{"job_name": "node-cost-exporter", "static_configs": [{"targets": targets}]}],
        }
        (directory / "prometheus.yml").write_text(yaml.safe_dump(config))
        port = free_port()
        self.process = Process(
            name,
            [
                prometheus_binary(),
                f"--config.file={directory / 'prometheus.yml'}",
                f"--storage.tsdb.path={directory / 'data'}",
                f"--web.listen-address=127.0.0.1:{port}",
            ],
            tmp,
        )
        self.url = f"http://127.0.0.1:{port}"
        self.targets = len(targets)

    def query(self, expr: str, at: float) -> dict[frozenset[tuple[str, str]], float]:
        params = urllib.parse.urlencode({"query": expr, "time": f"{at:.3f}"})
        answer = json.loads(get(f"{self.url}/api/v1/query?{params}", timeout=10))
        assert answer["status"] == "success", answer
        out: dict[frozenset[tuple[str, str]], float] = {}
        for item in answer["data"]["result"]:
            labels = frozenset((k, v) for k, v in item["metric"].items() if k not in REPLICA_LABELS)
            assert labels not in out, f"{expr}: two replicas answer {dict(labels)}"
            out[labels] = float(item["value"][1])
        return out

    def all_up(self) -> bool:
        self.process.check_alive()
        answer = json.loads(get(f"{self.url}/api/v1/query?query=count(up%3D%3D1)", timeout=10))
        result = answer["data"]["result"]
        return bool(result) and int(float(result[0]["value"][1])) == self.targets


@pytest.fixture(scope="module")
def servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    prometheus_binary()  # skips when absent (fails in CI)
    tmp = tmp_path_factory.mktemp("sharded")
    processes: list[Process] = []
    try:
        addresses = {}
        for name, flags in (
            ("shard0", ("--shard", "0", "--total-shards", "2")),
            ("shard1", ("--shard", "1", "--total-shards", "2")),
            ("whole", ()),
        ):
            process, addresses[name] = start_exporter(name, tmp, exporter_env(), *flags)
            processes.append(process)
        sharded = _Prometheus("prometheus-sharded", tmp, [addresses["shard0"], addresses["shard1"]])
        whole = _Prometheus("prometheus-whole", tmp, [addresses["whole"]])
        processes += [sharded.process, whole.process]
        for prometheus in (sharded, whole):
            wait_for(f"{prometheus.process.name} scraping", prometheus.all_up)
        time.sleep(2.5)  # a couple of scrapes of every target
        yield {"sharded": sharded, "whole": whole, "addresses": addresses}
    finally:
        for process in reversed(processes):
            process.stop()


def test_the_cost_recipes_sum_over_the_shards_to_the_unsharded_answer(servers: dict[str, Any]) -> None:
    found = dict(recipes())
    missing = [title for title in NODE_RECIPES if title not in found]
    assert not missing, f"docs/promql.md has no recipe titled {missing}"
    at = time.time()
    sharded, whole = servers["sharded"], servers["whole"]
    problems = []
    for title in NODE_RECIPES:
        expr = found[title]
        got, want = sharded.query(expr, at), whole.query(expr, at)
        if not want and title not in ("Nodes no source could price", "Spot nodes priced at the on-demand list price"):
            problems.append(f"{title}: no answer unsharded, nothing compared")
        if set(got) != set(want) or any(not close(got[k], want[k]) for k in want):
            problems.append(f"{title}:\n  sharded   {got}\n  unsharded {want}")
    assert not problems, "\n".join(problems)


def test_each_replica_names_its_shard_and_serves_only_its_nodes(servers: dict[str, Any]) -> None:
    at = time.time()
    sharded, whole = servers["sharded"], servers["whole"]
    info = sharded.query("nodecost_exporter_info", at)
    assert {dict(labels)["shard"] for labels in info} == {"0", "1"}
    assert {dict(labels)["total_shards"] for labels in info} == {"2"}
    assert [dict(labels) for labels in whole.query("nodecost_exporter_info", at)] == [
        {"__name__": "nodecost_exporter_info", "shard": "0", "total_shards": "1"}
    ]
    count = "count(nodecost_node_info)"
    assert sharded.query(count, at) == whole.query(count, at)
    assert sharded.query("count(count by (instance) (nodecost_node_info))", at) == {frozenset(): 2.0}
    assert sharded.query("count by (node) (nodecost_node_info) > 1", at) == {}  # no node on both replicas
