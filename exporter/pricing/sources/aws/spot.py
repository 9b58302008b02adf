"""AWS spot prices from EC2's spot price history (`ec2:DescribeSpotPriceHistory`), newest per zone."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from exporter.config.sources.aws import AwsSpotSettings
from exporter.health import Reason
from exporter.inventory.node import CapacityType, Node
from exporter.pricing.money import parse_money
from exporter.pricing.quote import Basis
from exporter.pricing.sources.aws.client import AwsSource, region_of_zone
from exporter.pricing.sources.context import SourceContext
from exporter.pricing.sources.fetch import FetchError
from exporter.pricing.sources.registry import register
from exporter.pricing.sources.shelf import Key, ShelfPrice

_SPOT_WINDOWS = "Windows (Amazon VPC)"


# Rank -1: a spot node takes its zone's spot price before aws.pricing's on-demand one.
@register("aws.spot", settings=AwsSpotSettings, extra="aws", sdk=("boto3",), rank=-1)
class AwsSpotPrices(AwsSource[AwsSpotSettings]):
    """Current spot price per (zone, instance type, OS): spot prices differ by availability zone.

    One DescribeSpotPriceHistory sequence per region, for every type and OS wanted there; StartTime=now
    makes AWS return the price in effect now for each zone, type and product description.
    """

    name = "aws_spot"
    basis = Basis.SPOT

    def __init__(self, settings: AwsSpotSettings, context: SourceContext) -> None:
        super().__init__(settings, context)
        self._descriptions = {"linux": settings.product_description, "windows": _SPOT_WINDOWS}

    def key(self, node: Node) -> Key | None:
        if (
            node.provider != "aws"
            or node.capacity_type is not CapacityType.SPOT
            or not node.instance_type
            or node.os not in self._descriptions
            or region_of_zone(node.zone) is None
        ):
            return None
        return (node.zone, node.instance_type, node.os)

    def batches(self, keys: Sequence[Key]) -> list[list[Key]]:
        by_region: dict[str, list[Key]] = {}
        for key in keys:
            by_region.setdefault(region_of_zone(key[0]) or "", []).append(key)
        return list(by_region.values())

    def fetch(self, keys: Sequence[Key]) -> Mapping[Key, ShelfPrice | None]:
        region = region_of_zone(keys[0][0]) or ""
        self._check_currency(region)
        client = self._client("ec2", region)
        params: dict[str, Any] = {
            "InstanceTypes": sorted({key[1] for key in keys}),
            "ProductDescriptions": sorted({self._descriptions[key[2]] for key in keys}),
            "StartTime": datetime.fromtimestamp(self.clock.time(), UTC),
            "MaxResults": 1000,
        }
        latest: dict[tuple[str, str, str], tuple[datetime, Decimal]] = {}
        action = "ec2:DescribeSpotPriceHistory"
        for page in self._pages(client, "describe_spot_price_history", action, params):
            history = page.get("SpotPriceHistory")
            if not isinstance(history, list):
                raise FetchError(Reason.BAD_RESPONSE, f"{action} answered without a SpotPriceHistory")
            for item in history:
                try:
                    where = (item["AvailabilityZone"], item["InstanceType"], item["ProductDescription"])
                    stamp: datetime = item["Timestamp"]
                    price = parse_money(item["SpotPrice"])
                except (KeyError, TypeError, ValueError) as err:
                    self._warn_once("spot item", "skipping an unreadable spot price entry %r: %r", item, err)
                    continue
                if price > 0 and (where not in latest or stamp > latest[where][0]):
                    latest[where] = (stamp, price)
        prices = {}
        for key in keys:
            zone, instance_type, os = key
            found = latest.get((zone, instance_type, self._descriptions[os]))
            if found is not None:
                prices[key] = ShelfPrice(found[1])
        return prices
