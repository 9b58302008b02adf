"""Settings of the GCP sources (`gcp.catalog`, `gcp.bigquery`), with their own checks."""

from __future__ import annotations

from dataclasses import dataclass

from exporter.config.errors import ConfigError
from exporter.config.model import SQL_NAME, BillingSettings, Config, ShelfSettings
from exporter.config.sections import section


@section("gcp.catalog")
@dataclass(frozen=True)
class GcpCatalogSettings(ShelfSettings):
    api_key: str = ""  # empty: Application Default Credentials (Workload Identity)


@section("gcp.bigquery")
@dataclass(frozen=True)
class GcpBigQuerySettings(BillingSettings):
    project: str = ""  # project of the billing export dataset
    dataset: str = ""
    table: str = ""  # the detailed export: gcp_billing_export_resource_v1_<BILLING_ACCOUNT>
    job_project: str = ""  # project that runs (and pays for) the query; empty: `project`
    location: str = ""  # dataset location (US, EU, …); empty: BigQuery decides
    credit_types: tuple[str, ...] = ()  # credit types subtracted from cost; empty: all
    # The discount off on-demand of a spend-based (flexible) CUD, which the bill does not state: it prices
    # legacy COMMITTED_USAGE_DISCOUNT_DOLLAR_BASE credits and values consumption-model rows at on-demand
    # for the coverage ratio (docs/pricing.md, "Commitments"). 0.28 is Compute's 1-year flexible CUD.
    spend_based_cud_discount: float = 0.28

    def validate(self, key: str, config: Config) -> None:
        super().validate(key, config)
        if not self.enabled:
            return
        for name in ("project", "dataset", "table"):  # spliced into the query's table name
            if not getattr(self, name):
                raise ConfigError(f"{key}.{name}", f"must be set when {key} is enabled")
            if not SQL_NAME.fullmatch(getattr(self, name)):
                raise ConfigError(f"{key}.{name}", "must be letters, digits, _ or - only")
        if not 0 <= self.spend_based_cud_discount < 1:
            raise ConfigError(f"{key}.spend_based_cud_discount", "must be a fraction from 0 up to (not) 1")
