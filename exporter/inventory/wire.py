"""The Node list and watch JSON, decoded by msgspec into Structs of only the fields `parse.py` reads.

A Node is ~10 KB of JSON, mostly images, conditions and managedFields; decoding into these Structs skips
all of that without building it (bench/decode.py, report §9: 10x faster than json or orjson, and a page of 500
held in 1.9 instead of 15 MiB). Unknown fields are ignored; every field the API may omit or send as null is
optional. The types are strict: a page or event msgspec refuses (invalid UTF-8, an ERROR event's Status),
or one with a node whose labels it refuses when the node is parsed (a label value that is a number, a lone
surrogate escape), is decoded again the general way (`kube.py`), so such input behaves exactly as before.
Field names are the API's own camelCase. `gc=False`: decoded JSON holds no reference cycles, so the
collector need not track the thousands of Structs of a list.
"""

from __future__ import annotations

import msgspec

# Labels and capacity are kept as their raw JSON until the node is parsed (`parse_wire_node` decodes them
# with LABELS): a replica drops other shards' nodes without building their ~20 labels each.
_NULL = msgspec.Raw(b"null")


class WireMeta(msgspec.Struct, gc=False):
    name: str | None = None
    uid: str | None = None
    labels: msgspec.Raw = _NULL
    creationTimestamp: str | None = None
    resourceVersion: str | None = None  # watch events advance the resume version with it


class WireNodeInfo(msgspec.Struct, gc=False):
    operatingSystem: str | None = None
    architecture: str | None = None


class WireStatus(msgspec.Struct, gc=False):
    capacity: msgspec.Raw = _NULL
    nodeInfo: WireNodeInfo | None = None


class WireSpec(msgspec.Struct, gc=False):
    providerID: str | None = None


class WireNode(msgspec.Struct, gc=False):
    metadata: WireMeta | None = None
    spec: WireSpec | None = None
    status: WireStatus | None = None

    @property
    def uid(self) -> str | None:
        return self.metadata.uid if self.metadata is not None else None


class WireListMeta(msgspec.Struct, gc=False):
    resourceVersion: str | None = None
    continue_: str | None = msgspec.field(default=None, name="continue")  # a Python keyword


class WireNodeList(msgspec.Struct, gc=False):
    items: list[WireNode] | None = None
    metadata: WireListMeta | None = None


class WireListHead(msgspec.Struct, gc=False):
    """A list's metadata alone (`kube._continue_hint` decodes the head of a page, before its items)."""

    metadata: WireListMeta | None = None


class WireEvent(msgspec.Struct, gc=False):
    """A watch line: {"type": "ADDED", "object": {...}}. An ERROR's object (a Status, whose `status` is a
    string) does not fit `WireNode` and takes the general path, as do any other objects that do not fit."""

    type: str
    object: WireNode


NODE_LIST = msgspec.json.Decoder(WireNodeList)
LABELS = msgspec.json.Decoder(dict[str, str] | None)  # labels and capacity alike
LIST_HEAD = msgspec.json.Decoder(WireListHead)
EVENT = msgspec.json.Decoder(WireEvent)
