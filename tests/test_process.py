"""Our cheap process metrics agree with prometheus_client's ProcessCollector, name for name."""

import threading
import time

import pytest
from prometheus_client import ProcessCollector

from exporter.metrics.process import SAMPLE_SECONDS, ProcessMetrics


def values(collector: object) -> dict[str, tuple[str, float]]:
    return {
        sample.name: (metric.type, sample.value)
        for metric in collector.collect()  # type: ignore[attr-defined]
        for sample in metric.samples
    }


def test_same_series_and_values_as_prometheus_client() -> None:
    theirs = values(ProcessCollector(registry=None))
    ours = values(ProcessMetrics())
    assert sorted(ours) == sorted(theirs)
    for name, (kind, _value) in theirs.items():
        assert ours[name][0] == kind, name
    assert ours["process_start_time_seconds"][1] == pytest.approx(
        theirs["process_start_time_seconds"][1], abs=1
    )
    assert ours["process_max_fds"][1] == theirs["process_max_fds"][1]
    assert ours["process_resident_memory_bytes"][1] == pytest.approx(
        theirs["process_resident_memory_bytes"][1], rel=0.1
    )
    assert ours["process_virtual_memory_bytes"][1] == pytest.approx(
        theirs["process_virtual_memory_bytes"][1], rel=0.1
    )
    assert ours["process_cpu_seconds_total"][1] == pytest.approx(
        theirs["process_cpu_seconds_total"][1], abs=0.1
    )
    assert abs(ours["process_open_fds"][1] - theirs["process_open_fds"][1]) <= 1


def test_a_scrape_shows_the_samplers_latest_sample_and_reads_itself_without_one() -> None:
    metrics = ProcessMetrics()
    stop = threading.Event()
    sampler = threading.Thread(target=metrics.run, args=(stop,), daemon=True)
    sampler.start()
    try:
        deadline = time.monotonic() + 5
        while metrics._sample is None and time.monotonic() < deadline:
            time.sleep(0.01)
    finally:
        stop.set()
        sampler.join(timeout=5)
    assert not sampler.is_alive()
    sample = metrics._sample  # the sampler has stopped: this is the latest sample, under a second old
    assert sample is not None
    burn = time.process_time() + 0.05
    while time.process_time() < burn:  # CPU time moves on; the sample shown does not, within its second
        pass
    assert values(metrics)["process_cpu_seconds_total"][1] == sample[1] < time.process_time()
    metrics._sample = (time.monotonic() - 3 * SAMPLE_SECONDS, -1.0, 0, 0, 0, 0)  # stale: not shown
    assert values(metrics)["process_cpu_seconds_total"][1] > 0
