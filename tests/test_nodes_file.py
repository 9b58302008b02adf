from __future__ import annotations

import json
import os
import shutil
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from exporter.health import Health, Reason
from exporter.inventory.nodes_file import NodesFileWatcher
from exporter.inventory.parse import DEFAULT_SPOT_LABELS
from fakes.kube_api import RecordingSink, make_node, wait_for
from tests.conftest import SHARED_REAL, FakeClock, write


def node_list(*items: dict[str, Any]) -> str:
    return json.dumps({"kind": "NodeList", "apiVersion": "v1", "metadata": {"resourceVersion": ""}, "items": items})


class Harness:
    def __init__(self, path: Path) -> None:
        self.sink = RecordingSink()
        self.health = Health()
        self.status = self.health.integration("nodes_file")
        self.watcher = NodesFileWatcher(
            str(path), self.sink, self.status, self.health, spot_labels=DEFAULT_SPOT_LABELS, poll_interval=0.01
        )

    @contextmanager
    def running(self) -> Iterator[None]:
        stop = threading.Event()
        thread = threading.Thread(target=self.watcher.run, args=(stop,), daemon=True)
        thread.start()
        try:
            yield
        finally:
            stop.set()
            thread.join(timeout=5)
            assert not thread.is_alive()


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return tmp_path / "nodes.json"


def test_valid_file(path: Path) -> None:
    write(path, node_list(make_node("node-a"), make_node("node-b", provider="gcp", spot=True)))
    h = Harness(path)
    with h.running():
        assert h.watcher.synced.wait(5)
    assert h.sink.names() == {"node-a", "node-b"}
    b = h.sink.by_name("node-b")
    assert b is not None and (b.provider, b.capacity_type.value, b.instance_type) == ("gcp", "spot", "e2-standard-4")
    assert h.status.up and h.status.name == "nodes_file"
    assert h.sink.count("replace_all") == 1  # an unchanged file is not re-read


def test_a_poll_reads_the_file_only_when_it_changed_and_stamps_the_clocks_time(path: Path) -> None:
    clock = FakeClock()
    sink, health = RecordingSink(), Health()
    status = health.integration("nodes_file")
    watcher = NodesFileWatcher(str(path), sink, status, health, spot_labels=DEFAULT_SPOT_LABELS, clock=clock)
    write(path, node_list(make_node("node-a")))
    watcher.poll()
    watcher.poll()
    assert sink.calls == [("replace_all", 1)] and watcher.synced.is_set()
    assert status.data_timestamp == clock.time()
    clock.advance(60)
    write(path, node_list(make_node("node-a"), make_node("node-b")))
    watcher.poll()
    assert sink.calls == [("replace_all", 1), ("replace_all", 2)]
    read_at = clock.time()
    assert status.data_timestamp == status.last_success == read_at
    clock.advance(60)
    path.unlink()
    watcher.poll()
    assert (status.up, status.last_attempt, status.last_success) == (False, clock.time(), read_at)


def test_changed_file_is_reread(path: Path) -> None:
    write(path, node_list(make_node("node-a"), make_node("node-b")))
    h = Harness(path)
    with h.running():
        assert h.watcher.synced.wait(5)
        write(path, node_list(make_node("node-b"), make_node("node-c", instance_type="m5.large")))
        wait_for(lambda: h.sink.names() == {"node-b", "node-c"}, "the re-read")
    assert [c[0] for c in h.sink.calls] == ["replace_all", "replace_all"]
    c = h.sink.by_name("node-c")
    assert c is not None and c.instance_type == "m5.large"


def test_atomic_replace_is_noticed(path: Path, tmp_path: Path) -> None:
    write(path, node_list(make_node("node-a")))
    h = Harness(path)
    with h.running():
        assert h.watcher.synced.wait(5)
        staged = tmp_path / "staged.json"
        staged.write_text(node_list(make_node("node-z")))
        os.utime(staged, ns=(path.stat().st_mtime_ns, path.stat().st_mtime_ns))  # same mtime, new inode
        os.replace(staged, path)
        wait_for(lambda: h.sink.names() == {"node-z"}, "the replaced file")


@pytest.mark.parametrize(
    ("content", "reason", "problem"),
    [
        ("{not json", Reason.BAD_RESPONSE, "neither JSON nor YAML"),
        ('{"kind": "NodeList"}', Reason.BAD_RESPONSE, "no node list"),
        ('"just a string"', Reason.BAD_RESPONSE, "no node list"),
        (None, Reason.NOT_FOUND, "no such file"),
    ],
)
def test_invalid_file_keeps_previous_nodes(path: Path, content: str | None, reason: Reason, problem: str) -> None:
    write(path, node_list(make_node("node-a"), make_node("node-b")))
    h = Harness(path)
    with h.running():
        assert h.watcher.synced.wait(5)
        if content is None:
            path.unlink()
        else:
            write(path, content)
        wait_for(lambda: not h.status.up, "the failure")
        assert h.status.reason is reason
        assert str(path) in h.status.detail and problem in h.status.detail
        assert h.sink.names() == {"node-a", "node-b"}
        write(path, node_list(make_node("node-c")))
        wait_for(lambda: h.sink.names() == {"node-c"}, "recovery")
        assert h.status.up
    assert h.status.errors == {reason: 1}  # reported once, not on every poll


def test_missing_at_start_then_created(path: Path) -> None:
    h = Harness(path)
    with h.running():
        wait_for(lambda: h.status.reason is Reason.NOT_FOUND, "not found")
        assert not h.watcher.synced.is_set()
        write(path, node_list(make_node("node-a")))
        assert h.watcher.synced.wait(5)
    assert h.sink.names() == {"node-a"}


def test_malformed_item_skipped_and_counted(path: Path) -> None:
    broken = make_node("node-broken")
    del broken["metadata"]["uid"]
    write(path, node_list(make_node("node-a"), broken, make_node("node-b")))
    h = Harness(path)
    with h.running():
        assert h.watcher.synced.wait(5)
    assert h.sink.names() == {"node-a", "node-b"}
    assert h.health.invalid_counts() == {"node": 1}
    assert h.status.up


def test_yaml_list_and_single_node(path: Path) -> None:
    yaml = pytest.importorskip("yaml")
    write(path, yaml.safe_dump([make_node("node-a", images=1), make_node("node-b", images=1)]))
    h = Harness(path)
    with h.running():
        assert h.watcher.synced.wait(5)
        assert h.sink.names() == {"node-a", "node-b"}
        write(path, json.dumps(make_node("node-solo")))  # kubectl get node NAME -o json
        wait_for(lambda: h.sink.names() == {"node-solo"}, "the single node")


def test_real_kubectl_output(path: Path) -> None:
    sample = SHARED_REAL / "nodes" / "aks_availability_set_2019.nodelist.json"
    if not sample.exists():
        pytest.skip(f"shared fixture {sample} is absent")
    shutil.copyfile(sample, path)
    h = Harness(path)
    with h.running():
        assert h.watcher.synced.wait(5)
    assert h.sink.names() == {f"aks-nodepool1-19574989-{i}" for i in range(4)}
    assert {n.instance_type for n in h.sink.nodes.values()} == {"Standard_DS1_v2"}


@dataclass
class _FailingOnceSink(RecordingSink):
    """A sink with a bug on its first call: what the watcher must survive."""

    attempts: int = 0

    def replace_all(self, nodes: Any) -> None:
        self.attempts += 1
        if self.attempts == 1:
            raise RuntimeError("a bug downstream")
        super().replace_all(nodes)


def test_an_unexpected_error_is_counted_and_the_watcher_keeps_polling(path: Path) -> None:
    write(path, node_list(make_node("node-a")))
    h, sink = Harness(path), _FailingOnceSink()
    h.watcher = NodesFileWatcher(
        str(path), sink, h.status, h.health, spot_labels=DEFAULT_SPOT_LABELS, poll_interval=0.01
    )
    with h.running():
        wait_for(lambda: sink.attempts == 1, "the failing read")
        wait_for(lambda: h.status.errors[Reason.BAD_RESPONSE] == 1, "the failure counted")
        write(path, node_list(make_node("node-a"), make_node("node-b")))
        assert h.watcher.synced.wait(5)
    assert sink.names() == {"node-a", "node-b"}
    assert h.status.up
