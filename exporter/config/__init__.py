"""One typed configuration model, loaded from YAML, then environment, then flags (later wins).

- `errors`: ConfigError, whose message starts with the offending dotted key.
- `model`: the core sections and the root `Config`; `config.sources["aws.cur"]` is a source's settings.
- `settings`: the bases every source's settings type extends, each validating its own fields.
- `load`: the YAML → environment → flags merge, coercion and validation.
"""

from exporter.config.errors import ConfigError
from exporter.config.load import ENV_PREFIX, load_config
from exporter.config.model import (
    PROVIDERS,
    SOURCE_KINDS,
    CacheConfig,
    Config,
    CustomPricesConfig,
    DiscountConfig,
    KubernetesConfig,
    LogConfig,
    OfflinePricesConfig,
    PricingConfig,
    SplitConfig,
    WebConfig,
    billing_tag_keys,
    tag_label,
)
from exporter.config.settings import BillingSettings, ShelfSettings, SourceSettings

__all__ = [
    "ENV_PREFIX",
    "PROVIDERS",
    "SOURCE_KINDS",
    "BillingSettings",
    "CacheConfig",
    "Config",
    "ConfigError",
    "CustomPricesConfig",
    "DiscountConfig",
    "KubernetesConfig",
    "LogConfig",
    "OfflinePricesConfig",
    "PricingConfig",
    "ShelfSettings",
    "SourceSettings",
    "SplitConfig",
    "WebConfig",
    "billing_tag_keys",
    "load_config",
    "tag_label",
]
