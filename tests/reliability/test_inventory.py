"""Malformed and conflicting Node objects, from a nodes file and from the Kubernetes API, end to end."""

from __future__ import annotations

import copy
import json
import random
import re
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from exporter.app import App, demo_nodes_path
from exporter.config import load_config
from exporter.http import serve
from exporter.inventory.parse import DEFAULT_SPOT_LABELS, InvalidNode, parse_node
from exporter.metrics.exposition import format_registry
from exporter.metrics.families import escape
from exporter.metrics.store import NodeMetricsStore
from fakes.kube_api import FakeKubeAPI, make_node, wait_for, write_kubeconfig
from tests.conftest import SHARED_REAL
from tests.reliability.running import free_port
from tests.test_app_kube import get

SURROGATE = "\udc80"  # a lone UTF-16 surrogate: legal in JSON text as "\udc80", not encodable as UTF-8


def demo_items() -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = json.loads(Path(demo_nodes_path()).read_text())["items"]
    return items


def surrogate_nodes(template: dict[str, Any]) -> list[dict[str, Any]]:
    """Two nodes carrying a lone surrogate: one in its name, one in a label value."""
    in_name, in_label = copy.deepcopy(template), copy.deepcopy(template)
    in_name["metadata"].update(name=f"bad-name-{SURROGATE}", uid="uid-bad-name")
    in_label["metadata"].update(name="bad-label", uid="uid-bad-label")
    in_label["metadata"]["labels"]["team"] = f"shop{SURROGATE}"
    return [in_name, in_label]


def served_nodes(metrics: str, family: str = "nodecost_node_info") -> set[str]:
    """The node label of each of the family's series, as written (escaped)."""
    return set(re.findall(rf'^{family}{{node="((?:[^"\\]|\\.)*)"', metrics, re.MULTILINE))


@pytest.mark.slow  # the exporter as a process
def test_a_surrogate_node_in_a_nodes_file_leaves_the_process_healthy_and_the_others_served(
    tmp_path: Path,
) -> None:
    items = demo_items()
    nodes = tmp_path / "nodes.json"
    nodes.write_text(json.dumps({"kind": "NodeList", "items": [*items, *surrogate_nodes(items[0])]}))
    port = free_port()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "exporter",
            f"--nodes-file={nodes}",
            "--no-cache",
            f"--web.listen-address=127.0.0.1:{port}",
        ],
        stderr=subprocess.PIPE,
        text=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for(lambda: _status(url + "/readyz") == 200, "ready", timeout=30)
        time.sleep(0.5)  # a dying inventory thread would be seen by /healthz by now
        assert get(url + "/healthz")[0] == 200
        status, metrics = get(url + "/metrics")
        assert status == 200
        names = served_nodes(metrics)
        assert {item["metadata"]["name"] for item in items} <= names
        assert "bad-label" in names and "bad-name-\ufffd" in names  # replaced, not lost
        assert 'team="shop\ufffd"' not in metrics  # labels are not exported beyond the known facts
    finally:
        proc.terminate()
        proc.communicate(timeout=20)


def _status(url: str) -> int:
    try:
        return get(url)[0]
    except OSError:
        return 0


def test_a_surrogate_node_through_the_kube_api_is_served_without_a_hot_loop(tmp_path: Path) -> None:
    good = [make_node(f"ip-10-0-1-{i}.ec2.internal", instance_type="m5.xlarge", images=2) for i in range(3)]
    with FakeKubeAPI(token="t") as api:
        api.load([*good, *surrogate_nodes(make_node("template", images=2))])
        config = load_config(
            None,
            env={},
            overrides={
                "kubernetes.kubeconfig": str(write_kubeconfig(tmp_path / "kubeconfig", api.url, "t")),
                "cache.enabled": False,
            },
        )
        app = App(config)
        server = serve(app, "127.0.0.1", 0)
        url = f"http://127.0.0.1:{server.server_address[1]}"
        stop = threading.Event()
        app.start(stop)
        try:
            wait_for(lambda: get(url + "/readyz")[0] == 200, "ready", timeout=15)
            later = make_node("ip-10-0-1-9.ec2.internal", instance_type="m5.xlarge", images=2)
            api.add_node(surrogate_nodes(later)[1] | {"metadata": {**later["metadata"], "uid": "uid-bad-2"}})
            bad_event = surrogate_nodes(make_node("template", images=2))[0]
            bad_event["metadata"].update(name=f"late-{SURROGATE}", uid="uid-late")
            api.add_node(bad_event)
            api.add_node(make_node("ip-10-0-1-20.ec2.internal", instance_type="m5.xlarge", images=2))
            wait_for(lambda: "ip-10-0-1-20.ec2.internal" in served_nodes(get(url + "/metrics")[1]), "late node")
            time.sleep(1.0)  # a hot loop would make dozens of requests in this second
            assert get(url + "/healthz")[0] == 200
            names = served_nodes(get(url + "/metrics")[1])
            assert {n["metadata"]["name"] for n in good} <= names
            assert {"bad-label", "bad-name-\ufffd", "late-\ufffd"} <= names
            assert len(api.list_requests()) == 1  # no relist
            assert len(api.watch_requests()) <= 2
        finally:
            stop.set()
            server.shutdown()


@pytest.mark.parametrize("source", ["file", "list"])
def test_two_nodes_with_one_name_make_one_series_and_a_counted_conflict(source: str, tmp_path: Path) -> None:
    first, second = copy.deepcopy(demo_items()[0]), copy.deepcopy(demo_items()[0])
    second["metadata"]["uid"] = "uid-recreated"
    second["metadata"]["labels"]["node.kubernetes.io/instance-type"] = "m5.2xlarge"
    nodes = tmp_path / "nodes.json"
    nodes.write_text(json.dumps({"items": [first, second]}))
    app = App(load_config(None, env={}, overrides={"kubernetes.nodes_file": str(nodes), "cache.enabled": False}))
    if source == "file":
        app.inventory.run(_stopped_after_one_poll())
    else:  # a relist race: the new uid arrives while the old one is still listed
        app.replace_all([parse_node(first, DEFAULT_SPOT_LABELS)])
        app.upsert(parse_node(second, DEFAULT_SPOT_LABELS))
    text = b"".join(app.store.body(openmetrics=False)).decode()
    name = first["metadata"]["name"]
    info = [line for line in text.splitlines() if line.startswith(f'nodecost_node_info{{node="{name}"')]
    assert len(info) == 1 and 'instance_type="m5.2xlarge"' in info[0]  # last writer wins
    assert [node.uid for node in app.nodes()] == ["uid-recreated"]
    assert app.health.invalid_counts() == {"node_name_conflict": 1}


def _stopped_after_one_poll() -> threading.Event:
    class Once(threading.Event):
        def is_set(self) -> bool:
            was, self.polled = getattr(self, "polled", False), True
            return was

    return Once()


# -- fuzz --------------------------------------------------------------------------------------------------


def real_node_objects(shared: Path | None) -> list[dict[str, Any]]:
    """The shared real Node samples (NodeList JSON, Node YAML or JSON) when present, and the demo nodes."""
    objects = demo_items()
    folder = shared / "nodes" if shared is not None else None
    for path in sorted(folder.iterdir()) if folder is not None and folder.is_dir() else []:
        doc = yaml.safe_load(path.read_text()) if path.suffix in (".yaml", ".yml") else json.loads(path.read_text())
        objects += doc["items"] if isinstance(doc, dict) and "items" in doc else [doc]
    return objects


_ODD_STRINGS = (SURROGATE, "\ud800x", '"', "\\", "\n", "\r", "\x00", "é", "\u2028", "}", "x" * 2000, "")
_ODD_VALUES: tuple[Any, ...] = (None, 0, -1, 1.5, [], {}, True, "NaN", "1e400", "-5", "9" * 40)


def mutate(obj: dict[str, Any], rng: random.Random, i: int) -> dict[str, Any]:
    """A real node with a few of its strings, values or fields made strange."""
    node = copy.deepcopy(obj)
    node.setdefault("metadata", {})["uid"] = f"fuzz-{i}"
    paths = list(_leaves(node))
    for _ in range(rng.randint(1, 4)):
        container, key = rng.choice(paths)
        roll = rng.random()
        if isinstance(container, dict) and key not in container:
            continue  # removed by an earlier mutation
        if roll < 0.5:
            current = container[key]
            odd = rng.choice(_ODD_STRINGS)
            container[key] = (current + odd) if isinstance(current, str) else odd
        elif roll < 0.8:
            container[key] = rng.choice(_ODD_VALUES)
        elif isinstance(container, dict):
            container.pop(key, None)
    if rng.random() < 0.2:  # a duplicate name: another node of the same run
        node["metadata"]["name"] = f"dup-{rng.randint(0, 9)}"
    return node


def _leaves(obj: Any) -> Any:
    items = obj.items() if isinstance(obj, dict) else enumerate(obj) if isinstance(obj, list) else ()
    for key, value in items:
        if isinstance(value, dict | list) and value:
            yield from _leaves(value)
        else:
            yield obj, key


def fuzz_store(shared: Path | None) -> tuple[NodeMetricsStore, App, set[str], int]:
    """1,000 mutated real nodes through parse and the app's sink into its store."""
    base = real_node_objects(shared)
    rng = random.Random(11)
    app = App(load_config(None, env={}, overrides={"kubernetes.nodes_file": demo_nodes_path(), "cache.enabled": False}))
    parsed, skipped = [], 0
    for i in range(1000):
        obj = mutate(rng.choice(base), rng, i)
        try:
            parsed.append(parse_node(obj, DEFAULT_SPOT_LABELS))
        except InvalidNode:
            skipped += 1
    app.replace_all(parsed[:500])
    for node in parsed[500:]:
        app.upsert(node)
    return app.store, app, {node.name for node in parsed}, skipped


@pytest.fixture
def shared_or_none() -> Path | None:
    """../shared/fixtures/real when present: the fuzz then also mutates those nodes; else the demo's only."""
    return SHARED_REAL if SHARED_REAL.is_dir() else None


def test_fuzzed_real_nodes_never_crash_and_no_valid_node_is_lost(shared_or_none: Path | None) -> None:
    store, app, names, skipped = fuzz_store(shared_or_none)
    assert skipped < 500  # most mutations leave a node that can be keyed
    assert len(store) == len(names)  # one series set per name: every parsed node, duplicates merged
    for openmetrics in (False, True):
        body = b"".join(store.body(openmetrics=openmetrics))
        body += format_registry(app.registry, openmetrics=openmetrics)
        text = body.decode("utf-8")  # strict: the exposition is valid UTF-8
        assert served_nodes(text) == {escape(name) for name in names}


def test_fuzzed_exposition_passes_promtool(promtool: str, shared_or_none: Path | None, tmp_path: Path) -> None:
    store, app, _, _ = fuzz_store(shared_or_none)
    body = b"".join(store.body(openmetrics=False)) + format_registry(app.registry, openmetrics=False)
    result = subprocess.run([promtool, "check", "metrics"], input=body, capture_output=True, timeout=60)
    problems = [line for line in result.stderr.decode().splitlines() if "error" in line.lower()]
    assert not problems and result.returncode in (0, 3), result.stderr.decode()[:2000]


def test_the_node_set_aside_is_shown_again_when_the_winner_is_deleted() -> None:
    """A relist race the other way round: the old object is written last, then deleted."""
    old, new = copy.deepcopy(demo_items()[0]), copy.deepcopy(demo_items()[0])
    new["metadata"]["uid"] = "uid-recreated"
    app = App(load_config(None, env={}, overrides={"kubernetes.nodes_file": demo_nodes_path(), "cache.enabled": False}))
    app.replace_all([])
    app.upsert(parse_node(new, DEFAULT_SPOT_LABELS))
    app.upsert(parse_node(old, DEFAULT_SPOT_LABELS))  # a late MODIFIED of the old object: it wins
    assert [node.uid for node in app.nodes()] == [old["metadata"]["uid"]] and len(app.store) == 1
    app.delete(old["metadata"]["uid"])
    assert [node.uid for node in app.nodes()] == ["uid-recreated"] and len(app.store) == 1
    app.delete("uid-recreated")
    assert app.nodes() == [] and len(app.store) == 0
    assert app.health.invalid_counts() == {"node_name_conflict": 1}


def test_an_infinite_or_absurd_price_never_reaches_metrics(tmp_path: Path) -> None:
    """A custom table whose hourly price is finite as a decimal but not as a float, and one beyond the bound."""
    table = tmp_path / "prices.yaml"
    table.write_text(
        "prices:\n"
        f"  - {{provider: '', hourly: '1{'0' * 400}'}}\n"  # float() of it is inf
        "  - {instance_type: m5.xlarge, hourly: '20000'}\n"
    )
    overrides = {"demo": True, "pricing.custom.file": str(table), "pricing.custom.reload_interval_seconds": 30}
    app = App(load_config(None, env={}, overrides=overrides))
    app.inventory.run(_stopped_after_one_poll())
    app.scheduler.tick()
    text = b"".join(app.store.body(openmetrics=False)).decode() + format_registry(app.registry, openmetrics=False).decode()
    assert not [line for line in text.splitlines() if line.endswith((" inf", " nan", "+Inf", "NaN"))]
    assert 'nodecost_node_unpriced{node="rack3-worker-07"' in text
    assert 'nodecost_node_hourly_cost{node="ip-10-0-12-87.ec2.internal",source="offline"' in text  # next source
    assert 'nodecost_invalid_inputs_total{kind="price"}' in text
