"""Inventory from a file of `kubectl get nodes -o json` output, for running without API access and for demos.

The file is polled (mtime, size and inode, so an atomic rename counts) rather than watched with inotify, which
is absent on some mounts (ConfigMap volumes swap a symlink). A file that goes bad keeps the last good set.
Sharded, the nodes of other shards are dropped before they are parsed, as from the API (`kube.py`). A JSON
NodeList is decoded as the API's list pages are, by msgspec into the fields read (`wire.py`); YAML, a single
Node, and a file msgspec refuses or with an invalid node take the general path, node by node.
"""

from __future__ import annotations

import json
import logging
import os
import threading
from collections.abc import Collection, Sequence
from typing import Any

import yaml

from exporter.clock import SYSTEM_CLOCK, Clock
from exporter.health import Health, IntegrationStatus, Reason
from exporter.inventory.node import Node
from exporter.inventory.parse import SpotLabel, describe_node, parse_node, parse_wire_node
from exporter.inventory.sharding import UNSHARDED, Shard
from exporter.inventory.sink import InventorySink
from exporter.inventory.wire import NODE_LIST

log = logging.getLogger(__name__)

_UNREAD = object()


class _BadFile(Exception):
    def __init__(self, reason: Reason, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail


class NodesFileWatcher:
    """Reads a NodeList (JSON; YAML accepted too) into the sink, again whenever the file changes."""

    def __init__(
        self,
        path: str,
        sink: InventorySink,
        status: IntegrationStatus,
        health: Health,
        *,
        spot_labels: Sequence[SpotLabel],
        keep_labels: Collection[str] | None = None,
        poll_interval: float = 2.0,
        clock: Clock = SYSTEM_CLOCK,
        shard: Shard = UNSHARDED,
    ) -> None:
        """`clock`: what durations and timestamps are read from (tests call `poll()` on a fake one);
        `shard`: the nodes served."""
        self.synced = threading.Event()
        self.shard = shard
        self._path = path
        self._sink = sink
        self._status = status
        self._health = health
        self._spot_labels = tuple(spot_labels)
        self._keep_labels = None if keep_labels is None else frozenset(keep_labels)  # see parse_node
        self._poll_interval = poll_interval
        self._clock = clock
        self._last: object = _UNREAD
        self._last_error = ""  # the unexpected error last logged: each cause is logged once in a row

    def run(self, stop: threading.Event) -> None:
        """Poll every `poll_interval` seconds until `stop` is set. Never raises."""
        while not stop.is_set():
            try:
                self.poll()
            except Exception as e:  # a bug must not end inventory: keep the last good set, read the next file
                if repr(e) != self._last_error:
                    log.exception("reading nodes file %s failed unexpectedly", self._path)
                self._last_error = repr(e)
                self._status.failed(Reason.BAD_RESPONSE, f"nodes file {self._path}: unexpected error: {e!r}")
            stop.wait(self._poll_interval)

    def poll(self) -> None:
        """Read the file if it is new or changed since the last poll."""
        signature = self._signature()
        if signature != self._last:
            self._last = signature
            self._load()

    def _signature(self) -> tuple[int, int, int] | None:
        try:
            st = os.stat(self._path)
        except OSError:
            return None
        return st.st_mtime_ns, st.st_size, st.st_ino

    def _load(self) -> None:
        started = self._clock.monotonic()
        try:
            data = self._read_bytes()
            parsed = self._parse_wire(data)
            if parsed is None:
                parsed = self._parse_items(self._decode_items(data))
        except _BadFile as e:
            duration = self._clock.monotonic() - started
            self._status.failed(e.reason, e.detail, duration=duration, now=self._clock.time())
            return
        nodes = {node.uid: node for node in parsed}
        self._sink.replace_all(list(nodes.values()))
        duration = self._clock.monotonic() - started
        now = self._clock.time()
        self._status.succeeded(duration=duration, data_timestamp=now, now=now)
        self.synced.set()

    def _parse_wire(self, data: bytes) -> list[Node] | None:
        """The nodes of a JSON NodeList decoded into Structs; None for anything else, or when msgspec refuses
        it or one of its nodes is invalid, so that `_parse_items` reads it and reports each bad node."""
        try:
            doc = NODE_LIST.decode(data)
            if doc.items is None:  # a single Node, or no list at all
                return None
            owns = self.shard.owns_uid if self.shard.sharded else None  # unsharded: no hashing at all
            return [
                parse_wire_node(item, self._spot_labels, self._keep_labels)
                for item in doc.items
                if owns is None or owns(item.uid)
            ]
        except Exception:  # msgspec.DecodeError, InvalidNode, or a bug of this path: the general one decides
            return None

    def _parse_items(self, items: list[Any]) -> list[Node]:
        nodes = []
        owns = self.shard.owns if self.shard.sharded else None  # unsharded: no hashing at all
        for item in items:
            if owns is not None and not owns(item):
                continue
            try:
                nodes.append(parse_node(item, self._spot_labels, self._keep_labels))
            except Exception as e:  # InvalidNode, or a bug: either way only this node is skipped
                self._health.invalid("node", describe_node(item), f"{self._path}: {e}")
        return nodes

    def _read_bytes(self) -> bytes:
        try:
            with open(self._path, "rb") as f:
                data = f.read()
        except FileNotFoundError:
            raise _BadFile(Reason.NOT_FOUND, f"nodes file {self._path}: no such file") from None
        except PermissionError as e:
            raise _BadFile(Reason.PERMISSION, f"nodes file {self._path}: {e.strerror}") from None
        except OSError as e:
            raise _BadFile(Reason.NOT_FOUND, f"nodes file {self._path}: {e.strerror or e}") from None
        return data

    def _decode_items(self, data: bytes) -> list[Any]:
        try:
            doc = json.loads(data)
        except ValueError:
            try:
                doc = yaml.safe_load(data)
            except yaml.YAMLError as e:
                problem = f"nodes file {self._path} is neither JSON nor YAML: {e}"
                raise _BadFile(Reason.BAD_RESPONSE, problem) from e
        if isinstance(doc, dict) and doc.get("kind") == "Node":
            return [doc]  # `kubectl get node NAME -o json`
        items = doc.get("items") if isinstance(doc, dict) else doc
        if not isinstance(items, list):
            raise _BadFile(
                Reason.BAD_RESPONSE,
                f"nodes file {self._path} holds no node list (expected a NodeList with an items array)",
            )
        return items
