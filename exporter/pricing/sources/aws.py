"""AWS public prices: on-demand from the Price List Query API, spot from EC2's spot price history.

The only module that imports boto3; the app imports it only when AWS is configured. The SDK's own retries
are switched off (`total_max_attempts=1`): `ShelfSource` retries with jittered backoff, and every HTTP call
is counted once in the integration's health. Filters sent to the APIs are re-checked on every row returned:
a price list holds BYOL, Dedicated/Host, capacity-reservation and Capacity Block rows for the same type,
and picking one of those by accident is a silent mispricing.
"""

from __future__ import annotations

import json
import logging
import re
import threading
from collections.abc import Iterator, Mapping, Sequence
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import boto3
from botocore.config import Config as BotoConfig
from botocore.exceptions import (
    ClientError,
    ConnectTimeoutError,
    CredentialRetrievalError,
    HTTPClientError,
    NoCredentialsError,
    PartialCredentialsError,
    ReadTimeoutError,
    TokenRetrievalError,
)
from botocore.exceptions import ConnectionError as BotoConnectionError
from botocore.parsers import ResponseParserError  # not re-exported by botocore.exceptions

from exporter.cache import PriceCache
from exporter.config import AwsPricingSettings, AwsSpotSettings, ShelfSettings
from exporter.health import IntegrationStatus, Reason
from exporter.inventory.node import CapacityType, Node
from exporter.pricing.money import parse_money
from exporter.pricing.quote import Basis
from exporter.pricing.sources.shelf import FetchError, Key, ShelfPrice, ShelfSource

log = logging.getLogger(__name__)

# Node OS → the Price List's operatingSystem and operation (the operation suffix encodes the licence:
# RunInstances:0002 is licensed Windows, :0800 Windows BYOL, :0010 RHEL, :000g SUSE).
_PRICE_LIST_OS = {"linux": ("Linux", "RunInstances"), "windows": ("Windows", "RunInstances:0002")}
_SPOT_WINDOWS = "Windows (Amazon VPC)"
# A zone is its region plus a letter (us-east-1a), or a Local/Wavelength Zone suffix (us-west-2-lax-1a).
_ZONE_REGION = re.compile(r"[a-z]{2}(?:-[a-z]+)+-\d+")

_THROTTLED = {"ThrottlingException", "Throttling", "RequestLimitExceeded", "TooManyRequestsException"}
_DENIED = {"AccessDenied", "AccessDeniedException", "UnauthorizedOperation"}
_BAD_CREDENTIALS = {
    "UnrecognizedClientException",
    "InvalidClientTokenId",
    "AuthFailure",
    "ExpiredToken",
    "ExpiredTokenException",
    "SignatureDoesNotMatch",
}


def region_of_zone(zone: str) -> str | None:
    """The region an availability zone (or Local/Wavelength Zone) belongs to; None if it is not one."""
    match = _ZONE_REGION.match(zone)
    return match.group(0) if match and len(zone) > match.end() else None


class _AwsSource(ShelfSource):
    """What both AWS sources share: SDK clients without SDK retries, one error mapping."""

    def __init__(
        self, settings: ShelfSettings, status: IntegrationStatus, cache: PriceCache | None, currency: str
    ) -> None:
        super().__init__(settings, status, cache, currency)  # USD only: config validation sees to it
        self._session = boto3.session.Session()
        self._clients: dict[str, Any] = {}
        self._client_lock = threading.Lock()  # boto3 sessions are not thread-safe; clients are
        self._warn_lock = threading.Lock()
        self._warned: set[str] = set()

    def _client(self, service: str, region: str) -> Any:
        with self._client_lock:
            client = self._clients.get(region)
            if client is None:
                client = self._clients[region] = self._session.client(
                    service,
                    region_name=region,
                    endpoint_url=self.settings.endpoint_url or None,
                    config=BotoConfig(
                        connect_timeout=self.settings.timeout_seconds,
                        read_timeout=self.settings.timeout_seconds,
                        retries={"total_max_attempts": 1},
                        max_pool_connections=max(10, self.settings.concurrency),
                        user_agent_extra="node-cost-exporter",
                    ),
                )
            return client

    def _call(self, client: Any, operation: str, action: str, **params: Any) -> dict[str, Any]:
        """One HTTP call: counted in health; an SDK failure becomes a FetchError saying what to do."""
        try:
            response: dict[str, Any] = getattr(client, operation)(**params)
        except Exception as err:
            failure = _fetch_error(err, action, client.meta.endpoint_url, self.settings.timeout_seconds)
            self.status.record_request(failure.reason if failure else Reason.BAD_RESPONSE)
            if failure is None:
                raise
            raise failure from err
        self.status.record_request()
        return response

    def _pages(
        self, client: Any, operation: str, action: str, params: dict[str, Any]
    ) -> Iterator[dict[str, Any]]:
        """Every page of a NextToken-paged call; a server repeating a token would otherwise loop forever."""
        seen: set[str] = set()
        while True:
            page = self._call(client, operation, action, **params)
            yield page
            token = page.get("NextToken")
            if not token:
                return
            if token in seen:
                raise FetchError(Reason.BAD_RESPONSE, f"{action} repeated a NextToken; stopped paging")
            seen.add(token)
            params = {**params, "NextToken": token}

    def _warn_once(self, topic: str, message: str, *args: object) -> None:
        with self._warn_lock:
            if topic in self._warned:
                return
            self._warned.add(topic)
        log.warning("%s: " + message, self.name, *args)


def _fetch_error(err: Exception, action: str, endpoint: str, timeout: float) -> FetchError | None:
    """The FetchError for an SDK exception, or None for one we do not expect (a bug: let it surface)."""
    if isinstance(err, ClientError):
        error = err.response.get("Error", {})
        meta = err.response.get("ResponseMetadata", {})
        code = str(error.get("Code", ""))
        message = str(error.get("Message", ""))
        http = int(meta.get("HTTPStatusCode") or 0)
        said = f"{code}: {message}" if message else code
        if code in _THROTTLED or http == 429:
            return FetchError(
                Reason.THROTTLED,
                f"{action} throttled ({said}); lower concurrency or raise ttl_seconds",
                retry_after=_retry_after(meta.get("HTTPHeaders", {})),
            )
        if code in _DENIED:
            return FetchError(Reason.PERMISSION, f"{action} denied: grant the {action} IAM action ({said})")
        if code in _BAD_CREDENTIALS:
            return FetchError(
                Reason.AUTH,
                f"{action}: AWS rejected the credentials ({said}); check the pod's IAM role "
                "(IRSA or EKS Pod Identity) or its AWS_* variables",
            )
        if http >= 500:
            return FetchError(
                Reason.UNAVAILABLE,
                f"{action} failed at {endpoint} with HTTP {http} ({said}): an AWS-side error",
                retry_after=_retry_after(meta.get("HTTPHeaders", {})),
            )
        return FetchError(Reason.BAD_RESPONSE, f"{action} refused with HTTP {http} ({said})")
    if isinstance(err, NoCredentialsError | PartialCredentialsError):
        return FetchError(
            Reason.AUTH,
            f"{action}: no AWS credentials ({err}); give the pod an IAM role (IRSA or EKS Pod Identity) "
            "or set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY",
        )
    if isinstance(err, CredentialRetrievalError | TokenRetrievalError):
        return FetchError(Reason.AUTH, f"{action}: could not obtain AWS credentials: {err}")
    if isinstance(err, ConnectTimeoutError | ReadTimeoutError):
        return FetchError(
            Reason.TIMEOUT,
            f"{action} timed out after {timeout:g}s at {endpoint}; check egress or raise timeout_seconds",
        )
    if isinstance(err, BotoConnectionError | HTTPClientError):
        return FetchError(
            Reason.UNAVAILABLE,
            f"{action}: cannot reach {endpoint} ({err}); check endpoint_url, DNS and egress",
        )
    if isinstance(err, ResponseParserError):
        return FetchError(
            Reason.BAD_RESPONSE, f"{action}: unreadable response from {endpoint}: {str(err)[:300]}"
        )
    return None


def _retry_after(headers: Mapping[str, str]) -> float | None:
    """Seconds from a Retry-After header (botocore lower-cases header names); None if absent or a date."""
    try:
        return max(0.0, float(headers["retry-after"]))
    except (KeyError, ValueError):
        return None


class AwsOnDemandPrices(_AwsSource):
    """On-demand list price per (region, instance type, OS), one GetProducts query per key.

    Spot nodes get a key too: their on-demand price is the fallback when no spot price is known.
    """

    name = "aws_pricing"
    basis = Basis.ON_DEMAND

    def __init__(
        self, settings: AwsPricingSettings, status: IntegrationStatus, cache: PriceCache | None, currency: str
    ) -> None:
        super().__init__(settings, status, cache, currency)
        self._endpoint_region = settings.region

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
        client = self._client("pricing", self._endpoint_region)
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
                    found.update(_on_demand_hourly(item, wanted))
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


def _on_demand_hourly(item: object, wanted: Mapping[str, str]) -> set[Decimal]:
    """The non-zero hourly USD on-demand prices of one PriceList element that really matches `wanted`."""
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
                hourly = parse_money(dimension["pricePerUnit"]["USD"])
                if hourly > 0:  # Host-tenancy and similar rows are $0: not a price
                    prices.add(hourly)
    return prices


class AwsSpotPrices(_AwsSource):
    """Current spot price per (zone, instance type, OS): spot prices differ by availability zone.

    One DescribeSpotPriceHistory sequence per region, for every type and OS wanted there; StartTime=now
    makes AWS return the price in effect now for each zone, type and product description.
    """

    name = "aws_spot"
    basis = Basis.SPOT

    def __init__(
        self, settings: AwsSpotSettings, status: IntegrationStatus, cache: PriceCache | None, currency: str
    ) -> None:
        super().__init__(settings, status, cache, currency)
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
        client = self._client("ec2", region)
        params: dict[str, Any] = {
            "InstanceTypes": sorted({key[1] for key in keys}),
            "ProductDescriptions": sorted({self._descriptions[key[2]] for key in keys}),
            "StartTime": datetime.now(UTC),
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
