"""Azure Cost Management billing: the real SDK against a local ARM fake over TLS.

A scale set's daily cost is apportioned over the instance-hours the exporter observed; these tests observe
a realistic AKS pool (an instance removed at noon one day), a spot pool and an availability-set VM through
reservation and on-demand days, and check every exported rate against the fixture's own arithmetic.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from exporter.cache import PriceCache
from exporter.config import PricingConfig
from exporter.config.sources.azure import AzureCostSettings
from exporter.health import Health, Reason
from exporter.inventory.node import CapacityType, Node, ProviderRef
from exporter.metrics.store import NodeMetricsStore
from exporter.pricing.engine import PricingEngine
from exporter.pricing.quote import Basis
from exporter.pricing.sources.azure.cost_management import AzureCostBilling
from exporter.pricing.sources.offline import OfflinePrices
from fakes.cost_management_api import FakeCostManagement, StaticToken, UsageRecord
from tests.conftest import FakeClock, context, node, node_text

SUB = "0b1f6471-1bf0-4dda-aec3-cb9272f09590"
RG = "MC_prod-rg_prod-aks_eastus"
SCOPE = f"/subscriptions/{SUB}/resourceGroups/{RG}"
ARM = f"/subscriptions/{SUB}/resourceGroups/{RG}/providers/Microsoft.Compute"
POOL = f"{ARM}/virtualMachineScaleSets/aks-nodepool1-12345678-vmss"
SPOT = f"{ARM}/virtualMachineScaleSets/aks-spotpool-87654321-vmss"
VM = f"{ARM}/virtualMachines/aks-nodepool1-19574989-0"
NEW_POOL = "aks-gpupool-55555555-vmss"  # created today: not on the bill yet
NOW = datetime(2024, 6, 6, 10, 0, tzinfo=UTC)
D = [date(2024, 6, d) for d in range(1, 7)]  # June 1..6: 1-4 complete, 5 settling, 6 today


def aks_node(name: str, scale_set: str, index: str, *, spot: bool = False, size: str = "Standard_D2s_v3") -> Node:
    provider_id = (
        f"azure:///subscriptions/{SUB}/resourceGroups/{RG.lower()}/providers/Microsoft.Compute/"
        f"virtualMachineScaleSets/{scale_set}/virtualMachines/{index}"
    )
    return node(
        name,
        provider_id=provider_id,
        ref=ProviderRef("azure", account=SUB, resource_group=RG.lower(), instance_id=index, scale_set=scale_set),
        instance_type=size,
        region="eastus",
        zone="eastus-1",
        capacity_type=CapacityType.SPOT if spot else CapacityType.ON_DEMAND,
        cpu_cores=2.0,
        memory_bytes=8 * 2**30,
        labels={"kubernetes.azure.com/agentpool": scale_set.split("-")[1], "team": "payments"},
    )


POOL_NODES = [aks_node(f"aks-nodepool1-12345678-vmss00000{i}", "aks-nodepool1-12345678-vmss", str(i)) for i in range(3)]
SPOT_NODE = aks_node("aks-spotpool-87654321-vmss000000", "aks-spotpool-87654321-vmss", "0", spot=True)
VM_NODE = node(
    "aks-nodepool1-19574989-0",
    provider_id=f"azure://{VM}",
    ref=ProviderRef("azure", account=SUB, resource_group=RG, instance_id="aks-nodepool1-19574989-0"),
    instance_type="Standard_D2s_v3",
    region="eastus",
    zone="",
    cpu_cores=2.0,
    memory_bytes=8 * 2**30,
)
NEW_NODE = aks_node(f"{NEW_POOL}000000", NEW_POOL, "0", size="Standard_D4s_v3")

# The pool's third instance is deleted at noon on June 4: 60 instance-hours that day.
POOL_HOURS = {D[0]: 72, D[1]: 72, D[2]: 72, D[3]: 60, D[4]: 48, D[5]: 20}


def bill() -> list[UsageRecord]:
    """Reservation-covered days at $0.06/h amortized, on-demand days at list $0.096/h, spot at $0.02/h,
    the VM on-demand at $0.10/h; the partial June 5 and 6 rows land too (they must not be used)."""
    records = []
    for day, hours in POOL_HOURS.items():
        if day in (D[1], D[2]):  # reservation days: amortized cost, nothing in ActualCost
            records.append(UsageRecord(day, POOL, "Reservation", hours * 0.06, 0.0))
        else:
            billed = hours * 0.096 * (0.4 if day >= D[4] else 1)  # today and yesterday: half-landed
            records.append(UsageRecord(day, POOL, "OnDemand", billed, billed))
    for day in D[1:]:
        records.append(UsageRecord(day, SPOT, "Spot", 24 * 0.02, 24 * 0.02))
        records.append(UsageRecord(day, VM, "OnDemand", 24 * 0.10, 24 * 0.10))
        records.append(UsageRecord(day, VM, "OnDemand", 1.5, 1.5, meter_category="Bandwidth"))  # not compute
    records.append(UsageRecord(D[2], f"{ARM}/disks/aks-pool-osdisk", "OnDemand", 5.0, 5.0, meter_category="Storage"))
    return records


def observe(source: AzureCostBilling, until: datetime) -> None:
    """Play the inventory the exporter saw from June 1 until `until`, every 20 minutes."""
    at = datetime(2024, 6, 1, tzinfo=UTC)
    while at < until:
        pool = POOL_NODES if at < datetime(2024, 6, 4, 12, tzinfo=UTC) else POOL_NODES[:2]
        seen = [*pool, SPOT_NODE] + ([VM_NODE] if at >= datetime(2024, 6, 2, tzinfo=UTC) else [])
        source.observe(seen, at.timestamp())
        at += timedelta(minutes=20)


@pytest.fixture(scope="module")
def arm(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FakeCostManagement]:
    with FakeCostManagement(tmp_path_factory.mktemp("arm")) as fake:
        yield fake


@pytest.fixture
def fake(arm: FakeCostManagement) -> FakeCostManagement:
    arm.reset()
    arm.scopes.add(SCOPE)
    arm.records.extend(bill())
    return arm


def make_source(
    fake: FakeCostManagement, tmp_path: Path, health: Health, clock: FakeClock, **settings: Any
) -> AzureCostBilling:
    options: dict[str, Any] = {"retries": 1, "backoff_seconds": 0.01, "backoff_max_seconds": 0.02}
    options.update(settings)
    config = AzureCostSettings(
        enabled=True, scope=SCOPE, endpoint_url=fake.url, timeout_seconds=2.0, **options
    )
    cache = PriceCache(str(tmp_path / "cache.sqlite"), health.integration("cache"))
    return AzureCostBilling(
        config,
        context(clock, health=health, cache=cache),
        credential=StaticToken(fake.token),
        connection_verify=fake.ca_file,
    )


def ready(fake: FakeCostManagement, tmp_path: Path, **settings: Any) -> tuple[AzureCostBilling, Health, FakeClock]:
    health, clock = Health(), FakeClock(NOW)
    source = make_source(fake, tmp_path, health, clock, **settings)
    observe(source, NOW)
    source.wanted([*POOL_NODES[:2], SPOT_NODE, VM_NODE, NEW_NODE])
    return source, health, clock


def test_scale_set_cost_is_apportioned_over_observed_instance_hours(
    fake: FakeCostManagement, tmp_path: Path
) -> None:
    source, health, _ = ready(fake, tmp_path)
    assert source.refresh() is True
    status = health.integration("azure_cost_management")
    assert status.up and status.reason is None
    # Freshness: the newest complete day is June 4 (June 5 ended 10 h ago, less than settle_hours).
    assert status.data_timestamp == datetime(2024, 6, 5, tzinfo=UTC).timestamp()
    # June 2-4 (the latest three complete days): two reservation days and one on-demand day with 60 h.
    truth = {D[1]: 72 * 0.06, D[2]: 72 * 0.06, D[3]: 60 * 0.096}
    facts = source.facts(POOL_NODES[0])
    assert facts is not None
    assert dict(facts.days) == pytest.approx({d.isoformat(): c for d, c in truth.items()})
    assert facts.hours == pytest.approx(72 + 72 + 60)
    quote = source.quote(POOL_NODES[1])
    assert quote is not None and quote.basis is Basis.BILLED
    assert math.isclose(float(quote.hourly) * facts.hours, sum(truth.values()), rel_tol=0.005)
    # Every instance of the pool gets the pool's rate; spot and the single VM get their own.
    spot = source.quote(SPOT_NODE)
    vm = source.quote(VM_NODE)
    assert spot is not None and math.isclose(float(spot.hourly), 0.02, rel_tol=0.005)
    assert vm is not None and math.isclose(float(vm.hourly), 0.10, rel_tol=0.005)  # bandwidth excluded
    assert source.quote(NEW_NODE) is None  # not on the bill: the engine prices it from the shelf
    vm_facts = source.facts(VM_NODE)
    assert vm_facts is not None and vm_facts.network_hourly is None  # Azure cannot attribute network
    # The query: Daily amortized cost, grouped by resource and pricing model, filtered to the cluster.
    body = fake.calls[0]["body"]
    assert body["type"] == "AmortizedCost" and body["dataset"]["granularity"] == "Daily"
    assert [g["name"] for g in body["dataset"]["grouping"]] == ["ResourceId", "PricingModel"]
    ids = body["dataset"]["filter"]["and"][0]["dimensions"]["values"]
    assert POOL.lower() in ids and VM.lower() in ids and len(ids) == 4
    assert source.rows_ingested == 16  # 6 + 5 + 5: bandwidth and disk rows are filtered out by the query


def test_actual_cost_shows_reservation_days_as_free(fake: FakeCostManagement, tmp_path: Path) -> None:
    source, _, _ = ready(fake, tmp_path, cost_type="ActualCost")
    source.refresh()
    facts = source.facts(POOL_NODES[0])
    assert facts is not None
    assert dict(facts.days) == pytest.approx({"2024-06-02": 0.0, "2024-06-03": 0.0, "2024-06-04": 5.76})


def test_days_the_exporter_barely_ran_are_not_apportioned(fake: FakeCostManagement, tmp_path: Path) -> None:
    health, clock = Health(), FakeClock(NOW)
    source = make_source(fake, tmp_path, health, clock)
    # The exporter ran only from June 4, 14:00: June 4 has 10 observed hours (< 12), June 2-3 none.
    at = datetime(2024, 6, 4, 14, tzinfo=UTC)
    while at < NOW:
        source.observe([*POOL_NODES[:2], SPOT_NODE, VM_NODE], at.timestamp())
        at += timedelta(minutes=20)
    source.wanted([*POOL_NODES[:2], SPOT_NODE, VM_NODE])
    source.refresh()
    assert source.quote(POOL_NODES[0]) is None  # no complete day with enough observation: shelf prices it


def test_exposed_series_and_shelf_for_nodes_not_on_the_bill(fake: FakeCostManagement, tmp_path: Path) -> None:
    source, health, _ = ready(fake, tmp_path)
    source.refresh()
    engine = PricingEngine([source, OfflinePrices.load("", currency="USD")], PricingConfig(), health)
    store = NodeMetricsStore(tag_keys=("team",))
    for n in (*POOL_NODES[:2], SPOT_NODE, VM_NODE, NEW_NODE):
        store.set(n, engine.price(n))
    text = node_text(store, openmetrics=False)
    pool = POOL_NODES[0].name
    assert f'nodecost_node_hourly_cost{{node="{pool}",source="azure_cost_management",price_basis="billed"' in text
    assert (
        f'nodecost_node_billed_daily_cost{{node="{pool}",day="2024-06-04",source="azure_cost_management",'
        f'currency="USD"}} 5.76' in text
    )
    # The node missing from the bill is priced from the shelf (here the offline table) and says so.
    assert f'nodecost_node_hourly_cost{{node="{NEW_NODE.name}",source="offline",price_basis="on_demand"' in text
    # Billed beside list: the list price of a Standard_D2s_v3 is still there for the billed-vs-list ratio.
    assert f'nodecost_node_list_hourly_cost{{node="{pool}",source="offline",currency="USD"}}' in text
    # Tags: the Kubernetes label fills the allowlisted key (Azure's query reads no tags).
    assert f'nodecost_node_billing_tags_info{{node="{pool}",tag_team="payments"}} 1.0' in text
    assert "nodecost_node_network_hourly_cost{" not in text


def test_messages_and_accounting(fake: FakeCostManagement, tmp_path: Path) -> None:
    """What tests/test_source_contract.py leaves to each cloud: the wait Cost Management's own headers ask
    for, each query counted with its reason, and a detail that says what to fix."""
    source, health, clock = ready(fake, tmp_path, retries=2)
    fake.fail_next("throttled", retry_after=45)
    assert source.refresh() is True
    assert clock.sleeps == [45.0]  # the header's delay, not our 10 ms backoff
    status = health.integration("azure_cost_management")
    assert (status.up, status.requests, status.errors) == (True, 2, {Reason.THROTTLED: 1})
    clock.now += 6 * 3600 + 1  # the next query is due
    for fault, says in (("unauthenticated", "credentials"), ("forbidden", "Cost Management Reader")):
        fake.fail_next(fault)
        source.refresh()
        assert says in status.detail, status.detail
        clock.now += 600  # retry_interval_seconds
    fake.fail_next("unavailable", count=3)
    source.refresh()
    assert "503" in status.detail and status.errors[Reason.UNAVAILABLE] == 3


def test_a_refused_query_is_config_and_keeps_cached_rates(fake: FakeCostManagement, tmp_path: Path) -> None:
    source, health, clock = ready(fake, tmp_path, retries=0)
    source.refresh()
    billed = source.quote(POOL_NODES[0])
    clock.now += 6 * 3600 + 1  # the next query is due
    fake.fail_next("bad_request")
    source.refresh()
    status = health.integration("azure_cost_management")
    assert (status.up, status.reason) == (False, Reason.CONFIG)
    assert "Invalid query definition" in status.detail
    assert source.quote(POOL_NODES[0]) == billed  # cached billed rates are served within max staleness
    clock.now += 600  # retry_interval_seconds later the fault is gone: recovered, no restart
    source.refresh()
    assert status.up and status.reason is None


def test_missing_scope_timeouts_empty_bill_and_malformed_rows(fake: FakeCostManagement, tmp_path: Path) -> None:
    source, health, clock = ready(fake, tmp_path, retries=0)
    status = health.integration("azure_cost_management")
    fake.scopes.clear()
    source.refresh()
    assert status.reason is Reason.NOT_FOUND and "scope" in status.detail
    fake.scopes.add(SCOPE)
    fake.delay_seconds = 3.0
    clock.now += 600
    source.refresh()
    assert status.reason is Reason.TIMEOUT
    fake.delay_seconds = 0.0
    fake.no_content = True  # 204: Cost Management has nothing for the query
    clock.now += 600
    source.refresh()
    assert status.reason is Reason.NO_DATA
    fake.no_content = False

    def mangle(rows: list[list[Any]]) -> list[list[Any]]:
        return [[*row[:1], "not-a-date", *row[2:]] if SPOT.lower() in row else row for row in rows]

    fake.mangle = mangle
    clock.now += 600
    source.refresh()
    assert status.up  # the spot pool's rows are skipped and counted; every other node keeps its rate
    assert source.quote(SPOT_NODE) is None and source.quote(POOL_NODES[0]) is not None
    assert health.invalid_counts()["billing_row"] == 5


def test_stale_rates_fall_back_to_shelf_then_return(fake: FakeCostManagement, tmp_path: Path) -> None:
    source, health, clock = ready(fake, tmp_path, retries=0)
    engine = PricingEngine([source, OfflinePrices.load("", currency="USD")], PricingConfig(), health)
    source.refresh()
    price = engine.price(POOL_NODES[0])
    assert price is not None and price.source == "azure_cost_management"
    fake.fail_next("forbidden", count=100)
    clock.now += 3 * 86400 + 1  # past max_staleness_seconds with every query failing
    assert source.refresh() is True  # quotes changed: the app re-prices every node
    price = engine.price(POOL_NODES[0])
    assert price is not None and price.source == "offline" and price.basis is Basis.ON_DEMAND
    assert price.billed is not None  # the billed days stay visible, labelled with their dates
    fake.reset()
    fake.scopes.add(SCOPE)
    fake.records.extend(bill())
    clock.now += 600
    assert source.refresh() is True
    price = engine.price(POOL_NODES[0])
    assert price is not None and price.source == "azure_cost_management"


def test_restart_serves_cached_rates_without_querying(fake: FakeCostManagement, tmp_path: Path) -> None:
    source, _, clock = ready(fake, tmp_path)
    source.refresh()
    rate = source.quote(POOL_NODES[0])
    calls = len(fake.calls)
    health = Health()
    again = make_source(fake, tmp_path, health, clock)
    again.wanted([*POOL_NODES[:2], SPOT_NODE, VM_NODE])
    assert again.quote(POOL_NODES[0]) == rate
    again.refresh()
    assert len(fake.calls) == calls  # the next query is due refresh_interval_seconds after the last one
    status = health.integration("azure_cost_management")
    assert status.up and status.last_success == pytest.approx(clock.now)


def test_discount_is_not_applied_on_top_of_azure_bills(fake: FakeCostManagement, tmp_path: Path) -> None:
    source, health, _ = ready(fake, tmp_path)
    source.refresh()
    config = PricingConfig(discounts=PricingConfig().discounts.__class__(azure=Decimal("0.2")))
    price = PricingEngine([source], config, health).price(VM_NODE)
    assert price is not None and math.isclose(float(price.hourly), 0.10, rel_tol=0.005)


def test_backfill_writes_reconciled_hours_promtool_accepts(
    fake: FakeCostManagement, tmp_path: Path, promtool: str
) -> None:
    import io
    import subprocess

    from exporter.backfill import METRIC, write_backfill

    source, _, clock = ready(fake, tmp_path)
    out = io.StringIO()
    counts = write_backfill([source], D[0], D[5], out, now=clock.now)
    text = out.getvalue()
    assert counts["incomplete_days"] == 2  # June 5 and 6 are not final yet: never backfilled
    # June 1: the VM was not seen (the exporter saw it from June 2), and the bill has no VM row either.
    lines = [line for line in text.splitlines() if line.startswith(METRIC + "{")]
    pool0 = [line for line in lines if POOL_NODES[0].name in line]
    pool2 = [line for line in lines if POOL_NODES[2].name in line]
    assert len(pool0) == 4 * 24 and len(pool2) == 3 * 24 + 12  # deleted at noon on June 4
    # Each day's hourly samples add up to the pool's billed cost of that day.
    per_day: dict[str, float] = {}
    for line in lines:
        if "aks-nodepool1-12345678" in line:
            value, stamp = line.rsplit(" ", 2)[1:]
            day = datetime.fromtimestamp(int(stamp), UTC).date().isoformat()
            per_day[day] = per_day.get(day, 0.0) + float(value)
    assert per_day == pytest.approx({"2024-06-01": 72 * 0.096, "2024-06-02": 72 * 0.06,
                                     "2024-06-03": 72 * 0.06, "2024-06-04": 60 * 0.096})
    path = tmp_path / "backfill.om"
    path.write_text(text)
    blocks = tmp_path / "blocks"
    result = subprocess.run(
        [promtool, "tsdb", "create-blocks-from", "openmetrics", str(path), str(blocks)],
        capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert any(blocks.iterdir())
    (blocks / "wal").mkdir()  # `tsdb dump` opens the directory as a TSDB, which has a WAL
    dump = subprocess.run(
        [promtool, "tsdb", "dump", str(blocks)], capture_output=True, text=True, timeout=120
    )
    assert dump.returncode == 0, dump.stderr
    assert f'node="{POOL_NODES[2].name}"' in dump.stdout and dump.stdout.count("\n") >= len(lines)
