"""One typed configuration model, loaded from YAML, then environment, then flags (later wins).

Every value is validated at start; a bad one raises `ConfigError` naming the dotted key, so a typo in a
ConfigMap fails the rollout instead of silently pricing with defaults.
"""

from __future__ import annotations

import dataclasses
import os
import re
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

import yaml

ENV_PREFIX = "NODECOST_"
_SQL_NAME = re.compile(r"[A-Za-z0-9_-]+")
_AZURE_SCOPE = re.compile(r"/subscriptions/[0-9A-Fa-f-]{36}(/resourceGroups/[-\w.()]+)?/?")

SOURCE_KINDS = ("billing", "shelf", "custom", "offline")
PROVIDERS = ("aws", "gcp", "azure")


class ConfigError(ValueError):
    """Invalid configuration; the message starts with the offending key."""

    def __init__(self, key: str, problem: str) -> None:
        super().__init__(f"{key}: {problem}")
        self.key = key


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
class ShelfSettings:
    """Common settings of a cloud's public price-list source."""

    enabled: bool = False
    endpoint_url: str = ""  # empty: the public endpoint; set for VPC endpoints, proxies, sovereign clouds
    ttl_seconds: float = 86_400.0  # a price older than this is fetched again (list prices change rarely)
    refresh_interval_seconds: float = 60.0  # how often stale or failed prices are looked at again
    concurrency: int = 4  # API calls in flight at once
    retries: int = 3  # retries of a throttled, timed-out or 5xx call
    backoff_seconds: float = 1.0  # first retry delay; doubles each retry, jittered
    backoff_max_seconds: float = 30.0
    timeout_seconds: float = 30.0  # per API call


@dataclass(frozen=True)
class AwsPricingSettings(ShelfSettings):
    region: str = "us-east-1"  # the Price List API's endpoint region: us-east-1, ap-south-1 or eu-central-1


@dataclass(frozen=True)
class AwsSpotSettings(ShelfSettings):
    ttl_seconds: float = 300.0  # spot prices move: refetched every 5 minutes
    product_description: str = "Linux/UNIX (Amazon VPC)"


@dataclass(frozen=True)
class BillingSettings:
    """Common settings of a cloud's billing-data source (docs/pricing.md, "Billing")."""

    enabled: bool = False
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


@dataclass(frozen=True)
class AwsCurSettings(BillingSettings):
    region: str = "us-east-1"  # region of the Athena workgroup and the CUR table
    database: str = ""  # Glue database of the CUR table
    table: str = ""
    workgroup: str = "primary"
    output_location: str = ""  # s3://bucket/prefix/ for query results; empty: the workgroup's setting
    cur_version: str = "2.0"  # "2.0" (Data Exports, billing_period partitions) or "legacy"
    cost_basis: str = "amortized"  # amortized, amortized_net, unblended or net_unblended
    poll_interval_seconds: float = 2.0  # between GetQueryExecution calls


@dataclass(frozen=True)
class AwsConfig:
    pricing: AwsPricingSettings = field(default_factory=AwsPricingSettings)
    spot: AwsSpotSettings = field(default_factory=AwsSpotSettings)
    cur: AwsCurSettings = field(default_factory=AwsCurSettings)


@dataclass(frozen=True)
class GcpCatalogSettings(ShelfSettings):
    api_key: str = ""  # empty: Application Default Credentials (Workload Identity)


@dataclass(frozen=True)
class GcpBigQuerySettings(BillingSettings):
    project: str = ""  # project of the billing export dataset
    dataset: str = ""
    table: str = ""  # the detailed export: gcp_billing_export_resource_v1_<BILLING_ACCOUNT>
    job_project: str = ""  # project that runs (and pays for) the query; empty: `project`
    location: str = ""  # dataset location (US, EU, …); empty: BigQuery decides
    credit_types: tuple[str, ...] = ()  # credit types subtracted from cost; empty: all


@dataclass(frozen=True)
class GcpConfig:
    catalog: GcpCatalogSettings = field(default_factory=GcpCatalogSettings)
    bigquery: GcpBigQuerySettings = field(default_factory=GcpBigQuerySettings)


@dataclass(frozen=True)
class AzureCostSettings(BillingSettings):
    scope: str = ""  # /subscriptions/<id>, or the AKS node resource group …/resourceGroups/MC_…
    cost_type: str = "AmortizedCost"  # or ActualCost
    min_observed_hours: int = 12  # a day's scale-set cost is apportioned only if the exporter ran this long


@dataclass(frozen=True)
class AzureRetailSettings(ShelfSettings):
    """The Retail Prices API needs nothing beyond the common shelf settings (it takes no credentials)."""


@dataclass(frozen=True)
class AzureConfig:
    retail: AzureRetailSettings = field(default_factory=AzureRetailSettings)
    cost_management: AzureCostSettings = field(default_factory=AzureCostSettings)


@dataclass(frozen=True)
class PricingConfig:
    precedence: tuple[str, ...] = SOURCE_KINDS
    currency: str = "USD"
    discounts: DiscountConfig = field(default_factory=DiscountConfig)
    split: SplitConfig = field(default_factory=SplitConfig)
    custom: CustomPricesConfig = field(default_factory=CustomPricesConfig)
    offline: OfflinePricesConfig = field(default_factory=OfflinePricesConfig)


@dataclass(frozen=True)
class Config:
    web: WebConfig = field(default_factory=WebConfig)
    log: LogConfig = field(default_factory=LogConfig)
    kubernetes: KubernetesConfig = field(default_factory=KubernetesConfig)
    cache: CacheConfig = field(default_factory=CacheConfig)
    pricing: PricingConfig = field(default_factory=PricingConfig)
    aws: AwsConfig = field(default_factory=AwsConfig)
    gcp: GcpConfig = field(default_factory=GcpConfig)
    azure: AzureConfig = field(default_factory=AzureConfig)
    demo: bool = False

    @property
    def sources(self) -> Mapping[str, ShelfSettings | BillingSettings]:
        """Each cloud source's settings by its registry key ("aws.cur")."""
        return {
            f"{cloud}.{section.name}": getattr(getattr(self, cloud), section.name)
            for cloud in PROVIDERS
            for section in dataclasses.fields(getattr(self, cloud))
        }


def load_config(
    path: str | None = None,
    *,
    env: Mapping[str, str] | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> Config:
    """Build the config: YAML file, then `NODECOST_SECTION__KEY` environment variables, then flag overrides.

    `overrides` maps dotted keys (`web.listen_address`) to values, as the CLI flags produce them.
    """
    tree: dict[str, Any] = {}
    if path:
        tree = _read_yaml(path)
    for dotted, raw in _env_overrides(os.environ if env is None else env).items():
        _set_dotted(tree, dotted, _yaml_scalar(dotted, raw))
    for dotted, value in (overrides or {}).items():
        _set_dotted(tree, dotted, value)
    config: Config = _build(Config, tree, "")
    _validate(config)
    return config


def _read_yaml(path: str) -> dict[str, Any]:
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as err:
        raise ConfigError("config.file", f"cannot read {path}: {err.strerror}") from err
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as err:
        raise ConfigError("config.file", f"{path} is not valid YAML: {err}") from err
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError("config.file", f"{path} must hold a mapping at the top level")
    return data


def _env_overrides(env: Mapping[str, str]) -> dict[str, str]:
    out = {}
    for name, value in env.items():
        if name.startswith(ENV_PREFIX) and "__" in name:
            out[name[len(ENV_PREFIX) :].lower().replace("__", ".")] = value
    return out


def _yaml_scalar(key: str, raw: str) -> Any:
    try:
        return yaml.safe_load(raw)
    except yaml.YAMLError as err:
        raise ConfigError(key, f"environment value {raw!r} is not valid YAML") from err


def _set_dotted(tree: dict[str, Any], dotted: str, value: Any) -> None:
    *parents, leaf = dotted.split(".")
    node = tree
    for i, part in enumerate(parents):
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise ConfigError(".".join(parents[: i + 1]), "must be a mapping")
        node = child
    node[leaf] = value


def _build(cls: type[Any], data: Any, prefix: str) -> Any:
    if not isinstance(data, dict):
        raise ConfigError(prefix.rstrip(".") or "config", f"must be a mapping, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    known = {f.name for f in dataclasses.fields(cls)}
    for key in data:
        if key not in known:
            dotted = f"{prefix}{key}"
            raise ConfigError(dotted, f"unknown key (known: {', '.join(sorted(known))})")
    kwargs = {}
    for name in known:
        if name in data:
            kwargs[name] = _coerce(hints[name], data[name], f"{prefix}{name}")
    return cls(**kwargs)


def _coerce(hint: Any, value: Any, key: str) -> Any:
    if dataclasses.is_dataclass(hint):
        return _build(typing.cast(type[Any], hint), value if value is not None else {}, f"{key}.")
    origin = typing.get_origin(hint)
    if origin is tuple:
        if isinstance(value, str):
            value = [v.strip() for v in value.split(",") if v.strip()]
        if not isinstance(value, list):
            raise ConfigError(key, f"must be a list, got {type(value).__name__}")
        return tuple(_coerce(str, v, f"{key}[{i}]") for i, v in enumerate(value))
    if origin in (types.UnionType, typing.Union):
        raise TypeError(f"unsupported config type for {key}")
    if hint is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(key, f"must be true or false, got {value!r}")
    if hint is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise ConfigError(key, f"must be a whole number, got {value!r}")
    if hint is float:
        if isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
        raise ConfigError(key, f"must be a number, got {value!r}")
    if hint is Decimal:
        if isinstance(value, bool) or not isinstance(value, int | float | str):
            raise ConfigError(key, f"must be a decimal number, got {value!r}")
        try:
            number = Decimal(str(value))
        except InvalidOperation as err:
            raise ConfigError(key, f"must be a decimal number, got {value!r}") from err
        if not number.is_finite():
            raise ConfigError(key, f"must be a finite number, got {value!r}")
        return number
    if hint is str:
        if isinstance(value, str):
            return value
        if isinstance(value, int | float) and not isinstance(value, bool):
            return str(value)
        raise ConfigError(key, f"must be a string, got {value!r}")
    raise TypeError(f"unsupported config type {hint!r} for {key}")


def _validate(config: Config) -> None:
    _host, sep, port = config.web.listen_address.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ConfigError("web.listen_address", f"must be [host]:port, got {config.web.listen_address!r}")
    if not config.web.telemetry_path.startswith("/"):
        raise ConfigError("web.telemetry_path", "must start with /")
    if config.log.level.lower() not in ("debug", "info", "warn", "warning", "error"):
        raise ConfigError("log.level", f"must be one of debug, info, warn, error; got {config.log.level!r}")
    if config.log.format not in ("logfmt", "json"):
        raise ConfigError("log.format", f"must be logfmt or json; got {config.log.format!r}")
    kube = config.kubernetes
    if not 1 <= kube.page_size <= 10_000:
        raise ConfigError("kubernetes.page_size", "must be between 1 and 10000")
    if kube.watch_timeout_seconds < 1:
        raise ConfigError("kubernetes.watch_timeout_seconds", "must be at least 1")
    for i, label in enumerate(kube.spot_labels):
        if not label or label.startswith("="):
            raise ConfigError(f"kubernetes.spot_labels[{i}]", f"must be 'key' or 'key=value', got {label!r}")
    if kube.nodes_file and not Path(kube.nodes_file).exists():
        raise ConfigError("kubernetes.nodes_file", f"{kube.nodes_file} does not exist")
    if config.cache.enabled and not config.cache.path:
        raise ConfigError("cache.path", "must be set when the cache is enabled")
    pricing = config.pricing
    seen: set[str] = set()
    for i, kind in enumerate(pricing.precedence):
        if kind not in SOURCE_KINDS:
            raise ConfigError(f"pricing.precedence[{i}]", f"must be one of {', '.join(SOURCE_KINDS)}")
        if kind in seen:
            raise ConfigError(f"pricing.precedence[{i}]", f"{kind} is listed twice")
        seen.add(kind)
    if len(pricing.currency) != 3 or not pricing.currency.isalpha() or not pricing.currency.isupper():
        raise ConfigError("pricing.currency", f"must be an ISO 4217 code like USD, got {pricing.currency!r}")
    for provider in PROVIDERS:
        discount = getattr(pricing.discounts, provider)
        if not Decimal(0) <= discount < Decimal(1):
            raise ConfigError(
                f"pricing.discounts.{provider}", f"must be a fraction in [0, 1), got {discount}"
            )
    for unit in ("cpu_core", "memory_gib", "gpu"):
        if getattr(pricing.split, unit) < 0:
            raise ConfigError(f"pricing.split.{unit}", "must not be negative")
    if pricing.custom.reload_interval_seconds <= 0:
        raise ConfigError("pricing.custom.reload_interval_seconds", "must be positive")
    if pricing.split.cpu_core + pricing.split.memory_gib == 0:
        raise ConfigError("pricing.split", "cpu_core and memory_gib cannot both be 0")
    for key, shelf in (
        ("aws.pricing", config.aws.pricing),
        ("aws.spot", config.aws.spot),
        ("gcp.catalog", config.gcp.catalog),
        ("azure.retail", config.azure.retail),
    ):
        _validate_shelf(key, shelf)
    if (config.aws.pricing.enabled or config.aws.spot.enabled) and config.pricing.currency != "USD":
        raise ConfigError(
            "pricing.currency",
            "AWS publishes list and spot prices in USD only; "
            f"set USD or disable aws.pricing and aws.spot (got {config.pricing.currency})",
        )
    if config.aws.pricing.region not in ("us-east-1", "ap-south-1", "eu-central-1", "cn-northwest-1"):
        raise ConfigError(
            "aws.pricing.region",
            "the Price List API is served from us-east-1, ap-south-1, "
            f"eu-central-1 (or cn-northwest-1); got {config.aws.pricing.region!r}",
        )
    _validate_billing(config)
    for key, path in (
        ("pricing.custom.file", pricing.custom.file),
        ("pricing.offline.file", pricing.offline.file),
    ):
        if path and not Path(path).is_file():
            raise ConfigError(key, f"{path} does not exist")


def _validate_shelf(key: str, shelf: ShelfSettings) -> None:
    if shelf.endpoint_url and not shelf.endpoint_url.startswith(("http://", "https://")):
        raise ConfigError(f"{key}.endpoint_url", f"must be an http(s) URL, got {shelf.endpoint_url!r}")
    for name in (
        "ttl_seconds",
        "refresh_interval_seconds",
        "timeout_seconds",
        "backoff_seconds",
        "backoff_max_seconds",
    ):
        if getattr(shelf, name) <= 0:
            raise ConfigError(f"{key}.{name}", "must be positive")
    if not 1 <= shelf.concurrency <= 64:
        raise ConfigError(f"{key}.concurrency", "must be between 1 and 64")
    if not 0 <= shelf.retries <= 10:
        raise ConfigError(f"{key}.retries", "must be between 0 and 10")


CUR_VERSIONS = ("2.0", "legacy")
COST_BASES = ("amortized", "amortized_net", "unblended", "net_unblended")
AZURE_COST_TYPES = ("AmortizedCost", "ActualCost")


def tag_label(key: str) -> str:
    """The label name of an allowlisted billing tag: `tag_` + the key, other characters as `_`."""
    return "tag_" + "".join(c if c.isascii() and (c.isalnum() or c == "_") else "_" for c in key)


def billing_tag_keys(config: Config) -> tuple[str, ...]:
    """Every allowlisted tag key of the enabled billing sources, in first-seen order."""
    keys: dict[str, None] = {}
    for settings in (config.aws.cur, config.gcp.bigquery, config.azure.cost_management):
        if settings.enabled:
            keys.update(dict.fromkeys(settings.tags))
    return tuple(keys)


def _validate_billing(config: Config) -> None:
    cur, bigquery, azure = config.aws.cur, config.gcp.bigquery, config.azure.cost_management
    for key, billing in (("aws.cur", cur), ("gcp.bigquery", bigquery), ("azure.cost_management", azure)):
        if billing.endpoint_url and not billing.endpoint_url.startswith(("http://", "https://")):
            raise ConfigError(f"{key}.endpoint_url", f"must be an http(s) URL, got {billing.endpoint_url!r}")
        if not 1 <= billing.lookback_days <= 31:
            raise ConfigError(f"{key}.lookback_days", "must be between 1 and 31")
        if not billing.lookback_days + 2 <= billing.presence_retention_days <= 400:
            raise ConfigError(f"{key}.presence_retention_days", "must be between lookback_days + 2 and 400")
        for name in (
            "refresh_interval_seconds",
            "retry_interval_seconds",
            "max_staleness_seconds",
            "timeout_seconds",
            "backoff_seconds",
            "backoff_max_seconds",
        ):
            if getattr(billing, name) <= 0:
                raise ConfigError(f"{key}.{name}", "must be positive")
        if billing.settle_hours < 0:
            raise ConfigError(f"{key}.settle_hours", "must not be negative")
        if not 0 <= billing.retries <= 10:
            raise ConfigError(f"{key}.retries", "must be between 0 and 10")
        for i, tag in enumerate(billing.tags):
            if not tag:
                raise ConfigError(f"{key}.tags[{i}]", "must not be empty")
    labels: dict[str, str] = {}
    for tag in billing_tag_keys(config):
        other = labels.setdefault(tag_label(tag), tag)
        if other != tag:
            raise ConfigError(
                "tags", f"{other!r} and {tag!r} both become the label {tag_label(tag)}; keep one"
            )
    if cur.enabled:
        for name in ("database", "table"):
            if not getattr(cur, name):
                raise ConfigError(f"aws.cur.{name}", "must be set when aws.cur is enabled")
        if cur.cur_version not in CUR_VERSIONS:
            raise ConfigError("aws.cur.cur_version", f"must be one of {', '.join(CUR_VERSIONS)}")
        if cur.cost_basis not in COST_BASES:
            raise ConfigError("aws.cur.cost_basis", f"must be one of {', '.join(COST_BASES)}")
        if cur.output_location and not cur.output_location.startswith("s3://"):
            raise ConfigError("aws.cur.output_location", "must be an s3:// URL")
        if config.pricing.currency != "USD":
            raise ConfigError("pricing.currency", "the AWS CUR is in USD; set USD or disable aws.cur")
        for name in ("database", "table", "workgroup"):
            if not _SQL_NAME.fullmatch(getattr(cur, name)):
                raise ConfigError(f"aws.cur.{name}", "must be letters, digits, _ or - only")
    if bigquery.enabled:
        for name in ("project", "dataset", "table"):
            if not getattr(bigquery, name):
                raise ConfigError(f"gcp.bigquery.{name}", "must be set when gcp.bigquery is enabled")
            if not _SQL_NAME.fullmatch(getattr(bigquery, name)):
                raise ConfigError(f"gcp.bigquery.{name}", "must be letters, digits, _ or - only")
    if azure.enabled:
        if not _AZURE_SCOPE.fullmatch(azure.scope):
            raise ConfigError(
                "azure.cost_management.scope",
                "must be /subscriptions/<id> or /subscriptions/<id>/resourceGroups/<name>, "
                f"got {azure.scope!r}",
            )
        if azure.cost_type not in AZURE_COST_TYPES:
            raise ConfigError(
                "azure.cost_management.cost_type", f"must be one of {', '.join(AZURE_COST_TYPES)}"
            )
        if not 1 <= azure.min_observed_hours <= 24:
            raise ConfigError("azure.cost_management.min_observed_hours", "must be between 1 and 24")
