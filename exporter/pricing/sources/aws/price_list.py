"""AWS on-demand list prices from the Price List Query API (`pricing:GetProducts`)."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from decimal import Decimal
from typing import Any

from exporter.config.sources.aws import AwsPricingSettings, partition_of
from exporter.health import Reason
from exporter.inventory.node import Node
from exporter.pricing.money import parse_money
from exporter.pricing.quote import Basis
from exporter.pricing.sources.aws.client import AwsSource
from exporter.pricing.sources.fetch import FetchError
from exporter.pricing.sources.registry import register
from exporter.pricing.sources.shelf import Key, ShelfPrice

_CHINA_ENDPOINT_REGION = "cn-northwest-1"  # api.pricing.cn-northwest-1.amazonaws.com.cn
_PRICE_LIST_OS = {"linux": ("Linux", "RunInstances"), "windows": ("Windows", "RunInstances:0002")}


@register("aws.pricing", settings=AwsPricingSettings, extra="aws", sdk=("boto3",))
class AwsOnDemandPrices(AwsSource[AwsPricingSettings]):
    """On-demand list price per (region, instance type, OS), one GetProducts query per key.

    Spot nodes get a key too: their on-demand price is the fallback when no spot price is known.
    """

    name = "aws_pricing"
    basis = Basis.ON_DEMAND

    def key(self, node: Node) -> Key | None:
        if (
            node.provider != "aws"
            or not node.region
            or not node.instance_type
            or node.os not in _PRICE_LIST_OS
        ):
            return None  # another OS (or none) has its own licence price: we don't guess
        return (node.region, node.instance_type, node.os)

    def fetch(self, keys: Sequence[Key]) -> Mapping[Key, ShelfPrice | None]:
        prices = {}
        for key in keys:
            hourly = self._hourly(*key)
            if hourly is not None:
                prices[key] = ShelfPrice(hourly)
        return prices

    def _endpoint_region(self, region: str) -> str:
        """Where the Price List Query API answers for a node's region: its partition's own endpoint
        (botocore's endpoints.json "api.pricing": us-east-1, eu-central-1, ap-south-1 in aws, cn-northwest-1
        in aws-cn; `aws.pricing.region` picks among those of its partition). aws-us-gov has none: AWS
        documents no Price List endpoint there, so GovCloud nodes are asked for at the commercial one,
        which needs credentials of a commercial account (docs/operations.md)."""
        partition = partition_of(region)
        if partition == partition_of(self.settings.region):
            return self.settings.region
        return _CHINA_ENDPOINT_REGION if partition == "aws-cn" else "us-east-1"

    def _hourly(self, region: str, instance_type: str, os: str) -> Decimal | None:
        operating_system, operation = _PRICE_LIST_OS[os]
        wanted = {
            "regionCode": region,
            "instanceType": instance_type,
            "operatingSystem": operating_system,
            "tenancy": "Shared",
            "preInstalledSw": "NA",
            "capacitystatus": "Used",
            "licenseModel": "No License required",
            "operation": operation,
        }
        self._check_currency(region)
        client = self._client("pricing", self._endpoint_region(region))
        params: dict[str, Any] = {
            "ServiceCode": "AmazonEC2",
            "Filters": [{"Type": "TERM_MATCH", "Field": f, "Value": v} for f, v in wanted.items()],
            "FormatVersion": "aws_v1",
            "MaxResults": 100,
        }
        found: set[Decimal] = set()
        for page in self._pages(client, "get_products", "pricing:GetProducts", params):
            items = page.get("PriceList")
            if not isinstance(items, list):
                raise FetchError(Reason.BAD_RESPONSE, "pricing:GetProducts answered without a PriceList")
            bad = 0
            for item in items:
                try:
                    found.update(_on_demand_hourly(item, wanted, self.currency))
                except (ValueError, TypeError, KeyError, AttributeError) as err:
                    bad += 1
                    self._warn_once(
                        "element", "skipping an unreadable GetProducts PriceList element: %r", err
                    )
            if items and bad == len(items):
                raise FetchError(
                    Reason.BAD_RESPONSE,
                    f"pricing:GetProducts: none of {len(items)} PriceList elements readable",
                )
        if len(found) > 1:
            self._warn_once(
                f"{region}|{instance_type}|{os}",
                "%s %s %s has several on-demand prices %s; using the highest",
                region,
                instance_type,
                os,
                sorted(map(str, found)),
            )
        return max(found) if found else None


def _on_demand_hourly(item: object, wanted: Mapping[str, str], currency: str) -> set[Decimal]:
    """The non-zero hourly on-demand prices in `currency` of one PriceList element that really matches
    `wanted`."""
    if not isinstance(item, str):
        raise TypeError(f"PriceList element is a {type(item).__name__}, not a JSON string")
    data = json.loads(item)
    attributes = data["product"]["attributes"]
    if any(attributes.get(field) != value for field, value in wanted.items()):
        return set()
    if attributes.get("marketoption", "OnDemand") != "OnDemand":  # e.g. CapacityBlock rows of GPU types
        return set()
    prices = set()
    for term in data.get("terms", {}).get("OnDemand", {}).values():
        for dimension in term["priceDimensions"].values():
            if dimension.get("unit") == "Hrs":
                hourly = parse_money(dimension["pricePerUnit"][currency])
                if hourly > 0:  # Host-tenancy and similar rows are $0: not a price
                    prices.add(hourly)
    return prices
