"""The node list's decode, by three decoders (issue 14, item 3): which to use is picked by these figures.

The exporter reads a handful of a Node's fields (parse_node: metadata name, uid, labels, creationTimestamp;
spec.providerID; status.capacity and nodeInfo's OS and architecture) out of ~10 KB of JSON, most of it
images, conditions and managedFields. `json` and `orjson` build every object of the page; msgspec, decoding
into Structs that declare only the fields read, skips the rest without building it.

Each decoder decodes the same pages of 500 real-shaped nodes (`bench.cluster.node_object`, as the API
server's list pages), in one process, one after another, best of three passes; memory is what one decoded
page holds (tracemalloc, after the decode, the page's bytes excluded). The fields the exporter reads are
compared across decoders, node by node, so a faster decoder that read something else would show.
"""

from __future__ import annotations

import gc
import json
import time
import tracemalloc
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import msgspec
import orjson

from bench.cluster import node_object

PAGE = 500  # the exporter's list page size (kube.py)
PASSES = 3


class _Meta(msgspec.Struct):
    name: str = ""
    uid: str = ""
    labels: dict[str, str] = {}
    creationTimestamp: str | None = None  # camelCase fields: the API's own names


class _NodeInfo(msgspec.Struct):
    operatingSystem: str = ""
    architecture: str = ""


class _Status(msgspec.Struct):
    capacity: dict[str, str] = {}
    nodeInfo: _NodeInfo = msgspec.field(default_factory=_NodeInfo)


class _Spec(msgspec.Struct):
    providerID: str = ""


class _Node(msgspec.Struct):
    metadata: _Meta
    spec: _Spec = msgspec.field(default_factory=_Spec)
    status: _Status = msgspec.field(default_factory=_Status)


class _ListMeta(msgspec.Struct):
    resourceVersion: str = ""
    # `continue` is a Python keyword: `next` here, `continue` on the wire
    next: str = msgspec.field(default="", name="continue")


class _NodeList(msgspec.Struct):
    items: list[_Node]
    metadata: _ListMeta = msgspec.field(default_factory=_ListMeta)


_SELECTIVE = msgspec.json.Decoder(_NodeList)

Fields = tuple[str, str, tuple[tuple[str, str], ...], str | None, str, tuple[tuple[str, str], ...], str, str]


def _from_dict(obj: dict[str, Any]) -> Fields:
    meta, spec, status = obj["metadata"], obj.get("spec", {}), obj.get("status", {})
    info = status.get("nodeInfo", {})
    return (
        meta["name"],
        meta["uid"],
        tuple(sorted(meta.get("labels", {}).items())),
        meta.get("creationTimestamp"),
        spec.get("providerID", ""),
        tuple(sorted(status.get("capacity", {}).items())),
        info.get("operatingSystem", ""),
        info.get("architecture", ""),
    )


def _from_struct(node: _Node) -> Fields:
    meta, info = node.metadata, node.status.nodeInfo
    return (
        meta.name,
        meta.uid,
        tuple(sorted(meta.labels.items())),
        meta.creationTimestamp,
        node.spec.providerID,
        tuple(sorted(node.status.capacity.items())),
        info.operatingSystem,
        info.architecture,
    )


DECODERS: dict[str, tuple[Callable[[bytes], Any], Callable[[Any], list[Fields]]]] = {
    "json (stdlib)": (json.loads, lambda page: [_from_dict(o) for o in page["items"]]),
    "orjson": (orjson.loads, lambda page: [_from_dict(o) for o in page["items"]]),
    "msgspec, read fields only": (_SELECTIVE.decode, lambda page: [_from_struct(o) for o in page.items]),
}


@dataclass
class DecodeRun:
    decoder: str
    page_seconds: float  # best pass's mean time to decode one page of PAGE nodes
    page_bytes: int  # what one decoded page holds in memory
    agrees: bool  # the fields the exporter reads equal json's, node by node


@dataclass
class DecodeResult:
    n: int
    page_json_bytes: int  # mean size of one page's JSON
    runs: list[DecodeRun]


def _pages(n: int) -> list[bytes]:
    pages = []
    for start in range(0, n, PAGE):
        items = [node_object(i) for i in range(start, min(n, start + PAGE))]
        meta = {"resourceVersion": "1000"}
        pages.append(orjson.dumps({"kind": "NodeList", "apiVersion": "v1", "metadata": meta, "items": items}))
    return pages


def _held(decode: Callable[[bytes], Any], page: bytes) -> int:
    gc.collect()
    tracemalloc.start()
    decoded = decode(page)
    held = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    del decoded
    return held


def run_decode(n: int) -> DecodeResult:
    pages = _pages(n)
    reference = [fields for page in pages for fields in DECODERS["json (stdlib)"][1](json.loads(page))]
    runs = []
    for name, (decode, read) in DECODERS.items():
        best = float("inf")
        for _ in range(PASSES):
            gc.collect()
            started = time.perf_counter()
            for page in pages:
                decode(page)
            best = min(best, time.perf_counter() - started)
        agrees = [fields for page in pages for fields in read(decode(page))] == reference
        runs.append(DecodeRun(name, best / len(pages), _held(decode, pages[0]), agrees))
    return DecodeResult(n, sum(map(len, pages)) // len(pages), runs)


def decode_section(result: DecodeResult) -> str:
    baseline = result.runs[0]
    rows = "\n".join(
        f"| {r.decoder} | {r.page_seconds * 1000:.1f} ms | {r.page_seconds * result.n / PAGE:.2f} s |"
        f" {baseline.page_seconds / r.page_seconds:.1f}x | {r.page_bytes / 2**20:.1f} MiB |"
        f" {'yes' if r.agrees else '**no**'} |"
        for r in result.runs
    )
    return f"""## 9. List decode: which decoder

The list's decode dominates start to ready (§1). The same {result.n:,} real-shaped nodes, in pages of
{PAGE} ({result.page_json_bytes / 2**20:.1f} MiB of JSON a page), decoded by each decoder in one process,
one after another (best of {PASSES} passes). "Held" is what one decoded page occupies (tracemalloc);
"fields agree" compares, node by node, every field the exporter reads (name, uid, labels, creation time,
providerID, capacity, OS, architecture) with the stdlib's. Measured by `bench/decode.py`; the exporter
decodes with msgspec into such Structs (`exporter/inventory/wire.py`), and with orjson (stdlib where orjson
refuses) the pages and events msgspec refuses.

| decoder | per page of {PAGE} | whole list | speed vs json | held, one page | fields agree |
|---|---|---|---|---|---|
{rows}
"""
