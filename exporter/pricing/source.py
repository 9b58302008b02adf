"""The one small interface every price source implements (billing, shelf, custom table, offline table)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Protocol

from exporter.inventory.node import Node
from exporter.pricing.quote import Quote


class PriceSource(Protocol):
    name: str  # label value on every series it prices: "offline", "custom", "aws_pricing", …
    kind: str  # one of config.SOURCE_KINDS: its place in the precedence
    refresh_interval_seconds: float | None  # None: never refreshed by the scheduler

    def quote(self, node: Node) -> Quote | None:
        """A price from memory only; never blocks on I/O. None when this source cannot price the node."""

    def wanted(self, nodes: Iterable[Node]) -> None:
        """The nodes present now, so the next refresh fetches what they need and no more."""

    def pending(self) -> bool:
        """True when `quote` met a node it has never fetched a price for: refresh now, not at the interval."""

    def refresh(self) -> bool:
        """Fetch or re-read off the request path; report health; True when quotes may have changed."""
