"""Which replica owns a node: Jump Consistent Hash of the FNV-1a 64 hash of its `metadata.uid`.

Exactly what kube-state-metrics does (pkg/sharding/listwatch.go: Go's `hash/fnv` New64a of the UID, then
`jump.Hash(sum, totalShards)` of github.com/dgryski/go-jump), so the two shard a cluster alike. Jump hash,
not `hash % total`: when the number of shards changes from n to n + 1, only 1/(n + 1) of the nodes move to
another replica, where a modulo would move nearly all of them. It is fixed forever: a node's owner must not
change across upgrades, or its series would hop from one replica to another. `tests/test_sharding.py`
freezes a table of UIDs and their shards.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

# FNV-1a 64-bit parameters (draft-eastlake-fnv, "FNV Constants").
_OFFSET_BASIS = 0xCBF29CE484222325
_PRIME = 0x100000001B3
_MASK = 2**64 - 1

# Jump Consistent Hash's linear congruential step (Lamping and Veach, "A Fast, Minimal Memory, Consistent
# Hash Algorithm", 2014).
_JUMP_MULTIPLIER = 2862933555777941757
_JUMP_SCALE = float(1 << 31)

# A StatefulSet pod is named <set>-<ordinal>.
_ORDINAL = re.compile(r".+-(0|[1-9][0-9]*)")


def fnv1a_64(data: bytes) -> int:
    """FNV-1a 64 of `data`: xor each byte in, then multiply by the prime, modulo 2**64."""
    value = _OFFSET_BASIS
    for byte in data:
        value = ((value ^ byte) * _PRIME) & _MASK
    return value


def jump_hash(key: int, buckets: int) -> int:
    """Jump Consistent Hash: the bucket in [0, buckets) of a 64-bit key. Each step draws the next bucket the
    key would jump to as buckets are added; the last one below `buckets` is its bucket. The float arithmetic
    is IEEE double, as in the reference C++ and Go code, so the results are theirs bit for bit."""
    bucket, jump = -1, 0
    while jump < buckets:
        bucket = jump
        key = (key * _JUMP_MULTIPLIER + 1) & _MASK
        jump = int((bucket + 1) * (_JUMP_SCALE / float((key >> 33) + 1)))
    return bucket


def shard_of(uid: str, total_shards: int) -> int:
    """The shard (0-based) that owns the object with this UID."""
    return jump_hash(fnv1a_64(uid.encode("utf-8")), total_shards)


def pod_ordinal(pod_name: str) -> int | None:
    """A StatefulSet pod's ordinal, from its name (`node-cost-exporter-3` → 3); None for another name."""
    match = _ORDINAL.fullmatch(pod_name)
    return int(match.group(1)) if match else None


@dataclass(frozen=True)
class Shard:
    """This replica's part of the cluster: shard `index` of `total`. `Shard()` is the whole cluster."""

    index: int = 0
    total: int = 1

    @property
    def sharded(self) -> bool:
        return self.total > 1

    def owns_uid(self, uid: str | None) -> bool:
        """Whether the object with this `metadata.uid` is this shard's. An object without one (None) is
        kept by shard 0 only: parsing reports it as invalid, on one shard only, never silently on none."""
        if not self.sharded:
            return True
        if uid is None:
            return self.index == 0
        return shard_of(uid, self.total) == self.index

    def owns(self, obj: Any) -> bool:
        """`owns_uid` of a raw Node object (decoded JSON), read before the object is parsed."""
        if not self.sharded:
            return True
        meta = obj.get("metadata") if isinstance(obj, dict) else None
        uid = meta.get("uid") if isinstance(meta, dict) else None
        return self.owns_uid(uid if isinstance(uid, str) else None)


UNSHARDED = Shard()
