"""Raw Kubernetes Node object (decoded JSON, or the Structs of `wire.py`) → `Node`: the few facts pricing
needs, nothing else.

Pure and total over any decoded JSON: only a missing name/uid (which makes a node impossible to key) raises
`InvalidNode`; every other odd field degrades to an empty string or zero, so one strange node never hides the
rest of a cluster. Lone UTF-16 surrogates (legal in JSON text as "\\udc80", not encodable as UTF-8) become
U+FFFD in every string kept, so no later stage has to encode text that cannot be. The raw object is not kept:
at 10+ KB a node it would dominate memory.
"""

from __future__ import annotations

import math
import re
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from sys import intern
from typing import Any

from exporter.clock import parse_time
from exporter.config import KubernetesConfig
from exporter.inventory.node import CapacityType, Node, ProviderRef
from exporter.inventory.providerid import parse_provider_id
from exporter.inventory.quantity import parse_quantity
from exporter.inventory.wire import LABELS, WireMeta, WireNode, WireNodeInfo, WireSpec, WireStatus


class InvalidNode(ValueError):
    """The object cannot be a Node we can track (not an object, or no string name/uid)."""


@dataclass(frozen=True, slots=True)
class SpotLabel:
    """A label that marks a node as spot/preemptible: `key=value`, or `key` alone meaning "present"."""

    key: str
    value: str | None = None

    @classmethod
    def parse(cls, text: str) -> SpotLabel:
        key, sep, value = text.strip().partition("=")
        key = key.strip()
        if not key:
            raise ValueError(f"spot label {text!r}: expected key=value or key")
        return cls(key, value.strip() if sep else None)

    def matches(self, labels: Mapping[str, str]) -> bool:
        actual = labels.get(self.key)
        if actual is None:
            return False
        return self.value is None or actual.casefold() == self.value.casefold()


# The same list as the config default, for callers (tests, tools) that have no Config at hand.
DEFAULT_SPOT_LABELS: tuple[SpotLabel, ...] = tuple(
    SpotLabel.parse(text) for text in KubernetesConfig().spot_labels
)

_OS_LABELS = ("kubernetes.io/os", "beta.kubernetes.io/os")
_ARCH_LABELS = ("kubernetes.io/arch", "beta.kubernetes.io/arch")
_GPU_RESOURCES = ("nvidia.com/gpu", "amd.com/gpu")
_GPU_MODEL_LABELS = (
    "cloud.google.com/gke-accelerator",
    "nvidia.com/gpu.product",
    "karpenter.k8s.aws/instance-gpu-name",
    "k8s.amazonaws.com/accelerator",
)
# us-east-1a → us-east-1, us-gov-west-1b → us-gov-west-1, us-west-2-lax-1a (Local Zone) → us-west-2
_AWS_ZONE_REGION = re.compile(r"([a-z]{2}(?:-[a-z]+)+-[0-9]+)[a-z0-9-]*")
# europe-north1-c → europe-north1; eastus-1 → eastus (Azure availability zone)
_LAST_DASH_SEGMENT = re.compile(r"(.+)-[a-z0-9]+")
_SURROGATE = re.compile("[\ud800-\udfff]")
_INTERN_MAX = 256  # longer label values are unusual and unlikely to repeat
_ZERO = Decimal(0)
_INT64 = Decimal(2**63)
_NO_META, _NO_SPEC, _NO_STATUS, _NO_NODE_INFO = WireMeta(), WireSpec(), WireStatus(), WireNodeInfo()


def parse_node(
    obj: Any, spot_labels: Sequence[SpotLabel], keep_labels: Collection[str] | None = None
) -> Node:
    """Parse one Node object; raises `InvalidNode` only when it has no usable name or uid.

    `keep_labels`: the label keys later stages read (billing tag allowlist, custom price selectors), the
    only ones the Node keeps; None keeps all. Every label is still read for the facts parsed here.
    """
    if not isinstance(obj, dict):
        raise InvalidNode(f"node is a {type(obj).__name__}, not an object")
    metadata = _dict(obj.get("metadata"))
    spec, status = _dict(obj.get("spec")), _dict(obj.get("status"))
    node_info = _dict(status.get("nodeInfo"))
    labels = {
        utf8_safe(k): utf8_safe(v)
        for k, v in _dict(metadata.get("labels")).items()
        if isinstance(k, str) and isinstance(v, str)
    }
    return _node(
        metadata.get("name"),
        metadata.get("uid"),
        labels,
        keep_labels,
        metadata.get("creationTimestamp"),
        spec.get("providerID"),
        _dict(status.get("capacity")),
        node_info.get("operatingSystem"),
        node_info.get("architecture"),
        spot_labels,
    )


def parse_wire_node(
    obj: WireNode, spot_labels: Sequence[SpotLabel], keep_labels: Collection[str] | None = None
) -> Node:
    """`parse_node` of a node decoded into Structs (`wire.py`): the same checks, errors and result."""
    metadata, spec, status = obj.metadata or _NO_META, obj.spec or _NO_SPEC, obj.status or _NO_STATUS
    node_info = status.nodeInfo or _NO_NODE_INFO
    return _node(
        metadata.name,
        metadata.uid,
        LABELS.decode(metadata.labels) or {},  # msgspec refuses non-string values and lone surrogates
        keep_labels,
        metadata.creationTimestamp,
        spec.providerID,
        LABELS.decode(status.capacity) or {},
        node_info.operatingSystem,
        node_info.architecture,
        spot_labels,
    )


def _node(
    name: object,
    uid: object,
    labels: dict[str, str],
    keep_labels: Collection[str] | None,
    creation_timestamp: object,
    provider_id: object,
    capacity: Mapping[str, object],
    os: object,
    arch: object,
    spot_labels: Sequence[SpotLabel],
) -> Node:
    """The Node of the fields read, whichever decoder read them (`labels` already clean)."""
    if not isinstance(name, str) or not name:
        raise InvalidNode("metadata.name is missing or not a string")
    if not isinstance(uid, str) or not uid:
        raise InvalidNode("metadata.uid is missing or not a string")
    name, uid = utf8_safe(name), utf8_safe(uid)

    provider_id = utf8_safe(provider_id) if isinstance(provider_id, str) else ""
    ref = parse_provider_id(provider_id)

    zone = _first(labels, "topology.kubernetes.io/zone", "failure-domain.beta.kubernetes.io/zone")
    if zone.isdigit():  # Azure availability sets report fault domains ("0", "1") where zones belong
        zone = ""
    zone = zone or ref.zone
    region = _first(labels, "topology.kubernetes.io/region", "failure-domain.beta.kubernetes.io/region")
    region = region or _region_from_zone(ref, zone)

    return Node(
        name=name,
        uid=uid,
        provider_id=provider_id,
        ref=ref,
        instance_type=_first(labels, "node.kubernetes.io/instance-type", "beta.kubernetes.io/instance-type"),
        region=region,
        zone=zone,
        capacity_type=(
            CapacityType.SPOT if any(s.matches(labels) for s in spot_labels) else CapacityType.ON_DEMAND
        ),
        os=_first(labels, *_OS_LABELS) or _str(os),
        arch=_first(labels, *_ARCH_LABELS) or _str(arch),
        cpu_cores=float(_quantity(capacity.get("cpu"))),
        memory_bytes=math.ceil(_quantity(capacity.get("memory"))),
        gpu_count=_gpus(capacity),
        gpu_model=_first(labels, *_GPU_MODEL_LABELS),
        labels=_kept(labels, keep_labels),
        created=created.timestamp() if (created := parse_time(creation_timestamp)) else None,
    )


def with_capacity(node: Node, capacity: Mapping[str, object] | None) -> Node:
    """`node` as `_node` would read it with this `status.capacity` and the same other fields."""
    capacity = capacity or {}
    return node.reshaped(
        capacity_type=node.capacity_type,
        cpu_cores=float(_quantity(capacity.get("cpu"))),
        memory_bytes=math.ceil(_quantity(capacity.get("memory"))),
        gpu_count=_gpus(capacity),
    )


def _gpus(capacity: Mapping[str, object]) -> int:
    """GPUs of every vendor; a loop, not sum() over a generator: most nodes have none (~0.6 µs an event)."""
    count = 0
    for resource in _GPU_RESOURCES:
        value = capacity.get(resource)
        if value is not None:
            count += math.ceil(_quantity(value))
    return count


def utf8_safe(text: str) -> str:
    """`text` with each lone surrogate replaced by U+FFFD; ASCII (nearly every value) is returned as is."""
    if text.isascii():
        return text
    return _SURROGATE.sub("\ufffd", text)


def describe_node(obj: object) -> str:
    """A key for reporting a node we could not parse: its name when it has one, else its start."""
    meta = obj.get("metadata") if isinstance(obj, dict) else None
    name = meta.get("name") if isinstance(meta, dict) else None
    return utf8_safe(name) if isinstance(name, str) and name else repr(obj)[:200]


def _region_from_zone(ref: ProviderRef, zone: str) -> str:
    if ref.provider == "aws":
        m = _AWS_ZONE_REGION.fullmatch(zone)
    elif ref.provider in ("gcp", "azure"):
        m = _LAST_DASH_SEGMENT.fullmatch(zone)
    else:
        return ""
    return m[1] if m else ""


def _quantity(value: object) -> Decimal:
    """A capacity value; absent, malformed or beyond int64 (Kubernetes' own bound) counts as 0."""
    if not isinstance(value, str):
        return _ZERO
    try:
        q = parse_quantity(value)
    except ValueError:
        return _ZERO
    return q if 0 < q < _INT64 else _ZERO


def _kept(labels: dict[str, str], keep: Collection[str] | None) -> dict[str, str]:
    """The labels a Node keeps, interned: a cluster repeats the same keys and most values on every node.

    Only the read ones by default: a node's full label set (~1.5 KB interned) would be most of its memory,
    and an edit of a label nothing reads would make an unchanged Node look changed.
    """
    kept = labels.items() if keep is None else ((k, labels[k]) for k in keep if k in labels)
    return {intern(k): intern(v) if len(v) <= _INTERN_MAX else v for k, v in kept}


def _first(labels: Mapping[str, str], *keys: str) -> str:
    for key in keys:
        value = labels.get(key)
        if value:
            return value
    return ""


def _dict(value: object) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _str(value: object) -> str:
    return utf8_safe(value) if isinstance(value, str) else ""
