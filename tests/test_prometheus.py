"""The PromQL we ship, run by a real Prometheus (Debian's `prometheus`) scraping the demo exporter and a
kube-state-metrics stand-in.

Every ```promql block of docs/promql.md and every dashboard panel query must return exactly the series and
values computed here, in Python, from the exporter's own /metrics text and the stand-in's data; a query with
no expectation below fails. Then an Azure price-list outage (a second exporter on a failing fake of the
Retail Prices API) must show NodeCostIntegrationDown pending with its reason, and clear once the fake heals.
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import socket
import subprocess
import sys
import threading
import time
import urllib.parse
import urllib.request
import uuid
from collections import defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from exporter.app import demo_nodes_path
from fakes.azure_api import FakeRetailPricesAPI, vm_items
from fakes.server import Fault

pytestmark = pytest.mark.slow  # starts real Prometheus servers

ROOT = Path(__file__).resolve().parents[1]
RULES = ROOT / "deploy" / "alerts" / "node-cost-exporter.rules.yml"
DASHBOARD = ROOT / "deploy" / "grafana" / "dashboards" / "node-cost-exporter.json"
RECIPES = ROOT / "docs" / "promql.md"
JOB = "node-cost-exporter"  # the job name the rules (NodeCostExporterAbsent) expect
KSM_JOB = "kube-state-metrics"
# Grafana variables allowed in panel queries, and what the test runs them as.
DASHBOARD_VARIABLES = {"$__rate_interval": "1m"}
STARTUP_SECONDS = 30.0

# -- the queries ---------------------------------------------------------------------------------------------


def recipes() -> list[tuple[str, str]]:
    """(title, query) of every ```promql block in docs/promql.md; each must follow a ### title and prose."""
    out: list[tuple[str, str]] = []
    title, prose, block = "", False, None
    for line in RECIPES.read_text().splitlines():
        if block is not None:
            if line.startswith("```"):
                assert title and prose, f"promql block without a ### title and an explanation: {block}"
                out.append((title, "\n".join(block)))
                block, prose = None, False
            else:
                block.append(line)
        elif line.startswith("```promql"):
            block = []
        elif line.startswith("#"):
            title, prose = (line[4:] if line.startswith("### ") else ""), False
        elif line.strip():
            prose = True
    return out


def panel_queries() -> list[tuple[str, str]]:
    """(panel title/refId, query) of every dashboard target, with DASHBOARD_VARIABLES substituted."""
    out: list[tuple[str, str]] = []

    def walk(panels: list[dict[str, Any]]) -> None:
        for panel in panels:
            walk(panel.get("panels", []))
            for target in panel.get("targets", []):
                expr = target["expr"]
                for name, value in DASHBOARD_VARIABLES.items():
                    expr = expr.replace(name, value)
                assert "$" not in expr, f"{panel['title']}: undocumented variable in {expr!r}"
                out.append((f"{panel['title']}/{target['refId']}", expr))

    walk(json.loads(DASHBOARD.read_text())["panels"])
    return out


def normal(expr: str) -> str:
    """A query's text with layout removed, so the same query indented differently is the same key."""
    text = re.sub(r"\s+", " ", expr).strip()
    return re.sub(r"\s*([(),])\s*", r"\1", text)


# -- a world of samples, and the expected result of each query ------------------------------------------------

Labels = frozenset[tuple[str, str]]
Result = dict[Labels, float]


@dataclass(frozen=True)
class Sample:
    name: str
    labels: dict[str, str]
    value: float


def parse_exposition(text: str, job: str, instance: str) -> list[Sample]:
    """Samples as Prometheus stores them: with the target's labels, and without empty-valued labels."""
    samples = []
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels = {k: v for k, v in sample.labels.items() if v != ""} | {"job": job, "instance": instance}
            samples.append(Sample(sample.name, labels, float(sample.value)))
    return samples


class World:
    def __init__(self, samples: list[Sample], at: float) -> None:
        self.samples = samples
        self.at = at  # the query's evaluation time, for time()

    def select(self, name: str, **match: str) -> list[tuple[dict[str, str], float]]:
        """Series of `name` whose labels equal `match` (a value starting with ! means "not equal")."""
        out = []
        for sample in self.samples:
            if sample.name != name:
                continue
            if all(
                (sample.labels.get(k, "") != v[1:]) if v.startswith("!") else (sample.labels.get(k, "") == v)
                for k, v in match.items()
            ):
                out.append((sample.labels, sample.value))
        return out

    def with_info(
        self, series: list[tuple[dict[str, str], float]], labels: tuple[str, ...], **info_match: str
    ) -> list[tuple[dict[str, str], float]]:
        """`series * on (job, instance, node) group_left (labels) nodecost_node_info{info_match}`."""
        info = {
            (lb["job"], lb["instance"], lb["node"]): lb
            for lb, _ in self.select("nodecost_node_info", **info_match)
        }
        out = []
        for lb, value in series:
            right = info.get((lb["job"], lb["instance"], lb["node"]))
            if right is not None:
                joined = {k: v for k, v in lb.items() if k not in labels} | {
                    k: right[k] for k in labels if k in right
                }
                out.append((joined, value))
        return out

    def node_max(self, name: str) -> dict[str, float]:
        """`max by (node) (name)`."""
        out: dict[str, float] = {}
        for lb, value in self.select(name):
            out[lb["node"]] = max(value, out.get(lb["node"], -math.inf))
        return out


def key(labels: dict[str, str], keep: tuple[str, ...] | None = None) -> Labels:
    """A result's label set: `keep` only (as after `by (...)`), else all but the metric name."""
    items = labels.items() if keep is None else ((k, labels.get(k, "")) for k in keep)
    return frozenset((k, v) for k, v in items if v != "" and k != "__name__")


def agg(series: list[tuple[dict[str, str], float]], by: tuple[str, ...], how: str = "sum") -> Result:
    groups: dict[Labels, list[float]] = defaultdict(list)
    for lb, value in series:
        groups[key(lb, by)].append(value)
    fold: dict[str, Callable[[list[float]], float]] = {
        "sum": math.fsum,
        "count": lambda v: float(len(v)),
        "avg": lambda v: math.fsum(v) / len(v),
        "max": max,
    }
    return {k: fold[how](v) for k, v in groups.items()}


def plain(series: list[tuple[dict[str, str], float]]) -> Result:
    return {key(lb): value for lb, value in series}


@dataclass(frozen=True)
class Top:
    """topk(k, candidates): ties at the cut may be broken either way."""

    k: int
    candidates: Result


def cost(w: World) -> list[tuple[dict[str, str], float]]:
    return w.select("nodecost_node_hourly_cost")


def cost_by_info(label: str) -> Callable[[World], Result]:
    return lambda w: agg(w.with_info(cost(w), (label,)), (label,))


def ages(name: str) -> Callable[[World], Result]:
    """`time() - name`: the metric name is dropped."""
    return lambda w: {key(lb): w.at - value for lb, value in w.select(name)}


POOL_LABELS = (
    "label_eks_amazonaws_com_nodegroup",
    "label_karpenter_sh_nodepool",
    "label_cloud_google_com_gke_nodepool",
    "label_kubernetes_azure_com_agentpool",
)


def cost_by_pool(w: World, pool_of: Callable[[dict[str, str]], str | None], label: str) -> Result:
    pools = {}
    for lb, _ in w.select("kube_node_labels"):
        pool = pool_of(lb)
        if pool is not None:
            pools[lb["node"]] = pool
    series = [({label: pools[lb["node"]]}, v) for lb, v in cost(w) if lb["node"] in pools]
    return agg(series, (label,))


def namespace_cost(w: World) -> Result:
    """Sum over containers of CPU cores * price per core + memory GiB * price per GiB + GPUs * price per GPU,
    on the container's node, for nodes that have the price."""
    prices = {
        "cpu": (w.node_max("nodecost_node_cpu_core_hourly_cost"), "core", 1.0),
        "memory": (w.node_max("nodecost_node_memory_gibibyte_hourly_cost"), "byte", float(2**30)),
        "nvidia_com_gpu": (w.node_max("nodecost_node_gpu_hourly_cost"), None, 1.0),
    }
    series = []
    for lb, requested in w.select("kube_pod_container_resource_requests"):
        price, unit, divisor = prices.get(lb["resource"], ({}, None, 1.0))
        if lb.get("node") in price and (unit is None or lb["unit"] == unit):
            series.append((lb, requested / divisor * price[lb["node"]]))
    return agg(series, ("namespace",))


def spot_savings(w: World) -> Result:
    """Sum over spot nodes of list price minus hourly cost, where both exist."""
    listed = {lb["node"]: v for lb, v in w.select("nodecost_node_list_hourly_cost")}
    spot = {lb["node"] for lb, _ in w.select("nodecost_node_info", capacity_type="spot")}
    series = [
        ({}, listed[lb["node"]] - v) for lb, v in cost(w) if lb["node"] in spot and lb["node"] in listed
    ]
    return agg(series, ())


def savings_by_pool(w: World) -> Result:
    """Σ per pool of list price minus hourly cost, for nodes with both and a pool label (or none: "")."""
    listed = {lb["node"]: v for lb, v in w.select("nodecost_node_list_hourly_cost")}
    pools = {lb["node"]: "".join(lb.get(p, "") for p in POOL_LABELS) for lb, _ in w.select("kube_node_labels")}
    series = [
        ({"nodepool": pools[lb["node"]]}, listed[lb["node"]] - v)
        for lb, v in cost(w)
        if lb["node"] in listed and lb["node"] in pools
    ]
    return agg(series, ("nodepool",))


def watch_rate(w: World) -> Result:
    # Counters do not move once the inventory is listed; the demo (a nodes file) has no watch at all.
    return {key(lb, ("type",)): 0.0 for lb, _ in w.select("nodecost_kubernetes_watch_events_total")}


EXPECTED: dict[str, Callable[[World], Result | Top]] = {
    normal(expr): fn
    for expr, fn in [
        ("sum(nodecost_node_hourly_cost)", lambda w: agg(cost(w), ())),
        ("sum(nodecost_node_hourly_cost) * 730", lambda w: {k: v * 730 for k, v in agg(cost(w), ()).items()}),
        (
            "sum by (instance_type) (nodecost_node_hourly_cost * on (job, instance, node) group_left (instance_type) nodecost_node_info)",
            cost_by_info("instance_type"),
        ),
        (
            "sum by (capacity_type) (nodecost_node_hourly_cost * on (job, instance, node) group_left (capacity_type) nodecost_node_info)",
            cost_by_info("capacity_type"),
        ),
        (
            "count by (capacity_type) (nodecost_node_hourly_cost * on (job, instance, node) group_left (capacity_type) nodecost_node_info)",
            lambda w: agg(w.with_info(cost(w), ("capacity_type",)), ("capacity_type",), "count"),
        ),
        (
            "avg by (instance_type) (nodecost_node_cpu_core_hourly_cost * on (job, instance, node) group_left (instance_type) nodecost_node_info)",
            lambda w: agg(
                w.with_info(w.select("nodecost_node_cpu_core_hourly_cost"), ("instance_type",)),
                ("instance_type",),
                "avg",
            ),
        ),
        ("sum by (source) (nodecost_node_hourly_cost)", lambda w: agg(cost(w), ("source",))),
        ("sum by (price_basis) (nodecost_node_hourly_cost)", lambda w: agg(cost(w), ("price_basis",))),
        (
            'nodecost_node_hourly_cost{price_basis="on_demand"} * on (job, instance, node) group_left (instance_type, capacity_type) nodecost_node_info{capacity_type="spot"}',
            lambda w: plain(
                w.with_info(
                    w.select("nodecost_node_hourly_cost", price_basis="on_demand"),
                    ("instance_type", "capacity_type"),
                    capacity_type="spot",
                )
            ),
        ),
        (
            'sum by (label_eks_amazonaws_com_nodegroup) (nodecost_node_hourly_cost * on (node) group_left (label_eks_amazonaws_com_nodegroup) max by (node, label_eks_amazonaws_com_nodegroup) (kube_node_labels{label_eks_amazonaws_com_nodegroup!=""}))',
            lambda w: cost_by_pool(w, lambda lb: lb.get(POOL_LABELS[0]), "label_eks_amazonaws_com_nodegroup"),
        ),
        (
            'sum by (nodepool) (nodecost_node_hourly_cost * on (node) group_left (nodepool) max by (node, nodepool) (label_join(kube_node_labels, "nodepool", "", "label_eks_amazonaws_com_nodegroup", "label_karpenter_sh_nodepool", "label_cloud_google_com_gke_nodepool", "label_kubernetes_azure_com_agentpool")))',
            lambda w: cost_by_pool(w, lambda lb: "".join(lb.get(p, "") for p in POOL_LABELS), "nodepool"),
        ),
        (
            'sum by (namespace) (kube_pod_container_resource_requests{resource="cpu", unit="core"} * on (node) group_left () max by (node) (nodecost_node_cpu_core_hourly_cost) or kube_pod_container_resource_requests{resource="memory", unit="byte"} / 2^30 * on (node) group_left () max by (node) (nodecost_node_memory_gibibyte_hourly_cost) or kube_pod_container_resource_requests{resource="nvidia_com_gpu"} * on (node) group_left () max by (node) (nodecost_node_gpu_hourly_cost))',
            namespace_cost,
        ),
        (
            "nodecost_node_unpriced == 1",
            lambda w: plain([s for s in w.select("nodecost_node_unpriced") if s[1] == 1]),
        ),
        (
            'sum(nodecost_nodes{source="unpriced"})',
            lambda w: agg(w.select("nodecost_nodes", source="unpriced"), ()),
        ),
        (
            'sum(nodecost_nodes{source!="unpriced"})',
            lambda w: agg(w.select("nodecost_nodes", source="!unpriced"), ()),
        ),
        (
            "nodecost_integration_up == 0",
            lambda w: plain([s for s in w.select("nodecost_integration_up") if s[1] == 0]),
        ),
        ("nodecost_integration_up", lambda w: plain(w.select("nodecost_integration_up"))),
        ("nodecost_integration_failure_info", lambda w: plain(w.select("nodecost_integration_failure_info"))),
        (
            "time() - nodecost_integration_last_success_timestamp_seconds",
            ages("nodecost_integration_last_success_timestamp_seconds"),
        ),
        (
            "time() - nodecost_integration_data_timestamp_seconds",
            ages("nodecost_integration_data_timestamp_seconds"),
        ),
        (
            "topk(10, nodecost_node_hourly_cost * on (job, instance, node) group_left (instance_type, capacity_type, provider) nodecost_node_info)",
            lambda w: Top(10, plain(w.with_info(cost(w), ("instance_type", "capacity_type", "provider")))),
        ),
        (
            "nodecost_node_cpu_core_hourly_cost",
            lambda w: plain(w.select("nodecost_node_cpu_core_hourly_cost")),
        ),
        (
            "nodecost_node_memory_gibibyte_hourly_cost",
            lambda w: plain(w.select("nodecost_node_memory_gibibyte_hourly_cost")),
        ),
        ("nodecost_node_gpu_hourly_cost", lambda w: plain(w.select("nodecost_node_gpu_hourly_cost"))),
        ("sum by (type) (rate(nodecost_kubernetes_watch_events_total[1m]))", watch_rate),
        (
            'sum by (nodepool) ((nodecost_node_list_hourly_cost - on (job, instance, node) group_left () nodecost_node_hourly_cost) * on (node) group_left (nodepool) max by (node, nodepool) (label_join(kube_node_labels, "nodepool", "", "label_eks_amazonaws_com_nodegroup", "label_karpenter_sh_nodepool", "label_cloud_google_com_gke_nodepool", "label_kubernetes_azure_com_agentpool")))',
            savings_by_pool,
        ),
        (
            "max by (provider, commitment) (nodecost_commitment_unused_hourly_cost) * 24",
            lambda w: {
                k: v * 24
                for k, v in agg(w.select("nodecost_commitment_unused_hourly_cost"), ("provider", "commitment"), "max").items()
            },
        ),
        (
            "nodecost_node_commitment_coverage_ratio < 0.5",
            lambda w: plain([s for s in w.select("nodecost_node_commitment_coverage_ratio") if s[1] < 0.5]),
        ),
        (
            'sum((nodecost_node_list_hourly_cost - on (job, instance, node) nodecost_node_hourly_cost) * on (job, instance, node) group_left () nodecost_node_info{capacity_type="spot"})',
            spot_savings,
        ),
    ]
}


def all_queries() -> list[tuple[str, str]]:
    return [(f"docs/promql.md: {t}", q) for t, q in recipes()] + [
        (f"dashboard: {t}", q) for t, q in panel_queries()
    ]


def test_every_recipe_and_panel_query_has_an_expectation() -> None:
    missing = [f"{where}: {normal(q)}" for where, q in all_queries() if normal(q) not in EXPECTED]
    assert not missing, "queries without an expectation in tests/test_prometheus.py:\n" + "\n".join(missing)
    assert len(recipes()) >= 15 and len(panel_queries()) >= 15
    used = {normal(q) for _, q in all_queries()}
    assert not set(EXPECTED) - used, "expectations for queries no longer shipped"


def test_dashboard_is_a_grafana_dashboard_on_a_datasource_variable() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    assert 36 <= dashboard["schemaVersion"] <= 41
    (variable,) = dashboard["templating"]["list"]
    assert variable["type"] == "datasource" and variable["query"] == "prometheus"
    ids = set()
    for panel in dashboard["panels"]:
        assert panel["id"] not in ids
        ids.add(panel["id"])
        if panel["type"] != "row":
            assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, panel["title"]
            assert panel["targets"], panel["title"]
            assert all(t["datasource"] == panel["datasource"] for t in panel["targets"]), panel["title"]


# -- the stack: exporter, kube-state-metrics stand-in, Prometheus ---------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def get(url: str, timeout: float = 5.0) -> bytes:
    with urllib.request.urlopen(url, timeout=timeout) as response:
        return bytes(response.read())


def wait_for(what: str, condition: Callable[[], object], timeout: float = STARTUP_SECONDS) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            if condition():
                return
        except OSError:
            pass
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(0.2)


class Process:
    """A child process whose output goes to a file (read back when a wait fails), stopped for sure."""

    def __init__(self, name: str, args: list[str], log_dir: Path, env: dict[str, str] | None = None) -> None:
        self.name = name
        self.log = log_dir / f"{name}.log"
        with self.log.open("wb") as out:
            self.proc = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT, env=env)

    def check_alive(self) -> None:
        if self.proc.poll() is not None:
            pytest.fail(f"{self.name} exited with {self.proc.returncode}:\n{self.log.read_text()[-3000:]}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)


def exporter_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("NODECOST_")}
    return env | extra


def start_exporter(name: str, log_dir: Path, env: dict[str, str], *flags: str) -> tuple[Process, str]:
    """The demo exporter as a process with `flags` added, once /readyz says ready; and its address."""
    port = free_port()
    process = Process(
        name,
        [
            sys.executable,
            "-m",
            "exporter",
            "--demo",
            f"--web.listen-address=127.0.0.1:{port}",
            "--log.format=json",
            *flags,
        ],
        log_dir,
        env,
    )
    address = f"127.0.0.1:{port}"

    def ready() -> bool:
        process.check_alive()
        return get(f"http://{address}/readyz").startswith(b"ready")

    wait_for(f"{name} /readyz", ready)
    return process, address


# kube-state-metrics' own series for a few pods on demo nodes: its real label sets (requests per container;
# memory in bytes, CPU in cores, GPUs as `integer`), and kube_node_labels for the node-pool labels a
# `--metric-labels-allowlist=nodes=[...]` keeps. A pending pod has node="" (dropped by Prometheus).
KSM_POOL_LABELS = (
    "eks.amazonaws.com/nodegroup",
    "karpenter.sh/nodepool",
    "cloud.google.com/gke-nodepool",
    "kubernetes.azure.com/agentpool",
)
GIB = 2**30
KSM_PODS = [  # namespace, pod, node, container, {resource: request}
    ("shop", "cart-7d9f8b6c5-x2x4q", "ip-10-0-12-87.ec2.internal", "cart", {"cpu": 0.5, "memory": GIB // 2}),
    (
        "shop",
        "cart-7d9f8b6c5-x2x4q",
        "ip-10-0-12-87.ec2.internal",
        "istio-proxy",
        {"cpu": 0.1, "memory": 128 * 2**20},
    ),
    (
        "shop",
        "checkout-5c6d7f9b8-k8s2m",
        "gke-shop-default-pool-6b1f0c2e-x7kq",
        "checkout",
        {"cpu": 1.0, "memory": 2 * GIB},
    ),
    (
        "shop",
        "frontend-6f8d9c7b5-q9w7e",
        "aks-nodepool1-27184539-vmss000000",
        "nginx",
        {"cpu": 0.25, "memory": 256 * 2**20},
    ),
    ("batch", "etl-28876140-7xk2p", "ip-10-0-31-150.ec2.internal", "etl", {"cpu": 2.0, "memory": 4 * GIB}),
    (
        "batch",
        "render-28876140-bq4zt",
        "aks-spotpool-27184539-vmss000000",
        "render",
        {"cpu": 4.0, "memory": 8 * GIB},
    ),
    ("batch", "render-28876140-bq4zt", "", "render-pending", {"cpu": 1.0, "memory": GIB}),
    (
        "ml",
        "trainer-0",
        "ip-10-0-90-3.ec2.internal",
        "trainer",
        {"cpu": 3.0, "memory": 12 * GIB, "nvidia_com_gpu": 1},
    ),
    ("ml", "notebook-0", "gke-shop-spot-pool-0f3a9d17-h5tz", "jupyter", {"cpu": 1.5, "memory": 6 * GIB}),
    ("legacy", "mainframe-bridge-0", "rack3-worker-07", "bridge", {"cpu": 8.0, "memory": 32 * GIB}),
]
UNITS = {"cpu": "core", "memory": "byte", "nvidia_com_gpu": "integer"}


def ksm_text() -> str:
    lines = [
        "# HELP kube_pod_container_resource_requests The number of requested request resource by a container. "
        "It is recommended to use the kube_pod_resource_requests metric exposed by kube-scheduler instead, as it "
        "is more precise.",
        "# TYPE kube_pod_container_resource_requests gauge",
    ]
    for namespace, pod, node, container, requests in KSM_PODS:
        uid = uuid.uuid5(uuid.NAMESPACE_URL, f"{namespace}/{pod}")
        for resource, value in requests.items():
            lines.append(
                f'kube_pod_container_resource_requests{{namespace="{namespace}",pod="{pod}",uid="{uid}",'
                f'container="{container}",node="{node}",resource="{resource}",unit="{UNITS[resource]}"}} {value}'
            )
    lines += [
        "# HELP kube_node_labels Kubernetes labels converted to Prometheus labels.",
        "# TYPE kube_node_labels gauge",
    ]
    for item in json.loads(Path(demo_nodes_path()).read_text())["items"]:
        labels = item["metadata"]["labels"]
        pairs = [f'node="{item["metadata"]["name"]}"'] + [
            f'label_{re.sub(r"[^a-zA-Z0-9_]", "_", name)}="{labels[name]}"'
            for name in KSM_POOL_LABELS
            if name in labels
        ]
        lines.append(f"kube_node_labels{{{','.join(pairs)}}} 1")
    return "\n".join(lines) + "\n"


class KsmStandIn:
    """Serves `ksm_text()` on /metrics, in the test process."""

    def __init__(self) -> None:
        body = ksm_text().encode()

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                self.send_response(200)
                self.send_header("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                """Quiet."""

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True
        )
        self.thread.start()
        self.address = f"127.0.0.1:{self.server.server_address[1]}"

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=5)


def prometheus_binary() -> str:
    """Debian's prometheus; CI installs it, so there its absence is a failure, not a skip."""
    path = shutil.which("prometheus")
    if path is None:
        if os.environ.get("CI"):
            pytest.fail("prometheus is not installed (apt-get install prometheus)")
        pytest.skip("prometheus is not installed")
    return path


class Stack:
    def __init__(self, tmp: Path, exporter: str, ksm: str) -> None:
        self.tmp = tmp
        self.exporter = exporter
        self.ksm = ksm
        self.targets_file = tmp / "exporters.json"
        self.url = ""

    def set_targets(self, addresses: list[str]) -> None:
        """The exporters of job node-cost-exporter (file service discovery; replaced atomically)."""
        staging = self.targets_file.with_suffix(".tmp")
        staging.write_text(json.dumps([{"targets": addresses}]))
        staging.replace(self.targets_file)

    def api(self, path: str, **params: str) -> Any:
        url = f"{self.url}/api/v1/{path}" + (f"?{urllib.parse.urlencode(params)}" if params else "")
        answer = json.loads(get(url, timeout=10))
        assert answer["status"] == "success", answer
        return answer["data"]

    def query(self, expr: str, at: float) -> Result:
        data = self.api("query", query=expr, time=f"{at:.3f}")
        assert data["resultType"] == "vector", (expr, data)
        return {key(item["metric"]): float(item["value"][1]) for item in data["result"]}

    def alerts(self, instance: str) -> list[dict[str, Any]]:
        return [a for a in self.api("alerts")["alerts"] if a["labels"].get("instance") == instance]

    def world(self, exporters: list[str], at: float) -> World:
        samples = parse_exposition(ksm_text(), KSM_JOB, self.ksm)
        for address in exporters:
            samples += parse_exposition(get(f"http://{address}/metrics").decode(), JOB, address)
        return World(samples, at)


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    binary = prometheus_binary()
    tmp = tmp_path_factory.mktemp("prometheus")
    processes: list[Process] = []
    ksm = KsmStandIn()
    try:
        exporter, address = start_exporter("exporter", tmp, exporter_env())
        processes.append(exporter)
        stack = Stack(tmp, address, ksm.address)
        stack.set_targets([address])
        config = {
            "global": {"scrape_interval": "1s", "scrape_timeout": "1s", "evaluation_interval": "1s"},
            "rule_files": [str(RULES)],
            "scrape_configs": [
                {
                    "job_name": JOB,
                    "file_sd_configs": [{"files": [str(stack.targets_file)], "refresh_interval": "1s"}],
                },
                {"job_name": KSM_JOB, "honor_labels": True, "static_configs": [{"targets": [ksm.address]}]},
            ],
        }
        (tmp / "prometheus.yml").write_text(yaml.safe_dump(config))
        port = free_port()
        prometheus = Process(
            "prometheus",
            [
                binary,
                f"--config.file={tmp / 'prometheus.yml'}",
                f"--storage.tsdb.path={tmp / 'data'}",
                f"--web.listen-address=127.0.0.1:{port}",
            ],
            tmp,
        )
        processes.append(prometheus)
        stack.url = f"http://127.0.0.1:{port}"

        def up() -> bool:
            prometheus.check_alive()
            health = {t["labels"]["job"]: t["health"] for t in stack.api("targets")["activeTargets"]}
            return health == {JOB: "up", KSM_JOB: "up"}

        def evaluated() -> bool:
            now = time.time()
            rules = [r for g in stack.api("rules")["groups"] for r in g["rules"]]
            return (
                bool(stack.query("count(nodecost_node_hourly_cost) and count(kube_node_labels)", now))
                and len(rules) == len(yaml.safe_load(RULES.read_text())["groups"][0]["rules"])
                and all(r["health"] == "ok" for r in rules)
            )

        wait_for("both targets up", up)
        wait_for("samples and a rule evaluation", evaluated)
        yield stack
    finally:
        for process in reversed(processes):
            process.stop()
        ksm.stop()


# -- comparing -----------------------------------------------------------------------------------------------


def close(a: float, b: float) -> bool:
    return math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-9)


def compare(got: Result, want: Result | Top) -> str:
    """What differs, or ''."""
    if isinstance(want, Top):
        best = sorted(want.candidates.values(), reverse=True)[: want.k]
        if len(got) != len(best):
            return f"{len(got)} series, expected {len(best)}"
        if any(k not in want.candidates or not close(v, want.candidates[k]) for k, v in got.items()):
            return f"got series not among the candidates: {got}"
        if not all(map(close, sorted(got.values(), reverse=True), best)):
            return f"not the top {want.k}: {sorted(got.values(), reverse=True)} vs {best}"
        return ""
    if set(got) != set(want):
        show = lambda keys: sorted(dict(k) for k in keys)  # noqa: E731
        return f"missing {show(set(want) - set(got))}, unexpected {show(set(got) - set(want))}"
    wrong = {str(dict(k)): (got[k], want[k]) for k in got if not close(got[k], want[k])}
    return f"values (got, expected): {wrong}" if wrong else ""


def check_every_query(stack: Stack, exporters: list[str]) -> dict[str, Result]:
    """Run every recipe and panel query at one instant; return the results by normalised query."""
    at = round(time.time(), 3)  # Prometheus keeps milliseconds: time() is exactly this
    world = stack.world(exporters, at)
    failures, results = [], {}
    for where, expr in all_queries():
        got = stack.query(expr, at)
        results[normal(expr)] = got
        problem = compare(got, EXPECTED[normal(expr)](world))
        if problem:
            failures.append(f"{where}\n    {expr}\n    {problem}")
    assert not failures, "\n".join(failures)
    return results


# Queries with no series while everything is healthy and nothing watches a cluster (the demo).
EMPTY_WHEN_HEALTHY = {
    normal("nodecost_integration_up == 0"),
    normal("nodecost_integration_failure_info"),
    normal("sum by (type) (rate(nodecost_kubernetes_watch_events_total[1m]))"),
    # The demo has no bill, so no commitments: these run here for their syntax and their emptiness; the
    # numbers behind them are checked by the billing sources' own tests.
    normal("max by (provider, commitment) (nodecost_commitment_unused_hourly_cost) * 24"),
    normal("nodecost_node_commitment_coverage_ratio < 0.5"),
}


def test_every_recipe_and_panel_query_returns_what_the_exporter_says(stack: Stack) -> None:
    results = check_every_query(stack, [stack.exporter])
    empty = {q for q, result in results.items() if not result}
    assert empty == EMPTY_WHEN_HEALTHY, "queries that should have returned series did not"
    # Spot-checks in plain numbers, so a shared mistake of query and expectation cannot hide.
    assert results[normal('sum(nodecost_nodes{source="unpriced"})')] == {frozenset(): 1.0}
    assert set(results[normal("nodecost_integration_up")].values()) == {1.0}
    namespaces = results[normal(next(q for t, q in recipes() if t == "Cost per namespace"))]
    assert {dict(k)["namespace"] for k in namespaces} == {"shop", "batch", "ml"}  # legacy: unpriced node


def test_alert_rules_evaluate_on_the_demo(stack: Stack) -> None:
    """On the demo inventory: one unpriced node, and one spot node per cloud at the on-demand list price."""
    world = stack.world([stack.exporter], time.time())
    spot_at_list = defaultdict(int)
    for lb, _ in world.with_info(
        world.select("nodecost_node_hourly_cost", price_basis="on_demand"),
        ("provider",),
        capacity_type="spot",
    ):
        spot_at_list[lb["provider"]] += 1

    def active() -> dict[tuple[str, str, str | None], tuple[str, float]]:
        return {
            (a["labels"]["alertname"], a["labels"].get("fallback", ""), a["labels"].get("provider")): (
                a["state"],
                float(a["value"]),
            )
            for a in stack.alerts(stack.exporter)
        }

    expected = {("NodeCostNodesUnpriced", "", None): ("pending", 1.0)} | {
        ("NodeCostFallbackPricing", "spot_on_demand", provider): ("pending", float(count))
        for provider, count in spot_at_list.items()
    }
    assert set(spot_at_list) == {"aws", "gcp", "azure"}
    # Rules may have been evaluated before the first samples: give them a few evaluations.
    wait_for("the demo's alerts", lambda: active() == expected, timeout=10)
    assert active() == expected


def test_price_list_outage_raises_integration_down_then_clears(stack: Stack) -> None:
    items = vm_items("eastus", "Standard_D4s_v3", "DSv3", linux="0.192", spot="0.0384") + vm_items(
        "eastus", "Standard_D8s_v3", "DSv3", linux="0.384", spot="0.0768"
    )
    with FakeRetailPricesAPI(items) as fake:
        fake.inject(Fault.UNAVAILABLE, times=None)  # every call answers 503 until the faults are cleared
        env = exporter_env(
            NODECOST_AZURE__RETAIL__ENABLED="true",
            NODECOST_AZURE__RETAIL__ENDPOINT_URL=fake.url,
            NODECOST_AZURE__RETAIL__REFRESH_INTERVAL_SECONDS="0.5",
            NODECOST_AZURE__RETAIL__RETRIES="0",
            NODECOST_AZURE__RETAIL__TIMEOUT_SECONDS="2",
        )
        process, address = start_exporter("exporter-azure", stack.tmp, env)
        try:
            stack.set_targets([stack.exporter, address])  # the same job: what a second replica looks like

            def down_alert() -> dict[str, Any] | None:
                process.check_alive()
                found = [
                    a for a in stack.alerts(address) if a["labels"]["alertname"] == "NodeCostIntegrationDown"
                ]
                return found[0] if found else None

            wait_for("NodeCostIntegrationDown for azure_retail", down_alert)
            alert = down_alert()
            assert alert is not None and alert["state"] == "pending"  # `for: 15m`: pending is active
            assert alert["labels"] == {
                "alertname": "NodeCostIntegrationDown",
                "severity": "warning",
                "job": JOB,
                "instance": address,
                "integration": "azure_retail",
            }
            annotations = alert["annotations"]
            assert annotations["reason"] == "unavailable"
            assert (
                annotations["summary"] == "node-cost-exporter integration azure_retail is down (unavailable)"
            )
            assert f"node-cost-exporter {address} has failed" in annotations["description"]
            assert 'with reason "unavailable"' in annotations["description"]
            assert annotations["runbook"].startswith("The API cannot be reached or answers 5xx")
            assert fake.calls > 0
            # The Azure nodes fell back to the offline table while azure_retail is configured.
            fallback = [a for a in stack.alerts(address) if a["labels"].get("fallback") == "offline_table"]
            assert [(a["labels"]["provider"], a["state"], float(a["value"])) for a in fallback] == [
                ("azure", "pending", 3.0)
            ]

            # Every recipe and panel again: two exporters in one job, one of them failing.
            results = check_every_query(stack, [stack.exporter, address])
            assert results[normal("nodecost_integration_failure_info")] == {
                key(
                    {"job": JOB, "instance": address, "integration": "azure_retail", "reason": "unavailable"}
                ): 1.0
            }

            # Two exporters in one job break no rule (no many-to-many matches).
            rules = [r for g in stack.api("rules")["groups"] for r in g["rules"]]
            assert [r["name"] for r in rules if r["health"] != "ok"] == []

            fake.clear_faults()
            wait_for(
                "the alerts to clear",
                lambda: (
                    not [
                        a
                        for a in stack.alerts(address)
                        if a["labels"]["alertname"] == "NodeCostIntegrationDown"
                        or a["labels"].get("fallback") == "offline_table"
                    ]
                ),
            )
            healed = stack.query(
                f'nodecost_integration_up{{instance="{address}",integration="azure_retail"}}', time.time()
            )
            assert list(healed.values()) == [1.0]
        finally:
            stack.set_targets([stack.exporter])
            try:
                wait_for(
                    "the second exporter's series to go stale",
                    lambda: not stack.query(f'nodecost_integration_up{{instance="{address}"}}', time.time()),
                )
            finally:
                process.stop()
