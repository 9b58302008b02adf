"""The configuration model: the core sections (web, log, kubernetes, cache, pricing) and the root `Config`,
whose `sources` holds each registered source's own settings type by its key."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from types import MappingProxyType

from exporter.config.settings import BillingSettings, SourceSettings

SOURCE_KINDS = ("billing", "shelf", "custom", "offline")
PROVIDERS = ("aws", "gcp", "azure")


@dataclass(frozen=True)
class WebConfig:
    listen_address: str = ":9798"
    telemetry_path: str = "/metrics"


@dataclass(frozen=True)
class LogConfig:
    level: str = "info"
    format: str = "logfmt"


@dataclass(frozen=True)
class KubernetesConfig:
    kubeconfig: str = (
        ""  # empty: in-cluster when KUBERNETES_SERVICE_HOST is set, else KUBECONFIG/~/.kube/config
    )
    context: str = ""
    nodes_file: str = ""  # read `kubectl get nodes -o json` output instead of a cluster
    service_account_dir: str = "/var/run/secrets/kubernetes.io/serviceaccount"  # in-cluster token and CA
    page_size: int = 500
    watch_timeout_seconds: int = 300
    spot_labels: tuple[str, ...] = (
        "eks.amazonaws.com/capacityType=SPOT",
        "karpenter.sh/capacity-type=spot",
        "cloud.google.com/gke-spot=true",
        "cloud.google.com/gke-preemptible=true",
        "cloud.google.com/gke-provisioning=spot",
        "kubernetes.azure.com/scalesetpriority=spot",
        "lifecycle=Ec2Spot",
        "node.kubernetes.io/lifecycle=spot",
    )


@dataclass(frozen=True)
class CacheConfig:
    enabled: bool = True
    path: str = "/var/cache/node-cost-exporter/cache.sqlite"


@dataclass(frozen=True)
class SplitConfig:
    """Relative weights used to split a node's hourly price into per-core, per-GiB and per-GPU prices.

    Defaults are Google's published us-central1 on-demand rates for N1 cores ($0.031611/h), N1 memory
    ($0.004237/GiB-h) and an NVIDIA T4 ($0.35/h): only their ratios matter.
    """

    cpu_core: Decimal = Decimal("0.031611")
    memory_gib: Decimal = Decimal("0.004237")
    gpu: Decimal = Decimal("0.35")


@dataclass(frozen=True)
class DiscountConfig:
    """Fraction (0 ≤ d < 1) taken off on-demand list prices, per provider: a customer's private rate."""

    aws: Decimal = Decimal(0)
    gcp: Decimal = Decimal(0)
    azure: Decimal = Decimal(0)


@dataclass(frozen=True)
class CustomPricesConfig:
    file: str = ""  # YAML or CSV; see config/custom-prices.example.yaml
    reload_interval_seconds: float = 30.0  # how often the file is checked for changes


@dataclass(frozen=True)
class OfflinePricesConfig:
    enabled: bool = True
    file: str = ""  # empty: the bundled snapshot


@dataclass(frozen=True)
class PricingConfig:
    precedence: tuple[str, ...] = SOURCE_KINDS
    currency: str = "USD"
    discounts: DiscountConfig = field(default_factory=DiscountConfig)
    split: SplitConfig = field(default_factory=SplitConfig)
    custom: CustomPricesConfig = field(default_factory=CustomPricesConfig)
    offline: OfflinePricesConfig = field(default_factory=OfflinePricesConfig)


def default_sources() -> Mapping[str, SourceSettings]:
    """Every registered source's default settings (all disabled), by key, read-only like the rest of
    the config.

    The registry is imported here, when called, not at module level: it imports the source modules,
    which import this package for their settings bases, so a module-level import would be a cycle.
    """
    from exporter.pricing.sources.registry import entries

    return MappingProxyType({entry.key: entry.settings() for entry in entries()})


@dataclass(frozen=True)
class Config:
    web: WebConfig = field(default_factory=WebConfig)
    log: LogConfig = field(default_factory=LogConfig)
    kubernetes: KubernetesConfig = field(default_factory=KubernetesConfig)
    cache: CacheConfig = field(default_factory=CacheConfig)
    pricing: PricingConfig = field(default_factory=PricingConfig)
    demo: bool = False
    # Each registered source's settings by its key ("aws.cur"), read from the YAML section aws: {cur: …}.
    sources: Mapping[str, SourceSettings] = field(default_factory=default_sources)


def tag_label(key: str) -> str:
    """The label name of an allowlisted billing tag: `tag_` + the key, other characters as `_`."""
    return "tag_" + "".join(c if c.isascii() and (c.isalnum() or c == "_") else "_" for c in key)


def billing_tag_keys(config: Config) -> tuple[str, ...]:
    """Every allowlisted tag key of the enabled billing sources, in first-seen order."""
    keys: dict[str, None] = {}
    for settings in config.sources.values():
        if isinstance(settings, BillingSettings) and settings.enabled:
            keys.update(dict.fromkeys(settings.tags))
    return tuple(keys)
