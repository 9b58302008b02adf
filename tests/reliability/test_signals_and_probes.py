"""Probes answer at once whatever the background does, and any number of SIGTERM/SIGINT ends the process
cleanly: the real exporter against the Kubernetes and AWS price list fakes, with a real SQLite cache."""

from __future__ import annotations

import contextlib
import os
import signal
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from fakes.aws_api import PricingApi
from fakes.kube_api import FakeKubeAPI
from fakes.server import Fault
from tests.reliability.running import fake_cluster, fake_prices, probe, run, write_config

pytestmark = pytest.mark.slow  # starts the exporter as a process


@pytest.fixture
def kube() -> Iterator[FakeKubeAPI]:
    with fake_cluster() as api:
        yield api


@pytest.fixture
def prices() -> Iterator[PricingApi]:
    with fake_prices() as fake:
        yield fake


def integrity(path: Path) -> str:
    with sqlite3.connect(path) as conn:
        return str(conn.execute("PRAGMA integrity_check").fetchone()[0])


def test_probes_answer_within_a_second_while_the_api_server_hangs_on_a_stale_cache(
    tmp_path: Path, kube: FakeKubeAPI, prices: PricingApi
) -> None:
    config_file = write_config(tmp_path, kube, prices)
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
        sent = time.monotonic()
        exporter.signal(signal.SIGTERM)
        exporter.finish()
    # The inventory thread is stuck in a request the API server never answers: the exit does not wait on it.
    assert exporter.proc.returncode == 0 and time.monotonic() - sent < 5.0


@pytest.mark.parametrize(
    "signals",
    [(signal.SIGTERM, signal.SIGTERM), (signal.SIGINT, signal.SIGTERM), (signal.SIGTERM, signal.SIGINT)],
    ids=["term-term", "int-term", "term-int"],
)
def test_repeated_signals_end_the_process_within_5s_with_the_cache_intact(
    tmp_path: Path, kube: FakeKubeAPI, prices: PricingApi, signals: tuple[signal.Signals, signal.Signals]
) -> None:
    config_file = write_config(tmp_path, kube, prices)
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
    config_file = write_config(tmp_path, kube, prices)
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


def test_shutdown_does_not_wait_for_a_price_list_call_in_flight(
    tmp_path: Path, kube: FakeKubeAPI, prices: PricingApi
) -> None:
    """A price list that never answers holds a fetch worker in its call until the call's deadline (5 s
    here, then retries): the exit must not join it."""
    prices.hold_seconds = 300.0
    prices.inject(Fault.TIMEOUT, times=None)
    exporter = run(tmp_path, write_config(tmp_path, kube, prices), "run")
    deadline = time.monotonic() + 20
    while not prices.requests:
        assert time.monotonic() < deadline, "no price list call"
        time.sleep(0.05)
    sent = time.monotonic()
    exporter.signal(signal.SIGTERM)
    stderr = exporter.finish(timeout=30)
    assert exporter.proc.returncode == 0, stderr[-2000:]
    assert time.monotonic() - sent < 5.0
    assert integrity(tmp_path / "cache.sqlite") == "ok"
