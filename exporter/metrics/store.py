"""Pre-rendered per-node metric lines, in the manner of kube-state-metrics' metrics store.

A node's lines are rendered once, when the node or its price changes; a scrape only joins cached bytes,
and an unchanged body (and its gzip) is served again as is. Lines are kept per family so each family's
samples stay contiguous, as OpenMetrics requires. What each family's lines say is in `families`.
"""

from __future__ import annotations

import struct
import threading
import zlib
from collections import Counter
from collections.abc import Iterator, Set

from exporter.inventory.node import Node
from exporter.metrics.families import NODE_FAMILIES, billing_tags_family
from exporter.pricing.quote import NodePrice

UNPRICED = "unpriced"


class NodeMetricsStore:
    """uid → rendered lines. Thread-safe; writers are the inventory and the price refresh, readers scrapes."""

    def __init__(self, gzip_level: int = 1, tag_keys: tuple[str, ...] = ()) -> None:
        self.families = NODE_FAMILIES + ((billing_tags_family(tag_keys),) if tag_keys else ())
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

    def render(self, node: Node, price: NodePrice | None, why: str = "") -> tuple[bytes, ...]:
        """The node's lines: one entry per family in `families`, b"" where it has no sample in one."""
        return tuple([family.render(node, price, why) for family in self.families])

    def set(self, node: Node, price: NodePrice | None, why: str = "") -> None:
        """`why`: the reason an unpriced node (`price` None) is unpriced, its `reason` label."""
        lines = self.render(node, price, why)
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
            yield family.header(openmetrics=openmetrics) + b"".join(entry[i] for entry in entries)


def _stored_blocks(data: bytes) -> list[bytes]:
    """`data` as stored deflate blocks (RFC 1951 §3.2.4), the last one final: at most 65,535 bytes each."""
    blocks = []
    for start in range(0, max(len(data), 1), 0xFFFF):
        chunk = data[start : start + 0xFFFF]
        final = start + 0xFFFF >= len(data)
        blocks.append(struct.pack("<BHH", 1 if final else 0, len(chunk), len(chunk) ^ 0xFFFF) + chunk)
    return blocks
