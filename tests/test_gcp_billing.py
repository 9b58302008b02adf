"""GCP billing export: the real google-cloud-bigquery client against a local BigQuery that runs the
exporter's GoogleSQL (via DuckDB) over a detailed-export table shaped as real accounts have it: instance
rows beside the same VM's disk rows, egress under Networking and (older style) Compute Engine, usage hours
split over export batches (one more than a day late, in a later partition), committed-use and
sustained-use credits, spot, tax and adjustment rows, a VM that started mid-hour, a partial last day and a
node missing from the bill."""

from __future__ import annotations

import dataclasses
import json
import math
import zlib
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
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
LANDED = datetime(2024, 6, 5, 15, tzinfo=UTC)  # the newest usage hour on the bill ends here
PROJECT, ZONE = "shop-prod", "europe-west1-b"
USED_DAYS = ("2024-06-02", "2024-06-03", "2024-06-04")  # the latest 3 complete days at NOW


def gke(name: str, *, spot: bool = False, machine: str = "n2-standard-4") -> Node:
    return node(
        name,
        uid=f"uid-{name}",
        provider_id=f"gce://{PROJECT}/{ZONE}/{name}",
        ref=ProviderRef("gcp", account=PROJECT, zone=ZONE, instance_id=name),
        instance_type=machine,
        region="europe-west1",
        zone=ZONE,
        capacity_type=CapacityType.SPOT if spot else CapacityType.ON_DEMAND,
        labels={"cloud.google.com/gke-nodepool": "default-pool"},
    )


CUD = gke("gke-shop-default-pool-3f1c2a9e-7xkq")  # committed use: a CUD credit every hour
SUD = gke("gke-shop-default-pool-3f1c2a9e-m2pd")  # sustained use credit
SPOT = gke("gke-shop-spot-pool-9a8b7c6d-q4zr", spot=True, machine="n2-standard-2")
LATE = gke("gke-shop-default-pool-3f1c2a9e-z8wt", machine="n2-standard-8")  # started 2024-06-03 08:14 UTC
MISSING = gke("gke-shop-default-pool-3f1c2a9e-new1")
LATE_START = datetime(2024, 6, 3, 8, 14, tzinfo=UTC)
SHAPES = {CUD.name: (4, 16), SUD.name: (4, 16), SPOT.name: (2, 8), LATE.name: (8, 32)}  # vCPUs, GiB
CORE, RAM = 0.031611, 0.004237  # per vCPU-hour and GiB-hour (EMEA, n2)
SPOT_CORE, SPOT_RAM = 0.00765, 0.001025
DISK_HOURLY = 100 * 0.1 / 730  # a 100 GiB boot disk at $0.10 per GiB-month, per hour
GIB_BYTES = 2**30

# Where each shape below comes from:
# - Columns, units and the meaning of usage.amount (base units: vCPU-seconds for core SKUs, byte-seconds
#   for RAM and disks; amount_in_pricing_units in vCPU-hours, GiB-hours, GiB-months), resource.name /
#   resource.global_name (instances/… for the VM, disks/… for its disks under the same resource.name: a
#   GKE boot disk is named after its VM), cost_type ('regular', 'tax', 'adjustment', 'rounding error'),
#   export_time and credits[].type: Google's "Structure of Detailed data export",
#   https://cloud.google.com/billing/docs/how-to/export-data-bigquery-tables/detailed-usage (and its
#   "Standard data export" sibling for the common fields). `_PARTITIONTIME` as the day a batch was
#   exported, so that one usage hour's rows can sit in several partitions: the same export docs
#   (partitioned tables, data exported through the day and corrected late).
# - Compute Engine SKU names as the Cloud Billing Catalog lists them ("N2 Instance Core running in EMEA",
#   "Spot Preemptible N2 Instance Ram running in EMEA", "Balanced PD Capacity", "SSD backed PD Capacity").
# - Network: Google's 2023 network SKU changes moved VM egress to service Networking and renamed it
#   "… Data Transfer Out …" ("Network Inter Zone Data Transfer Out", "Network Internet Data Transfer Out
#   from EMEA to Americas"); older rows say "Network Internet Egress from EMEA to Americas" under Compute
#   Engine. Those rows' location.zone is left empty here: the query must not need it.
# - Service ids: Compute Engine 6F81-5844-456A, Networking E505-1604-58F8 (Cloud Billing Catalog). SKU ids
#   and credit names are made up: the query reads neither.
COMPUTE = {"id": "6F81-5844-456A", "description": "Compute Engine"}
NETWORKING = {"id": "E505-1604-58F8", "description": "Networking"}
CREDIT_NAMES = {
    "COMMITTED_USAGE_DISCOUNT": "Committed use discount: CPU",
    "SUSTAINED_USAGE_DISCOUNT": "Sustained Usage Discount",
}


def export_row(
    vm: str,
    sku: str,
    at: datetime,
    cost: float,
    usage: tuple[float, str, float, str],
    *,
    credits: tuple[tuple[str, float], ...] = (),
    service: dict[str, str] = COMPUTE,
    kind: str = "instances",
    exported: timedelta = timedelta(hours=5),
    cost_type: str = "regular",
    zone: str | None = ZONE,
) -> tuple[Any, ...]:
    """One row of the detailed export, in BILLING_COLUMNS' order. `at` is the usage hour (the export's
    usage_start_time/usage_end_time are whole hours even when the VM ran part of it); `exported` is when
    its batch was exported after the hour began, and its partition is that export's day."""
    start = at.replace(tzinfo=None)
    export_time = start + exported
    amount, unit, pricing_amount, pricing_unit = usage
    return (
        "010101-ABCDEF-123456",
        service,
        {"id": f"{zlib.crc32(sku.encode()):08X}", "description": sku},
        start,
        start + timedelta(hours=1),
        {"id": PROJECT, "number": "123456789012", "name": PROJECT},
        [{"key": "team", "value": "checkout"}],
        [{"key": "goog-k8s-cluster-name", "value": "shop"}],
        {"location": ZONE if zone else "europe-west1", "country": "BE", "region": "europe-west1", "zone": zone},
        {"name": vm, "global_name": f"//compute.googleapis.com/projects/{PROJECT}/zones/{ZONE}/{kind}/{vm}"},
        export_time,
        cost,
        "USD",
        1.0,
        {"amount": amount, "unit": unit, "amount_in_pricing_units": pricing_amount, "pricing_unit": pricing_unit},
        [{"name": CREDIT_NAMES[t], "amount": a, "full_name": CREDIT_NAMES[t], "id": t, "type": t} for t, a in credits],
        {"month": f"{start:%Y%m}"},
        cost_type,
        None,  # consumption_model: only on usage a migrated spend-based CUD covered
        export_time.replace(hour=0, minute=0, second=0, microsecond=0),
    )


def core(vcpus: int, run: float) -> tuple[float, str, float, str]:
    """A core SKU's usage for `run` hours of a VM: vCPU-seconds (vCPU-hours in pricing units)."""
    return (vcpus * 3600 * run, "seconds", vcpus * run, "hour")


def ram(gib: int, run: float) -> tuple[float, str, float, str]:
    """A RAM SKU's usage for `run` hours: byte-seconds (GiB-hours in pricing units)."""
    return (gib * GIB_BYTES * 3600 * run, "byte-seconds", gib * run, "gibibyte hour")


def gib_bytes(gib: float) -> tuple[float, str, float, str]:
    return (gib * GIB_BYTES, "bytes", gib, "gibibyte")


DISK = (100 * GIB_BYTES * 3600, "byte-seconds", 100 / 730, "gibibyte month")
NONE = (0.0, "seconds", 0.0, "hour")


def items() -> list[tuple[str, tuple[Any, ...]]]:
    """The fixture bill as (what the row is, row): "instance" rows are the VM's price, "network" its
    egress, "other" (disks, tax, adjustments) neither. The truth below sums by this label."""
    out: list[tuple[str, tuple[Any, ...]]] = []
    at = datetime(2024, 5, 31, tzinfo=UTC)
    while at < LANDED:
        for vm in (CUD.name, SUD.name, SPOT.name, LATE.name):
            if vm == LATE.name and at + timedelta(hours=1) <= LATE_START:
                continue
            run = 1.0
            if vm == LATE.name and at < LATE_START:
                run = (at + timedelta(hours=1) - LATE_START) / timedelta(hours=1)  # 46 minutes: 0.7667 h
            spot, (vcpus, gib) = vm == SPOT.name, SHAPES[vm]
            prefix = "Spot Preemptible N2" if spot else "N2"
            core_cost = (SPOT_CORE if spot else CORE) * vcpus * run
            ram_cost = (SPOT_RAM if spot else RAM) * gib * run
            core_credits: tuple[tuple[str, float], ...] = ()
            ram_credits: tuple[tuple[str, float], ...] = ()
            if vm == CUD.name:
                core_credits = (("COMMITTED_USAGE_DISCOUNT", -core_cost * 0.37),)
            elif vm == SUD.name:
                core_credits = (("SUSTAINED_USAGE_DISCOUNT", -core_cost * 0.2),)
                ram_credits = (("SUSTAINED_USAGE_DISCOUNT", -ram_cost * 0.2),)
            core_sku = f"{prefix} Instance Core running in EMEA"
            if vm == CUD.name and at == datetime(2024, 6, 3, 10, tzinfo=UTC):
                # one hour in two export batches; the second exported 44 h late, into the 2024-06-05 partition
                for share, exported in ((0.75, timedelta(hours=5)), (0.25, timedelta(hours=44))):
                    out.append(("instance", export_row(
                        vm, core_sku, at, core_cost * share, core(vcpus, run * share), exported=exported,
                        credits=tuple((t, a * share) for t, a in core_credits),
                    )))
            else:
                out.append(("instance", export_row(vm, core_sku, at, core_cost, core(vcpus, run), credits=core_credits)))
            out.append(("instance", export_row(
                vm, f"{prefix} Instance Ram running in EMEA", at, ram_cost, ram(gib, run), credits=ram_credits
            )))
            # the boot disk: same resource.name, a disks/ global name, billed for the whole hour
            disk_sku = "SSD backed PD Capacity" if spot else "Balanced PD Capacity"
            out.append(("other", export_row(vm, disk_sku, at, DISK_HOURLY, DISK, kind="disks")))
        if at.hour == 12:
            # egress since the 2023 SKU changes: service Networking, "… Data Transfer Out …"
            out.append(("network", export_row(
                CUD.name, "Network Inter Zone Data Transfer Out", at, 0.24, gib_bytes(24),
                service=NETWORKING, zone=None,
            )))
            # egress as older rows have it: service Compute Engine, "… Egress …"
            out.append(("network", export_row(
                SUD.name, "Network Internet Egress from EMEA to Americas", at, 0.05, gib_bytes(0.5)
            )))
        if at.hour == 20:
            out.append(("network", export_row(
                CUD.name, "Network Internet Data Transfer Out from EMEA to Americas", at, 0.10, gib_bytes(1),
                service=NETWORKING, zone=None,
            )))
        if at == datetime(2024, 6, 3, 23, tzinfo=UTC):
            # not usage: a tax row and an adjustment on the VM's core SKU, neither counted
            out.append(("other", export_row(
                SUD.name, "N2 Instance Core running in EMEA", at, 1.5, NONE, cost_type="tax"
            )))
            out.append(("other", export_row(
                SUD.name, "N2 Instance Core running in EMEA", at, -0.9, core(4, 1), cost_type="adjustment"
            )))
        at += timedelta(hours=1)
    return out


def bill() -> list[tuple[Any, ...]]:
    return [row for _, row in items()]


def truth(vm: str, days: tuple[str, ...], kind: str = "instance", credit_types: tuple[str, ...] = ()) -> float:
    """What the fixture bill charges a VM over these UTC days for its instance (cost + counted credits) or
    its network, summed from the rows labelled so."""
    total = 0.0
    for label, row in items():
        if label == kind and row[9]["name"] == vm and row[3].date().isoformat() in days:
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


def test_the_fixture_has_the_shapes_it_claims() -> None:
    """Guard the fixture itself: what the query must cope with is really in it."""
    rows = bill()
    split = [
        r for r in rows
        if r[9]["name"] == CUD.name and r[3] == datetime(2024, 6, 3, 10) and "Core" in r[2]["description"]
    ]
    late = split[1]  # exported more than a day after its usage hour, into a later partition
    assert len(split) == 2 and late[19].date() == date(2024, 6, 5) and late[10] - late[3] > timedelta(days=1)
    assert {r[1]["description"] for r in rows if "Data Transfer Out" in r[2]["description"]} == {"Networking"}
    assert {r[1]["description"] for r in rows if "Egress" in r[2]["description"]} == {"Compute Engine"}
    assert any("/disks/" in r[9]["global_name"] and r[9]["name"] == CUD.name for r in rows)
    assert {r[17] for r in rows} == {"regular", "tax", "adjustment"}
    cores = [r for r in rows if r[9]["name"] == LATE.name and "Core" in r[2]["description"]]
    first = min(cores, key=lambda r: r[3])
    assert first[3] == datetime(2024, 6, 3, 8) and first[14]["amount"] == pytest.approx(46 * 60 * 8)


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
        assert facts.hours == pytest.approx(72) and facts.day_names == USED_DAYS
        billed = truth(vm.name, USED_DAYS, credit_types=credit_types)
        assert math.isclose(float(quote.hourly) * facts.hours, billed, rel_tol=0.005), vm.name
        for day, cost in facts.days:  # each usable day's cost is that day's bill
            assert cost == pytest.approx(truth(vm.name, (day,), credit_types=credit_types), rel=0.005), day
        network = truth(vm.name, USED_DAYS, "network")
        assert facts.network_hourly == pytest.approx(network / 72), vm.name
        assert dict(facts.tags) == {"team": "checkout"}
    cud, sud, spot = (source.facts(vm) for vm in (CUD, SUD, SPOT))
    assert cud is not None and cud.network_hourly == pytest.approx(3 * (0.24 + 0.10) / 72)
    assert sud is not None and sud.network_hourly == pytest.approx(3 * 0.05 / 72)
    assert spot is not None and spot.network_hourly == 0
    assert source.quote(MISSING) is None
    job = json.dumps(bigquery.jobs[-1])
    assert "_PARTITIONTIME >= @partition_start" in job
    assert source.scanned_bytes > 0


def test_each_vm_day_is_its_instance_cost_and_running_hours(
    bigquery: FakeBigQuery, adc: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Per VM and day, straight from `query()`: the disks, tax and adjustment rows are not in the cost,
    the late second half of a split hour is, and hours are the time the VM ran (a VM started at 08:14 ran
    15.77 h that day, not 16)."""
    source = make_source(bigquery, adc, monkeypatch, Health(), FakeClock(NOW))
    resources = [r for vm in (CUD, SUD, SPOT, LATE, MISSING) if (r := source.resource(vm)) is not None]
    start, end = source.window(NOW.timestamp())
    billed = source.bill(resources, start, end)
    assert billed.watermark == LANDED
    partition_start = next(
        p for p in bigquery.jobs[-1]["queryParameters"] if p["name"] == "partition_start"
    )  # the window's first day less one, and no upper bound on the export day
    assert partition_start["parameterValue"]["value"].startswith(f"{start - timedelta(days=1):%Y-%m-%d}")
    for vm in (CUD, SUD, SPOT, LATE):
        resource = source.resource(vm)
        assert resource is not None
        for day in (date(2024, 6, d) for d in range(1, 5)):
            totals = billed.totals(resource, day)
            if vm is LATE and day < LATE_START.date():
                assert totals is None
                continue
            assert totals is not None, (vm.name, day)
            running = 24.0
            if vm is LATE and day == LATE_START.date():
                running = 24 - (LATE_START - LATE_START.replace(hour=0, minute=0)) / timedelta(hours=1)
            assert totals.hours == pytest.approx(running), (vm.name, day)
            days = (day.isoformat(),)
            assert math.isclose(totals.cost, truth(vm.name, days), rel_tol=1e-9), (vm.name, day)
            assert math.isclose(totals.network_cost, truth(vm.name, days, "network"), abs_tol=1e-12)
    late = billed.totals(f"{PROJECT}/{ZONE}/{LATE.name}", LATE_START.date())
    assert late is not None and late.hours == pytest.approx(15 + 46 / 60)
    assert late.cost / late.hours == pytest.approx(CORE * 8 + RAM * 32)  # proportional first hour
    assert billed.totals(f"{PROJECT}/{ZONE}/{MISSING.name}", date(2024, 6, 3)) is None


def test_a_node_created_mid_day_counts_that_day_with_its_alive_hours(
    bigquery: FakeBigQuery, adc: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """LATE's VM started 08:14 on June 3 and its Node registered a minute later: June 3 is usable with the
    15.77 h it ran, so its rate and daily costs come from June 3 and 4. Without a creation time it counts
    as alive all day, and the bill's 15.77 h of June 3 look like a day still being filled: skipped."""
    registered = dataclasses.replace(LATE, created=(LATE_START + timedelta(minutes=1)).timestamp())
    for late, days in ((registered, ("2024-06-03", "2024-06-04")), (LATE, ("2024-06-04",))):
        health = Health()
        source = make_source(bigquery, adc, monkeypatch, health, FakeClock(NOW))
        source.wanted([CUD, late])
        assert source.refresh() is True, health.integration("gcp_bigquery").detail
        facts, quote = source.facts(late), source.quote(late)
        assert facts is not None and quote is not None and facts.day_names == days
        hours = 24.0 * len(days) - (8 + 14 / 60) * ("2024-06-03" in days)
        assert facts.hours == pytest.approx(hours)
        assert math.isclose(float(quote.hourly) * facts.hours, truth(LATE.name, days), rel_tol=0.005)
        for day, cost in facts.days:
            assert cost == pytest.approx(truth(LATE.name, (day,)), rel=0.005), day
        assert facts.network_hourly == pytest.approx(truth(LATE.name, days, "network") / hours)


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
