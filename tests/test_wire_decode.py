"""The msgspec decode of node lists and watch lines (wire.py, parse_wire_node) against the dict path
(orjson/json + parse_node): the same Nodes, and a fallback to the dict path for what msgspec refuses."""

from __future__ import annotations

import copy
import json
import random
from pathlib import Path
from typing import Any

import msgspec
import pytest

from exporter.health import Health
from exporter.inventory.nodes_file import NodesFileWatcher
from exporter.inventory.parse import DEFAULT_SPOT_LABELS, InvalidNode, parse_node, parse_wire_node
from exporter.inventory.sharding import Shard
from exporter.inventory.wire import EVENT, NODE_LIST, WireNode
from fakes.kube_api import FakeKubeAPI, RecordingSink, make_node, wait_for
from tests.conftest import SHARED_REAL
from tests.test_kube_watch import TOKEN, harness, running

SURROGATE = "\udc80"  # a lone UTF-16 surrogate: legal in JSON text as "\udc80", not encodable as UTF-8


def page_bytes(items: list[dict[str, Any]], **meta: str) -> bytes:
    """A list page as the API server writes it (ASCII JSON: lone surrogates escaped)."""
    return json.dumps({"kind": "NodeList", "apiVersion": "v1", "metadata": meta, "items": items}).encode()


def both_ways(data: bytes) -> list[tuple[Any, Any]]:
    """(Node from the Structs, Node from the dicts) for each item of a NodeList's JSON."""
    wire_items = NODE_LIST.decode(data).items or []
    dict_items = json.loads(data)["items"]
    assert len(wire_items) == len(dict_items)
    return [
        (parse_wire_node(w, DEFAULT_SPOT_LABELS), parse_node(d, DEFAULT_SPOT_LABELS))
        for w, d in zip(wire_items, dict_items, strict=True)
    ]


def test_real_nodes_give_equal_nodes_both_ways() -> None:
    folder = SHARED_REAL / "nodes"
    if not folder.is_dir():
        pytest.skip(f"shared fixtures {folder} are absent")
    compared = 0
    for path in sorted(folder.iterdir()):
        if path.suffix == ".yaml":
            yaml = pytest.importorskip("yaml")
            doc = yaml.safe_load(path.read_text())
            data = page_bytes(doc.get("items", [doc]))
        elif path.suffix == ".json":
            raw = path.read_bytes()
            doc = json.loads(raw)
            data = raw if "items" in doc else page_bytes([doc])  # list files exactly as found
        else:
            continue
        for from_wire, from_dict in both_ways(data):
            assert from_wire == from_dict, path.name
            assert (from_wire.labels, from_wire.created) == (from_dict.labels, from_dict.created), path.name
            compared += 1
    assert compared >= 10  # 2 EKS, 4 Azure VMSS, 4 AKS, 1 GKE, 1 minikube


@pytest.mark.parametrize("provider", ["aws", "gcp", "azure"])
@pytest.mark.parametrize("spot", [False, True])
@pytest.mark.parametrize("gpus", [None, 2])
def test_make_node_gives_equal_nodes_both_ways(provider: str, spot: bool, gpus: int | None) -> None:
    items = [make_node(f"{provider}-node-{i}", provider=provider, spot=spot, gpus=gpus) for i in range(3)]
    for from_wire, from_dict in both_ways(page_bytes(items)):
        assert from_wire == from_dict
        assert from_wire.provider == provider and from_wire.cpu_cores > 0
        assert (from_wire.capacity_type == "spot") is spot


def test_null_absent_and_unknown_fields_give_equal_nodes_both_ways() -> None:
    base = {"metadata": {"name": "n", "uid": "u"}}
    variants: list[dict[str, Any]] = [
        base,
        {"metadata": {"name": "n", "uid": "u", "labels": None, "creationTimestamp": None}, "spec": None},
        {**base, "status": None},
        {**base, "spec": {"providerID": None}, "status": {"capacity": None, "nodeInfo": None}},
        {**base, "status": {"nodeInfo": {"operatingSystem": None, "architecture": "arm64"}}},
        {**base, "future": {"field": [1, 2]}, "spec": {"podCIDR": "10.0.0.0/24", "taints": []}},
        {"metadata": {"name": "n", "uid": "u", "creationTimestamp": "not a time"}},
    ]
    pairs = both_ways(page_bytes(variants))
    for (from_wire, from_dict), variant in zip(pairs, variants, strict=True):
        assert from_wire == from_dict, variant
        assert from_wire.created == from_dict.created is None, variant
    assert pairs[4][0].arch == "arm64"


@pytest.mark.parametrize(
    "metadata",
    [{}, {"name": "n"}, {"uid": "u"}, {"name": "", "uid": "u"}, {"name": "n", "uid": ""}, None],
)
def test_an_unkeyable_node_raises_the_same_error_both_ways(metadata: dict[str, str] | None) -> None:
    obj = {"metadata": metadata}
    with pytest.raises(InvalidNode) as from_dict:
        parse_node(obj, DEFAULT_SPOT_LABELS)
    wire = msgspec.json.decode(json.dumps(obj), type=WireNode)
    with pytest.raises(InvalidNode) as from_wire:
        parse_wire_node(wire, DEFAULT_SPOT_LABELS)
    assert str(from_wire.value) == str(from_dict.value)


@pytest.mark.parametrize(
    "node_json",
    [
        b'{"metadata":{"name":"n\\udc80","uid":"u"}}',  # a lone surrogate escape
        b'{"metadata":{"name":"n","uid":"u","labels":{"k":"v\\udc80"}}}',  # even where kept raw
        b'{"metadata":{"name":"n\xff","uid":"u"}}',  # invalid UTF-8
        b'{"metadata":{"name":"n","uid":"u"},"spec":"nope"}',
        b'"not a node"',
    ],
)
def test_msgspec_refuses_what_only_the_dict_path_reads(node_json: bytes) -> None:
    """Each of these sends its whole page (or watch line) down the dict path (kube.py)."""
    with pytest.raises(msgspec.DecodeError):
        NODE_LIST.decode(b'{"items":[' + node_json + b"]}")
    with pytest.raises(msgspec.DecodeError):
        EVENT.decode(b'{"type":"MODIFIED","object":' + node_json + b"}")


@pytest.mark.parametrize(
    "node_json",
    [
        b'{"metadata":{"name":"n","uid":"u","labels":{"gpu.count":42}}}',  # a label value that is a number
        b'{"metadata":{"name":"n","uid":"u"},"status":{"capacity":{"cpu":4}}}',
    ],
)
def test_labels_and_capacity_are_refused_when_the_node_is_parsed(node_json: bytes) -> None:
    """Kept raw by the decode (another shard's node is dropped without building them), they are refused
    when the node is parsed: the page (or line) then takes the dict path, as before."""
    items = NODE_LIST.decode(b'{"items":[' + node_json + b"]}").items
    event = EVENT.decode(b'{"type":"MODIFIED","object":' + node_json + b"}")
    assert items is not None
    for node in (items[0], event.object):
        with pytest.raises(msgspec.DecodeError):
            parse_wire_node(node, DEFAULT_SPOT_LABELS)


def test_watch_lines_of_nodes_and_bookmarks_fit_the_structs() -> None:
    """What keeps the watch on the fast path: ADDED/MODIFIED/DELETED nodes and BOOKMARKs all decode."""
    obj = make_node("node-a", provider="gcp", spot=True)
    obj["metadata"]["resourceVersion"] = "41"
    for etype in ("ADDED", "MODIFIED", "DELETED"):
        event = EVENT.decode(json.dumps({"type": etype, "object": obj}).encode())
        assert event.type == etype
        assert event.object.metadata is not None and event.object.metadata.resourceVersion == "41"
        assert parse_wire_node(event.object, DEFAULT_SPOT_LABELS) == parse_node(obj, DEFAULT_SPOT_LABELS)
    # A bookmark's object carries only its kind and resourceVersion (kubernetes.io API concepts, "Watch
    # bookmarks"); this annotation marks the end of a streamed list's initial events.
    bookmark = EVENT.decode(b'{"type":"BOOKMARK","object":{"kind":"Node","apiVersion":"v1",'
                            b'"metadata":{"resourceVersion":"42","annotations":{"k8s.io/initial-events-end":"true"}}}}')
    assert bookmark.object.metadata is not None and bookmark.object.metadata.resourceVersion == "42"
    assert bookmark.object.uid is None


def test_an_error_event_does_not_fit_the_node_structs() -> None:
    """A Status's `status` is a string: ERROR events take the dict path, which relists on 410."""
    line = b'{"type":"ERROR","object":{"kind":"Status","apiVersion":"v1","status":"Failure","code":410}}'
    with pytest.raises(msgspec.DecodeError):
        EVENT.decode(line)


def test_a_clean_page_takes_the_struct_path_and_a_refused_one_the_dict_path(tmp_path: Path) -> None:
    items = [make_node(f"node-{i}", provider=("aws", "gcp", "azure")[i % 3], images=2) for i in range(12)]
    for shard in (Shard(), Shard(0, 3), Shard(2, 3)):
        h = harness(tmp_path, "https://127.0.0.1:1", shard=shard)  # never started: no request is made
        clean = page_bytes(items, resourceVersion="77", **{"continue": "token-1"})
        fast = h.watcher._read_wire_page(clean, {})
        assert fast is not None
        assert fast == h.watcher._read_page(clean)
        nodes, rv, token = fast
        assert {n.uid for n in nodes} == {o["metadata"]["uid"] for o in items if shard.owns(o)}
        assert (rv, token) == ("77", "token-1")

        odd = copy.deepcopy(items)
        odd[0]["metadata"]["labels"]["example.com/rack"] = 7
        refused = page_bytes(odd)
        if shard.owns(odd[0]):
            assert h.watcher._read_wire_page(refused, {}) is None
        else:  # another shard's node: dropped unparsed, its labels never decoded
            assert h.watcher._read_wire_page(refused, {}) == h.watcher._read_page(refused)
        assert {n.uid for n in h.watcher._read_page(refused)[0]} == {n.uid for n in nodes}
        assert h.health.invalid_counts() == {}


def test_refused_and_invalid_nodes_in_list_and_watch_are_each_read_or_skipped_alone(
    tmp_path: Path,
) -> None:
    def odd_nodes(prefix: str) -> list[dict[str, Any]]:
        numeric = make_node(f"{prefix}-numeric-label", images=2)
        numeric["metadata"]["labels"]["example.com/rack"] = 7
        surrogate = make_node(f"{prefix}-surrogate", images=2)
        surrogate["metadata"]["labels"]["team"] = f"shop{SURROGATE}"
        keyless = make_node(f"{prefix}-keyless", images=2)
        del keyless["metadata"]["uid"]
        return [make_node(f"{prefix}-plain", images=2), numeric, surrogate, keyless]

    with FakeKubeAPI(token=TOKEN) as api:
        api.load(odd_nodes("listed"))
        h = harness(tmp_path, api.url)
        with running(h):
            assert h.watcher.synced.wait(5)
            assert h.sink.names() == {"listed-plain", "listed-numeric-label", "listed-surrogate"}
            assert h.health.invalid_counts() == {"node": 1}
            for obj in odd_nodes("watched"):
                api.add_node(obj)
            api.send_raw_event(b'{"type":"ADDED","object":' + json.dumps(make_node("bad-utf8", images=2))
                               .replace("bad-utf8", "bad-utf8\xff").encode("latin-1") + b"}")
            api.add_node(make_node("last", images=2))
            wait_for(lambda: "last" in h.sink.names(), "the node after the odd ones")
        assert h.health.invalid_counts() == {"node": 2}
        assert len(api.list_requests()) == 1  # no odd node cost a relist
    for prefix in ("listed", "watched"):
        numeric = h.sink.by_name(f"{prefix}-numeric-label")
        surrogate = h.sink.by_name(f"{prefix}-surrogate")
        assert numeric is not None and surrogate is not None
        assert "example.com/rack" not in numeric.labels and numeric.instance_type == "m5.xlarge"
        assert surrogate.labels["team"] == "shop\ufffd"
    assert h.sink.by_name("bad-utf8\ufffd") is not None


def test_a_nodes_file_list_takes_the_struct_path_and_anything_else_the_general_one(tmp_path: Path) -> None:
    items = [make_node(f"node-{i}", provider=("aws", "gcp", "azure")[i % 3], images=2) for i in range(6)]
    path = tmp_path / "nodes.json"
    sink, health = RecordingSink(), Health()
    watcher = NodesFileWatcher(
        str(path), sink, health.integration("nodes_file"), health, spot_labels=DEFAULT_SPOT_LABELS
    )
    clean = page_bytes(items)
    fast = watcher._parse_wire(clean)
    assert fast is not None and fast == watcher._parse_items(items)
    assert watcher._parse_wire(json.dumps(items[0]).encode()) is None  # one Node (kubectl get node NAME)
    assert watcher._parse_wire(json.dumps(items).encode()) is None  # a bare array
    odd = copy.deepcopy(items)
    odd[1]["metadata"]["labels"]["example.com/rack"] = 7
    del odd[2]["metadata"]["uid"]
    path.write_bytes(page_bytes(odd))
    assert watcher._parse_wire(path.read_bytes()) is None
    watcher.poll()
    assert sink.names() == {f"node-{i}" for i in range(6)} - {"node-2"}
    assert health.invalid_counts() == {"node": 1}


def test_a_watched_node_is_always_the_node_its_latest_event_parses_to(tmp_path: Path) -> None:
    """Events whose labels, names, providerID and OS repeat the last one's keep what was read from them
    (`_parse_event_node`): after every event of a random run, the watcher's Node must still be exactly what
    a full parse of that event gives, and an unchanged one must not reach the sink."""
    rng = random.Random(14)
    h = harness(tmp_path, "https://127.0.0.1:1", keep_labels=("example.com/team",))  # never started
    objs = {i: make_node(f"node-{i}", provider=("aws", "gcp", "azure")[i % 3], images=1) for i in range(4)}

    def heartbeat(obj: dict[str, Any]) -> None:
        obj["status"]["conditions"][0]["lastHeartbeatTime"] = f"2024-06-01T12:00:{rng.randrange(60):02d}Z"

    def memory(obj: dict[str, Any]) -> None:
        obj["status"]["capacity"]["memory"] = f"{rng.randrange(1, 64)}Gi"

    def gpu(obj: dict[str, Any]) -> None:
        obj["status"]["capacity"]["nvidia.com/gpu"] = str(rng.randrange(0, 3))

    def team(obj: dict[str, Any]) -> None:
        obj["metadata"]["labels"]["example.com/team"] = rng.choice(["web", "db"])

    def unread_label(obj: dict[str, Any]) -> None:
        obj["metadata"]["labels"]["example.com/drain"] = rng.choice(["true", "false"])

    def spot(obj: dict[str, Any]) -> None:
        obj["metadata"]["labels"]["node.kubernetes.io/lifecycle"] = rng.choice(["spot", "normal"])

    def provider_id(obj: dict[str, Any]) -> None:
        obj["spec"]["providerID"] = obj["spec"]["providerID"].rstrip("x") + rng.choice(["", "x"])

    def os_image(obj: dict[str, Any]) -> None:
        obj["status"]["nodeInfo"]["architecture"] = rng.choice(["amd64", "arm64"])

    def created(obj: dict[str, Any]) -> None:
        obj["metadata"]["creationTimestamp"] = rng.choice(["2024-05-20T08:00:00Z", "2024-05-21T08:00:00Z"])

    edits = [heartbeat, memory, gpu, team, unread_label, spot, provider_id, os_image, created]
    rv = 100
    listed = h.watcher._read_wire_page(page_bytes([objs[0], objs[1]]), h.watcher._prints)
    assert listed is not None
    h.watcher._seen.update((node.uid, node) for node in listed[0])  # as `_list` keeps them
    h.sink.replace_all(listed[0])
    for obj in (objs[2], objs[3]):
        h.watcher._handle_event(json.dumps({"type": "ADDED", "object": obj}).encode())
    for _ in range(400):
        i = rng.randrange(4)
        obj = objs[i]
        rng.choice(edits)(obj)
        rv += 1
        obj["metadata"]["resourceVersion"] = str(rv)
        expected = parse_node(copy.deepcopy(obj), DEFAULT_SPOT_LABELS, ("example.com/team",))
        before = h.sink.by_name(obj["metadata"]["name"])
        upserts = h.sink.count("upsert")
        h.watcher._handle_event(json.dumps({"type": "MODIFIED", "object": obj}).encode())
        assert h.sink.by_name(obj["metadata"]["name"]) == expected
        assert h.sink.count("upsert") == upserts + (before != expected)
    for i in (1, 2):  # listed, then added: a heartbeat keeps the very Node, parsing nothing
        kept = h.watcher._seen[objs[i]["metadata"]["uid"]]
        heartbeat(objs[i])
        h.watcher._handle_event(json.dumps({"type": "MODIFIED", "object": objs[i]}).encode())
        assert h.watcher._seen[objs[i]["metadata"]["uid"]] is kept
    uid = objs[0]["metadata"]["uid"]
    h.watcher._handle_event(json.dumps({"type": "DELETED", "object": objs[0]}).encode())
    assert uid not in h.watcher._prints and h.sink.by_name("node-0") is None
