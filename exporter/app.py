"""Wires the data path: inventory → pricing engine → metrics store, plus the refresh scheduler.

The app is the inventory's sink: each node change is priced at once (quotes come from memory) and
rendered into the store. The scheduler (`exporter.scheduler`) refreshes each source on its own thread, off
the request path, and re-prices every node only when a refresh says quotes changed.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable
from importlib import resources
from typing import Protocol

from exporter.cache import PriceCache
from exporter.clock import SYSTEM_CLOCK, Clock
from exporter.config import Config, ConfigError, billing_tag_keys, enabled_billing
from exporter.config.sources.aws import NET_COST_BASES, AwsCurSettings
from exporter.health import Health
from exporter.inventory.node import Node
from exporter.inventory.parse import SpotLabel
from exporter.inventory.sharding import Shard
from exporter.metrics.collector import ExporterCollector, WatchStats
from exporter.metrics.live import LiveRegistry
from exporter.metrics.process import ProcessMetrics
from exporter.metrics.store import NodeMetricsStore
from exporter.pricing.engine import PricingEngine
from exporter.pricing.source import PriceSource
from exporter.pricing.sources.context import SourceContext
from exporter.pricing.sources.custom import CustomPrices, CustomTableError
from exporter.pricing.sources.offline import OfflinePrices
from exporter.pricing.sources.registry import entries
from exporter.scheduler import RefreshScheduler

log = logging.getLogger(__name__)


class Inventory(Protocol):
    synced: threading.Event
    shard: Shard  # the nodes it serves (with automatic sharding, known once `synced`)

    def run(self, stop: threading.Event) -> None: ...


def demo_nodes_path() -> str:
    """The built-in demo inventory: realistic EKS, GKE and AKS nodes, on-demand and spot."""
    return str(resources.files("exporter.demo").joinpath("nodes.json"))


def build_sources(config: Config, context: SourceContext) -> list[PriceSource]:
    """Every enabled source: the registered cloud sources (billing first, then shelf, each kind in its
    entries' order), then the custom and offline tables."""
    sources: list[PriceSource] = []
    pricing = config.pricing
    currency = pricing.currency
    health = context.health
    for entry in entries():
        settings = config.sources.get(entry.key)  # absent: a Config built in code, not loaded
        if settings is not None and settings.enabled:
            sources.append(entry.build(settings, context))
    if sources:
        context.sdk_verify()  # a bundle that cannot be written stops the start, not the first refresh
    if pricing.custom.file:
        try:
            custom = CustomPrices(
                pricing.custom.file,
                health.integration("custom_prices"),
                currency,
                pricing.custom.reload_interval_seconds,
                context.clock,
            )
        except (OSError, CustomTableError) as err:
            raise ConfigError("pricing.custom.file", str(err)) from err
        sources.append(custom)
    if pricing.offline.enabled:
        sources.append(OfflinePrices.load(pricing.offline.file, currency=currency))
    return sources


class App:
    def __init__(self, config: Config, clock: Clock = SYSTEM_CLOCK) -> None:
        """`clock`: the time every price source reads and sleeps on, and the scheduler's due times (tests
        pass a fake one and drive `scheduler.tick()`)."""
        self.config = config
        self._clock = clock
        self.health = Health()
        self.store = NodeMetricsStore(tag_keys=billing_tag_keys(config))
        self.cache: PriceCache | None = None
        if config.cache.enabled and not config.demo:
            self.cache = PriceCache(config.cache.path, self.health.integration("cache"))
        billing = list(enabled_billing(config))
        if billing and self.cache is None:
            # Billed rates and observed hours live in memory only: say so once, not at every lost restart.
            log.warning(
                "no cache: %s keeps billed rates and the hours each node was seen in memory only; a restart "
                "loses them (shelf prices until the first query answers, and backfill needs the cache)",
                ", ".join(billing),
            )
        _warn_discount_on_a_net_bill(config)
        context = SourceContext(
            self.health,
            self.cache,
            config.pricing.currency,
            clock,
            ca_file=config.tls.ca_file,
            clouds=config.clouds,
            account_wide=lambda: self.inventory.shard.index == 0,
        )
        self.engine = PricingEngine(build_sources(config, context), config.pricing, self.health)
        self._lock = threading.Lock()
        self._nodes: dict[str, Node] = {}  # name → the node shown under it
        self._shadowed: dict[str, Node] = {}  # name → a node with the same name, not shown (see replace_all)
        self._names: dict[str, str] = {}  # uid → name, of both
        self._priced = threading.Event()
        self._watch_stats: WatchStats | None = None
        self.inventory = self._build_inventory()
        self.registry = LiveRegistry()
        self.registry.register(
            ExporterCollector(
                self.health,
                self.store,
                self.ready,
                self._watch_stats,
                self.engine.bills,
                lambda: self.cache is not None and self.cache.persistent,
                lambda: self.inventory.shard,
            )
        )
        self._process = ProcessMetrics()
        self.registry.register(self._process)
        self._threads: list[threading.Thread] = []
        self.scheduler = RefreshScheduler(
            self.engine.sources,
            lambda: self.engine.lookups(self.nodes()),
            self.reprice_all,
            self._priced,
            clock,
        )

    def _build_inventory(self) -> Inventory:
        kube = self.config.kubernetes
        sharding = self.config.sharding
        shard = Shard(sharding.shard, sharding.total_shards)
        spot_labels = [SpotLabel.parse(text) for text in kube.spot_labels]
        # The labels a Node keeps: the billing tag allowlist's, or all of them for a custom price table,
        # whose selectors may name any label and may change when the table is reloaded.
        keep_labels = None if self.config.pricing.custom.file else billing_tag_keys(self.config)
        nodes_file = demo_nodes_path() if self.config.demo else kube.nodes_file
        if nodes_file:
            from exporter.inventory.nodes_file import NodesFileWatcher

            return NodesFileWatcher(
                nodes_file,
                self,
                self.health.integration("nodes_file"),
                self.health,
                spot_labels=spot_labels,
                keep_labels=keep_labels,
                clock=self._clock,
                shard=shard,
            )
        from exporter.inventory.kube import AutoSharding, KubeNodeWatcher

        watcher = KubeNodeWatcher(
            self,
            self.health.integration("kubernetes"),
            self.health,
            spot_labels=spot_labels,
            keep_labels=keep_labels,
            kubeconfig=kube.kubeconfig or None,
            context=kube.context or None,
            page_size=kube.page_size,
            watch_timeout_seconds=kube.watch_timeout_seconds,
            service_account_dir=kube.service_account_dir,
            ca_file=self.config.tls.ca_file,
            shard=shard,
            auto_sharding=AutoSharding(sharding.pod_namespace, sharding.pod) if sharding.automatic else None,
        )
        self._watch_stats = watcher
        return watcher

    # InventorySink -----------------------------------------------------------------------------------
    # One node per name is shown: two Node objects with one name (a nodes file listing it twice, a node
    # re-created while the old object is still listed) would otherwise be two series sets for one node.
    # The last one written wins; the other is kept aside, to be shown again if the winner is deleted first.
    def replace_all(self, nodes: Iterable[Node]) -> None:
        fresh: dict[str, Node] = {}
        shadowed: dict[str, Node] = {}
        for node in nodes:
            other = fresh.get(node.name)
            if other is not None and other.uid != node.uid:
                shadowed[node.name] = other
                self._name_conflict(node, other)
            fresh[node.name] = node
        with self._lock:
            self._nodes, self._shadowed = fresh, shadowed
            self._names = {n.uid: n.name for n in (*fresh.values(), *shadowed.values())}
        self.store.retain({node.uid for node in fresh.values()})
        for node in fresh.values():
            self._render(node)

    def upsert(self, node: Node) -> None:
        with self._lock:
            shown = self._nodes.get(node.name)
            displaced = shown if shown is not None and shown.uid != node.uid else None
            if displaced is not None:
                self._set_shadowed(displaced)
            elif (aside := self._shadowed.get(node.name)) is not None and aside.uid == node.uid:
                del self._shadowed[node.name]
            self._nodes[node.name] = node
            self._names[node.uid] = node.name
        if displaced is not None:
            self._name_conflict(node, displaced)
            self.store.delete(displaced.uid)
        self._render(node)

    def delete(self, uid: str) -> None:
        with self._lock:
            name = self._names.pop(uid, None)
            shown = self._nodes.get(name) if name is not None else None
            promoted = None
            if name is not None and shown is not None and shown.uid == uid:
                del self._nodes[name]
                promoted = self._shadowed.pop(name, None)
                if promoted is not None:
                    self._nodes[name] = promoted
            elif name is not None and (aside := self._shadowed.get(name)) is not None and aside.uid == uid:
                del self._shadowed[name]
        self.store.delete(uid)
        if promoted is not None:
            self._render(promoted)

    def _set_shadowed(self, node: Node) -> None:
        """Under the lock: keep `node` aside (only the latest loser per name: older ones are forgotten)."""
        older = self._shadowed.get(node.name)
        if older is not None and older.uid != node.uid:
            self._names.pop(older.uid, None)
        self._shadowed[node.name] = node

    def _name_conflict(self, winner: Node, loser: Node) -> None:
        self.health.invalid(
            "node_name_conflict",
            winner.name,
            f"two Node objects are named {winner.name!r} (uids {loser.uid} and {winner.uid}): "
            f"serving the last one written ({winner.uid})",
        )

    def _render(self, node: Node) -> None:
        """Price and render one node; a failure skips only this node (counted), never the rest of a list."""
        try:
            price = self.engine.price(node)
            self.store.set(node, price, "" if price is not None else self.engine.unpriced_reason(node))
        except Exception as err:
            self.health.invalid("node", node.name, f"pricing or rendering failed: {err!r}")

    # Lifecycle ---------------------------------------------------------------------------------------
    def ready(self) -> bool:
        return self.inventory.synced.is_set() and self._priced.is_set()

    def nodes(self) -> list[Node]:
        with self._lock:
            return list(self._nodes.values())

    def reprice_all(self) -> None:
        for node in self.nodes():
            self._render(node)

    def start(self, stop: threading.Event) -> None:
        threads = (
            ("inventory", self.inventory.run, (stop,)),
            ("scheduler", self.scheduler.run, (stop, self.inventory.synced)),
            ("process-sampler", self._process.run, (stop,)),
        )
        for name, target, args in threads:
            thread = threading.Thread(target=target, args=args, name=name, daemon=True)
            thread.start()
            self._threads.append(thread)

    def alive(self) -> bool:
        return all(thread.is_alive() for thread in self._threads)

    def running(self) -> bool:
        """Whether a worker thread has yet to end (after `stop` was set: whether shutdown still waits)."""
        return any(thread.is_alive() for thread in self._threads)

    def close(self) -> None:
        """Close the cache once the write in flight (if any) committed: the file is whole, its WAL folded
        in. A refresh still running finds it closed and fails that write only."""
        if self.cache is not None:
            self.cache.close()


def _warn_discount_on_a_net_bill(config: Config) -> None:
    """A net CUR basis already carries an EDP or private rate: the global discount belongs at 0 then."""
    cur, discount = config.sources.get("aws.cur"), config.pricing.discounts.aws
    if isinstance(cur, AwsCurSettings) and cur.enabled and cur.cost_basis in NET_COST_BASES and discount:
        log.warning(
            "pricing.discounts.aws is %s while aws.cur.cost_basis is %s, whose rates already carry your "
            "EDP or private-rate discount: set pricing.discounts.aws to 0 (docs/pricing.md, 'On top of "
            "every list price')",
            discount,
            cur.cost_basis,
        )
