"""AWS on-demand and spot prices through the real boto3 clients, against local fakes of the AWS APIs.

Every call goes over HTTP to fakes/aws_api.py via `endpoint_url`; credentials come from environment
variables. Prices are asserted as exact Decimals: real rows from ../shared/fixtures/real/aws_pricing when
present, and realistic in-test rows (2026 us-east-1 list prices) so the core runs without ../shared.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from exporter.cache import PriceCache
from exporter.config import ConfigError, PricingConfig, load_config
from exporter.config.sources.aws import AwsPricingSettings, AwsSpotSettings
from exporter.health import Health, IntegrationStatus, Reason
from exporter.inventory.node import CapacityType, Node, ProviderRef
from exporter.pricing.engine import PricingEngine
from exporter.pricing.quote import Basis
from exporter.pricing.sources.aws.client import aws_session, region_of_zone
from exporter.pricing.sources.aws.price_list import AwsOnDemandPrices
from exporter.pricing.sources.aws.spot import AwsSpotPrices
from fakes.aws_api import Ec2Api, PricingApi, ec2_product
from tests.conftest import FakeClock, context, node

LOGGER = "exporter.pricing.sources.aws"
FAST = {"retries": 2, "backoff_seconds": 0.01, "backoff_max_seconds": 0.05, "timeout_seconds": 5.0}

# us-east-1 m5.large as GetProducts has it: the licensed rows plus every look-alike the filters must skip.
M5_LARGE_LINUX = ec2_product("us-east-1", "m5.large", "0.0960000000", reserved_usd_per_hour="0.0600000000")
M5_LARGE_WINDOWS = ec2_product(
    "us-east-1", "m5.large", "0.1880000000", operating_system="Windows", operation="RunInstances:0002"
)
M5_LARGE_LOOKALIKES = [
    ec2_product(  # Windows BYOL is priced like Linux
        "us-east-1",
        "m5.large",
        "0.0960000000",
        operating_system="Windows",
        operation="RunInstances:0800",
        license_model="Bring your own license",
    ),
    ec2_product("us-east-1", "m5.large", "0.0000000000", tenancy="Host"),
    ec2_product("us-east-1", "m5.large", "0.1130000000", tenancy="Dedicated"),
    ec2_product("us-east-1", "m5.large", "0.0910000000", capacitystatus="UnusedCapacityReservation"),
    ec2_product("us-east-1", "m5.large", "0.0910000000", capacitystatus="AllocatedCapacityReservation"),
    ec2_product(
        "us-east-1",
        "m5.large",
        "0.4320000000",
        operating_system="Windows",
        operation="RunInstances:0006",
        pre_installed_sw="SQL Std",
    ),
    ec2_product(
        "us-east-1", "m5.large", "0.1560000000", operating_system="RHEL", operation="RunInstances:0010"
    ),
]
C6A_24XLARGE = ec2_product("us-west-2", "c6a.24xlarge", "3.6720000000", vcpu="96", memory="192 GiB")
P5_48XLARGE = [
    ec2_product("us-east-1", "p5.48xlarge", "55.0400000000", vcpu="192", memory="2048 GiB"),
    # GPU types also list Capacity Block rows that pass every other on-demand filter.
    ec2_product(
        "us-east-1",
        "p5.48xlarge",
        "31.4640000000",
        vcpu="192",
        memory="2048 GiB",
        market_option="CapacityBlock",
    ),
]
CATALOG = [M5_LARGE_LINUX, M5_LARGE_WINDOWS, *M5_LARGE_LOOKALIKES, C6A_24XLARGE, *P5_48XLARGE]
# Every filter but the two that pick the type: a server applying only those shows what our re-check does.
LENIENT = {"operatingSystem", "tenancy", "preInstalledSw", "capacitystatus", "licenseModel", "operation"}


@pytest.fixture(autouse=True)
def aws_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Static credentials from the environment, and nothing from the machine's own AWS setup."""
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIAIOSFODNN7EXAMPLE")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-aws-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-aws-credentials"))
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")
    for name in (
        "AWS_SESSION_TOKEN",
        "AWS_PROFILE",
        "AWS_ENDPOINT_URL",
        "AWS_MAX_ATTEMPTS",
        "AWS_RETRY_MODE",
        "AWS_ROLE_ARN",
        "AWS_WEB_IDENTITY_TOKEN_FILE",
        "AWS_CONTAINER_CREDENTIALS_FULL_URI",
        "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
        "HTTP_PROXY",
        "HTTPS_PROXY",
        "http_proxy",
        "https_proxy",
    ):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def pricing_api() -> Iterator[PricingApi]:
    with PricingApi() as api:
        api.add(*CATALOG)
        yield api


@pytest.fixture
def ec2_api() -> Iterator[Ec2Api]:
    with Ec2Api() as api:
        yield api


def on_demand(
    api: PricingApi, *, cache: PriceCache | None = None, currency: str = "USD", **settings: Any
) -> tuple[AwsOnDemandPrices, IntegrationStatus]:
    config = AwsPricingSettings(enabled=True, endpoint_url=api.url, **{**FAST, **settings})
    source = AwsOnDemandPrices(config, context(cache=cache, currency=currency))
    return source, source.status


def spot(api: Ec2Api, *, currency: str = "USD", **settings: Any) -> tuple[AwsSpotPrices, IntegrationStatus]:
    config = AwsSpotSettings(enabled=True, endpoint_url=api.url, **{**FAST, **settings})
    source = AwsSpotPrices(config, context(currency=currency))
    return source, source.status


def priced(source: AwsOnDemandPrices | AwsSpotPrices, *nodes: Node) -> list[Decimal | None]:
    """Refresh for these nodes, then each node's hourly quote."""
    source.wanted(nodes)
    source.refresh()
    quotes = [source.quote(n) for n in nodes]
    return [q.hourly if q is not None else None for q in quotes]


def spot_node(zone: str = "us-east-1a", instance_type: str = "m5.large", **overrides: Any) -> Node:
    return node(
        f"ip-10-0-7-{abs(hash((zone, instance_type, str(overrides)))) % 250}.ec2.internal",
        ref=ProviderRef("aws", zone=zone, instance_id="i-0a1b2c3d4e5f60718"),
        provider_id=f"aws:///{zone}/i-0a1b2c3d4e5f60718",
        instance_type=instance_type,
        zone=zone,
        region=region_of_zone(zone) or "",
        capacity_type=CapacityType.SPOT,
        **overrides,
    )


def filters_of(api: PricingApi, index: int) -> dict[str, str]:
    return {f["Field"]: f["Value"] for f in api.calls[index].params["Filters"]}


# -- keys ---------------------------------------------------------------------------------------------------


def test_nodes_map_to_price_list_keys(pricing_api: PricingApi, ec2_api: Ec2Api) -> None:
    od, _ = on_demand(pricing_api)
    sp, _ = spot(ec2_api)
    assert od.key(node()) == ("us-east-1", "m5.xlarge", "linux")
    assert od.key(node(os="windows")) == ("us-east-1", "m5.xlarge", "windows")
    assert od.key(spot_node("eu-west-1b")) == ("eu-west-1", "m5.large", "linux")  # on-demand fallback
    assert od.key(node(os="")) is None  # unknown OS: its licence price is not guessed
    assert od.key(node(os="darwin")) is None
    assert od.key(node(region="")) is None
    assert od.key(node(instance_type="")) is None
    assert od.key(node(ref=ProviderRef("gcp", account="p", zone="us-central1-a"))) is None
    assert sp.key(node()) is None  # on-demand capacity has no spot price
    assert sp.key(spot_node("us-east-1c")) == ("us-east-1c", "m5.large", "linux")
    assert sp.key(spot_node("us-west-2-lax-1a", os="windows")) == ("us-west-2-lax-1a", "m5.large", "windows")
    assert sp.key(spot_node("")) is None


def test_region_of_zone() -> None:
    assert region_of_zone("us-east-1a") == "us-east-1"
    assert region_of_zone("ap-southeast-2c") == "ap-southeast-2"
    assert region_of_zone("us-gov-west-1b") == "us-gov-west-1"
    assert region_of_zone("us-west-2-lax-1a") == "us-west-2"  # Local Zone
    assert region_of_zone("us-east-1-wl1-bos-wlz-1") == "us-east-1"  # Wavelength Zone
    for not_a_zone in ("us-east-1", "", "0", "europe-west1-b", "eastus-1"):
        assert region_of_zone(not_a_zone) is None


def test_sessions_share_one_model_loader_but_resolve_credentials_each(monkeypatch: pytest.MonkeyPatch) -> None:
    first = aws_session(30.0)
    assert first.get_credentials().access_key == "AKIAIOSFODNN7EXAMPLE"
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIAI44QH8DHBEXAMPLE")
    second = aws_session(30.0)
    assert second.get_component("data_loader") is first.get_component("data_loader")
    assert second.get_credentials().access_key == "AKIAI44QH8DHBEXAMPLE"


# -- on-demand prices ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("lenient", [False, True], ids=["filtering-server", "lenient-server"])
def test_windows_and_linux_priced_from_their_own_rows(pricing_api: PricingApi, lenient: bool) -> None:
    if lenient:
        pricing_api.ignored_filters = LENIENT
    source, status = on_demand(pricing_api)
    linux, windows = priced(
        source, node(instance_type="m5.large"), node(instance_type="m5.large", os="windows")
    )
    # Not the BYOL row (0.096 as Windows), Dedicated, Host ($0), SQL, RHEL, reservation or Reserved-term rows.
    assert linux == Decimal("0.096")
    assert windows == Decimal("0.188")
    assert status.up and status.requests == 2
    filters = sorted(filters_of(pricing_api, i)["operation"] for i in range(2))
    assert filters == ["RunInstances", "RunInstances:0002"]
    assert filters_of(pricing_api, 0) | {"operatingSystem": "*", "operation": "*"} == {
        "regionCode": "us-east-1",
        "instanceType": "m5.large",
        "operatingSystem": "*",
        "tenancy": "Shared",
        "preInstalledSw": "NA",
        "capacitystatus": "Used",
        "licenseModel": "No License required",
        "operation": "*",
    }
    assert pricing_api.calls[0].params["ServiceCode"] == "AmazonEC2"
    assert pricing_api.calls[0].params["MaxResults"] == 100


def test_price_string_keeps_every_digit(pricing_api: PricingApi) -> None:
    source, _ = on_demand(pricing_api)
    n = node(instance_type="c6a.24xlarge", region="us-west-2", zone="us-west-2b")
    assert priced(source, n) == [Decimal("3.672")]
    quote = source.quote(n)
    assert quote is not None
    assert quote.hourly == Decimal("3.672")
    assert (quote.currency, quote.basis) == ("USD", Basis.ON_DEMAND)


def test_capacity_block_rows_are_not_on_demand_prices(pricing_api: PricingApi) -> None:
    source, _ = on_demand(pricing_api)
    assert priced(source, node(instance_type="p5.48xlarge")) == [Decimal("55.04")]


def test_unknown_type_is_unpriced_not_zero_and_not_asked_again(pricing_api: PricingApi) -> None:
    source, status = on_demand(pricing_api)
    unknown = node(instance_type="m99.large")
    assert priced(source, unknown) == [None]
    assert status.up
    source.refresh()  # within the TTL: "no price" is remembered
    assert pricing_api.count("GetProducts") == 1


def test_several_matching_rows_take_the_highest_and_say_so(
    pricing_api: PricingApi, caplog: pytest.LogCaptureFixture
) -> None:
    pricing_api.add(ec2_product("eu-central-1", "m5.large", "0.1150000000"))
    pricing_api.add(ec2_product("eu-central-1", "m5.large", "0.1240000000"))
    source, _ = on_demand(pricing_api)
    with caplog.at_level(logging.WARNING, LOGGER):
        assert priced(source, node(instance_type="m5.large", region="eu-central-1")) == [Decimal("0.124")]
    assert "several on-demand prices ['0.1150000000', '0.1240000000']" in caplog.text
    # A cloud module's own warning says which source logged it as fields, like the bases' lines.
    assert {(getattr(r, "integration", None), getattr(r, "source", None)) for r in caplog.records} == {
        ("aws_pricing", "aws_pricing")
    }


def test_real_sample_m4_xlarge_eu_west_1(shared_real: Path) -> None:
    """kubernetes/autoscaler's captured GetProducts answer (2019): Linux Shared is $0.222; its Windows rows
    are Dedicated (0.4282) and BYOL (0.222, Linux-priced), neither of which is the licensed Shared price.

    The capture predates the `regionCode` attribute every product carries now (the 2024 c5ad sample has
    it), so it is added here; a product without it is never returned for a regionCode filter.
    """
    sample = json.loads(
        (
            shared_real / "aws_pricing" / "getproducts_AmazonEC2_m4.xlarge_eu-west-1_2019_subset_a.json"
        ).read_text()
    )
    elements = []
    for text in sample["PriceList"]:
        element = json.loads(text)
        element["product"]["attributes"]["regionCode"] = "eu-west-1"
        elements.append(json.dumps(element))
    linux = node(instance_type="m4.xlarge", region="eu-west-1", zone="eu-west-1a")
    windows = node(instance_type="m4.xlarge", region="eu-west-1", zone="eu-west-1a", os="windows")
    for ignored in (set(), LENIENT):
        with PricingApi() as api:
            api.add(*elements)
            api.ignored_filters = ignored
            source, status = on_demand(api)
            assert priced(source, linux, windows) == [Decimal("0.222"), None]
            assert status.up


def test_real_unused_capacity_reservation_row_is_not_a_price(shared_real: Path) -> None:
    element = (
        shared_real
        / "aws_pricing"
        / "getproducts_item_c5ad.2xlarge_af-south-1_UnusedCapacityReservation.json"
    ).read_text()
    with PricingApi() as api:
        api.add(element)
        api.ignored_filters = {"capacitystatus"}
        source, _ = on_demand(api)
        assert priced(source, node(instance_type="c5ad.2xlarge", region="af-south-1")) == [None]
        assert api.count("GetProducts") == 1  # it was served, and refused by our own check


def test_get_products_pages_with_next_token(pricing_api: PricingApi) -> None:
    with PricingApi() as api:
        api.add(*M5_LARGE_LOOKALIKES, M5_LARGE_WINDOWS, M5_LARGE_LINUX)  # the one we want comes last
        api.ignored_filters = LENIENT
        api.page_size = 3
        source, status = on_demand(api)
        assert priced(source, node(instance_type="m5.large")) == [Decimal("0.096")]
        assert api.count("GetProducts") == 3  # 9 candidate rows, 3 a page
        assert status.requests == 3
        tokens = [call.params.get("NextToken") for call in api.calls]
        assert tokens[0] is None and None not in tokens[1:] and tokens[1] != tokens[2]


def test_a_server_repeating_its_token_stops_paging(pricing_api: PricingApi) -> None:
    pricing_api.stuck_token = True
    source, status = on_demand(pricing_api)
    assert priced(source, node(instance_type="m5.large")) == [None]
    assert (status.up, status.reason) == (False, Reason.BAD_RESPONSE)
    assert "repeated a NextToken" in status.detail
    assert pricing_api.count("GetProducts") == 2


def test_a_zero_hourly_row_is_not_a_price(pricing_api: PricingApi) -> None:
    pricing_api.add(ec2_product("eu-central-1", "m7i.large", "0.0000000000"))
    source, status = on_demand(pricing_api)
    assert priced(source, node(instance_type="m7i.large", region="eu-central-1")) == [None]
    assert status.up


# -- failures -----------------------------------------------------------------------------------------------


def test_failure_messages_name_the_fix_and_every_call_is_counted(pricing_api: PricingApi, ec2_api: Ec2Api) -> None:
    """What tests/test_source_contract.py leaves to each cloud: the detail names the IAM action or what
    failed, each HTTP call is counted once with its reason, and both throttling shapes are retried."""
    m5 = node(instance_type="m5.large")
    pricing_api.fail_next(1, "ThrottlingException", message="Rate exceeded")
    pricing_api.fail_next(1, "TooManyRequestsException", status=429, message="Rate exceeded")
    source, status = on_demand(pricing_api, retries=3, ttl_seconds=1e-9)
    assert priced(source, m5) == [Decimal("0.096")]
    assert (status.up, status.requests, status.errors) == (True, 3, {Reason.THROTTLED: 2})

    source.clock.advance(1.0)  # past the TTL
    pricing_api.fail_next(10, "InternalErrorException", status=500, message="Internal failure")
    assert priced(source, m5) == [Decimal("0.096")]  # the last good price stays
    assert status.reason is Reason.UNAVAILABLE and "pricing:GetProducts failed" in status.detail
    assert "HTTP 500" in status.detail
    assert (status.requests, status.errors[Reason.UNAVAILABLE]) == (3 + 4, 4)  # first try + 3 retries

    pricing_api.clear_faults()
    pricing_api.fail_next(1, "AccessDeniedException", message="User is not authorized")
    source, status = on_demand(pricing_api)
    priced(source, m5)
    assert status.reason is Reason.PERMISSION and "grant the pricing:GetProducts IAM action" in status.detail

    pricing_api.fail_next(1, "UnrecognizedClientException", message="The security token included is invalid.")
    source, status = on_demand(pricing_api)
    priced(source, m5)
    assert (status.reason, status.requests) == (Reason.AUTH, 1)  # rejected credentials: not retried
    assert "IRSA" in status.detail

    ec2_api.add("us-east-1a", "m5.large", "0.036500", "2026-11-22T10:00:00.000Z")
    ec2_api.fail_next(1, "RequestLimitExceeded", status=503, message="Request limit exceeded.")
    spot_source, spot_status = spot(ec2_api)
    assert priced(spot_source, spot_node("us-east-1a")) == [Decimal("0.0365")]
    assert (spot_status.requests, spot_status.errors) == (2, {Reason.THROTTLED: 1})

    ec2_api.fail_next(1, "UnauthorizedOperation", status=403, message="You are not authorized.")
    spot_source, spot_status = spot(ec2_api)
    priced(spot_source, spot_node("us-east-1a"))
    assert spot_status.reason is Reason.PERMISSION
    assert "grant the ec2:DescribeSpotPriceHistory IAM action" in spot_status.detail


# Each (code, status) as AWS sends it (AWS's common errors, e.g.
# docs.aws.amazon.com/autoscaling/ec2/APIReference/CommonErrors.html): the code decides before the status,
# so an expired token's 403 is auth, not permission; a status with a code not ours speaks for itself.
EC2_ERRORS = [
    ("RequestExpired", 400, Reason.AUTH),  # signed with a clock more than 15 minutes off
    ("AuthFailure", 401, Reason.AUTH),
    ("ExpiredToken", 400, Reason.AUTH),
    ("InvalidClientTokenId", 403, Reason.AUTH),
    ("Unrecognized", 401, Reason.AUTH),  # any 401
    ("Forbidden", 403, Reason.PERMISSION),  # any 403
    ("RequestTimeout", 408, Reason.TIMEOUT),
    ("InvalidParameterValue", 400, Reason.BAD_RESPONSE),
]
PRICING_ERRORS = [
    ("ExpiredTokenException", 403, Reason.AUTH),
    ("UnrecognizedClientException", 400, Reason.AUTH),
    ("InvalidClientTokenId", 403, Reason.AUTH),
]


@pytest.mark.parametrize(("code", "http", "reason"), EC2_ERRORS, ids=[f"{c}-{h}" for c, h, _ in EC2_ERRORS])
def test_ec2_error_codes_map_to_their_reason(ec2_api: Ec2Api, code: str, http: int, reason: Reason) -> None:
    ec2_api.add("us-east-1a", "m5.large", "0.036500", "2026-11-22T10:00:00.000Z")
    ec2_api.fail_next(10, code, status=http, message="as the service says it")  # past any retries
    source, status = spot(ec2_api)
    priced(source, spot_node("us-east-1a"))
    assert (status.up, status.reason) == (False, reason), status.detail
    assert code in status.detail


@pytest.mark.parametrize(
    ("code", "http", "reason"), PRICING_ERRORS, ids=[f"{c}-{h}" for c, h, _ in PRICING_ERRORS]
)
def test_price_list_error_codes_map_to_their_reason(
    pricing_api: PricingApi, code: str, http: int, reason: Reason
) -> None:
    pricing_api.fail_next(1, code, status=http, message="The security token included in the request is expired")
    source, status = on_demand(pricing_api)
    priced(source, node(instance_type="m5.large"))
    assert (status.up, status.reason) == (False, reason), status.detail


def test_hints_name_the_sources_own_keys(pricing_api: PricingApi, ec2_api: Ec2Api) -> None:
    """Spot has no region key (its regions come from the nodes); each hint names its own section's keys."""
    ec2_api.fail_next(1, "InvalidAction", message="The action is not valid for this web service.")
    source, status = spot(ec2_api)
    priced(source, spot_node("us-east-1a"))
    assert status.detail.endswith("check aws.spot.endpoint_url"), status.detail
    pricing_api.fail_next(1, "NotFoundException", message="unknown service code")
    on_demand_source, on_demand_status = on_demand(pricing_api)
    priced(on_demand_source, node(instance_type="m5.large"))
    assert on_demand_status.detail.endswith("check aws.pricing.endpoint_url and aws.pricing.region")
    ec2_api.fail_next(10, "RequestLimitExceeded", status=503, message="Request limit exceeded.")
    source, status = spot(ec2_api)
    priced(source, spot_node("us-east-1a"))
    assert status.detail.endswith("lower aws.spot.concurrency or raise aws.spot.ttl_seconds"), status.detail


def test_no_credentials_is_auth(pricing_api: PricingApi, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    source, status = on_demand(pricing_api)
    priced(source, node(instance_type="m5.large"))
    assert (status.up, status.reason) == (False, Reason.AUTH)
    assert "IRSA" in status.detail
    assert pricing_api.count("GetProducts") == 0  # nothing could be signed


def test_unreadable_elements_are_skipped_and_logged_once(
    pricing_api: PricingApi, caplog: pytest.LogCaptureFixture
) -> None:
    pricing_api.garbage_elements = ['{"product":{"attributes":', '["not", "a", "product"]']
    source, status = on_demand(pricing_api)
    with caplog.at_level(logging.WARNING, LOGGER):
        linux, windows = priced(
            source, node(instance_type="m5.large"), node(instance_type="m5.large", os="windows")
        )
    assert (linux, windows) == (Decimal("0.096"), Decimal("0.188"))
    assert status.up
    assert caplog.text.count("unreadable GetProducts PriceList element") == 1


def test_a_page_of_only_unreadable_elements_is_bad_response(pricing_api: PricingApi) -> None:
    pricing_api.garbage_elements = ['{"product":{"attributes":']
    source, status = on_demand(pricing_api)
    assert priced(source, node(instance_type="m5.large", region="eu-central-1")) == [None]
    assert (status.up, status.reason) == (False, Reason.BAD_RESPONSE)


@pytest.mark.parametrize("source", ["pricing", "spot"])
def test_non_usd_currency_with_aws_enabled_fails_at_start(source: str) -> None:
    with pytest.raises(ConfigError, match=r"^pricing\.currency: AWS publishes list and spot prices in USD \(CNY in its China regions\) only"):
        load_config(None, env={}, overrides={f"aws.{source}.enabled": True, "pricing.currency": "EUR"})


# -- cache and scale ----------------------------------------------------------------------------------------


def test_a_second_instance_on_the_same_cache_makes_no_calls(pricing_api: PricingApi, tmp_path: Path) -> None:
    path = str(tmp_path / "cache.sqlite")
    nodes = [
        node(instance_type="m5.large"),
        node(instance_type="m5.large", os="windows"),
        node("x", instance_type="m99.large"),
    ]
    first_cache = PriceCache(path, IntegrationStatus("cache"))
    first, _ = on_demand(pricing_api, cache=first_cache)
    assert priced(first, *nodes) == [Decimal("0.096"), Decimal("0.188"), None]
    first_cache.close()
    calls = pricing_api.count("GetProducts")
    assert calls == 3

    second, status = on_demand(pricing_api, cache=PriceCache(path, IntegrationStatus("cache")))
    assert priced(second, *nodes) == [Decimal("0.096"), Decimal("0.188"), None]
    assert pricing_api.count("GetProducts") == calls  # prices and "no price" both came from the file
    assert status.up and status.requests == 0


def test_cold_start_prices_300_keys_with_300_calls() -> None:
    regions = ("us-east-1", "eu-west-1", "us-west-2")
    sizes = (
        "large",
        "xlarge",
        "2xlarge",
        "4xlarge",
        "8xlarge",
        "12xlarge",
        "16xlarge",
        "24xlarge",
        "32xlarge",
    )
    types = [
        f"{family}.{size}" for family in ("m6i", "c6i", "r6i", "m7i", "r7i") for size in (*sizes, "metal")
    ]
    assert len(types) == 50
    expected: dict[tuple[str, str, str], Decimal] = {}
    with PricingApi() as api:
        for r, region in enumerate(regions):
            for t, instance_type in enumerate(types):
                linux = Decimal(96 + 7 * t + r) / 1000
                windows = linux + Decimal("0.092")
                api.add(
                    ec2_product(region, instance_type, f"{linux:.10f}"),
                    ec2_product(
                        region,
                        instance_type,
                        f"{windows:.10f}",
                        operating_system="Windows",
                        operation="RunInstances:0002",
                    ),
                    ec2_product(region, instance_type, "0.0000000000", tenancy="Host"),
                )
                expected[(region, instance_type, "linux")] = linux
                expected[(region, instance_type, "windows")] = windows
        nodes = [
            node(f"n-{region}-{instance_type}-{os}", region=region, instance_type=instance_type, os=os)
            for region, instance_type, os in expected
        ]
        source, status = on_demand(api, concurrency=4)
        assert priced(source, *nodes) == list(expected.values())
        assert len(expected) == 300
        assert api.count("GetProducts") == 300  # one call per (region, type, OS): each fits one page
        assert status.requests == 300 and status.up


# -- spot prices --------------------------------------------------------------------------------------------


def test_spot_prices_per_zone_latest_timestamp_wins(ec2_api: Ec2Api) -> None:
    ec2_api.full_history = True  # every change, as for an old StartTime: only the latest may count
    ec2_api.add("us-east-1a", "m5.large", "0.036500", "2026-11-22T10:00:00.000Z")
    ec2_api.add("us-east-1a", "m5.large", "0.040100", "2026-11-22T09:00:00.000Z")
    ec2_api.add("us-east-1b", "m5.large", "0.038800", "2026-11-22T08:00:00.000Z")
    ec2_api.add("us-east-1b", "m5.large", "0.041200", "2026-11-22T09:30:00.000Z")
    ec2_api.add("us-east-1a", "m5.large", "0.124000", "2026-11-22T07:00:00.000Z", "Windows (Amazon VPC)")
    ec2_api.add("us-east-1a", "m5.large", "0.031000", "2026-11-22T11:00:00.000Z", "Linux/UNIX")  # EC2-Classic
    source, status = spot(ec2_api)
    a, b, windows = priced(
        source, spot_node("us-east-1a"), spot_node("us-east-1b"), spot_node("us-east-1a", os="windows")
    )
    assert (a, b, windows) == (Decimal("0.0365"), Decimal("0.0412"), Decimal("0.124"))
    assert ec2_api.count("DescribeSpotPriceHistory") == 1  # one region, one call
    params = ec2_api.calls[0].params
    assert params["InstanceType.1"] == ["m5.large"]
    assert (params["ProductDescription.1"], params["ProductDescription.2"]) == (
        ["Linux/UNIX (Amazon VPC)"],
        ["Windows (Amazon VPC)"],
    )
    quote = source.quote(spot_node("us-east-1a"))
    assert quote is not None and quote.basis is Basis.SPOT
    assert status.up and status.requests == 1


def test_spot_with_no_spot_node_is_up_and_asks_nothing(ec2_api: Ec2Api) -> None:
    """Nothing to price is an answer: up, last success moving with each refresh, no data timestamp."""
    clock = FakeClock()
    source = AwsSpotPrices(AwsSpotSettings(enabled=True, endpoint_url=ec2_api.url, **FAST), context(clock))
    status = source.status
    source.wanted([node()])  # on-demand only: no spot key
    assert source.refresh() is False
    assert (status.up, status.reason, status.last_success) == (True, None, clock.now)
    assert status.data_timestamp is None and ec2_api.calls == []
    clock.now += 300
    source.refresh()
    assert status.up and status.last_success == clock.now
    ec2_api.add("us-east-1a", "m5.large", "0.036500", "2026-11-22T10:00:00.000Z")
    assert priced(source, spot_node("us-east-1a")) == [Decimal("0.0365")]  # a spot node arrives
    assert status.up and ec2_api.count("DescribeSpotPriceHistory") == 1


def test_spot_asks_for_the_price_in_effect_now(ec2_api: Ec2Api) -> None:
    ec2_api.add("us-east-1a", "m5.large", "0.036500", "2026-11-22T10:00:00.000Z")
    ec2_api.add("us-east-1a", "m5.large", "0.040100", "2026-09-01T09:00:00.000Z")
    source, _ = spot(ec2_api)
    before = datetime.now(UTC)
    assert priced(source, spot_node("us-east-1a")) == [Decimal("0.0365")]
    start = datetime.fromisoformat(ec2_api.calls[0].params["StartTime"][0].replace("Z", "+00:00"))
    assert before - timedelta(seconds=1) <= start <= datetime.now(UTC)


def test_spot_one_call_sequence_per_region(ec2_api: Ec2Api) -> None:
    ec2_api.add("us-east-1a", "m5.large", "0.036500", "2026-11-22T10:00:00.000Z")
    ec2_api.add("eu-west-1b", "m5.large", "0.039900", "2026-11-22T10:00:00.000Z")
    ec2_api.add("eu-west-1b", "c5.xlarge", "0.071200", "2026-11-22T10:00:00.000Z")
    source, _ = spot(ec2_api)
    nodes = (spot_node("us-east-1a"), spot_node("eu-west-1b"), spot_node("eu-west-1b", "c5.xlarge"))
    assert priced(source, *nodes) == [Decimal("0.0365"), Decimal("0.0399"), Decimal("0.0712")]
    by_region = {call.region: call.params for call in ec2_api.calls}
    assert sorted(by_region) == ["eu-west-1", "us-east-1"]  # told apart by the SigV4 credential scope
    assert (by_region["eu-west-1"]["InstanceType.1"], by_region["eu-west-1"]["InstanceType.2"]) == (
        ["c5.xlarge"],
        ["m5.large"],
    )
    assert "InstanceType.2" not in by_region["us-east-1"]


def test_spot_pages_with_next_token(ec2_api: Ec2Api) -> None:
    for zone, price in (("us-east-1a", "0.036500"), ("us-east-1b", "0.041200"), ("us-east-1c", "0.035900")):
        ec2_api.add(zone, "m5.large", price, "2026-11-22T10:00:00.000Z")
    ec2_api.page_size = 1
    source, status = spot(ec2_api)
    nodes = [spot_node(z) for z in ("us-east-1a", "us-east-1b", "us-east-1c")]
    assert priced(source, *nodes) == [Decimal("0.0365"), Decimal("0.0412"), Decimal("0.0359")]
    assert ec2_api.count("DescribeSpotPriceHistory") == 3 and status.requests == 3


def test_spot_node_without_spot_price_falls_back_to_on_demand(
    pricing_api: PricingApi, ec2_api: Ec2Api
) -> None:
    ec2_api.add("us-east-1a", "m5.large", "0.036500", "2026-11-22T10:00:00.000Z")
    spot_source, spot_status = spot(ec2_api)
    od_source, _ = on_demand(pricing_api)
    priced_1a, unpriced_1d = spot_node("us-east-1a"), spot_node("us-east-1d")
    for source in (spot_source, od_source):
        source.wanted([priced_1a, unpriced_1d])
        source.refresh()
    assert spot_source.quote(unpriced_1d) is None and spot_status.up
    engine = PricingEngine([spot_source, od_source], PricingConfig(), Health())
    fallback = engine.price(unpriced_1d)
    assert fallback is not None
    assert (fallback.source, fallback.basis, fallback.hourly) == (
        "aws_pricing",
        Basis.ON_DEMAND,
        Decimal("0.096"),
    )
    market = engine.price(priced_1a)
    assert market is not None
    assert (market.source, market.basis, market.hourly) == ("aws_spot", Basis.SPOT, Decimal("0.0365"))


def test_spot_real_cli_example(shared_real: Path, ec2_api: Ec2Api) -> None:
    """AWS's published `describe-spot-price-history` example 2 (m1.xlarge, us-west-1, 2014)."""
    text = (shared_real / "aws_pricing" / "describe-spot-price-history.aws-cli-example.rst").read_text()
    example = json.loads(text.split("Output::")[2])
    for item in example["SpotPriceHistory"]:
        ec2_api.add(
            item["AvailabilityZone"],
            item["InstanceType"],
            item["SpotPrice"],
            item["Timestamp"],
            item["ProductDescription"],
        )
    source, _ = spot(ec2_api)
    a, b, c = priced(source, *(spot_node(z, "m1.xlarge") for z in ("us-west-1a", "us-west-1b", "us-west-1c")))
    assert (a, b, c) == (Decimal("0.08"), None, Decimal("0.08"))
