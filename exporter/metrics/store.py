"""Pre-rendered per-node metric lines, in the manner of kube-state-metrics' metrics store.

A node's lines are rendered once, when the node or its price changes; a scrape only joins cached bytes,
and an unchanged body (and its gzip) is served again as is. Lines are kept per family so each family's
samples stay contiguous, as OpenMetrics requires.
"""

from __future__ import annotations

import struct
import threading
import zlib
from collections import Counter
from collections.abc import Iterator, Set
from dataclasses import dataclass

from exporter.config import tag_label
from exporter.inventory.node import Node
from exporter.pricing.quote import NodePrice

UNPRICED = "unpriced"
# Longer label values (label garbage) are cut, so a scrape-side limit never rejects the whole target.
MAX_LABEL_VALUE = 512


@dataclass(frozen=True)
class Family:
    name: str
    type: str
    help: str
    labels: tuple[str, ...]
    tag_keys: tuple[str, ...] = ()  # the tags family only: the allowlisted keys behind its tag_ labels


NODE_INFO = Family(
    "nodecost_node_info",
    "gauge",
    "Node facts used for pricing; value is always 1.",
    (
        "node",
        "provider",
        "instance_type",
        "capacity_type",
        "topology_region",
        "topology_zone",
        "provider_id",
        "os",
        "arch",
        "gpu_model",
    ),
)
NODE_HOURLY = Family(
    "nodecost_node_hourly_cost",
    "gauge",
    "Hourly cost of the node in the currency label, after any configured discount.",
    ("node", "source", "price_basis", "currency"),
)
NODE_LIST = Family(
    "nodecost_node_list_hourly_cost",
    "gauge",
    "On-demand list price of the node's type per hour, before discount; what spot or billed prices save on.",
    ("node", "source", "currency"),
)
NODE_CPU = Family(
    "nodecost_node_cpu_core_hourly_cost",
    "gauge",
    "Hourly cost of one CPU core of the node.",
    ("node", "source", "currency"),
)
NODE_MEMORY = Family(
    "nodecost_node_memory_gibibyte_hourly_cost",
    "gauge",
    "Hourly cost of one GiB of the node's memory.",
    ("node", "source", "currency"),
)
NODE_GPU = Family(
    "nodecost_node_gpu_hourly_cost",
    "gauge",
    "Hourly cost of one GPU of the node (GPU nodes only).",
    ("node", "source", "currency"),
)
NODE_UNPRICED = Family(
    "nodecost_node_unpriced",
    "gauge",
    "1 for a node no price source could price (no cost series for it).",
    ("node",),
)
NODE_BILLED_DAILY = Family(
    "nodecost_node_billed_daily_cost",
    "gauge",
    "Billed cost of the node on each complete UTC day its billed rate averages: final, reconciled figures.",
    ("node", "day", "source", "currency"),
)
NODE_NETWORK = Family(
    "nodecost_node_network_hourly_cost",
    "gauge",
    "Network (data transfer) cost the bill attributes to the node, per billed hour.",
    ("node", "source", "currency"),
)
NODE_FAMILIES = (
    NODE_INFO,
    NODE_HOURLY,
    NODE_LIST,
    NODE_CPU,
    NODE_MEMORY,
    NODE_GPU,
    NODE_UNPRICED,
    NODE_BILLED_DAILY,
    NODE_NETWORK,
)
TAGS_INFO = "nodecost_node_billing_tags_info"


def tags_family(keys: tuple[str, ...]) -> Family:
    """The tags info family for the allowlisted keys: one `tag_<key>` label each."""
    return Family(
        TAGS_INFO,
        "gauge",
        "Allowlisted billing tags of the node's cloud resource, one tag_<key> label each; a Kubernetes "
        "node label of the same key wins. Value is always 1.",
        ("node", *(tag_label(key) for key in keys)),
        keys,
    )


def escape(value: str) -> str:
    if len(value) > MAX_LABEL_VALUE:
        value = value[:MAX_LABEL_VALUE]
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def sample(family: Family, values: tuple[str, ...], value: float) -> bytes:
    labels = ",".join(f'{k}="{escape(v)}"' for k, v in zip(family.labels, values, strict=True))
    return f"{family.name}{{{labels}}} {value!r}\n".encode()


def header(family: Family, openmetrics: bool) -> bytes:
    name, kind = family.name, family.type
    if openmetrics and name.endswith("_info"):
        name, kind = name[: -len("_info")], "info"
    return f"# HELP {name} {family.help}\n# TYPE {name} {kind}\n".encode()


def info_values(node: Node) -> tuple[str, ...]:
    """The values of NODE_INFO's labels, in order."""
    return (
        node.name,
        node.provider,
        node.instance_type,
        node.capacity_type.value,
        node.region,
        node.zone,
        node.provider_id,
        node.os,
        node.arch,
        node.gpu_model,
    )


def render_node(node: Node, price: NodePrice | None, tags: Family | None = None) -> tuple[bytes, ...]:
    """One entry per family in NODE_FAMILIES (then `tags`); b"" where the node has no sample in it."""
    info = sample(NODE_INFO, info_values(node), 1.0)
    tagged = (_tags(node, price, tags),) if tags is not None else ()
    if price is None:
        return info, b"", b"", b"", b"", b"", sample(NODE_UNPRICED, (node.name,), 1.0), b"", b"", *tagged
    ident = (node.name, price.source, price.currency)
    hourly = sample(
        NODE_HOURLY, (node.name, price.source, price.basis.value, price.currency), float(price.hourly)
    )
    cpu = sample(NODE_CPU, ident, float(price.cpu_core_hourly)) if price.cpu_core_hourly is not None else b""
    mem = (
        sample(NODE_MEMORY, ident, float(price.memory_gib_hourly))
        if price.memory_gib_hourly is not None
        else b""
    )
    gpu = sample(NODE_GPU, ident, float(price.gpu_hourly)) if price.gpu_hourly is not None else b""
    listed = (
        sample(NODE_LIST, (node.name, price.list_source, price.currency), float(price.list_hourly))
        if price.list_hourly is not None
        else b""
    )
    daily, network = b"", b""
    billed = price.billed
    if billed is not None:
        daily = b"".join(
            sample(NODE_BILLED_DAILY, (node.name, day, billed.source, price.currency), cost)
            for day, cost in zip(billed.day_names, billed.day_costs, strict=True)
        )
        if billed.network_hourly is not None:
            network = sample(NODE_NETWORK, (node.name, billed.source, price.currency), billed.network_hourly)
    return info, hourly, listed, cpu, mem, gpu, b"", daily, network, *tagged


def _tags(node: Node, price: NodePrice | None, family: Family) -> bytes:
    billed = dict(price.billed.tags) if price is not None and price.billed is not None else {}
    keys = family.tag_keys
    values = tuple(node.labels.get(key) or billed.get(key, "") for key in keys)
    return sample(family, (node.name, *values), 1.0) if any(values) else b""


class NodeMetricsStore:
    """uid → rendered lines. Thread-safe; writers are the inventory and the price refresh, readers scrapes."""

    def __init__(self, gzip_level: int = 1, tag_keys: tuple[str, ...] = ()) -> None:
        self._tags = tags_family(tag_keys) if tag_keys else None
        self.families = NODE_FAMILIES + ((self._tags,) if self._tags else ())
        self._lock = threading.Lock()
        self._lines: dict[str, tuple[bytes, ...]] = {}
        self._sources: dict[str, str] = {}
        self._counts: Counter[str] = Counter()  # kept in step with _sources: scrapes must not count nodes
        self._plain: dict[bool, list[bytes]] = {}
        self._gzip: dict[bool, tuple[bytes, int, int]] = {}  # compressed prefix, its CRC-32 and length
        self._gzip_level = gzip_level

    def _changed(self) -> None:
        self._plain.clear()
        self._gzip.clear()

    def set(self, node: Node, price: NodePrice | None) -> None:
        lines = render_node(node, price, self._tags)
        with self._lock:
            if self._lines.get(node.uid) == lines:
                return
            self._lines[node.uid] = lines
            self._set_source(node.uid, price.source if price else UNPRICED)
            self._changed()

    def delete(self, uid: str) -> None:
        with self._lock:
            if self._lines.pop(uid, None) is not None:
                self._set_source(uid, None)
                self._changed()

    def retain(self, uids: Set[str]) -> None:
        """Drop every node not in `uids` (after a relist)."""
        with self._lock:
            gone = [uid for uid in self._lines if uid not in uids]
            for uid in gone:
                del self._lines[uid]
                self._set_source(uid, None)
            if gone:
                self._changed()

    def _set_source(self, uid: str, source: str | None) -> None:
        old = self._sources.pop(uid, None)
        if old is not None:
            self._counts[old] -= 1
            if not self._counts[old]:
                del self._counts[old]
        if source is not None:
            self._sources[uid] = source
            self._counts[source] += 1

    def source_counts(self) -> Counter[str]:
        with self._lock:
            return self._counts.copy()

    def __len__(self) -> int:
        return len(self._lines)

    def body(self, *, openmetrics: bool) -> list[bytes]:
        """The node section as plain text, one chunk per family, rebuilt only after a change.

        Chunks, not one joined body: a scrape writes them in turn, so no 10 MB copy is made per scrape.
        """
        with self._lock:
            cached = self._plain.get(openmetrics)
            if cached is None:
                cached = self._plain[openmetrics] = list(self._families(openmetrics))
            return cached

    def gzip_body(self, *, openmetrics: bool, tail: bytes) -> list[bytes]:
        """One gzip stream of the node section followed by `tail` (the live, per-scrape part).

        The node section is compressed once after a change, family by family, and sync-flushed (so it ends
        on a byte boundary with no final block); each scrape appends the few-KB tail as stored (verbatim)
        deflate blocks and the gzip trailer, whose CRC continues the cached one. No compressor runs per
        scrape. Only the variants actually scraped are built and kept: at 15,000 nodes a plain body is
        ~10 MB.
        """
        with self._lock:
            cached = self._gzip.get(openmetrics)
            if cached is None:
                compressor = zlib.compressobj(self._gzip_level, zlib.DEFLATED, 31)
                parts, crc, size = [], 0, 0
                for family in self._families(openmetrics):
                    parts.append(compressor.compress(family))
                    crc, size = zlib.crc32(family, crc), size + len(family)
                parts.append(compressor.flush(zlib.Z_SYNC_FLUSH))
                cached = self._gzip[openmetrics] = (b"".join(parts), crc, size)
        prefix, crc, size = cached
        trailer = struct.pack("<II", zlib.crc32(tail, crc), (size + len(tail)) & 0xFFFFFFFF)
        return [prefix, *_stored_blocks(tail), trailer]

    def _families(self, openmetrics: bool) -> Iterator[bytes]:
        entries = list(self._lines.values())
        for i, family in enumerate(self.families):
            yield header(family, openmetrics) + b"".join(entry[i] for entry in entries)


def _stored_blocks(data: bytes) -> list[bytes]:
    """`data` as stored deflate blocks (RFC 1951 §3.2.4), the last one final: at most 65,535 bytes each."""
    blocks = []
    for start in range(0, max(len(data), 1), 0xFFFF):
        chunk = data[start : start + 0xFFFF]
        final = start + 0xFFFF >= len(data)
        blocks.append(struct.pack("<BHH", 1 if final else 0, len(chunk), len(chunk) ^ 0xFFFF) + chunk)
    return blocks
