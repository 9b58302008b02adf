"""Per node, the first source in precedence order that has a price; then discount and per-unit split.

The engine holds no state of its own beyond its configuration: pricing a node is a pure function of the
node and the sources' in-memory quotes, so a scrape never waits on a cloud and re-pricing is cheap.
"""

from __future__ import annotations

import logging
import math
import threading
from collections.abc import Iterable, Sequence
from dataclasses import replace
from decimal import Decimal

from exporter.config import PricingConfig
from exporter.health import Health
from exporter.inventory.node import CapacityType, Node
from exporter.pricing.quote import Basis, BillFacts, NodePrice, Quote
from exporter.pricing.source import PriceSource
from exporter.pricing.sources.billing import BillingSource

log = logging.getLogger(__name__)

_GIB = Decimal(2**30)
_LIST_KINDS = ("shelf", "offline")
# The clouds the offline table and the price lists know, and in each a region nearly every type is sold
# in: a type the offline table has there but not in the node's region means the region is not covered.
_REFERENCE_REGIONS = {"aws": "us-east-1", "gcp": "us-central1", "azure": "eastus"}
MAX_HOURLY = Decimal(10_000)
"""The most a node, or one core, GiB or GPU of it, may cost per hour (and 24x that per billed day), in any
currency. Beyond it, or not finite, a price is a source's error: it is not exported, but counted
(`nodecost_invalid_inputs_total{kind="price"}`) and logged with its source, and the next source is asked."""


class PricingEngine:
    def __init__(self, sources: Sequence[PriceSource], config: PricingConfig, health: Health) -> None:
        rank = {kind: i for i, kind in enumerate(config.precedence)}
        # Sources whose kind is not in the precedence list are switched off, not silently appended.
        self.sources = sorted((s for s in sources if s.kind in rank), key=lambda s: rank[s.kind])
        self.bills = [s for s in self.sources if isinstance(s, BillingSource)]
        self._config = config
        self._health = health
        self._told: set[tuple[str, str]] = set()  # (node uid, reason) already logged as unpriced
        self._told_lock = threading.Lock()

    def price(self, node: Node) -> NodePrice | None:
        """The node's price, or None when no source can price it (it is then reported as unpriced)."""
        for source in self.sources:
            try:
                quote = source.quote(node)
            except Exception as err:  # one source's bug must not unprice or drop the node
                self._health.invalid("quote", f"{source.name}:{node.name}", repr(err))
                continue
            if quote is not None and quote.currency == self._config.currency:
                price = self._finish(node, source, quote)
                problem = _implausible(price)
                if problem is None:
                    return price
                self._health.invalid("price", f"{source.name}:{node.name}", f"{problem}: not exported")
        return None

    def unpriced_reason(self, node: Node) -> str:
        """Why `price` had nothing for the node, as the bounded `reason` label of nodecost_node_unpriced;
        logged once per node and reason, not on every pass."""
        reason, detail = self._unpriced_reason(node)
        with self._told_lock:
            first = (node.uid, reason) not in self._told and len(self._told) < 10_000
            if first:
                self._told.add((node.uid, reason))
        if first:
            log.warning("node %s is unpriced (%s): %s", node.name, reason, detail)
        return reason

    def _unpriced_reason(self, node: Node) -> tuple[str, str]:
        if not node.provider_id:
            return "no_provider_id", "it has no spec.providerID, and no custom price matches it"
        reference = _REFERENCE_REGIONS.get(node.provider)
        if reference is None:
            return "unknown_provider", f"no source prices provider {node.provider!r}: add a custom price"
        waiting = [s.name for s in self.sources if s.refresh_interval_seconds is not None and s.pending()]
        if waiting:
            return "no_price_yet", f"waiting for {', '.join(waiting)} to answer"
        twin = replace(_on_demand(node), region=reference)
        offline = [s for s in self.sources if s.kind == "offline"]
        if node.region != reference and any(_quiet_quote(s, twin) is not None for s in offline):
            region = node.region or "(unknown)"
            return "region_not_covered", f"no price list has {node.instance_type} in region {region}"
        return "unknown_instance_type", f"no price list has instance type {node.instance_type!r}"

    @staticmethod
    def lookups(nodes: Iterable[Node]) -> list[Node]:
        """The nodes, and the on-demand twin of each spot node: what the sources must keep prices for,
        since a spot node's list price is its twin's."""
        out = list(nodes)
        out += [_on_demand(node) for node in out if node.capacity_type is not CapacityType.ON_DEMAND]
        return out

    def list_price(self, node: Node) -> tuple[Decimal, str] | None:
        """The on-demand list price of the node's type (shelf, else offline), whatever priced the node:
        the reference that shows what spot capacity, a custom rate or the bill saves."""
        twin = _on_demand(node)
        for source in self.sources:
            if source.kind not in _LIST_KINDS:
                continue
            try:
                quote = source.quote(twin)
            except Exception as err:
                self._health.invalid("quote", f"{source.name}:{node.name}", repr(err))
                continue
            if (
                quote is not None
                and quote.basis is Basis.ON_DEMAND
                and quote.currency == self._config.currency
            ):
                if _beyond_bound(quote.hourly):
                    problem = f"list price {quote.hourly} is beyond {MAX_HOURLY}/h or not finite"
                    self._health.invalid("price", f"{source.name}:{node.name}", f"{problem}: not exported")
                    continue
                return quote.hourly, source.name
        return None

    def _finish(self, node: Node, source: PriceSource, quote: Quote) -> NodePrice:
        factor = Decimal(1)
        discount = getattr(self._config.discounts, node.provider, Decimal(0))
        if quote.basis is Basis.ON_DEMAND and node.capacity_type is CapacityType.ON_DEMAND:
            factor -= discount
        hourly = quote.hourly * factor
        if quote.basis is Basis.BILLED and quote.on_demand_hourly:
            # The private rate applies to the usage the bill charged at list rates, and only to that.
            hourly = quote.hourly - discount * quote.on_demand_hourly
        cpu, mem, gpu = quote.cpu_core_hourly, quote.memory_gib_hourly, quote.gpu_hourly
        if cpu is not None and mem is not None:
            cpu, mem = cpu * factor, mem * factor
            gpu = gpu * factor if gpu is not None else None
        else:
            cpu, mem, gpu = self._split(node, hourly)
        if node.capacity_type is CapacityType.ON_DEMAND and source.kind in _LIST_KINDS:
            # Every list source before this one had no price for the node: this quote is its list price.
            listed: tuple[Decimal, str] | None = (quote.hourly, source.name)
        else:
            listed = self.list_price(node)
        return NodePrice(
            hourly,
            quote.currency,
            source.name,
            quote.basis,
            cpu,
            mem,
            gpu,
            listed[0] if listed else None,
            listed[1] if listed else "",
            self._bill_facts(node),
        )

    def _bill_facts(self, node: Node) -> BillFacts | None:
        for bill in self.bills:
            facts = bill.facts(node)
            if facts is not None:
                return facts
        return None

    def _split(self, node: Node, hourly: Decimal) -> tuple[Decimal | None, Decimal | None, Decimal | None]:
        """Share the hourly price across cores, GiB and GPUs in the configured weight ratio."""
        weights = self._config.split
        cores = Decimal(str(node.cpu_cores))
        gib = Decimal(node.memory_bytes) / _GIB
        gpus = Decimal(node.gpu_count)
        total = cores * weights.cpu_core + gib * weights.memory_gib + gpus * weights.gpu
        if cores <= 0 or gib <= 0 or total <= 0:
            return None, None, None  # capacity unknown: no honest per-unit price
        scale = hourly / total
        gpu = scale * weights.gpu if node.gpu_count else None
        return scale * weights.cpu_core, scale * weights.memory_gib, gpu


def _quiet_quote(source: PriceSource, node: Node) -> Quote | None:
    """A quote for a probe, not a node: a failure here was already counted when the node was priced."""
    try:
        return source.quote(node)
    except Exception:
        return None


def _beyond_bound(value: Decimal | float | None, bound: Decimal = MAX_HOURLY) -> bool:
    if value is None:
        return False
    if isinstance(value, float):
        return not math.isfinite(value) or abs(value) > bound
    return not value.is_finite() or abs(value) > bound


def _implausible(price: NodePrice) -> str | None:
    """What in the price is beyond `MAX_HOURLY` or not finite, or None when nothing is."""
    hourly: dict[str, Decimal | float | None] = {
        "hourly cost": price.hourly,
        "CPU core cost": price.cpu_core_hourly,
        "GiB cost": price.memory_gib_hourly,
        "GPU cost": price.gpu_hourly,
        "list price": price.list_hourly,
    }
    billed = price.billed
    if billed is not None:
        hourly |= {
            "billed hourly cost": billed.hourly,
            "billed on-demand hourly cost": billed.on_demand_hourly,
            "network hourly cost": billed.network_hourly,
        }
    for what, value in hourly.items():
        if _beyond_bound(value):
            return f"{what} {value} is beyond {MAX_HOURLY}/h or not finite"
    for day, cost in zip(billed.day_names, billed.day_costs, strict=True) if billed is not None else ():
        if _beyond_bound(cost, MAX_HOURLY * 24):
            return f"billed cost {cost} on {day} is beyond {MAX_HOURLY * 24}/day or not finite"
    return None


def _on_demand(node: Node) -> Node:
    """The same node as if on-demand: the key of its list price."""
    if node.capacity_type is CapacityType.ON_DEMAND:
        return node
    return node.reshaped(
        capacity_type=CapacityType.ON_DEMAND,
        cpu_cores=node.cpu_cores,
        memory_bytes=node.memory_bytes,
        gpu_count=node.gpu_count,
    )
