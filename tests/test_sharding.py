"""Sharding: the hash is kube-state-metrics' (jump hash of FNV-1a 64) and never changes, the shards partition the cluster exactly, the config
refuses what cannot work, and automatic sharding follows the pod's StatefulSet."""

from __future__ import annotations

import random
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from exporter.cli import build_config, parse_args
from exporter.config import ConfigError, load_config
from exporter.health import Health, Reason
from exporter.inventory.kube import AutoSharding, KubeNodeWatcher
from exporter.inventory.nodes_file import NodesFileWatcher
from exporter.inventory.parse import DEFAULT_SPOT_LABELS
from exporter.inventory.sharding import Shard, fnv1a_64, jump_hash, pod_ordinal, shard_of
from fakes.kube_api import FakeKubeAPI, RecordingSink, make_node, wait_for
from tests.test_kube_watch import harness

TOKEN = "shard-token"

# The published FNV-1a 64 test vectors (draft-eastlake-fnv, "A Few Test Vectors"; the same values are in
# the reference implementation's test_fnv.c).
FNV1A_64_VECTORS = [
    (b"", 0xCBF29CE484222325),
    (b"a", 0xAF63DC4C8601EC8C),
    (b"foobar", 0x85944171F73967E8),
]

# Jump Consistent Hash: key → its bucket for 1, 2, 3, … buckets, as generated from the paper's reference C++
# code (the table in github.com/dgryski/go-jump's jump_test.go, the package kube-state-metrics uses).
JUMP_VECTORS = [
    (0, [0] * 20),
    (1, [0, 0, 0, 0, 0, 0, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 17, 17]),
    (0xDEADBEEF, [0, 1, 2, 3, 3, 5, 5, 5, 5, 5, 5, 5, 5, 5, 5, 5, 16, 16, 16]),
    (0x0DDC0FFEEBADF00D, [0, 1, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 15, 15, 15, 15]),
]

# The stability contract: uid → its shard of 2, 3 and 4. If this table has to change, every node's series
# hop to another replica on upgrade: don't.
FROZEN_SHARDS = [
    ("0b5a3c9e-6f1d-4e2a-9c47-2d8f1e6a7b30", 0, 2, 2),
    ("1f2e3d4c-5b6a-4978-8a9b-0c1d2e3f4a5b", 1, 1, 3),
    ("3c8e2a71-94b6-4d0f-8e55-7a1b9c3d2e4f", 0, 2, 3),
    ("52a0f6b3-1c7d-4e89-a2b4-6f90d8e3c1a7", 0, 0, 0),
    ("6d4b9e2f-0a13-4c58-b7e6-91f2a3c4d5e6", 0, 0, 3),
    ("7e1c5a93-2b84-4f6d-9e0a-b3c7d1f5e9a2", 1, 1, 1),
    ("8a9b0c1d-2e3f-4a5b-8c6d-7e8f9a0b1c2d", 1, 2, 2),
    ("9f8e7d6c-5b4a-4392-8170-6f5e4d3c2b1a", 0, 2, 2),
    ("a1b2c3d4-e5f6-4789-a0b1-c2d3e4f5a6b7", 0, 0, 0),
    ("c4f0e8a2-7d19-4b36-8e5c-2a9f1b7d3e60", 1, 2, 2),
    ("e3b0c442-98fc-4c14-9afb-f4c8996fb924", 1, 1, 1),
    ("f47ac10b-58cc-4372-a567-0e02b2c3d479", 0, 2, 2),
]


@pytest.mark.parametrize(("data", "expected"), FNV1A_64_VECTORS)
def test_fnv1a_64_matches_the_published_vectors(data: bytes, expected: int) -> None:
    assert fnv1a_64(data) == expected


@pytest.mark.parametrize(("key", "buckets"), JUMP_VECTORS)
def test_jump_hash_matches_the_reference_implementation(key: int, buckets: list[int]) -> None:
    assert [jump_hash(key, n) for n in range(1, len(buckets) + 1)] == buckets


def test_adding_a_shard_moves_only_the_nodes_the_new_shard_takes() -> None:
    """From n to n + 1 shards a node either stays or moves to the new shard, about 1/(n + 1) of them."""
    uids = [str(uuid.UUID(int=random.Random(7).getrandbits(128) ^ i, version=4)) for i in range(3000)]
    for n in range(1, 6):
        moved = [uid for uid in uids if shard_of(uid, n) != shard_of(uid, n + 1)]
        assert all(shard_of(uid, n + 1) == n for uid in moved)
        assert abs(len(moved) / len(uids) - 1 / (n + 1)) < 0.03, (n, len(moved))


@pytest.mark.parametrize(("uid", "of2", "of3", "of4"), FROZEN_SHARDS)
def test_a_uid_keeps_its_shard_forever(uid: str, of2: int, of3: int, of4: int) -> None:
    assert (shard_of(uid, 1), shard_of(uid, 2), shard_of(uid, 3), shard_of(uid, 4)) == (0, of2, of3, of4)


def test_the_frozen_table_spreads_over_every_shard() -> None:
    """A hash that put everything in one shard would pass the table above only by luck of its rows."""
    for column, total in ((1, 2), (2, 3), (3, 4)):
        assert {row[column] for row in FROZEN_SHARDS} == set(range(total))


@pytest.mark.parametrize(
    ("name", "ordinal"),
    [
        ("node-cost-exporter-0", 0),
        ("node-cost-exporter-3", 3),
        ("exporter-12", 12),
        ("node-cost-exporter", None),
        ("node-cost-exporter-", None),
        ("node-cost-exporter-01", None),  # StatefulSets never zero-pad
        ("node-cost-exporter-7d9f8c6b5-x2v4q", None),  # a Deployment's pod
    ],
)
def test_pod_ordinal_from_the_statefulset_pod_name(name: str, ordinal: int | None) -> None:
    assert pod_ordinal(name) == ordinal


def test_an_object_without_uid_is_left_to_shard_zero_to_report() -> None:
    broken = {"metadata": {"name": "no-uid"}}
    assert [Shard(i, 3).owns(broken) for i in range(3)] == [True, False, False]
    assert Shard().owns(broken)


# -- configuration ------------------------------------------------------------------------------------------


def test_flags_and_environment_set_the_shard() -> None:
    config = build_config(parse_args(["--shard", "2", "--total-shards", "3"]))
    assert (config.sharding.shard, config.sharding.total_shards) == (2, 3)
    env = {"NODECOST_SHARDING__SHARD": "1", "NODECOST_SHARDING__TOTAL_SHARDS": "4"}
    config = load_config(env=env)
    assert (config.sharding.shard, config.sharding.total_shards) == (1, 4)
    # A flag of 0 still wins over the environment.
    config = load_config(env=env, overrides={"sharding.shard": 0})
    assert config.sharding.shard == 0
    config = build_config(parse_args(["--pod-namespace", "monitoring", "--pod", "node-cost-exporter-2"]))
    assert (config.sharding.pod_namespace, config.sharding.pod) == ("monitoring", "node-cost-exporter-2")
    assert config.sharding.automatic


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"sharding.shard": 3, "sharding.total_shards": 3}, "sharding.shard: must be between 0 and"),
        ({"sharding.shard": 1}, "sharding.shard: must be between 0 and total_shards - 1 (0), got 1"),
        ({"sharding.shard": -1, "sharding.total_shards": 2}, "sharding.shard: must be between"),
        ({"sharding.total_shards": 0}, "sharding.total_shards: must be at least 1, got 0"),
        ({"sharding.pod": "node-cost-exporter-1"}, "sharding.pod: needs sharding.pod_namespace"),
        (
            {"sharding.pod_namespace": "monitoring", "sharding.total_shards": 2},
            "sharding.pod_namespace: automatic sharding takes the shard and total from the StatefulSet",
        ),
        (
            {"sharding.pod_namespace": "monitoring", "demo": True},
            "sharding.pod_namespace: automatic sharding reads the pod from the Kubernetes API",
        ),
        ({"sharding.shard": "first"}, "sharding.shard: must be a whole number"),
        ({"sharding.pod_namespace": "Monitoring"}, "sharding.pod_namespace: must be a namespace name"),
        (
            {"sharding.pod_namespace": "monitoring", "sharding.pod": "../../secrets/x"},
            "sharding.pod: must be a pod name",
        ),
    ],
)
def test_invalid_sharding_fails_at_start_naming_the_key(overrides: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError) as err:
        load_config(env={}, overrides=overrides)
    assert str(err.value).startswith(message), str(err.value)


def test_a_bad_shard_flag_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    from exporter.cli import main

    assert main(["--shard", "2", "--total-shards", "2", "--no-cache"]) == 2
    assert "invalid configuration: sharding.shard: must be between 0 and" in capsys.readouterr().err


# -- partition exactness ------------------------------------------------------------------------------------

PROVIDERS = ("aws", "gcp", "azure")


def _cluster(count: int) -> list[dict[str, Any]]:
    return [make_node(f"node-{i:04d}", provider=PROVIDERS[i % 3], images=1) for i in range(count)]


@contextmanager
def _watchers(
    tmp_path: Path, api: FakeKubeAPI, options: list[dict[str, Any]]
) -> Iterator[list[tuple[KubeNodeWatcher, RecordingSink, Health]]]:
    """One running watcher per entry of `options` (its sharding), all against `api`."""
    stop = threading.Event()
    running, threads = [], []
    for kwargs in options:
        h = harness(tmp_path, api.url, token=TOKEN, **kwargs)  # test_kube_watch's watcher and kubeconfig
        running.append((h.watcher, h.sink, h.health))
        threads.append(threading.Thread(target=h.watcher.run, args=(stop,), daemon=True))
    for thread in threads:
        thread.start()
    try:
        yield running
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=5)
            assert not thread.is_alive(), "watcher did not stop"


def _sharded(total: int) -> list[dict[str, Any]]:
    return [{"shard": Shard(i, total)} for i in range(total)]


def test_shards_partition_a_thousand_nodes_exactly_for_every_total(tmp_path: Path) -> None:
    nodes = _cluster(1000)
    uids = {n["metadata"]["uid"] for n in nodes}
    with FakeKubeAPI(token=TOKEN) as api:
        api.load(nodes)
        for total in range(1, 6):
            shards = [Shard(i, total) for i in range(total)]
            with _watchers(tmp_path, api, _sharded(total)) as running:
                for watcher, _, _ in running:
                    assert watcher.synced.wait(20)
                held = [set(sink.nodes) for _, sink, _ in running]
            assert sum(len(h) for h in held) == 1000, f"total {total}: a node on two shards or none"
            assert set().union(*held) == uids
            for shard, uids_held in zip(shards, held, strict=True):
                assert all(shard_of(uid, total) == shard.index for uid in uids_held)
            if total > 1:  # each shard has a fair part: the hash spreads
                assert min(len(h) for h in held) > 1000 / total / 2


def test_watch_events_reach_only_the_owning_shard(tmp_path: Path) -> None:
    with FakeKubeAPI(token=TOKEN) as api:
        api.load(_cluster(30))
        with _watchers(tmp_path, api, _sharded(2)) as running:
            for watcher, _, _ in running:
                assert watcher.synced.wait(10)
            wait_for(lambda: len(api.watch_requests()) >= 2, "both watches")
            added = [make_node(f"late-{i}", provider="gcp", images=1) for i in range(20)]
            for obj in added:
                api.add_node(obj)
            for obj in added[:10]:
                api.modify_node(obj["metadata"]["name"], lambda o: o["metadata"]["labels"].update(team="x"))
            for obj in added[10:]:
                api.delete_node(obj["metadata"]["name"])
            kept = {o["metadata"]["uid"]: o["metadata"]["name"] for o in added[:10]}

            def settled() -> bool:
                return sum(len(sink.nodes) for _, sink, _ in running) == 40 and all(
                    sink.by_name(name) is not None and sink.by_name(name).labels.get("team") == "x"  # type: ignore[union-attr]
                    for _, sink, _ in running
                    for uid, name in kept.items()
                    if uid in sink.nodes
                )

            wait_for(settled, "the events on their shards", timeout=10)
            for index, (_, sink, _) in enumerate(running):
                owned = {uid for uid in kept if shard_of(uid, 2) == index}
                assert owned <= set(sink.nodes)
                assert not set(sink.nodes) & (set(kept) - owned)
                # A foreign node's events never reach the sink: no upsert or delete names it.
                foreign_names = {o["metadata"]["name"] for o in added if shard_of(o["metadata"]["uid"], 2) != index}
                assert not {c[1] for c in sink.calls if c[0] == "upsert"} & foreign_names
                foreign_uids = {o["metadata"]["uid"] for o in added if shard_of(o["metadata"]["uid"], 2) != index}
                assert not {c[1] for c in sink.calls if c[0] == "delete"} & foreign_uids


def test_a_foreign_node_is_never_parsed(tmp_path: Path) -> None:
    """A node whose parse fails is reported as invalid by its own shard only: the other never parsed it."""
    broken = make_node("broken", images=1)
    broken["metadata"]["uid"] = ""  # parse_node refuses an empty uid; it still hashes to a shard
    owner = shard_of("", 2)
    with FakeKubeAPI(token=TOKEN) as api:
        api.load([broken, *_cluster(10)])
        with _watchers(tmp_path, api, _sharded(2)) as running:
            for watcher, _, _ in running:
                assert watcher.synced.wait(10)
    counts = [health.invalid_counts().get("node", 0) for _, _, health in running]
    assert counts == [1 if i == owner else 0 for i in range(2)]


def test_the_nodes_file_is_sharded_alike(tmp_path: Path) -> None:
    import json

    nodes = _cluster(200)
    path = tmp_path / "nodes.json"
    path.write_text(json.dumps({"kind": "NodeList", "apiVersion": "v1", "items": nodes}))
    held = []
    for index in range(3):
        sink, health = RecordingSink(), Health()
        watcher = NodesFileWatcher(
            str(path), sink, health.integration("nodes_file"), health, spot_labels=DEFAULT_SPOT_LABELS,
            shard=Shard(index, 3),
        )
        watcher.poll()
        held.append(set(sink.nodes))
        assert all(shard_of(uid, 3) == index for uid in sink.nodes)
    assert sum(map(len, held)) == 200 and set().union(*held) == {n["metadata"]["uid"] for n in nodes}


# -- automatic sharding -------------------------------------------------------------------------------------


def _pods(*ordinals: int) -> list[dict[str, Any]]:
    """Watchers as the StatefulSet's pods, re-reading it after every event (production: every minute)."""
    return [
        {"auto_sharding": AutoSharding("monitoring", f"node-cost-exporter-{i}"), "reshard_check_seconds": 0.0}
        for i in ordinals
    ]


def _node_lists(api: FakeKubeAPI) -> list[Any]:
    return [r for r in api.list_requests() if r.path == "/api/v1/nodes"]


def _uids_of(nodes: list[dict[str, Any]], shard: Shard) -> set[str]:
    return {n["metadata"]["uid"] for n in nodes if shard.owns_uid(n["metadata"]["uid"])}


def test_automatic_sharding_follows_the_statefulset_and_reshards_when_it_scales(tmp_path: Path) -> None:
    nodes = _cluster(300)
    with FakeKubeAPI(token=TOKEN) as api:
        api.load(nodes)
        api.add_statefulset("monitoring", "node-cost-exporter", replicas=2)
        with _watchers(tmp_path, api, _pods(0, 1)) as running:
            for watcher, _, _ in running:
                assert watcher.synced.wait(10)
            assert [w.shard for w, _, _ in running] == [Shard(0, 2), Shard(1, 2)]
            for watcher, sink, _ in running:
                assert set(sink.nodes) == _uids_of(nodes, watcher.shard)
            reads = {r.path for r in api.requests if "/namespaces/" in r.path}
            assert reads == {
                "/api/v1/namespaces/monitoring/pods/node-cost-exporter-0",
                "/api/v1/namespaces/monitoring/pods/node-cost-exporter-1",
                "/apis/apps/v1/namespaces/monitoring/statefulsets/node-cost-exporter",
            }
            lists = len(_node_lists(api))

            api.scale_statefulset("monitoring", "node-cost-exporter", 3)
            with _watchers(tmp_path, api, _pods(2)) as third:
                assert third[0][0].synced.wait(10)
                wait_for(lambda: len(api.watch_requests()) >= 3, "the third watch")
                api.bookmark()  # an event: each watcher reads its StatefulSet again
                everyone = running + third
                wait_for(lambda: all(w.shard.total == 3 for w, _, _ in everyone), "re-sharding to 3")
                wait_for(
                    lambda: all(set(s.nodes) == _uids_of(nodes, w.shard) for w, s, _ in everyone),
                    "each replica holding exactly its third",
                )
            assert [w.shard for w, _, _ in everyone] == [Shard(0, 3), Shard(1, 3), Shard(2, 3)]
            assert len(_node_lists(api)) == lists + 3  # the new pod's list, and one relist each of the two
            assert sum(len(s.nodes) for _, s, _ in everyone) == 300


def test_automatic_sharding_waits_for_its_pod_and_says_why(tmp_path: Path) -> None:
    with FakeKubeAPI(token=TOKEN) as api:
        api.load(_cluster(10))
        api.add_statefulset("monitoring", "node-cost-exporter", replicas=2)
        api.forbidden.add("statefulsets")
        with _watchers(tmp_path, api, _pods(1)) as running:
            watcher, sink, health = running[0]
            status = health.integration("kubernetes")
            wait_for(lambda: status.errors[Reason.PERMISSION] >= 2, "retries of the forbidden read")
            assert not watcher.synced.is_set() and not sink.calls and not _node_lists(api)
            assert not status.up and status.reason is Reason.PERMISSION
            assert 'cannot get resource "statefulsets" in API group "apps"' in (status.detail or "")
            api.forbidden.clear()
            assert watcher.synced.wait(10)
            assert watcher.shard == Shard(1, 2) and status.up


@pytest.mark.parametrize(
    ("pod", "reason", "detail"),
    [
        ("node-cost-exporter-9", Reason.NOT_FOUND, 'pods "node-cost-exporter-9" not found'),
        ("standalone-0", Reason.CONFIG, "pod monitoring/standalone-0 is owned by no StatefulSet"),
        ("node-cost-exporter", Reason.CONFIG, "ends in no StatefulSet ordinal"),
    ],
)
def test_automatic_sharding_outside_a_statefulset_fails_clearly(
    tmp_path: Path, pod: str, reason: Reason, detail: str
) -> None:
    with FakeKubeAPI(token=TOKEN) as api:
        api.add_statefulset("monitoring", "node-cost-exporter", replicas=2)
        api.add_pod("monitoring", "standalone-0")
        options = [{"auto_sharding": AutoSharding("monitoring", pod)}]
        with _watchers(tmp_path, api, options) as running:
            watcher, _, health = running[0]
            status = health.integration("kubernetes")
            wait_for(lambda: status.errors[reason] >= 1, f"a {reason} failure")
            assert detail in (status.detail or "") and not watcher.synced.is_set()


def test_a_failed_recheck_keeps_the_shard_and_the_watch(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    nodes = _cluster(20)
    with FakeKubeAPI(token=TOKEN) as api:
        api.load(nodes)
        api.add_statefulset("monitoring", "node-cost-exporter", replicas=2)
        with _watchers(tmp_path, api, _pods(0)) as running:
            watcher, sink, health = running[0]
            assert watcher.synced.wait(10)
            wait_for(lambda: api.watch_requests(), "the watch")
            api.forbidden.add("statefulsets")
            api.bookmark()
            wait_for(lambda: "automatic sharding: keeping shard 0 of 2" in caplog.text, "the warning")
            late = next(
                obj
                for obj in (make_node(f"late-{i}", images=1) for i in range(100))
                if shard_of(obj["metadata"]["uid"], 2) == 0
            )
            api.add_node(late)
            wait_for(lambda: late["metadata"]["uid"] in sink.nodes, "the watch still delivering")
            assert watcher.shard == Shard(0, 2) and health.integration("kubernetes").up
            assert len(_node_lists(api)) == 1  # no relist: the shard did not change
