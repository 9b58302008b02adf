"""Probes answer at once whatever the background does, and any number of SIGTERM/SIGINT ends the process
cleanly: the real exporter against the Kubernetes and AWS price list fakes, with a real SQLite cache."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from fakes.aws_api import PricingApi, ec2_product
from fakes.kube_api import FakeKubeAPI, make_node, write_kubeconfig
from fakes.server import Fault
from tests.reliability.running import Exporter, probe, start

pytestmark = pytest.mark.slow  # starts the exporter as a process

AWS_ENV = {
    "AWS_ACCESS_KEY_ID": "AKIAIOSFODNN7EXAMPLE",
    "AWS_SECRET_ACCESS_KEY": "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
    "AWS_EC2_METADATA_DISABLED": "true",
}


@pytest.fixture
def kube() -> Iterator[FakeKubeAPI]:
    with FakeKubeAPI(token="test-token") as api:
        api.load([make_node(f"ip-10-0-0-{i}.ec2.internal") for i in range(20)])
        yield api


@pytest.fixture
def prices() -> Iterator[PricingApi]:
    with PricingApi() as fake:
        fake.add(ec2_product("us-east-1", "m5.xlarge", "0.1920000000"))
        yield fake


def config(tmp_path: Path, kube: FakeKubeAPI, prices: PricingApi) -> Path:
    """A config file: the fake cluster, the fake price list, a cache file under `tmp_path`."""
    path = tmp_path / "config.yaml"
    settings = {
        "kubernetes": {"kubeconfig": str(write_kubeconfig(tmp_path / "kubeconfig", kube.url, "test-token"))},
        "cache": {"path": str(tmp_path / "cache.sqlite")},
        "aws": {"pricing": {"enabled": True, "endpoint_url": prices.url, "timeout_seconds": 5}},
    }
    path.write_text(json.dumps(settings))  # JSON is YAML
    return path


def run(tmp_path: Path, config_file: Path, name: str) -> Exporter:
    env = {
        **AWS_ENV,
        "AWS_CONFIG_FILE": str(tmp_path / "none"),
        "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "none"),
    }
    exporter = start([f"--config.file={config_file}"], tmp_path / f"{name}.log", env)
    exporter.wait_listening()
    return exporter


def integrity(path: Path) -> str:
    with sqlite3.connect(path) as conn:
        return str(conn.execute("PRAGMA integrity_check").fetchone()[0])


def test_probes_answer_within_a_second_while_the_api_server_hangs_on_a_stale_cache(
    tmp_path: Path, kube: FakeKubeAPI, prices: PricingApi
) -> None:
    config_file = config(tmp_path, kube, prices)
    first = run(tmp_path, config_file, "first")  # a previous run leaves its cache behind
    first.wait_ready()
    first.signal(signal.SIGTERM)
    first.finish()
    with sqlite3.connect(tmp_path / "cache.sqlite") as conn:  # ten days old: every price is refetched
        conn.execute("UPDATE entries SET fetched_at = fetched_at - 864000")
    kube.hold_seconds = prices.hold_seconds = 300.0
    kube.inject(Fault.TIMEOUT, times=None)
    prices.inject(Fault.TIMEOUT, times=None)
    exporter = run(tmp_path, config_file, "second")
    try:
        slowest: dict[str, float] = {}
        ends = time.monotonic() + 8
        while time.monotonic() < ends:
            for path in ("/readyz", "/healthz", "/"):
                status, took = probe(exporter.url + path, timeout=30)
                assert status in (200, 503), (path, status)
                slowest[path] = max(slowest.get(path, 0.0), took)
        assert all(took < 1.0 for took in slowest.values()), slowest
        assert probe(exporter.url + "/readyz")[0] == 503  # no node list yet: not ready, and says so at once
    finally:
        exporter.signal(signal.SIGTERM)
        exporter.finish()


@pytest.mark.parametrize(
    "signals",
    [(signal.SIGTERM, signal.SIGTERM), (signal.SIGINT, signal.SIGTERM), (signal.SIGTERM, signal.SIGINT)],
    ids=["term-term", "int-term", "term-int"],
)
def test_repeated_signals_end_the_process_within_5s_with_the_cache_intact(
    tmp_path: Path, kube: FakeKubeAPI, prices: PricingApi, signals: tuple[signal.Signals, signal.Signals]
) -> None:
    config_file = config(tmp_path, kube, prices)
    for attempt in range(10):
        exporter = run(tmp_path, config_file, f"run{attempt}")
        exporter.wait_ready()
        sent = time.monotonic()
        exporter.signal(signals[0])
        time.sleep(attempt * 0.003)  # a second signal at a different point of the shutdown each time
        exporter.signal(signals[1])
        stderr = exporter.finish(timeout=10)
        took = time.monotonic() - sent
        assert exporter.proc.returncode == 0, (attempt, exporter.proc.returncode, stderr[-2000:])
        assert took < 5.0, (attempt, took)
        assert integrity(tmp_path / "cache.sqlite") == "ok"


def test_a_burst_of_signals_still_ends_the_process_with_0_within_5s(
    tmp_path: Path, kube: FakeKubeAPI, prices: PricingApi
) -> None:
    """Signals keep coming all through the shutdown, up to its very end: a handler that takes a lock the
    main thread holds at that moment deadlocks, and one left to the default at exit kills the process."""
    config_file = config(tmp_path, kube, prices)
    for attempt in range(10):
        exporter = run(tmp_path, config_file, f"run{attempt}")
        exporter.wait_ready()
        sent = time.monotonic()
        sent_count = 0
        while exporter.proc.poll() is None and time.monotonic() - sent < 6:
            with contextlib.suppress(ProcessLookupError):
                os.kill(exporter.proc.pid, (signal.SIGTERM, signal.SIGINT)[sent_count % 2])
            sent_count += 1
            time.sleep(0.0005)
        stderr = exporter.finish(timeout=1)
        took = time.monotonic() - sent
        assert exporter.proc.returncode == 0, (attempt, exporter.proc.returncode, sent_count, stderr[-2000:])
        assert took < 5.0, (attempt, took, sent_count)
        assert integrity(tmp_path / "cache.sqlite") == "ok"
