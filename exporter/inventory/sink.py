"""Where inventory sends what it learns. Implemented by the app, which prices and renders each change."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Protocol

from exporter.inventory.node import Node


class InventorySink(Protocol):
    def replace_all(self, nodes: Iterable[Node]) -> None:
        """The complete current set after a (re)list or a nodes-file read: nodes not in it are gone."""

    def upsert(self, node: Node) -> None:
        """A node was added or modified (callers may skip calling this when the parsed Node is unchanged)."""

    def delete(self, uid: str) -> None:
        """The node with this uid was deleted."""
