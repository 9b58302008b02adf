"""One typed configuration model, loaded from YAML, then environment, then flags (later wins).

- `errors`: ConfigError, whose message starts with the offending dotted key.
- `model`: the core sections, the bases of every source's settings, and the root `Config`;
  `config.sources["aws.cur"]` is a source's settings.
- `sections`: `@section("aws.cur")` ties a source's settings type (in `sources/`) to its config section.
- `load`: the YAML → environment → flags merge, coercion and validation.
"""

from exporter.config.errors import ConfigError
from exporter.config.load import ENV_PREFIX, load_config
from exporter.config.model import (
    PROVIDERS,
    SOURCE_KINDS,
    BillingSettings,
    CacheConfig,
    CloudSettings,
    Config,
    CustomPricesConfig,
    DiscountConfig,
    KubernetesConfig,
    LogConfig,
    OfflinePricesConfig,
    PricingConfig,
    ShardingConfig,
    ShelfSettings,
    SourceSettings,
    SplitConfig,
    TlsConfig,
    WebConfig,
    billing_tag_keys,
    enabled_billing,
    tag_label,
)

__all__ = [
    "ENV_PREFIX",
    "PROVIDERS",
    "SOURCE_KINDS",
    "BillingSettings",
    "CacheConfig",
    "CloudSettings",
    "Config",
    "ConfigError",
    "CustomPricesConfig",
    "DiscountConfig",
    "KubernetesConfig",
    "LogConfig",
    "OfflinePricesConfig",
    "PricingConfig",
    "ShardingConfig",
    "ShelfSettings",
    "SourceSettings",
    "SplitConfig",
    "TlsConfig",
    "WebConfig",
    "billing_tag_keys",
    "enabled_billing",
    "load_config",
    "tag_label",
]
