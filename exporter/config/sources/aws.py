"""Settings of the AWS sources (`aws.pricing`, `aws.spot`, `aws.cur`), with their own checks."""

from __future__ import annotations

from dataclasses import dataclass

from exporter.config.errors import ConfigError
from exporter.config.model import SQL_NAME, BillingSettings, Config, ShelfSettings
from exporter.config.sections import section

PRICE_LIST_REGIONS = ("us-east-1", "ap-south-1", "eu-central-1", "cn-northwest-1")
# The currency AWS quotes list and spot prices in, per partition: the China regions' price list is in CNY.
PARTITION_CURRENCIES = {"aws": "USD", "aws-cn": "CNY", "aws-us-gov": "USD"}

CUR_VERSIONS = ("2.0", "legacy")
COST_BASES = ("amortized", "amortized_net", "unblended", "net_unblended")
NET_COST_BASES = ("amortized_net", "net_unblended")  # after EDP and private-rate discounts


def partition_of(region: str) -> str:
    """The AWS partition a region belongs to, as ARNs and endpoints spell it: aws-cn for cn-*, aws-us-gov
    for us-gov-*, else aws (botocore's endpoints.json `regionRegex` of each partition)."""
    if region.startswith("cn-"):
        return "aws-cn"
    if region.startswith("us-gov-"):
        return "aws-us-gov"
    return "aws"


def _list_currency(shelf: ShelfSettings, config: Config) -> None:
    if shelf.enabled and config.pricing.currency not in PARTITION_CURRENCIES.values():
        raise ConfigError(
            "pricing.currency",
            "AWS publishes list and spot prices in USD (CNY in its China regions) only; "
            f"set USD or CNY, or disable aws.pricing and aws.spot (got {config.pricing.currency})",
        )


@section("aws.pricing")
@dataclass(frozen=True)
class AwsPricingSettings(ShelfSettings):
    # The Price List API's endpoint region for nodes in the commercial partition: us-east-1, ap-south-1 or
    # eu-central-1. Nodes in China regions are always priced at cn-northwest-1 (amazonaws.com.cn).
    region: str = "us-east-1"

    def validate(self, key: str, config: Config) -> None:
        super().validate(key, config)
        _list_currency(self, config)
        if self.region not in PRICE_LIST_REGIONS:
            raise ConfigError(
                f"{key}.region",
                "the Price List API is served from us-east-1, ap-south-1, "
                f"eu-central-1 (or cn-northwest-1); got {self.region!r}",
            )


@section("aws.spot")
@dataclass(frozen=True)
class AwsSpotSettings(ShelfSettings):
    ttl_seconds: float = 300.0  # spot prices move: refetched every 5 minutes
    product_description: str = "Linux/UNIX (Amazon VPC)"

    def validate(self, key: str, config: Config) -> None:
        super().validate(key, config)
        _list_currency(self, config)


@section("aws.cur")
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

    def validate(self, key: str, config: Config) -> None:
        super().validate(key, config)
        if not self.enabled:
            return
        for name in ("database", "table"):
            if not getattr(self, name):
                raise ConfigError(f"{key}.{name}", f"must be set when {key} is enabled")
        if self.cur_version not in CUR_VERSIONS:
            raise ConfigError(f"{key}.cur_version", f"must be one of {', '.join(CUR_VERSIONS)}")
        if self.cost_basis not in COST_BASES:
            raise ConfigError(f"{key}.cost_basis", f"must be one of {', '.join(COST_BASES)}")
        if self.output_location and not self.output_location.startswith("s3://"):
            raise ConfigError(f"{key}.output_location", "must be an s3:// URL")
        if config.pricing.currency != "USD":
            raise ConfigError("pricing.currency", f"the AWS CUR is in USD; set USD or disable {key}")
        for name in ("database", "table", "workgroup"):
            if not SQL_NAME.fullmatch(getattr(self, name)):
                raise ConfigError(f"{key}.{name}", "must be letters, digits, _ or - only")
