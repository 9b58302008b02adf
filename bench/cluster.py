"""A deterministic, realistic cluster: node `i` of any size is always the same ~10 KB Node object.

The mix is what a multi-cloud fleet looks like: half EKS, 30 % GKE, 20 % AKS; about 30 % spot; a few GPU
nodes; and a small share of nodes the bundled offline table cannot price (Azure NC6s_v3), so the
`nodecost_node_unpriced` family is exercised too. Every object comes from the fake API's `make_node`.
"""

from __future__ import annotations

import json
from collections import Counter
from typing import Any

from fakes.kube_api import make_node

# (weight out of 100, provider, instance type, zones)
_MIX: tuple[tuple[int, str, str, tuple[str, ...]], ...] = (
    (15, "aws", "m5.xlarge", ("us-east-1a", "us-east-1b", "us-east-1c")),
    (12, "aws", "m5.large", ("us-east-1a", "us-east-1b", "us-east-1c")),
    (10, "aws", "c5.2xlarge", ("us-east-1a", "us-east-1b")),
    (10, "aws", "m6gd.2xlarge", ("us-east-1b", "us-east-1c")),
    (3, "aws", "g4dn.xlarge", ("us-east-1a", "us-west-2a")),
    (10, "gcp", "e2-standard-4", ("us-central1-a", "us-central1-b", "europe-north1-c")),
    (8, "gcp", "e2-standard-2", ("us-central1-a", "europe-west1-b")),
    (7, "gcp", "n2-standard-8", ("us-central1-c", "europe-north1-a")),
    (5, "gcp", "n1-standard-4", ("us-central1-f",)),
    (8, "azure", "Standard_D4s_v3", ("eastus-1", "eastus-2", "westeurope-1")),
    (6, "azure", "Standard_D2s_v3", ("eastus-3", "northeurope-1")),
    (5, "azure", "Standard_DS1_v2", ("westus2-1",)),
    (1, "azure", "Standard_NC6s_v3", ("eastus-1",)),
)
_SLOTS: tuple[tuple[str, str, tuple[str, ...]], ...] = tuple(
    (provider, itype, zones) for weight, provider, itype, zones in _MIX for _ in range(weight)
)
assert len(_SLOTS) == 100


def _base36(n: int, width: int) -> str:
    digits = "0123456789abcdefghijklmnopqrstuvwxyz"
    out = ""
    while n:
        n, r = divmod(n, 36)
        out = digits[r] + out
    return out.rjust(width, "0")


def _is_spot(i: int) -> bool:
    """About 30 % of nodes, independent of the instance-type slot (a multiplicative hash of i)."""
    return ((i * 2654435761) >> 12) % 10 < 3


def node_object(i: int) -> dict[str, Any]:
    """The i-th node of the benchmark cluster, with a name shaped like the provider's real ones."""
    provider, itype, zones = _SLOTS[(i * 37) % 100]  # 37 is coprime with 100: the mix is even at any N
    zone = zones[(i // 100) % len(zones)]
    spot = _is_spot(i)
    if provider == "aws":
        name = f"ip-10-{(i >> 16) & 255}-{(i >> 8) & 255}-{i & 255}.ec2.internal"
    elif provider == "gcp":
        pool = "spot-pool" if spot else "default-pool"
        name = f"gke-prod-{pool}-{i % 8:08x}-{_base36(i, 4)}"
    else:
        pool = "spotpool1" if spot else "nodepool1"
        name = f"aks-{pool}-12345678-vmss{_base36(i, 6)}"
    return make_node(name, provider=provider, instance_type=itype, zone=zone, spot=spot)


def raw(obj: dict[str, Any]) -> bytes:
    """Compact JSON, as the API server sends it."""
    return json.dumps(obj, separators=(",", ":")).encode()


def event_line(etype: str, obj: dict[str, Any]) -> bytes:
    """One newline-terminated watch event, byte for byte as on the wire."""
    return b'{"type":"' + etype.encode() + b'","object":' + raw(obj) + b"}\n"


def touch_capacity(obj: dict[str, Any], rev: int) -> None:
    """A change that alters the parsed Node and what it costs per core and per GiB: the kubelet reports a
    different memory capacity (the last six digits of its KiB become `rev`'s, within 1 GiB of the shape's).

    A label edit no longer serves: a Node keeps only the labels something reads, so editing another one is
    an unchanged Node (exporter/inventory/parse.py).
    """
    capacity = obj["status"]["capacity"]
    kib = int(capacity["memory"].removesuffix("Ki"))
    capacity["memory"] = f"{kib // 1_000_000 * 1_000_000 + rev % 1_000_000}Ki"


def touch_heartbeat(obj: dict[str, Any], rev: int) -> None:
    """A kubelet status update: only the conditions' heartbeat moves, so the parsed Node is unchanged."""
    stamp = f"2024-06-01T{12 + rev // 3600 % 12:02d}:{rev // 60 % 60:02d}:{rev % 60:02d}Z"
    for condition in obj["status"]["conditions"]:
        condition["lastHeartbeatTime"] = stamp


def describe_mix(n: int) -> str:
    """A one-line summary of the mix at size n, for the report header."""
    providers: Counter[str] = Counter()
    spot = gpu = 0
    for i in range(n):
        provider, itype, _ = _SLOTS[(i * 37) % 100]
        providers[provider] += 1
        spot += _is_spot(i)
        gpu += itype in ("g4dn.xlarge", "Standard_NC6s_v3")
    share = ", ".join(f"{p} {c / n:.0%}" for p, c in sorted(providers.items()))
    return f"{share}; spot {spot / n:.0%}; GPU {gpu / n:.0%}"
