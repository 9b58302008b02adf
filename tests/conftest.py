"""Shared test helpers: real-fixture location, Node builders, and promtool discovery."""

from __future__ import annotations

import os
import shutil
import threading
import time
from collections.abc import Callable, Mapping
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import generate_latest

from exporter.app import App
from exporter.cache import PriceCache
from exporter.config import CloudSettings
from exporter.health import Health
from exporter.inventory.node import CapacityType, Node, ProviderRef
from exporter.inventory.nodes_file import NodesFileWatcher
from exporter.metrics.store import NodeMetricsStore
from exporter.pricing.sources.context import SourceContext

SHARED_REAL = Path(__file__).resolve().parents[2] / "shared" / "fixtures" / "real"


@pytest.fixture
def shared_real() -> Path:
    """../shared/fixtures/real, or a clean skip when this checkout has no shared folder beside it."""
    if not SHARED_REAL.is_dir():
        pytest.skip("../shared/fixtures/real is not present")
    return SHARED_REAL


@pytest.fixture
def promtool() -> str:
    """Debian's promtool; CI installs it, so there its absence is a failure, not a skip."""
    path = shutil.which("promtool")
    if path is None:
        if os.environ.get("CI"):
            pytest.fail("promtool is not installed (apt-get install prometheus)")
        pytest.skip("promtool is not installed")
    return path


class FakeClock:
    """A `Clock` for tests: time moves only when a test moves it (`now += …`) or a source sleeps, and a
    sleep returns at once, recorded in `sleeps`, so retry tests assert on the delays instead of waiting."""

    def __init__(self, at: datetime | None = None) -> None:
        self.now = time.time() if at is None else at.timestamp()
        self._monotonic = 1_000.0
        self.sleeps: list[float] = []
        self._lock = threading.Lock()  # shelf sources sleep from several fetch workers at once

    def time(self) -> float:
        with self._lock:
            return self.now

    def monotonic(self) -> float:
        with self._lock:
            return self._monotonic

    def sleep(self, seconds: float) -> None:
        with self._lock:
            self.sleeps.append(seconds)
            self.advance(seconds)

    def advance(self, seconds: float) -> None:
        """Move both clocks forward, as real time passing would."""
        self.now += seconds
        self._monotonic += seconds


def context(
    clock: FakeClock | None = None,
    *,
    health: Health | None = None,
    cache: PriceCache | None = None,
    currency: str = "USD",
    ca_file: str = "",
    clouds: Mapping[str, CloudSettings] | None = None,
) -> SourceContext:
    """A source context for one test: a fresh Health and a fake clock unless given."""
    return SourceContext(
        health or Health(), cache, currency, clock or FakeClock(), ca_file=ca_file, clouds=clouds or {}
    )


def node(name: str = "ip-10-0-12-87.ec2.internal", **overrides: Any) -> Node:
    """A realistic EKS on-demand m5.xlarge node; override any field."""
    fields: dict[str, Any] = {
        "name": name,
        "uid": f"uid-{name}",
        "provider_id": "aws:///us-east-1a/i-0fea4fd46592d050b",
        "ref": ProviderRef("aws", zone="us-east-1a", instance_id="i-0fea4fd46592d050b"),
        "instance_type": "m5.xlarge",
        "region": "us-east-1",
        "zone": "us-east-1a",
        "capacity_type": CapacityType.ON_DEMAND,
        "os": "linux",
        "arch": "amd64",
        "cpu_cores": 4.0,
        "memory_bytes": 16_154_906_624,
        "gpu_count": 0,
        "gpu_model": "",
        "labels": {"node.kubernetes.io/instance-type": "m5.xlarge", "eks.amazonaws.com/nodegroup": "general"},
    }
    fields.update(overrides)
    return Node(**fields)


def write(path: Path, text: str) -> None:
    """Replace the file whole, its mtime moved forward, so a rewrite within the clock's granularity still
    counts as a change; a watcher polling meanwhile sees the old file or the new one, never one half-made
    (written but not yet re-stamped, which it would read twice)."""
    before = path.stat().st_mtime_ns if path.exists() else 0
    staged = path.with_name(path.name + ".staged")
    staged.write_text(text)
    os.utime(staged, ns=(before + 10**9, before + 10**9))
    os.replace(staged, path)


def node_text(store: NodeMetricsStore, *, openmetrics: bool) -> str:
    """The store's node section as one string."""
    return b"".join(store.body(openmetrics=openmetrics)).decode()


def wait_until(condition: Callable[[], object], timeout: float = 15.0) -> None:
    """Poll `condition` until it holds; fail the test after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.02)


def scrape(app: App) -> str:
    """What /metrics would serve (text format), without HTTP."""
    return node_text(app.store, openmetrics=False) + generate_latest(app.registry).decode()


def turn(app: App) -> None:
    """One turn of an app's inventory and scheduler threads, on the test's thread: re-read the nodes file
    if it changed, then one refresh pass. On a FakeClock, a test moves time between turns instead of
    waiting for the threads' next ones."""
    inventory = app.inventory
    assert isinstance(inventory, NodesFileWatcher), "turn() drives a nodes-file inventory"
    inventory.poll()
    app.scheduler.tick()


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """A test that runs promtool starts a real process: it belongs with the slow ones."""
    for item in items:
        if "promtool" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.slow)
