"""The fake API's bytes-only bulk load (how bench/fakeapi.py holds 65,000 nodes) answers as the dict store does."""

from __future__ import annotations

import copy
import http.client
import json
from typing import Any
from urllib.parse import quote

from bench.cluster import node_object
from fakes.kube_api import NODES_PATH, FakeKubeAPI

TOKEN = "t0ken"


def _get(api: FakeKubeAPI, target: str) -> bytes:
    conn = http.client.HTTPConnection("127.0.0.1", api.port, timeout=10)
    try:
        conn.request("GET", target, headers={"Authorization": f"Bearer {TOKEN}"})
        resp = conn.getresponse()
        body = resp.read()
        assert resp.status == 200, body
        return body
    finally:
        conn.close()


def _pages(api: FakeKubeAPI) -> list[bytes]:
    """Every page of a list in pages of 500, as the exporter asks for them."""
    pages, token = [], ""
    while True:
        pages.append(_get(api, f"{NODES_PATH}?limit=500" + (f"&continue={quote(token)}" if token else "")))
        token = json.loads(pages[-1])["metadata"].get("continue", "")
        if not token:
            return pages


def _watch_events(api: FakeKubeAPI, since: int) -> list[dict[str, Any]]:
    """The events after `since`, from a watch the server ends at once (timeoutSeconds=0)."""
    body = _get(api, f"{NODES_PATH}?watch=true&resourceVersion={since}&timeoutSeconds=0")
    return [json.loads(line) for line in body.splitlines()]


def test_bytes_only_list_pages_are_byte_identical_to_the_dict_store() -> None:
    nodes = [node_object(i) for i in range(1201)]
    with FakeKubeAPI(token=TOKEN) as dicts, FakeKubeAPI(token=TOKEN) as raw:
        dicts.load(copy.deepcopy(nodes))
        raw.load(copy.deepcopy(nodes), bytes_only=True)
        pages = _pages(raw)
        assert len(pages) == 3  # 500 + 500 + 201, with continue tokens
        assert pages == _pages(dicts)
        assert _get(raw, f"{NODES_PATH}?watch=true&timeoutSeconds=0") == _get(
            dicts, f"{NODES_PATH}?watch=true&timeoutSeconds=0"
        )  # a watch from "now" starts with every node as ADDED


def test_bytes_only_nodes_are_decoded_on_the_paths_that_need_a_dict() -> None:
    first, second = node_object(0), node_object(1)
    with FakeKubeAPI(token=TOKEN) as api:
        api.load([copy.deepcopy(first), copy.deepcopy(second)], bytes_only=True)
        name = first["metadata"]["name"]
        node = api.node(name)
        assert node["metadata"]["resourceVersion"] == "1001"
        node["metadata"].pop("resourceVersion")
        first["metadata"].pop("resourceVersion")
        assert node == first

        api.node(name)["metadata"]["labels"].clear()  # a copy: the fake's node keeps its labels
        assert api.node(name)["metadata"]["labels"] == first["metadata"]["labels"]

        before = api.resource_version
        api.modify_node(name, lambda obj: obj["metadata"]["labels"].update(team="payments"))
        api.delete_node(second["metadata"]["name"])
        modified, deleted = _watch_events(api, before)
        assert modified["type"] == "MODIFIED" and modified["object"]["metadata"]["labels"]["team"] == "payments"
        assert api.node(name)["metadata"]["labels"]["team"] == "payments"
        assert deleted["type"] == "DELETED"
        assert deleted["object"]["metadata"]["uid"] == second["metadata"]["uid"]
        assert api.node_names() == [name]
