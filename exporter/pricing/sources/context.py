"""What every registered source is built with besides its own settings: `Source(settings, context)`."""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from exporter.cache import PriceCache
from exporter.clock import SYSTEM_CLOCK, Clock
from exporter.config import CloudSettings, ConfigError
from exporter.health import Health, IntegrationStatus
from exporter.logs import with_fields
from exporter.pricing.sources.fetch import Fetcher, RetryPolicy
from exporter.tls import TrustError, sdk_bundle


@dataclass(frozen=True)
class SourceContext:
    """The app's shared machinery, handed to each source: one place to add the next thing a source
    needs, instead of one more constructor argument in seven classes and their tests."""

    health: Health = field(default_factory=Health)
    cache: PriceCache | None = None
    currency: str = "USD"
    clock: Clock = SYSTEM_CLOCK
    ca_file: str = ""  # tls.ca_file: trusted beside the public roots by every cloud client
    clouds: Mapping[str, CloudSettings] = field(default_factory=lambda: MappingProxyType({}))  # azure.cloud
    # Whether this replica serves the series of the whole account, not of its nodes (commitments): shard 0
    # only, so that sums over the replicas do not count them once per shard.
    account_wide: Callable[[], bool] = field(default=lambda: True)

    def sdk_verify(self) -> str | None:
        """A cloud SDK's `verify` / `connection_verify`: the public roots plus `tls.ca_file` as one file, or
        None when none is set: the SDK's own default, which still honours AWS_CA_BUNDLE or
        REQUESTS_CA_BUNDLE."""
        if not self.ca_file:
            return None
        try:
            return sdk_bundle(self.ca_file)
        except TrustError as err:
            raise ConfigError("tls.ca_file", str(err)) from err

    def status(self, name: str) -> IntegrationStatus:
        """The integration status a source reports on, by its name (the `integration` label)."""
        return self.health.integration(name)

    def logger(self, module: str, name: str) -> logging.LoggerAdapter[logging.Logger]:
        """A source's logger: its module's, stamping `integration=` and `source=` (both its name today) on
        every line as fields, so its lines can be filtered on instead of parsed."""
        return with_fields(logging.getLogger(module), integration=name, source=name)

    def fetcher(
        self, name: str, policy: RetryPolicy, *, count_calls: bool, retry_log_level: int = logging.INFO
    ) -> Fetcher:
        """The fetch layer of one source: its retry policy, on this clock, counting on its status."""
        return Fetcher(
            self.status(name), self.clock, policy, count_calls=count_calls, retry_log_level=retry_log_level
        )
