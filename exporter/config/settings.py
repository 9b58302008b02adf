"""The bases of every registered source's settings. Each checks its own fields in `validate`; a source's
settings class (beside the source, e.g. `exporter/pricing/sources/aws/settings.py`) adds its own fields and
checks on top."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING

from exporter.config.errors import ConfigError

if TYPE_CHECKING:
    from exporter.config.model import Config

SQL_NAME = re.compile(r"[A-Za-z0-9_-]+")  # a name spliced into SQL: a project, dataset, table, …


@dataclass(frozen=True)
class SourceSettings:
    """What every source's settings have: the switch that builds it."""

    enabled: bool = False

    def validate(self, key: str, config: Config) -> None:
        """Raise ConfigError naming `<key>.<field>`; `config` is there for rules across sections."""


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
