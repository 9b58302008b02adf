"""GCP billing export: the real google-cloud-bigquery client against a local BigQuery that runs the
exporter's GoogleSQL (via DuckDB) over a detailed-export table with committed-use and sustained-use
credits, spot, egress, a partial last day and a node missing from the bill."""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from exporter.config.sources.gcp import GcpBigQuerySettings
from exporter.health import Health, Reason
from exporter.inventory.node import CapacityType, Node, ProviderRef
from exporter.pricing.quote import Basis
from exporter.pricing.sources.gcp.bigquery import GcpBigQueryBilling
from fakes.bigquery_api import BILLING_COLUMNS, FakeBigQuery
from fakes.gcp_api import FakeCatalogAPI, write_adc
from tests.conftest import FakeClock, context, node

TABLE = "billing-admin.billing_export.gcp_billing_export_resource_v1_010101_ABCDEF_123456"
NOW = datetime(2024, 6, 6, 10, tzinfo=UTC)
LANDED = datetime(2024, 6, 5, 15, tzinfo=UTC)


def gke(name: str, *, spot: bool = False) -> Node:
    return node(
        name,
        uid=f"uid-{name}",
        provider_id=f"gce://shop-prod/europe-west1-b/{name}",
        ref=ProviderRef("gcp", account="shop-prod", zone="europe-west1-b", instance_id=name),
        instance_type="n2-standard-4",
        region="europe-west1",
        zone="europe-west1-b",
        capacity_type=CapacityType.SPOT if spot else CapacityType.ON_DEMAND,
        labels={"cloud.google.com/gke-nodepool": "default-pool"},
    )


CUD = gke("gke-shop-default-pool-3f1c2a9e-7xkq")  # committed use: a CUD credit every hour
SUD = gke("gke-shop-default-pool-3f1c2a9e-m2pd")  # sustained use credit
SPOT = gke("gke-shop-spot-pool-9a8b7c6d-q4zr", spot=True)
MISSING = gke("gke-shop-default-pool-3f1c2a9e-new1")
CORE, RAM = 0.1245, 0.0167 * 4  # n2-standard-4 per hour: 4 vCPU and 16 GiB, core and RAM SKUs


def struct_row(vm: str, sku: str, at: datetime, cost: float, credits: list[tuple[str, float]]) -> tuple[Any, ...]:
    start = at.replace(tzinfo=None)
    return (
        "010101-ABCDEF-123456",
        {"id": "6F81-5844-456A", "description": "Compute Engine"},
        {"id": "0000-1111-2222", "description": sku},
        start,
        start + timedelta(hours=1),
        {"id": "shop-prod", "number": "123456789012", "name": "shop-prod"},
        [{"key": "team", "value": "checkout"}],
        [{"key": "goog-k8s-cluster-name", "value": "shop"}],
        {"location": "europe-west1", "country": "BE", "region": "europe-west1", "zone": "europe-west1-b"},
        {"name": vm, "global_name": f"//compute.googleapis.com/projects/shop-prod/zones/europe-west1-b/instances/{vm}"},
        start + timedelta(hours=5),
        cost,
        "USD",
        1.0,
        {"amount": 3600.0, "unit": "seconds", "amount_in_pricing_units": 1.0, "pricing_unit": "hour"},
        [{"name": n, "amount": a, "full_name": n, "id": n, "type": t} for t, a in credits for n in [t.title()]],
        {"month": f"{start:%Y%m}"},
        "regular",
        start.replace(hour=0),
    )


def bill() -> list[tuple[Any, ...]]:
    rows = []
    at = datetime(2024, 5, 31, tzinfo=UTC)
    while at < LANDED:
        for vm, core, ram, credits in (
            (CUD.name, CORE * 4, RAM, [("COMMITTED_USAGE_DISCOUNT", -CORE * 4 * 0.37)]),
            (SUD.name, CORE * 4, RAM, [("SUSTAINED_USAGE_DISCOUNT", -(CORE * 4 + RAM) * 0.2)]),
            (SPOT.name, 0.03, 0.008, []),
        ):
            rows.append(struct_row(vm, "N2 Instance Core running in EMEA", at, core, credits))
            rows.append(struct_row(vm, "N2 Instance Ram running in EMEA", at, ram, []))
        if at.hour == 12:
            rows.append(struct_row(CUD.name, "Network Internet Egress from EMEA to Americas", at, 0.24, []))
        at += timedelta(hours=1)
    return rows


def truth(vm: str, credit_types: tuple[str, ...] = ()) -> float:
    """Cost of a VM's compute over June 2-4 (the latest 3 complete days): cost + counted credits."""
    total = 0.0
    for row in bill():
        day = row[3].date()
        if row[9]["name"] == vm and "Egress" not in row[2]["description"] and day.isoformat() in (
            "2024-06-02", "2024-06-03", "2024-06-04"
        ):
            total += row[11] + sum(c["amount"] for c in row[15] if not credit_types or c["type"] in credit_types)
    return total


@pytest.fixture(scope="module")
def bigquery(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FakeBigQuery]:
    with FakeBigQuery(page_size=40) as fake:
        fake.create_table(TABLE, BILLING_COLUMNS, bill())
        yield fake


@pytest.fixture(scope="module")
def adc(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """ADC whose token endpoint is a local fake (the catalog fake's /token)."""
    with FakeCatalogAPI(token="ya29.test-token") as tokens:
        path = write_adc(tmp_path_factory.mktemp("adc") / "adc.json", f"{tokens.url}/token")
        yield path


def make_source(bigquery: FakeBigQuery, adc: Path, monkeypatch: pytest.MonkeyPatch, health: Health,
                clock: FakeClock, **settings: Any) -> GcpBigQueryBilling:
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(adc))
    project, dataset, table = TABLE.split(".")
    options: dict[str, Any] = {"retries": 0, "backoff_seconds": 0.01, "backoff_max_seconds": 0.02,
                               "timeout_seconds": 10.0, "tags": ("team",)}
    options.update(settings)
    source = GcpBigQueryBilling(
        GcpBigQuerySettings(enabled=True, project=project, dataset=dataset, table=table,
                            endpoint_url=bigquery.url, **options),
        context(clock, health=health),
    )
    source.wanted([CUD, SUD, SPOT, MISSING])
    return source


@pytest.mark.parametrize("credit_types", [(), ("COMMITTED_USAGE_DISCOUNT",)])
def test_billed_rate_includes_the_counted_credits(
    bigquery: FakeBigQuery, adc: Path, monkeypatch: pytest.MonkeyPatch, credit_types: tuple[str, ...]
) -> None:
    health = Health()
    source = make_source(bigquery, adc, monkeypatch, health, FakeClock(NOW), credit_types=credit_types)
    assert source.refresh() is True, health.integration("gcp_bigquery").detail
    status = health.integration("gcp_bigquery")
    assert status.up and status.data_timestamp == datetime(2024, 6, 5, tzinfo=UTC).timestamp()
    for vm in (CUD, SUD, SPOT):
        facts, quote = source.facts(vm), source.quote(vm)
        assert facts is not None and quote is not None and quote.basis is Basis.BILLED
        assert facts.hours == 72 and [d for d, _ in facts.days] == ["2024-06-02", "2024-06-03", "2024-06-04"]
        assert math.isclose(float(quote.hourly) * facts.hours, truth(vm.name, credit_types), rel_tol=0.005)
    cud = source.facts(CUD)
    assert cud is not None and cud.network_hourly == pytest.approx(3 * 0.24 / 72)
    assert dict(cud.tags) == {"team": "checkout"}
    assert source.quote(MISSING) is None
    job = bigquery.jobs[-1]
    assert "_PARTITIONTIME >= @partition_start" in json.dumps(job)
    assert source.scanned_bytes > 0


def test_a_backend_error_is_retried_by_our_fetcher_only(
    bigquery: FakeBigQuery, adc: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One retry layer: the client's own retries are off, so without retries a backendError is one call
    and a failed refresh; with one retry, the Fetcher's, the same fault is retried away."""
    health = Health()
    status = health.integration("gcp_bigquery")
    once = make_source(bigquery, adc, monkeypatch, health, FakeClock(NOW), retries=0)
    calls = len(bigquery.calls)
    bigquery.fail_next("backendError", count=1)
    once.refresh()
    assert (status.up, status.reason) == (False, Reason.UNAVAILABLE), status.detail
    assert len(bigquery.calls) == calls + 1
    retried = make_source(bigquery, adc, monkeypatch, health, clock := FakeClock(NOW), retries=1)
    bigquery.fail_next("backendError", count=1)
    retried.refresh()
    assert status.up and retried.quote(SUD) is not None
    assert len(clock.sleeps) == 1  # the Fetcher's backoff, on the source's clock
