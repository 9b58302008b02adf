"""Cold start and warm restart of the cloud price sources, each against its local wire-level fake.

300 distinct keys across 3 regions per cloud: (region, type, OS) for AWS and Azure, (region, machine type,
on-demand|spot) for GCP, where the OS is not part of the price. Counts every API call the fake answered on a
cold start (empty cache) and on a warm restart (a new source instance on the same SQLite file).
`python -m bench.prices` prints the table; `python -m bench` puts it in docs/performance.md.
"""

from __future__ import annotations

import dataclasses
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from exporter.cache import PriceCache
from exporter.config.sources.aws import AwsPricingSettings
from exporter.config.sources.azure import AzureRetailSettings
from exporter.config.sources.gcp import GcpCatalogSettings
from exporter.health import IntegrationStatus
from exporter.inventory.node import CapacityType, Node
from exporter.pricing.sources.context import SourceContext
from exporter.pricing.sources.shelf import ShelfSource
from exporter.snapshot import template_node


@dataclass
class PriceRun:
    cloud: str
    api: str
    keys: int
    priced: int
    cold_calls: int
    cold_seconds: float
    warm_calls: int


def _node(provider: str, region: str, instance_type: str, os: str = "linux", spot: bool = False) -> Node:
    node = template_node(provider, region, instance_type, os)
    return dataclasses.replace(
        node,
        name=f"{node.name}-{spot}",
        uid=f"{node.uid}-{spot}",
        capacity_type=CapacityType.SPOT if spot else CapacityType.ON_DEMAND,
    )


def _measure(
    cloud: str,
    api: str,
    nodes: list[Node],
    make: Callable[[PriceCache], ShelfSource],
    calls: Callable[[], int],
) -> PriceRun:
    with tempfile.TemporaryDirectory() as tmp:
        cache = PriceCache(str(Path(tmp) / "cache.sqlite"), IntegrationStatus("cache"))
        cold = make(cache)
        cold.wanted(nodes)
        started = time.perf_counter()
        cold.refresh()
        cold_seconds = time.perf_counter() - started
        cold_calls = calls()
        priced = sum(cold.quote(n) is not None for n in nodes)
        keys = len({cold.key(n) for n in nodes})
        warm = make(cache)
        warm.wanted(nodes)
        warm.refresh()
        warm_priced = sum(warm.quote(n) is not None for n in nodes)
        assert warm_priced == priced, "the warm restart must serve every cached price"
        return PriceRun(cloud, api, keys, priced, cold_calls, cold_seconds, calls() - cold_calls)


def aws() -> PriceRun:
    import os

    from exporter.pricing.sources.aws.price_list import AwsOnDemandPrices
    from fakes.aws_api import PricingApi, ec2_product

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
        "metal",
    )
    types = [f"{family}.{size}" for family in ("m6i", "c6i", "r6i", "m7i", "r7i") for size in sizes]
    nodes = [_node("aws", r, t, system) for r in regions for t in types for system in ("linux", "windows")]
    for name, value in (
        ("AWS_ACCESS_KEY_ID", "bench"),
        ("AWS_SECRET_ACCESS_KEY", "bench"),
        ("AWS_EC2_METADATA_DISABLED", "true"),
    ):
        os.environ.setdefault(name, value)  # the fake accepts any signature
    with PricingApi() as api:
        for r, region in enumerate(regions):
            for t, instance_type in enumerate(types):
                linux = f"{(96 + 7 * t + r) / 1000:.10f}"
                windows = f"{(188 + 7 * t + r) / 1000:.10f}"
                api.add(
                    ec2_product(region, instance_type, linux),
                    ec2_product(
                        region,
                        instance_type,
                        windows,
                        operating_system="Windows",
                        operation="RunInstances:0002",
                    ),
                )
        settings = AwsPricingSettings(enabled=True, endpoint_url=api.url, concurrency=4)
        return _measure(
            "AWS",
            "pricing:GetProducts",
            nodes,
            lambda cache: AwsOnDemandPrices(settings, SourceContext(cache=cache)),
            lambda: api.count("GetProducts"),
        )


def gcp() -> PriceRun:
    """A catalog with N1, N2, N2D, E2, C3 and T2D core and RAM SKUs, on-demand and Spot, in three regions
    (as many SKUs a family as the real catalog lists), padded with other services' rows to the real
    catalog's size, so the page count is realistic."""
    from exporter.pricing.sources.gcp.catalog import GcpCatalogPrices
    from fakes.gcp_api import AMERICAS, BELGIUM, FINLAND, FakeCatalogAPI, sku

    places = {"Americas": AMERICAS, "Belgium": BELGIUM, "Finland": FINLAND}
    families = {
        "N1 Predefined": ("0.031611", "0.004237"),
        "N2": ("0.031611", "0.004237"),
        "N2D AMD": ("0.027502", "0.003686"),
        "E2": ("0.021811", "0.002923"),
        "C3": ("0.03398", "0.00456"),
        "T2D AMD": ("0.027502", "0.003686"),
    }
    skus = []
    for place, regions in places.items():
        for family, (core, ram) in families.items():
            for prefix, usage in (("", "OnDemand"), ("Spot Preemptible ", "Preemptible")):
                group = "N1Standard" if family.startswith("N1") else None
                skus.append(
                    sku(
                        f"{prefix}{family} Instance Core running in {place}",
                        core,
                        group=group or "CPU",
                        regions=regions,
                        usage=usage,
                    )
                )
                skus.append(
                    sku(
                        f"{prefix}{family} Instance Ram running in {place}",
                        ram,
                        group=group or "RAM",
                        regions=regions,
                        usage=usage,
                    )
                )
    # The real Compute Engine service lists ~35,000 SKUs (disks, images, licences, network …).
    skus += [
        sku(f"Licence fee {i} running in Americas", "0.01", group="Other") for i in range(35_000 - len(skus))
    ]
    regions = ("us-central1", "europe-west1", "europe-north1")
    types = (
        [
            f"{family}-{cls}-{n}"
            for family in ("n2", "n2d", "e2", "c3")
            for cls in ("standard", "highmem")
            for n in (2, 4, 8, 16)
        ]
        + [f"n1-standard-{n}" for n in (1, 2, 4, 8, 16, 32, 64, 96)]
        + [f"t2d-standard-{n}" for n in (1, 2, 4, 8, 16, 32, 48, 60)]
        + ["e2-micro", "e2-small"]
    )
    assert len(types) == 50
    nodes = [_node("gcp", r, t, spot=spot) for r in regions for t in types for spot in (False, True)]
    with FakeCatalogAPI(skus=skus, api_key="bench-key") as api:
        settings = GcpCatalogSettings(enabled=True, endpoint_url=api.url, api_key="bench-key")
        return _measure(
            "GCP",
            "Cloud Billing Catalog skus.list (5,000-SKU pages)",
            nodes,
            lambda cache: GcpCatalogPrices(settings, SourceContext(cache=cache)),
            lambda: len(api.calls),
        )


def azure() -> PriceRun:
    from exporter.pricing.sources.azure.retail import AzureRetailPrices
    from fakes.azure_api import FakeRetailPricesAPI, vm_items

    regions = ("eastus", "westeurope", "northeurope")
    types = [f"Standard_D{n}s_v{v}" for v in (3, 4, 5, 6, 7) for n in (2, 4, 8, 16, 32, 48, 64, 96, 128, 192)]
    items: list[dict[str, Any]] = []
    for r, region in enumerate(regions):
        for t, sku in enumerate(types):
            linux = f"{(96 + 7 * t + r) / 1000:.3f}"
            windows = f"{(188 + 7 * t + r) / 1000:.3f}"
            items += vm_items(region, sku, "Dsv", linux=linux, windows=windows)
    nodes = [_node("azure", r, t, os) for r in regions for t in types for os in ("linux", "windows")]
    with FakeRetailPricesAPI(items) as api:
        settings = AzureRetailSettings(enabled=True, endpoint_url=api.url)
        return _measure(
            "Azure",
            "Retail Prices API (pages)",
            nodes,
            lambda cache: AzureRetailPrices(settings, SourceContext(cache=cache)),
            lambda: api.calls,
        )


def run_prices() -> list[PriceRun]:
    return [aws(), gcp(), azure()]


def render(runs: list[PriceRun]) -> str:
    lines = [
        "| cloud | API | keys | priced | cold-start calls | cold-start time | warm-restart calls |",
        "|---|---|---|---|---|---|---|",
    ]
    for run in runs:
        lines.append(
            f"| {run.cloud} | {run.api} | {run.keys} | {run.priced} | {run.cold_calls} | "
            f"{run.cold_seconds:.2f} s | {run.warm_calls} |"
        )
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    print(render(run_prices()))
