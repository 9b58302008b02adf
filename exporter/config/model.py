"""The configuration model: the core sections (web, log, kubernetes, sharding, cache, pricing), the bases
every cloud source's settings extend (each checking its own fields in `validate`; the sources' own types are
in `exporter/config/sources/`), and the root `Config`, whose `sources` holds them by section key."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from types import MappingProxyType
from typing import ClassVar

from exporter.config.errors import ConfigError

SOURCE_KINDS = ("billing", "shelf", "custom", "offline")
PROVIDERS = ("aws", "gcp", "azure")


# Where `--demo` listens unless web.listen_address is set (flag, environment or file): this host only.
DEMO_LISTEN_ADDRESS = "127.0.0.1:9798"


@dataclass(frozen=True)
class WebConfig:
    listen_address: str = ":9798"
    telemetry_path: str = "/metrics"

    def __post_init__(self) -> None:
        # The server answers these itself; metrics there would hide a probe or the landing page.
        if self.telemetry_path in ("/", "/healthz", "/readyz"):
            what = "the landing page" if self.telemetry_path == "/" else "a health probe"
            raise ConfigError("web.telemetry_path", f"{self.telemetry_path} is {what}, pick another path")


@dataclass(frozen=True)
class LogConfig:
    level: str = "info"
    format: str = "logfmt"
    level_sdk: str = "warn"  # the SDKs' and HTTP libraries' own lines, never more verbose than `level`


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
class ShardingConfig:
    """Which nodes this replica serves (docs/operations.md, "Sharding"): kube-state-metrics' flags."""

    shard: int = 0  # this replica's shard, 0-based
    total_shards: int = 1  # 1: every node, unsharded
    # Automatic sharding in a StatefulSet: the shard is the pod's ordinal, the total its set's replicas.
    pod: str = ""  # this pod's name; empty with pod_namespace set: the hostname (a StatefulSet pod's name)
    pod_namespace: str = ""  # set to shard automatically

    @property
    def automatic(self) -> bool:
        return bool(self.pod_namespace)


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


@dataclass(frozen=True)
class TlsConfig:
    """Trust for the HTTPS clients (docs/operations.md, "Corporate and sovereign networks")."""

    # A PEM bundle trusted beside the public roots by every cloud SDK and a kubeconfig's cluster (a
    # TLS-inspecting proxy's CA); the in-cluster API server stays verified with the service account's CA.
    ca_file: str = ""


SQL_NAME = re.compile(r"[A-Za-z0-9_-]+")  # a name spliced into SQL: a project, dataset, table, …


@dataclass(frozen=True)
class SourceSettings:
    """What every source's settings have: the switch that builds it."""

    section_key: ClassVar[str] = ""  # set by @section: the dotted config section, "aws.cur"
    enabled: bool = False

    def validate(self, key: str, config: Config) -> None:
        """Raise ConfigError naming `<key>.<field>`; `config` is there for rules across sections."""


@dataclass(frozen=True)
class CloudSettings:
    """Settings every source of one cloud shares, read from that cloud's section beside its sources'
    (`azure.cloud`); a type is tied to its cloud by `@cloud_section("azure")`."""

    cloud_key: ClassVar[str] = ""  # set by @cloud_section: "azure"

    def validate(self, config: Config) -> None:
        """Raise ConfigError naming `<cloud>.<field>`."""


@dataclass(frozen=True)
class ShelfSettings(SourceSettings):
    """Common settings of a cloud's public price-list source."""

    endpoint_url: str = ""  # empty: the public endpoint; set for VPC endpoints, proxies, sovereign clouds
    ttl_seconds: float = 86_400.0  # a price older than this is fetched again (list prices change rarely)
    refresh_interval_seconds: float = 60.0  # how often stale or failed prices are looked at again
    concurrency: int = 4  # API calls in flight at once
    retries: int = 3  # retries of a throttled, timed-out or 5xx call
    backoff_seconds: float = 1.0  # first retry delay; doubles each retry, jittered
    backoff_max_seconds: float = 30.0
    timeout_seconds: float = 30.0  # per API call

    def validate(self, key: str, config: Config) -> None:
        _check_endpoint_and_retries(key, self.endpoint_url, self.retries)
        _check_positive(self, key, ("ttl_seconds", "refresh_interval_seconds", *_TIMING))
        if not 1 <= self.concurrency <= 64:
            raise ConfigError(f"{key}.concurrency", "must be between 1 and 64")


@dataclass(frozen=True)
class BillingSettings(SourceSettings):
    """Common settings of a cloud's billing-data source (docs/pricing.md, "Billing")."""

    lookback_days: int = 3  # a billed rate averages the node's latest this-many complete billing days
    refresh_interval_seconds: float = 21_600.0  # bills change a few times a day; every query costs money
    retry_interval_seconds: float = 600.0  # after a failed query
    settle_hours: float = 24.0  # a day counts once it ended this long ago and the bill holds later usage
    # Billed rates are served this long after the last successful query, then shelf prices take over:
    # three days ride out a weekend of broken credentials without every reserved node jumping to list
    # price, yet an expired reservation or savings plan shows within days.
    max_staleness_seconds: float = 259_200.0
    timeout_seconds: float = 600.0  # one query, from submission to its last page
    retries: int = 3  # retries of a throttled, timed-out or 5xx query
    backoff_seconds: float = 2.0
    backoff_max_seconds: float = 60.0
    endpoint_url: str = ""  # empty: the cloud's public endpoint
    tags: tuple[str, ...] = ()  # billing tags/labels shown on nodecost_node_billing_tags_info
    presence_retention_days: int = 35  # hours each node was seen, kept for backfill and apportioning

    def validate(self, key: str, config: Config) -> None:
        _check_endpoint_and_retries(key, self.endpoint_url, self.retries)
        if not 1 <= self.lookback_days <= 31:
            raise ConfigError(f"{key}.lookback_days", "must be between 1 and 31")
        if not self.lookback_days + 2 <= self.presence_retention_days <= 400:
            raise ConfigError(f"{key}.presence_retention_days", "must be between lookback_days + 2 and 400")
        intervals = ("refresh_interval_seconds", "retry_interval_seconds", "max_staleness_seconds")
        _check_positive(self, key, (*intervals, *_TIMING))
        if self.settle_hours < 0:
            raise ConfigError(f"{key}.settle_hours", "must not be negative")
        for i, tag in enumerate(self.tags):
            if not tag:
                raise ConfigError(f"{key}.tags[{i}]", "must not be empty")


_TIMING = ("timeout_seconds", "backoff_seconds", "backoff_max_seconds")  # every source's call timing


def _check_endpoint_and_retries(key: str, endpoint_url: str, retries: int) -> None:
    if endpoint_url and not endpoint_url.startswith(("http://", "https://")):
        raise ConfigError(f"{key}.endpoint_url", f"must be an http(s) URL, got {endpoint_url!r}")
    if not 0 <= retries <= 10:
        raise ConfigError(f"{key}.retries", "must be between 0 and 10")


def _check_positive(settings: SourceSettings, key: str, names: tuple[str, ...]) -> None:
    for name in names:
        if getattr(settings, name) <= 0:
            raise ConfigError(f"{key}.{name}", "must be positive")


@dataclass(frozen=True)
class Config:
    web: WebConfig = field(default_factory=WebConfig)
    log: LogConfig = field(default_factory=LogConfig)
    kubernetes: KubernetesConfig = field(default_factory=KubernetesConfig)
    sharding: ShardingConfig = field(default_factory=ShardingConfig)
    cache: CacheConfig = field(default_factory=CacheConfig)
    pricing: PricingConfig = field(default_factory=PricingConfig)
    tls: TlsConfig = field(default_factory=TlsConfig)
    demo: bool = False
    # Each registered source's settings by its key ("aws.cur"), read from the YAML section aws: {cur: …}.
    sources: Mapping[str, SourceSettings] = field(default_factory=lambda: MappingProxyType({}))
    # Each cloud's shared settings by cloud ("azure"), read from the scalar keys of its section.
    clouds: Mapping[str, CloudSettings] = field(default_factory=lambda: MappingProxyType({}))


def tag_label(key: str) -> str:
    """The label name of an allowlisted billing tag: `tag_` + the key, other characters as `_`."""
    return "tag_" + "".join(c if c.isascii() and (c.isalnum() or c == "_") else "_" for c in key)


def billing_tag_keys(config: Config) -> tuple[str, ...]:
    """Every allowlisted tag key of the enabled billing sources, in first-seen order."""
    keys: dict[str, None] = {}
    for settings in enabled_billing(config).values():
        keys.update(dict.fromkeys(settings.tags))
    return tuple(keys)


def enabled_billing(config: Config) -> dict[str, BillingSettings]:
    """The enabled billing sources' settings, by section key."""
    return {
        key: settings
        for key, settings in config.sources.items()
        if isinstance(settings, BillingSettings) and settings.enabled
    }
