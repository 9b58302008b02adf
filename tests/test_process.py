"""Our cheap process metrics agree with prometheus_client's ProcessCollector, name for name."""

import pytest
from prometheus_client import ProcessCollector

from exporter.metrics.process import ProcessMetrics


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
