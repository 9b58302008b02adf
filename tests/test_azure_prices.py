"""The Azure Retail Prices source against a local fake of the API that applies the `$filter` itself, so a
wrong query finds nothing. Prices are real published ones (verbatim API items where we have them)."""

from __future__ import annotations

import json
import socket
import time
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import urllib3

from exporter.cache import PriceCache
from exporter.config.sources.azure import AzureRetailSettings
from exporter.health import IntegrationStatus, Reason
from exporter.inventory.node import CapacityType, Node, ProviderRef
from exporter.pricing.quote import Basis
from exporter.pricing.sources.azure import retail as azure
from exporter.pricing.sources.azure.retail import AzureRetailPrices
from fakes.azure_api import (
    REAL_EASTUS_B1S,
    REAL_EASTUS_D2ALS_V7,
    REAL_EASTUS_D2S_V3,
    FakeRetailPricesAPI,
    in_currency,
    variant,
    vm_items,
)
from tests.conftest import context, node

SUBSCRIPTION = "8ecadfc9-d1a3-4ea4-b844-0d9f87e4d7c8"


def aks(sku: str, region: str = "eastus", *, os: str = "linux", spot: bool = False, index: int = 0) -> Node:
    """An AKS VMSS node of `sku`."""
    pool = "spotpool" if spot else "nodepool1"
    vmss = f"aks-{pool}-12345678-vmss"
    name = f"{vmss}{index:06d}-{sku.lower()}-{os}-{region}"
    labels = {
        "node.kubernetes.io/instance-type": sku,
        "topology.kubernetes.io/region": region,
        "kubernetes.io/os": os,
    }
    if spot:
        labels["kubernetes.azure.com/scalesetpriority"] = "spot"
    return node(
        name,
        provider_id=(
            f"azure:///subscriptions/{SUBSCRIPTION}/resourceGroups/MC_rg_cluster_{region}/providers/"
            f"Microsoft.Compute/virtualMachineScaleSets/{vmss}/virtualMachines/{index}"
        ),
        ref=ProviderRef(
            "azure",
            account=SUBSCRIPTION,
            instance_id=str(index),
            resource_group=f"MC_rg_cluster_{region}",
            scale_set=vmss,
        ),
        instance_type=sku,
        region=region,
        zone=f"{region}-1",
        capacity_type=CapacityType.SPOT if spot else CapacityType.ON_DEMAND,
        os=os,
        labels=labels,
    )


def source(
    endpoint: str,
    *,
    cache: PriceCache | None = None,
    currency: str = "USD",
    **overrides: Any,
) -> AzureRetailPrices:
    values: dict[str, Any] = {
        "enabled": True,
        "endpoint_url": endpoint,
        "ttl_seconds": 3600.0,
        "retries": 2,
        "backoff_seconds": 0.01,
        "backoff_max_seconds": 2.0,
        "timeout_seconds": 2.0,
    }
    values.update(overrides)
    return AzureRetailPrices(AzureRetailSettings(**values), context(cache=cache, currency=currency))


def priced(src: AzureRetailPrices, *nodes: Node) -> list[Decimal | None]:
    """Refresh for these nodes, then each node's hourly price (None: unpriced)."""
    src.wanted(nodes)
    src.refresh()
    return [q.hourly if (q := src.quote(n)) is not None else None for n in nodes]


def skus_in(odata: str) -> list[str]:
    return [part.split("'")[1] for part in odata.split("armSkuName eq ")[1:]]


# -- what gets chosen -------------------------------------------------------------------------------------------


def test_real_sample_page_items(shared_real: Path) -> None:
    page = json.loads(
        (shared_real / "azure_pricing" / "retail_prices_page0_2022-06-06_vm_subset_a.json").read_text()
    )
    nodes = [
        aks("Standard_D16plds_v5", "westcentralus"),  # Linux on-demand, skuName in ARM spelling
        aks("Standard_D16s_v5", "eastus2", os="windows"),  # DevTest 0.768 beside it
        aks("Standard_E2bds_v5", "westus", spot=True),
        aks("Standard_D14", "southindia", os="windows", spot=True),  # DevTest 0.1955 beside it
        aks("Standard_D4ds_v5", "switzerlandnorth", os="windows"),  # DevTest 0.15 beside it
        aks("Standard_D2_v4", "westindia"),  # only a Low Priority meter
        aks("Standard_DC8as_v5", "eastus"),  # only a Low Priority meter
        aks("Standard_D14_v2", "northcentralus"),  # only the distinct "Standard_D14_v2_Promo" SKU
    ]
    with FakeRetailPricesAPI(page["Items"]) as fake:
        src = source(fake.url)
        assert priced(src, *nodes) == [
            Decimal("0.737"),
            Decimal("1.504"),
            Decimal("0.0756"),
            Decimal("0.40365"),
            Decimal("0.483"),
            None,
            None,
            None,
        ]
        assert src.status.up and src.status.requests == fake.calls == 8  # one region per call


def test_linux_windows_spot_and_on_demand_from_a_real_answer() -> None:
    linux, windows = aks("Standard_D2s_v3"), aks("Standard_D2s_v3", os="windows", index=1)
    spot, spot_windows = aks("Standard_D2s_v3", spot=True), aks("Standard_D2s_v3", os="windows", spot=True)
    with FakeRetailPricesAPI(REAL_EASTUS_D2S_V3) as fake:
        src = source(fake.url)
        # The Linux and Windows pay-as-you-go meters of this SKU are both isPrimaryMeterRegion false, with no
        # primary twin: still priced. Low Priority (0.019, 0.075) and DevTest rows are never chosen.
        assert priced(src, linux, windows, spot, spot_windows) == [
            Decimal("0.096"),
            Decimal("0.188"),
            Decimal("0.018816"),
            Decimal("0.036848"),
        ]
        assert fake.filters == [
            "serviceName eq 'Virtual Machines' and armRegionName eq 'eastus' and priceType eq 'Consumption'"
            " and (armSkuName eq 'Standard_D2s_v3')"
        ]
        assert fake.requests[0].query["api-version"] == "2023-01-01-preview"
        assert fake.requests[0].query["currencyCode"] == "'USD'"
    quotes = [src.quote(n) for n in (linux, spot)]
    assert [(q.basis, q.currency) for q in quotes if q is not None] == [
        (Basis.ON_DEMAND, "USD"),
        (Basis.SPOT, "USD"),
    ]
    assert src.basis_of(("eastus", "Standard_D2s_v3", "linux", "spot")) is Basis.SPOT


def test_reservation_and_devtest_never_chosen_even_when_the_server_returns_them() -> None:
    devtest, reservation = REAL_EASTUS_D2ALS_V7[7], REAL_EASTUS_D2ALS_V7[1]
    assert (devtest["type"], reservation["type"]) == ("DevTestConsumption", "Reservation")
    newer = "2025-12-01T00:00:00Z"  # revisions newer than the Consumption meters: they would win on dates
    items = [
        *REAL_EASTUS_D2ALS_V7,
        variant(devtest, effectiveStartDate=newer),
        variant(reservation, effectiveStartDate=newer),
    ]
    with FakeRetailPricesAPI(items) as fake:
        fake.ignore_price_type = True  # as behind a proxy dropping the clause: Reservation 416/803 come back
        sku = "Standard_D2als_v7"
        nodes = [aks(sku), aks(sku, os="windows"), aks(sku, spot=True), aks(sku, os="windows", spot=True)]
        assert priced(source(fake.url), *nodes) == [
            Decimal("0.0804"),
            Decimal("0.172"),  # not the DevTest 0.0804 of the Windows product
            Decimal("0.015598"),
            Decimal("0.033368"),
        ]


def test_non_primary_duplicate_cloud_services_low_priority_and_zero_are_not_prices() -> None:
    d4s = vm_items("eastus", "Standard_D4s_v3", "DSv3", linux="0.192", windows="0.376", low_priority="0.0384")
    d8s = vm_items("eastus", "Standard_D8s_v3", "DSv3", linux="0.384")
    items = [
        *d4s,
        # a non-primary copy at another price, and a Cloud Services product reusing the size name; both newer
        variant(d4s[0], "0.2", isPrimaryMeterRegion=False, effectiveStartDate="2025-11-01T00:00:00Z"),
        variant(
            d4s[0],
            "0.376",
            productName="DSv3 Series Cloud Services",
            effectiveStartDate="2025-11-01T00:00:00Z",
        ),
        variant(d8s[0], "0"),  # for D8s v3 only a 0 row, a monthly row and an unreadable price
        variant(d8s[0], retailPrice=-0.384),
        variant(d8s[0], "280.32", unitOfMeasure="1/Month"),
    ]
    with FakeRetailPricesAPI(items) as fake:
        src = source(fake.url)
        assert priced(
            src, aks("Standard_D4s_v3"), aks("Standard_D8s_v3"), aks("Standard_D4s_v3", os="windows")
        ) == [
            Decimal("0.192"),
            None,  # unpriced, not 0
            Decimal("0.376"),
        ]
        assert not src.pending()  # remembered as unpriced: not asked for again until the TTL
        assert src.quote(aks("Standard_D8s_v3")) is None and not src.pending()


def test_the_price_in_force_with_the_newest_start_wins() -> None:
    current = vm_items("eastus", "Standard_E4s_v5", "Esv5", linux="0.252", start="2023-01-01T00:00:00Z")[0]
    items = [
        variant(current, "0.21", effectiveStartDate="2020-01-01T00:00:00Z"),  # older, still open
        current,
        variant(
            current,
            "0.17",
            effectiveStartDate="2024-01-01T00:00:00Z",
            effectiveEndDate="2024-06-30T23:59:00Z",
        ),
        variant(current, "0.3", effectiveStartDate="2099-01-01T00:00:00Z"),  # announced, not yet in force
    ]
    with FakeRetailPricesAPI(items) as fake:
        assert priced(source(fake.url), aks("Standard_E4s_v5")) == [Decimal("0.252")]


# -- paging and batching -----------------------------------------------------------------------------------------


def test_pages_are_followed_to_the_end() -> None:
    with FakeRetailPricesAPI(
        [*REAL_EASTUS_D2S_V3, *REAL_EASTUS_B1S, *REAL_EASTUS_D2ALS_V7], page_size=2
    ) as fake:
        src = source(fake.url)
        nodes = [
            aks("Standard_D2s_v3"),
            aks("Standard_B1s", os="windows"),
            aks("Standard_D2als_v7", spot=True),
        ]
        assert priced(src, *nodes) == [Decimal("0.096"), Decimal("0.014"), Decimal("0.015598")]
        # 12 Consumption items, 2 a page: 6 calls, each the same query with the next $skip
        assert fake.calls == src.status.requests == 6
        assert len(set(fake.filters)) == 1
        assert [r.query.get("$skip") for r in fake.requests] == [None, "2", "4", "6", "8", "10"]


EASTUS_PUBLISHED = {  # offline_prices.csv (karpenter-provider-azure, from the Retail Prices API, 2023-12-18)
    "Standard_B2ms": ("BS", "0.0832"),
    "Standard_B2s": ("BS", "0.0416"),
    "Standard_D16plds_v5": ("Dpldsv5", "0.614"),
    "Standard_D2s_v5": ("Dsv5", "0.096"),
    "Standard_D4as_v5": ("Dasv5", "0.172"),
    "Standard_D4s_v3": ("DSv3", "0.192"),
    "Standard_D4s_v5": ("Dsv5", "0.192"),
    "Standard_D8s_v3": ("DSv3", "0.384"),
    "Standard_D8s_v5": ("Dsv5", "0.384"),
    "Standard_DS1_v2": ("DSv2", "0.073"),
    "Standard_DS2_v2": ("DSv2", "0.146"),
    "Standard_E4s_v5": ("Esv5", "0.252"),
    "Standard_F4s_v2": ("FSv2", "0.169"),
    "Standard_NC4as_T4_v3": ("NCasv3_T4", "0.526"),
}
NOT_LISTED = [
    "Standard_B4ms",
    "Standard_D2ds_v5",
    "Standard_D4ds_v5",
    "Standard_D8ds_v5",
    "Standard_E2s_v5",
    "Standard_E8s_v5",
    "Standard_F2s_v2",
    "Standard_F8s_v2",
]


def test_skus_of_a_region_are_asked_for_ten_at_a_time() -> None:
    items = [*REAL_EASTUS_D2S_V3, *REAL_EASTUS_B1S, *REAL_EASTUS_D2ALS_V7]
    for sku, (series, price) in EASTUS_PUBLISHED.items():
        items += vm_items("eastus", sku, series, linux=price)
    expected: dict[str, Decimal | None] = {
        sku: Decimal(price) for sku, (_, price) in EASTUS_PUBLISHED.items()
    }
    expected |= {"Standard_D2s_v3": Decimal("0.096"), "Standard_B1s": Decimal("0.0104")}
    expected |= {"Standard_D2als_v7": Decimal("0.0804")} | dict.fromkeys(NOT_LISTED)
    assert len(expected) == 25
    with FakeRetailPricesAPI(items) as fake:
        src = source(fake.url)
        assert dict(zip(expected, priced(src, *map(aks, expected)), strict=True)) == expected
        assert fake.calls == 3
        asked = [skus_in(f) for f in fake.filters]
        assert sorted(len(skus) for skus in asked) == [5, 10, 10]
        assert sorted(sku for skus in asked for sku in skus) == sorted(expected)


def test_batches_hold_one_region_and_every_variant_of_their_skus() -> None:
    keys = [
        ("westeurope", "Standard_D4s_v3", "linux", "on_demand"),
        ("eastus", "Standard_D2s_v3", "linux", "on_demand"),
        ("eastus", "Standard_D2s_v3", "windows", "spot"),
        ("eastus", "Standard_B1s", "linux", "on_demand"),
    ]
    assert source("http://127.0.0.1:1").batches(keys) == [
        [keys[3], keys[1], keys[2]],
        [keys[0]],
    ]


def test_a_filter_too_long_for_the_api_is_refused_as_config(monkeypatch: pytest.MonkeyPatch) -> None:
    """The fake refuses more than 20 comparisons like the API: why SKUs are chunked."""
    monkeypatch.setattr(azure, "SKUS_PER_CALL", 25)
    with FakeRetailPricesAPI(REAL_EASTUS_D2S_V3) as fake:
        src = source(fake.url)
        priced(src, *(aks(f"Standard_D{n}s_v3") for n in range(2, 27)))
        assert (src.status.up, src.status.reason) == (False, Reason.CONFIG)
        assert "HTTP 400: Invalid OData parameters supplied" in src.status.detail
        assert fake.calls == 1  # a refused query is not retried


# -- failures ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ({"Retry-After": "7"}, 7.0),
        ({"retry-after": "Wed, 21 Oct 2015 07:28:00 GMT"}, 0.0),  # a date in the past: now
        ({"x-ms-ratelimit-microsoft.costmanagement-qpu-retry-after": "12", "Retry-After": "3"}, 12.0),
        ({"x-ms-ratelimit-remaining-tenant-reads": "11999"}, None),  # a count, not a delay
        ({"Retry-After": "soon"}, None),
    ],
)
def test_retry_after_headers(headers: dict[str, str], expected: float | None) -> None:
    assert azure._retry_after(urllib3.HTTPHeaderDict(headers), time.time()) == expected


def test_messages_and_accounting() -> None:
    """What tests/test_source_contract.py leaves to each cloud: the wait the API asked for, the status in
    the detail, every call counted with its reason, and a wrong path that is not retried."""
    with FakeRetailPricesAPI(REAL_EASTUS_D2S_V3) as fake:
        fake.fail_next(1, 429, headers={"Retry-After": "20"})
        src = source(fake.url, ttl_seconds=1.0)
        assert priced(src, aks("Standard_D2s_v3")) == [Decimal("0.096")]
        assert src.clock.sleeps == [20.0]  # what the API asked, not the 0.01 s backoff
        assert (fake.calls, src.status.requests, src.status.errors) == (2, 2, {Reason.THROTTLED: 1})
        fake.fail_next(3, 503)
        src.clock.advance(1.0)  # past the TTL
        priced(src, aks("Standard_D2s_v3"))
        assert src.status.reason is Reason.UNAVAILABLE and "HTTP 503" in src.status.detail
        assert (fake.calls, src.status.requests, src.status.errors[Reason.UNAVAILABLE]) == (5, 5, 3)
        wrong_path = source(fake.url + "/prices-proxy")
        assert priced(wrong_path, aks("Standard_D2s_v3")) == [None]
        assert (wrong_path.status.reason, fake.calls) == (Reason.NOT_FOUND, 6)


def test_connection_refused_is_unavailable() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    src = source(f"http://127.0.0.1:{port}", retries=1)
    assert priced(src, aks("Standard_D2s_v3")) == [None]
    assert (src.status.up, src.status.reason) == (False, Reason.UNAVAILABLE)
    assert "cannot connect" in src.status.detail and src.status.errors[Reason.UNAVAILABLE] == 2


@pytest.mark.parametrize(
    "body",
    [b'{"Items": [{"retailPrice": 0.096', b"<html>Bad gateway</html>", b'{"Count": 0, "NextPageLink": null}'],
)
def test_malformed_answers_are_bad_responses(body: bytes) -> None:
    with FakeRetailPricesAPI(REAL_EASTUS_D2S_V3) as fake:
        fake.answer_next(1, body)
        src = source(fake.url)
        assert priced(src, aks("Standard_D2s_v3")) == [None]
        assert (src.status.up, src.status.reason) == (False, Reason.BAD_RESPONSE)
        assert (fake.calls, src.status.errors[Reason.BAD_RESPONSE]) == (1, 1)  # not retried
        assert priced(src, aks("Standard_D2s_v3")) == [Decimal("0.096")]  # never stored: asked again


def test_a_next_page_link_that_loops_is_a_bad_response() -> None:
    with FakeRetailPricesAPI(REAL_EASTUS_D2S_V3) as fake:
        looping = {"Items": [], "NextPageLink": f"{fake.url}/api/retail/prices?$skip=1000", "Count": 0}
        fake.answer_next(3, json.dumps(looping).encode())
        src = source(fake.url, retries=0)
        assert priced(src, aks("Standard_D2s_v3")) == [None]
        assert (src.status.reason, fake.calls) == (Reason.BAD_RESPONSE, 2)
        assert "loops" in src.status.detail


# -- endpoint, cache, currency ----------------------------------------------------------------------------------


def test_next_page_links_go_to_the_configured_endpoint() -> None:
    with FakeRetailPricesAPI() as elsewhere, FakeRetailPricesAPI(REAL_EASTUS_D2S_V3, page_size=2) as fake:
        fake.link_base = elsewhere.url  # the API writes its own host (https://prices.azure.com:443)
        src = source(fake.url + "/")
        sku = "Standard_D2s_v3"
        assert priced(src, aks(sku), aks(sku, os="windows"), aks(sku, spot=True)) == [
            Decimal("0.096"),
            Decimal("0.188"),
            Decimal("0.018816"),
        ]
        assert (fake.calls, elsewhere.calls) == (3, 0)


def test_a_second_source_on_the_same_cache_makes_no_calls(tmp_path: Path) -> None:
    status = IntegrationStatus("cache")
    nodes = [aks("Standard_D2s_v3", spot=True), aks("Standard_D2s_v3", os="windows"), aks("Standard_M8ms")]
    with FakeRetailPricesAPI(REAL_EASTUS_D2S_V3) as fake:
        first = source(fake.url, cache=PriceCache(str(tmp_path / "cache.sqlite"), status))
        assert priced(first, *nodes) == [Decimal("0.018816"), Decimal("0.188"), None]
        calls = fake.calls
        second = source(fake.url, cache=PriceCache(str(tmp_path / "cache.sqlite"), status))
        quote = second.quote(nodes[0])
        assert quote is not None and (quote.hourly, quote.basis) == (Decimal("0.018816"), Basis.SPOT)
        assert priced(second, *nodes) == [Decimal("0.018816"), Decimal("0.188"), None]
        assert fake.calls == calls and second.status.requests == 0
        assert second.status.up


def test_the_configured_currency_is_asked_for_and_used() -> None:
    rate = Decimal("0.9")  # a test rate: the fake lists these items in EUR at 0.9 per USD
    with FakeRetailPricesAPI([*REAL_EASTUS_D2S_V3, *in_currency(REAL_EASTUS_D2S_V3, "EUR", rate)]) as fake:
        eur = source(fake.url, currency="EUR")
        linux, windows = aks("Standard_D2s_v3"), aks("Standard_D2s_v3", os="windows")
        assert priced(eur, linux, windows) == [Decimal("0.096") * rate, Decimal("0.188") * rate]
        assert fake.requests[-1].query["currencyCode"] == "'EUR'"
        quote = eur.quote(linux)
        assert quote is not None and (quote.hourly, quote.currency) == (Decimal("0.0864"), "EUR")
        assert priced(source(fake.url), linux) == [Decimal("0.096")]


def test_an_answer_in_another_currency_is_refused() -> None:
    with FakeRetailPricesAPI(REAL_EASTUS_D2S_V3) as fake:
        fake.ignore_currency = True  # a cache in front of the API that answers USD whatever is asked
        src = source(fake.url, currency="EUR")
        assert priced(src, aks("Standard_D2s_v3")) == [None]
        assert (src.status.up, src.status.reason, src.status.errors[Reason.BAD_RESPONSE]) == (
            False,
            Reason.BAD_RESPONSE,
            1,
        )
        assert "EUR" in src.status.detail and "USD" in src.status.detail


# -- keys and the fake itself ------------------------------------------------------------------------------------


def test_keys() -> None:
    src = source("http://127.0.0.1:1")
    assert src.key(node()) is None  # an EKS node
    assert src.key(aks("Standard_D2s_v3", region="")) is None
    assert src.key(aks("Standard_D2s_v3", region="EastUS", os="Windows", spot=True)) == (
        "eastus",
        "Standard_D2s_v3",
        "windows",
        "spot",
    )
    assert src.key(aks("Standard_D2s_v3", os="")) == ("eastus", "Standard_D2s_v3", "linux", "on_demand")


@pytest.mark.parametrize(
    ("odata", "status"),
    [
        ("serviceName eq 'Virtual Machines' and (armSkuName eq 'Standard_D2s_v3' or armSkuName eq 'B')", 200),
        ("armSkuName in ('Standard_D2s_v3')", 400),
        ("armRegionName eq 'eastus' and not(contains(productName,'Windows'))", 400),
        ("armSkuName ne 'Standard_D2s_v3'", 400),
        ("skuname eq 'D2s v3'", 400),
        (" or ".join(["armSkuName eq 'Standard_D2s_v3'"] * 21), 400),
    ],
)
def test_the_fake_refuses_filters_the_api_refuses(odata: str, status: int) -> None:
    with FakeRetailPricesAPI(REAL_EASTUS_D2S_V3) as fake:
        resp = urllib3.request("GET", f"{fake.url}/api/retail/prices", fields={"$filter": odata}, timeout=5)
        assert resp.status == status
        if status == 400:
            assert resp.json() == {
                "Error": {"Code": "BadRequest", "Message": "Invalid OData parameters supplied"}
            }
        else:
            assert resp.json()["Count"] == 9


def test_egress_through_the_environment_proxy(monkeypatch: pytest.MonkeyPatch) -> None:
    """HTTP(S)_PROXY is honoured (as boto3 and requests do for the other clouds); NO_PROXY bypasses it."""
    import threading
    import urllib.request
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    seen: list[str] = []
    direct = urllib.request.build_opener(urllib.request.ProxyHandler({}))

    class Proxy(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            seen.append(self.path)  # a forward proxy gets the absolute URL
            with direct.open(self.path, timeout=10) as upstream:
                body, status = upstream.read(), upstream.status
            self.send_response(status)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    proxy = ThreadingHTTPServer(("127.0.0.1", 0), Proxy)
    threading.Thread(target=proxy.serve_forever, daemon=True).start()
    try:
        with FakeRetailPricesAPI(REAL_EASTUS_D2S_V3) as fake:
            monkeypatch.setenv("HTTP_PROXY", f"http://127.0.0.1:{proxy.server_address[1]}")
            monkeypatch.delenv("NO_PROXY", raising=False)
            monkeypatch.delenv("no_proxy", raising=False)
            via_proxy = source(fake.url)
            via_proxy.wanted([aks("Standard_D2s_v3")])
            via_proxy.refresh()
            assert via_proxy.quote(aks("Standard_D2s_v3")).hourly == Decimal("0.096")  # type: ignore[union-attr]
            assert len(seen) == 1 and seen[0].startswith(f"{fake.url}/api/retail/prices?")

            monkeypatch.setenv("NO_PROXY", "127.0.0.1")
            bypassing = source(fake.url)
            bypassing.wanted([aks("Standard_D2s_v3")])
            bypassing.refresh()
            assert bypassing.status.up and len(seen) == 1
    finally:
        proxy.shutdown()


def test_an_empty_answer_for_a_new_region_is_no_price_not_a_failure() -> None:
    """Only a region that had prices makes an empty answer a failure: a size Azure does not sell in a
    region it never priced is simply unpriced, and the source stays up."""
    with FakeRetailPricesAPI([]) as fake:
        source = AzureRetailPrices(AzureRetailSettings(enabled=True, endpoint_url=fake.url), context())
        source.wanted([aks("Standard_D4s_v3")])
        source.refresh()
        assert source.status.up and source.quote(aks("Standard_D4s_v3")) is None
