"""The whole exporter against the fake Kubernetes API: watch events reach /metrics, outages keep it serving."""

from __future__ import annotations

import socket
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from exporter.app import App
from exporter.config import load_config
from exporter.http import serve
from fakes.kube_api import FakeKubeAPI, make_node, wait_for, write_kubeconfig

TOKEN = "kube-token-1"


def get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as err:
        return err.code, err.read().decode()


def start(kubeconfig: Path) -> tuple[str, threading.Event]:
    config = load_config(
        None, env={}, overrides={"kubernetes.kubeconfig": str(kubeconfig), "cache.enabled": False}
    )
    app = App(config)
    server = serve(app, "127.0.0.1", 0)
    stop = threading.Event()
    app.start(stop)
    threading.Thread(target=lambda: (stop.wait(), server.shutdown()), daemon=True).start()
    return f"http://127.0.0.1:{server.server_address[1]}", stop


@pytest.fixture
def api() -> Iterator[FakeKubeAPI]:
    with FakeKubeAPI(token=TOKEN) as fake:
        yield fake


def hourly(metrics: str, node: str) -> str | None:
    prefix = f'nodecost_node_hourly_cost{{node="{node}",'
    return next((line for line in metrics.splitlines() if line.startswith(prefix)), None)


def test_watch_events_flow_through_pricing_to_metrics(tmp_path: Path, api: FakeKubeAPI) -> None:
    api.load(
        [
            make_node("ip-10-0-1-10.ec2.internal", instance_type="m5.xlarge", zone="us-east-1a", images=3),
            make_node(
                "ip-10-0-1-11.ec2.internal", instance_type="c5.xlarge", zone="us-east-1b", spot=True, images=3
            ),
        ]
    )
    url, stop = start(write_kubeconfig(tmp_path / "kubeconfig", api.url, TOKEN))
    try:
        wait_for(lambda: get(url + "/readyz")[0] == 200, "ready", timeout=15)
        _, metrics = get(url + "/metrics")
        assert hourly(metrics, "ip-10-0-1-10.ec2.internal") == (
            'nodecost_node_hourly_cost{node="ip-10-0-1-10.ec2.internal",source="offline",price_basis="on_demand",currency="USD"} 0.192'
        )
        assert 'capacity_type="spot"' in metrics
        assert 'nodecost_integration_up{integration="kubernetes"} 1.0' in metrics

        def resize(obj: dict) -> None:  # type: ignore[type-arg]
            obj["metadata"]["labels"]["node.kubernetes.io/instance-type"] = "m5.2xlarge"

        api.modify_node("ip-10-0-1-10.ec2.internal", resize)
        wait_for(
            lambda: "0.384" in (hourly(get(url + "/metrics")[1], "ip-10-0-1-10.ec2.internal") or ""),
            "re-priced",
        )
        api.add_node(make_node("ip-10-0-1-12.ec2.internal", instance_type="m5.nonexistent", images=3))
        wait_for(
            lambda: (
                'nodecost_node_unpriced{node="ip-10-0-1-12.ec2.internal",reason="unknown_instance_type"} 1.0' in get(url + "/metrics")[1]
            ),
            "unpriced",
        )
        api.delete_node("ip-10-0-1-11.ec2.internal")
        wait_for(lambda: "ip-10-0-1-11" not in get(url + "/metrics")[1], "deleted")
        _, metrics = get(url + "/metrics")
        assert 'nodecost_kubernetes_watch_events_total{type="MODIFIED"} 1.0' in metrics
        assert 'nodecost_kubernetes_watch_events_total{type="ADDED"} 1.0' in metrics
        assert 'nodecost_kubernetes_watch_events_total{type="DELETED"} 1.0' in metrics
        assert 'nodecost_nodes{source="offline"} 1.0' in metrics
        assert 'nodecost_nodes{source="unpriced"} 1.0' in metrics
    finally:
        stop.set()


def test_api_unreachable_at_start_serves_metrics_not_ready_and_says_why(tmp_path: Path) -> None:
    with socket.socket() as sock:  # a port with nobody listening
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    url, stop = start(write_kubeconfig(tmp_path / "kubeconfig", f"http://127.0.0.1:{port}", TOKEN))
    try:
        wait_for(lambda: 'reason="unavailable"' in get(url + "/metrics")[1], "failure reported", timeout=15)
        _, metrics = get(url + "/metrics")
        assert 'nodecost_integration_up{integration="kubernetes"} 0.0' in metrics
        assert (
            'nodecost_integration_failure_info{integration="kubernetes",reason="unavailable"} 1.0' in metrics
        )
        assert "nodecost_ready 0.0" in metrics
        assert get(url + "/readyz")[0] == 503
        assert get(url + "/healthz")[0] == 200  # alive: it keeps retrying rather than crash-looping
    finally:
        stop.set()
