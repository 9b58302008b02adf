"""Azure Cost Management billing: the real SDK against a local ARM fake over TLS.

The fixture bill is an AKS cluster's, one record per instance, day and pricing model, in the shape Cost
Management keeps it: a scale set's instances all bill to the scale set's ResourceId, with their
`Virtual Machines` hours as UsageQuantity and their data transfer as `Bandwidth` rows on the same id.
The pool churned: an instance was deleted on June 4 at noon and another lived for twelve hours on June 2,
both before the exporter started, so only the bill knows their hours; a third instance joined on June 3 at
09:30. June 4 is half-landed for the pool (the new instance's rows are not in yet). A spot pool, an
availability-set VM (billed on its own), a reservation covering two instances on two days, and a pool
created this morning (not on the bill) complete it. The truth of each node is computed here from the
records, with the rule in docs/pricing.md: a day's instance-hour rate is the scale set's cost that day ÷ its
billed UsageQuantity, and a node's daily cost is that rate times the hours it was alive.
"""

from __future__ import annotations

import csv
import json
import logging
import math
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from exporter.cache import PriceCache
from exporter.config import PricingConfig, load_config
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
POOL_NAME = "aks-nodepool1-12345678-vmss"
SPOT_NAME = "aks-spotpool-87654321-vmss"
NEW_POOL = "aks-gpupool-55555555-vmss"  # created this morning: not on the bill yet
POOL = f"{ARM}/virtualMachineScaleSets/{POOL_NAME}"
SPOT = f"{ARM}/virtualMachineScaleSets/{SPOT_NAME}"
VM = f"{ARM}/virtualMachines/aks-nodepool1-19574989-0"
NOW = datetime(2024, 6, 6, 10, 0, tzinfo=UTC)
D = [date(2024, 6, d) for d in range(1, 7)]  # June 1..6: 1-4 settled, 5 settling, 6 today
OD, RI, SPOT_RATE, VM_RATE = 0.096, 0.06, 0.02, 0.10  # $/h: on-demand, reservation (amortized), spot, VM
LICENCE = 0.04  # $/h of software billed on the VM's hours (Virtual Machines Licenses)


def at(day: int, hour: int = 0, minute: int = 0) -> datetime:
    return datetime(2024, 6, day, hour, minute, tzinfo=UTC)


# Every instance of the pool, with its lifetime (created, deleted or None); the exporter sees only the
# ones still there at NOW. Hours the bill holds are the hours each one ran.
LIFETIMES: dict[str, tuple[datetime, datetime | None]] = {
    "0": (datetime(2024, 5, 20, 8, tzinfo=UTC), None),
    "1": (datetime(2024, 5, 20, 8, tzinfo=UTC), None),
    "2": (datetime(2024, 5, 20, 8, tzinfo=UTC), at(4, 12)),  # scaled in at noon on June 4
    "3": (at(2, 6), at(2, 18)),  # an autoscaler burst: twelve hours on June 2
    "4": (at(3, 9, 30), None),  # joined on June 3 at 09:30
}
RESERVED = {("0", D[1]), ("0", D[2]), ("1", D[1]), ("1", D[2])}  # a reservation covers two instances
# the reservation's ARM id as usage details write it (ReservationId); the exporter lower-cases it
RESERVATION = (
    "/providers/Microsoft.Capacity/reservationOrders/5c3e7a19-8d2b-4f6e-a1c0-3b9d7e2f4a68"
    "/reservations/9f1d2c4b-6a8e-4b3d-8c7f-0e5a1b2d3c4e"
)
NOT_LANDED = {("4", D[3])}  # June 4 is half-landed: instance 4's rows are not in yet
SPOT_CREATED = datetime(2024, 5, 25, tzinfo=UTC)
VM_CREATED = datetime(2024, 5, 1, tzinfo=UTC)


def aks_node(scale_set: str, index: str, created: datetime, *, spot: bool = False, size: str = "Standard_D2s_v3") -> Node:
    provider_id = (
        f"azure:///subscriptions/{SUB}/resourceGroups/{RG.lower()}/providers/Microsoft.Compute/"
        f"virtualMachineScaleSets/{scale_set}/virtualMachines/{index}"
    )
    return node(
        f"{scale_set}{int(index):06d}",
        provider_id=provider_id,
        ref=ProviderRef("azure", account=SUB, resource_group=RG.lower(), instance_id=index, scale_set=scale_set),
        instance_type=size,
        region="eastus",
        zone="eastus-1",
        capacity_type=CapacityType.SPOT if spot else CapacityType.ON_DEMAND,
        cpu_cores=2.0,
        memory_bytes=8 * 2**30,
        labels={"kubernetes.azure.com/agentpool": scale_set.split("-")[1], "team": "payments"},
        created=created.timestamp(),
    )


P0, P1, LATE = (aks_node(POOL_NAME, i, LIFETIMES[i][0]) for i in ("0", "1", "4"))
SPOT_NODE = aks_node(SPOT_NAME, "0", SPOT_CREATED, spot=True)
VM_NODE = node(
    "aks-nodepool1-19574989-0",
    provider_id=f"azure://{VM}",
    ref=ProviderRef("azure", account=SUB, resource_group=RG, instance_id="aks-nodepool1-19574989-0"),
    instance_type="Standard_D2s_v3",
    region="eastus",
    zone="",
    cpu_cores=2.0,
    memory_bytes=8 * 2**30,
    created=VM_CREATED.timestamp(),
)
NEW_NODE = aks_node(NEW_POOL, "0", at(6, 8), size="Standard_D4s_v3")
CLUSTER = [P0, P1, LATE, SPOT_NODE, VM_NODE, NEW_NODE]
INDEX = {P0.uid: "0", P1.uid: "1", LATE.uid: "4"}


def alive(created: datetime, gone: datetime | None, day: date) -> float:
    """Hours within the UTC day between creation and deletion."""
    start = datetime(day.year, day.month, day.day, tzinfo=UTC)
    first, last = max(start, created), min(start + timedelta(days=1), gone or NOW)
    return max(0.0, (last - first).total_seconds() / 3600)


def bill(not_landed: set[tuple[str, date]] = NOT_LANDED) -> list[UsageRecord]:
    """The records Cost Management holds at NOW (today's and yesterday's usage so far)."""
    records = []
    for day in D:
        for index, (created, gone) in LIFETIMES.items():
            hours = alive(created, gone, day)
            if hours and (index, day) not in not_landed:
                if (index, day) in RESERVED:  # amortized at the reservation's rate, 0 in ActualCost
                    records.append(UsageRecord(day, POOL, "Reservation", hours * RI, 0.0, quantity=hours,
                                               reservation_id=RESERVATION, reservation_name="aks-d2sv3"))
                else:
                    records.append(UsageRecord(day, POOL, "OnDemand", hours * OD, hours * OD, quantity=hours))
        network = 0.24 + day.day / 1000
        records.append(UsageRecord(day, POOL, "OnDemand", network, network, "Bandwidth", quantity=5.0))
        if day >= D[1]:  # the spot pool and the VM are on the bill from June 2
            hours = alive(SPOT_CREATED, None, day)
            records.append(UsageRecord(day, SPOT, "Spot", hours * SPOT_RATE, hours * SPOT_RATE, quantity=hours))
            hours = alive(VM_CREATED, None, day)
            records.append(UsageRecord(day, VM, "OnDemand", hours * VM_RATE, hours * VM_RATE, quantity=hours))
            records.append(UsageRecord(day, VM, "OnDemand", 1.5, 1.5, "Bandwidth", quantity=12.0))
            # software billed by the VM's hour (e.g. SQL Server): its cost counts, its hours are the same hours
            records.append(UsageRecord(day, VM, "OnDemand", hours * LICENCE, hours * LICENCE, "Virtual Machines Licenses",
                                       quantity=hours))
    records.append(UsageRecord(D[2], f"{ARM}/disks/aks-pool-osdisk", "OnDemand", 5.0, 5.0, "Storage", quantity=720))
    return records


def day_bill(records: list[UsageRecord], resource: str, day: date, kind: str) -> tuple[float, float, float]:
    """(compute cost, billed instance-hours, network cost) of a resource on a day, from the records."""
    cost = hours = network = 0.0
    for r in records:
        if r.resource_id == resource and r.date == day:
            amount = r.amortized_cost if kind == "AmortizedCost" else r.actual_cost
            if r.meter_category == "Virtual Machines":
                cost, hours = cost + amount, hours + r.quantity
            elif r.meter_category == "Virtual Machines Licenses":
                cost += amount
            elif r.meter_category == "Bandwidth":
                network += amount
    return cost, hours, network


def truth(n: Node, days: list[date], kind: str = "AmortizedCost") -> dict[date, tuple[float, float, float]]:
    """Per used day, a pool node's (cost, alive hours, network cost): the day's rate times its alive hours."""
    records = bill()
    created = datetime.fromtimestamp(n.created or 0, UTC)
    out = {}
    for day in days:
        cost, billed, network = day_bill(records, POOL, day, kind)
        own = alive(created, None, day)
        out[day] = (cost / billed * own, own, network / billed * own)
    return out


@pytest.fixture(scope="module")
def arm(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FakeCostManagement]:
    with FakeCostManagement(tmp_path_factory.mktemp("arm")) as fake:
        yield fake


@pytest.fixture
def fake(arm: FakeCostManagement) -> FakeCostManagement:
    arm.reset()
    arm.scopes.update((SCOPE, f"/subscriptions/{SUB}"))  # the subscription: where commitments are read
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
    tmp_path.mkdir(parents=True, exist_ok=True)
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
    source.wanted(CLUSTER)  # the exporter starts now: it never saw instances 2 and 3
    return source, health, clock


def test_churned_scale_set_is_priced_per_billed_instance_hour(fake: FakeCostManagement, tmp_path: Path) -> None:
    source, health, _ = ready(fake, tmp_path)
    assert source.refresh() is True
    status = health.integration("azure_cost_management")
    assert status.up and status.reason is None, status.detail
    # The newest day used is June 4 (the spot pool's and the VM's); June 5 ended 10 h ago (< settle_hours).
    assert status.data_timestamp == at(5).timestamp()
    records = bill()
    # The day's rate is the pool's cost ÷ the instance-hours billed: 3 instances on June 1, 3 plus a
    # 12-hour burst on June 2, 3 plus the one that joined at 09:30 on June 3 (14.5 h).
    assert [day_bill(records, POOL, d, "AmortizedCost")[1] for d in D[:3]] == [72, 84, 86.5]
    used = D[:3]  # June 4 is half-landed for the pool: skipped, and June 1 counts instead
    for n in (P0, P1):
        expected = truth(n, used)
        facts = source.facts(n)
        quote = source.quote(n)
        assert facts is not None and quote is not None and quote.basis is Basis.BILLED
        assert [d for d, _ in facts.days] == [d.isoformat() for d in used]
        assert facts.hours == pytest.approx(72)
        # rate * billed hours is the node's share of the bill
        share = sum(cost for cost, _, _ in expected.values())
        assert math.isclose(float(quote.hourly) * facts.hours, share, rel_tol=0.005), n.name
        for day_name, day_cost in facts.days:  # each day: that day's rate * the node's alive hours
            cost, billed, _ = day_bill(records, POOL, date.fromisoformat(day_name), "AmortizedCost")
            assert day_cost == pytest.approx(cost / billed * 24, rel=0.005)
        assert facts.network_hourly == pytest.approx(sum(net for _, _, net in expected.values()) / 72)
    # Dividing by the hours the exporter could have seen (instances 0 and 1 only) would have made
    # June 1 cost 1.5 times its bill; the bill's own hours make the pool's shares add up to the pool's cost.
    june1, _, _ = day_bill(records, POOL, D[0], "AmortizedCost")
    assert dict(source.facts(P0).days)["2024-06-01"] == pytest.approx(june1 * 24 / 72)  # type: ignore[union-attr]
    # Spot and the single VM get their own rates; the VM is billed on its own hours, with its bandwidth.
    spot, vm = source.quote(SPOT_NODE), source.quote(VM_NODE)
    assert spot is not None and math.isclose(float(spot.hourly), SPOT_RATE, rel_tol=0.005)
    assert vm is not None and math.isclose(float(vm.hourly), VM_RATE + LICENCE, rel_tol=0.005)  # licence-hours not hours
    vm_facts = source.facts(VM_NODE)
    assert vm_facts is not None and [d for d, _ in vm_facts.days] == ["2024-06-02", "2024-06-03", "2024-06-04"]
    assert vm_facts.hours == 72 and vm_facts.network_hourly == pytest.approx(3 * 1.5 / 72)
    assert source.quote(NEW_NODE) is None and source.facts(NEW_NODE) is None  # the shelf prices it


def test_the_query_asks_for_cost_and_hours_by_resource_and_meter_category(
    fake: FakeCostManagement, tmp_path: Path
) -> None:
    source, _, _ = ready(fake, tmp_path)
    source.refresh()
    body = fake.calls[0]["body"]
    assert body["type"] == "AmortizedCost" and body["timeframe"] == "Custom"
    assert body["timePeriod"] == {"from": "2024-06-01T00:00:00Z", "to": "2024-06-06T23:59:59Z"}
    dataset = body["dataset"]
    assert dataset["granularity"] == "Daily"
    assert dataset["aggregation"] == {
        "totalCost": {"name": "Cost", "function": "Sum"},
        "totalQuantity": {"name": "UsageQuantity", "function": "Sum"},
    }
    assert [g["name"] for g in dataset["grouping"]] == ["ResourceId", "MeterCategory"]
    ids, categories = (f["dimensions"] for f in dataset["filter"]["and"])
    assert sorted(ids["values"]) == sorted(
        r.lower() for r in (POOL, SPOT, VM, f"{ARM}/virtualMachineScaleSets/{NEW_POOL}")
    )
    wanted = ["Virtual Machines", "Virtual Machines Licenses", "Bandwidth"]
    assert (categories["name"], categories["values"]) == ("MeterCategory", wanted)
    # One row per resource, day and meter category; the disk is filtered out by the query. The coverage
    # query adds one row per resource and day with reserved hours (the pool on June 2 and 3).
    expected = {(r.date, r.resource_id, r.meter_category) for r in bill() if r.meter_category in wanted}
    covered = {(r.date, r.resource_id) for r in bill() if r.pricing_model == "Reservation"}
    assert source.rows_ingested == len(expected) + len(covered) == 6 * 2 + 5 * 4 + 2


def test_a_node_created_mid_window_has_no_cost_before_it_existed(fake: FakeCostManagement, tmp_path: Path) -> None:
    source, _, _ = ready(fake, tmp_path)
    source.refresh()
    facts = source.facts(LATE)
    quote = source.quote(LATE)
    assert facts is not None and quote is not None
    # June 1 and 2 were billed to the pool, but not for it; June 4 is still being filled in.
    assert [d for d, _ in facts.days] == ["2024-06-03"]
    assert facts.hours == pytest.approx(14.5)
    cost, billed, _ = day_bill(bill(), POOL, D[2], "AmortizedCost")
    assert facts.days[0][1] == pytest.approx(cost / billed * 14.5)
    assert float(quote.hourly) == pytest.approx(cost / billed, rel=0.005)


def test_a_half_landed_day_is_skipped_until_it_is_complete(fake: FakeCostManagement, tmp_path: Path) -> None:
    source, _, clock = ready(fake, tmp_path)
    source.refresh()
    cost, billed, _ = day_bill(bill(), POOL, D[3], "AmortizedCost")
    needed = sum(alive(*LIFETIMES[i], D[3]) for i in ("0", "1", "4"))
    assert billed < needed - 3 * 0.25  # 60 instance-hours billed; the nodes in the cluster were alive 72
    facts = source.facts(P0)
    assert facts is not None and "2024-06-04" not in dict(facts.days) and "2024-06-01" in dict(facts.days)
    # Instance 4's June 4 rows land: the day is complete and the latest three days are June 2-4.
    fake.records.append(UsageRecord(D[3], POOL, "OnDemand", 24 * OD, 24 * OD, quantity=24.0))
    clock.advance(source.settings.refresh_interval_seconds)
    assert source.refresh() is True
    records = [*bill(), fake.records[-1]]
    cost, billed, _ = day_bill(records, POOL, D[3], "AmortizedCost")
    assert billed == 84
    for n, hours in ((P0, 72.0), (LATE, 14.5 + 24)):
        facts = source.facts(n)
        assert facts is not None
        assert [d for d, _ in facts.days][-1] == "2024-06-04" and facts.hours == pytest.approx(hours)
        assert dict(facts.days)["2024-06-04"] == pytest.approx(cost / billed * 24)
    assert [d for d, _ in source.facts(P0).days] == ["2024-06-02", "2024-06-03", "2024-06-04"]  # type: ignore[union-attr]


def test_actual_cost_shows_reservation_covered_hours_as_free(fake: FakeCostManagement, tmp_path: Path) -> None:
    source, _, _ = ready(fake, tmp_path, cost_type="ActualCost")
    source.refresh()
    for n in (P0, LATE):
        facts = source.facts(n)
        assert facts is not None
        expected = truth(n, [date.fromisoformat(d) for d, _ in facts.days], "ActualCost")
        assert dict(facts.days) == pytest.approx({d.isoformat(): c for d, (c, _, _) in expected.items()})
    # June 2: only the burst and the instance outside the reservation cost anything, over all 84 hours.
    assert dict(source.facts(P0).days)["2024-06-02"] == pytest.approx(36 * OD / 84 * 24)  # type: ignore[union-attr]
    amortized, _, _ = ready(fake, tmp_path / "amortized")
    amortized.refresh()
    assert dict(amortized.facts(P0).days)["2024-06-02"] == pytest.approx((48 * RI + 36 * OD) / 84 * 24)  # type: ignore[union-attr]


def test_a_gone_node_still_counts_against_its_scale_sets_bill(fake: FakeCostManagement, tmp_path: Path) -> None:
    """A node the exporter saw leave keeps its alive hours in the completeness check: with June 3's rows
    of instances 1 and 2 not landed, June 3 is not complete for instance 0 once instance 1 has left."""
    fake.records[:] = bill(NOT_LANDED | {("1", D[2]), ("2", D[2])})  # June 3: 24 + 14.5 h billed
    source, _, clock = ready(fake, tmp_path)
    clock.advance(60)
    source.wanted([n for n in CLUSTER if n is not P1])  # instance 1 left a minute ago
    source.refresh()
    facts = source.facts(P0)
    assert facts is not None and [d for d, _ in facts.days] == ["2024-06-01", "2024-06-02"]
    # Had the exporter never seen instance 1, the 38.5 billed hours would have covered 0's and 4's (and
    # June 4's 60 theirs: the bill is trusted for the nodes the exporter knows of).
    blind = make_source(fake, tmp_path / "blind", Health(), FakeClock(NOW))
    blind.wanted([n for n in CLUSTER if n is not P1])
    blind.refresh()
    facts = blind.facts(P0)
    assert facts is not None and [d for d, _ in facts.days] == ["2024-06-02", "2024-06-03", "2024-06-04"]


def test_exposed_series_and_shelf_for_nodes_not_on_the_bill(fake: FakeCostManagement, tmp_path: Path) -> None:
    source, health, _ = ready(fake, tmp_path)
    source.refresh()
    engine = PricingEngine([source, OfflinePrices.load("", currency="USD")], PricingConfig(), health)
    store = NodeMetricsStore(tag_keys=("team",))
    for n in CLUSTER:
        store.set(n, engine.price(n))
    text = node_text(store, openmetrics=False)
    pool = P0.name
    assert f'nodecost_node_hourly_cost{{node="{pool}",source="azure_cost_management",price_basis="billed"' in text
    prefix = f'nodecost_node_billed_daily_cost{{node="{LATE.name}",day="2024-06-03",source="azure_cost_management"'
    (line,) = [line for line in text.splitlines() if line.startswith(prefix)]
    cost, billed, _ = day_bill(bill(), POOL, D[2], "AmortizedCost")
    assert float(line.rsplit(" ", 1)[1]) == pytest.approx(cost / billed * 14.5)
    assert 'day="2024-06-02",source="azure_cost_management"' not in "\n".join(
        line for line in text.splitlines() if LATE.name in line
    )
    # The node missing from the bill is priced from the shelf (here the offline table) and says so.
    assert f'nodecost_node_hourly_cost{{node="{NEW_NODE.name}",source="offline",price_basis="on_demand"' in text
    # Billed beside list: the list price of a Standard_D2s_v3 is still there for the billed-vs-list ratio.
    assert f'nodecost_node_list_hourly_cost{{node="{pool}",source="offline",currency="USD"}}' in text
    # Tags: the Kubernetes label fills the allowlisted key (Azure's query reads no tags).
    assert f'nodecost_node_billing_tags_info{{node="{pool}",tag_team="payments"}} 1.0' in text
    assert f'nodecost_node_network_hourly_cost{{node="{VM_NODE.name}"' in text  # its Bandwidth rows


def test_messages_and_accounting(fake: FakeCostManagement, tmp_path: Path) -> None:
    """What tests/test_source_contract.py leaves to each cloud: the wait Cost Management's own headers ask
    for, each query counted with its reason, and a detail that says what to fix."""
    source, health, clock = ready(fake, tmp_path, retries=2)
    fake.fail_next("throttled", retry_after=45)
    assert source.refresh() is True
    assert clock.sleeps == [45.0]  # the header's delay, not our 10 ms backoff
    status = health.integration("azure_cost_management")
    # the throttled try, the node query (with its coverage query) and the commitments' run
    assert (status.up, status.requests, status.errors) == (True, 3, {Reason.THROTTLED: 1})
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
    billed = source.quote(P0)
    clock.now += 6 * 3600 + 1  # the next query is due
    fake.fail_next("bad_request")
    source.refresh()
    status = health.integration("azure_cost_management")
    assert (status.up, status.reason) == (False, Reason.CONFIG)
    assert "Invalid query definition" in status.detail
    assert source.quote(P0) == billed  # cached billed rates are served within max staleness
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

    def mangle(rows: list[list[Any]]) -> list[list[Any]]:  # Cost, UsageQuantity, UsageDate, ResourceId, …
        return [[*row[:2], "not-a-date", *row[3:]] if SPOT.lower() in row else row for row in rows]

    fake.mangle = mangle
    clock.now += 600
    source.refresh()
    assert status.up  # the spot pool's rows are skipped and counted; every other node keeps its rate
    assert source.quote(SPOT_NODE) is None and source.quote(P0) is not None
    assert health.invalid_counts()["billing_row"] == 5


def test_an_answer_without_usage_quantity_is_a_bad_response(
    fake: FakeCostManagement, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without the hours the bill bought, a scale set cannot be priced: say so rather than guess."""
    source, health, _ = ready(fake, tmp_path, retries=0)
    definition = source.definition

    def cost_only(*args: Any) -> dict[str, Any]:
        body = definition(*args)
        del body["dataset"]["aggregation"]["totalQuantity"]
        return body

    monkeypatch.setattr(source, "definition", cost_only)
    source.refresh()
    status = health.integration("azure_cost_management")
    assert (status.up, status.reason) == (False, Reason.BAD_RESPONSE)
    assert "usagequantity" not in status.detail and "'cost'" in status.detail


def test_stale_rates_fall_back_to_shelf_then_return(fake: FakeCostManagement, tmp_path: Path) -> None:
    source, health, clock = ready(fake, tmp_path, retries=0)
    engine = PricingEngine([source, OfflinePrices.load("", currency="USD")], PricingConfig(), health)
    source.refresh()
    price = engine.price(P0)
    assert price is not None and price.source == "azure_cost_management"
    fake.fail_next("forbidden", count=100)
    clock.now += 3 * 86400 + 1  # past max_staleness_seconds with every query failing
    assert source.refresh() is True  # quotes changed: the app re-prices every node
    price = engine.price(P0)
    assert price is not None and price.source == "offline" and price.basis is Basis.ON_DEMAND
    assert price.billed is not None  # the billed days stay visible, labelled with their dates
    fake.reset()
    fake.scopes.add(SCOPE)
    fake.records.extend(bill())
    clock.now += 600
    assert source.refresh() is True
    price = engine.price(P0)
    assert price is not None and price.source == "azure_cost_management"


def test_restart_serves_cached_rates_without_querying(fake: FakeCostManagement, tmp_path: Path) -> None:
    source, _, clock = ready(fake, tmp_path)
    source.refresh()
    rate, late = source.quote(P0), source.quote(LATE)
    calls = len(fake.calls)
    health = Health()
    again = make_source(fake, tmp_path, health, clock)
    again.wanted(CLUSTER)
    assert again.quote(P0) == rate and again.quote(LATE) == late and again.facts(LATE) == source.facts(LATE)
    again.refresh()
    assert len(fake.calls) == calls  # the next query is due refresh_interval_seconds after the last one
    status = health.integration("azure_cost_management")
    assert status.up and status.last_success == pytest.approx(clock.now)


def test_discount_is_not_applied_on_top_of_azure_bills(fake: FakeCostManagement, tmp_path: Path) -> None:
    source, health, _ = ready(fake, tmp_path)
    source.refresh()
    config = PricingConfig(discounts=PricingConfig().discounts.__class__(azure=Decimal("0.2")))
    price = PricingEngine([source], config, health).price(VM_NODE)
    assert price is not None and math.isclose(float(price.hourly), VM_RATE + LICENCE, rel_tol=0.005)


# -- min_observed_hours: deprecated -------------------------------------------------------------------------


def test_min_observed_hours_is_accepted_ignored_and_warned_about_once(
    fake: FakeCostManagement, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, "exporter.pricing.sources"):
        source, _, _ = ready(fake, tmp_path)  # the default: nothing to say
        assert not [r for r in caplog.records if "min_observed_hours" in r.getMessage()]
        odd, _, _ = ready(fake, tmp_path / "odd", min_observed_hours=30)  # out of its old range: still loads
        odd.refresh()
        odd.refresh()
    (warning,) = [r for r in caplog.records if "min_observed_hours" in r.getMessage()]
    assert warning.levelno == logging.WARNING
    assert "ignored" in warning.getMessage() and "UsageQuantity" in warning.getMessage()
    source.refresh()
    assert odd.facts(P0) == source.facts(P0)  # it changes nothing


def test_a_config_that_still_sets_min_observed_hours_loads(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    path.write_text(
        "azure:\n  cost_management:\n    enabled: true\n"
        f"    scope: {SCOPE}\n    min_observed_hours: 0\n"
    )
    settings = load_config(str(path), env={}).sources["azure.cost_management"]
    assert isinstance(settings, AzureCostSettings) and settings.min_observed_hours == 0


# -- the real shapes ----------------------------------------------------------------------------------------


def test_the_row_selection_matches_a_real_aks_cost_export(shared_real: Path, fake: FakeCostManagement,
                                                           tmp_path: Path) -> None:
    """opencost's AKS cost-export template: every compute row of a scale set or VM (UsageType ComputeHR) is
    in the `Virtual Machines` meter category and every data-transfer row in `Bandwidth`, on the same
    ResourceId; scale sets are shared, VMs are not. (The export has no quantity column.)"""
    source, _, _ = ready(fake, tmp_path)
    path = shared_real / "billing" / "azure_cost_export_template_aks_vmss.csv"
    with path.open(newline="", encoding="utf-8-sig") as f:
        rows = [r for r in csv.DictReader(f) if "/microsoft.compute/virtualmachine" in r["InstanceId"].lower()]
    selected = {"Virtual Machines", "Bandwidth"}
    compute = [r for r in rows if '"ComputeHR"' in r["AdditionalInfo"]]
    network = [r for r in rows if r["MeterCategory"] == "Bandwidth"]
    assert compute and network
    assert {r["MeterCategory"] for r in compute} == {"Virtual Machines"}
    assert all(json.loads(r["AdditionalInfo"])["ResourceType"] == "Bandwidth" for r in network)
    assert {r["MeterCategory"] for r in rows} <= selected  # a VM's other costs are other resources
    for r in compute + network:
        resource = r["InstanceId"].lower()
        assert source.shared(resource) is ("/virtualmachinescalesets/" in resource)
    # A VMSS node's resource is the ResourceId the bill carries for its scale set.
    vmss = next(r["InstanceId"] for r in compute if "virtualMachineScaleSets" in r["InstanceId"])
    group, scale_set = vmss.split("/")[4], vmss.rsplit("/", 1)[1]
    sub = vmss.split("/")[2]
    n = node("x", ref=ProviderRef("azure", account=sub, resource_group=group, instance_id="0", scale_set=scale_set))
    assert source.resource(n) == vmss.lower()


def test_a_shard_asks_for_its_own_resources_and_shares_a_split_pool_alike(
    fake: FakeCostManagement, tmp_path: Path
) -> None:
    """Two shards (sharding.total_shards 2): the pool's instances are on both. Each shard's query names only
    the resources of its own nodes, and a day both it and an unsharded exporter use costs each node the same."""
    from exporter.inventory.sharding import Shard

    whole, _, _ = ready(fake, tmp_path / "whole")
    whole.refresh()
    pool_shards = set()
    for index in range(2):
        shard = Shard(index, 2)
        mine = [n for n in CLUSTER if shard.owns_uid(n.uid)]
        pool_shards |= {index for n in mine if n in (P0, P1, LATE)}
        health = Health()
        source = make_source(fake, tmp_path / f"shard{index}", health, FakeClock(NOW))
        source.wanted(mine)
        calls = len(fake.calls)
        assert source.refresh() is True, health.integration("azure_cost_management").detail
        ids, _ = (f["dimensions"] for f in fake.calls[calls]["body"]["dataset"]["filter"]["and"])
        resources = {
            n.name: r.lower() for n, r in ((P0, POOL), (P1, POOL), (LATE, POOL), (SPOT_NODE, SPOT), (VM_NODE, VM))
        } | {NEW_NODE.name: f"{ARM}/virtualMachineScaleSets/{NEW_POOL}".lower()}
        assert sorted(ids["values"]) == sorted({resources[n.name] for n in mine})
        for n in mine:
            sharded, unsharded = source.facts(n), whole.facts(n)
            if unsharded is None:
                assert sharded is None, n.name
                continue
            assert sharded is not None, n.name
            common = set(dict(sharded.days)) & set(dict(unsharded.days))
            assert common, n.name
            for day in common:
                assert dict(sharded.days)[day] == pytest.approx(dict(unsharded.days)[day]), (n.name, day)
    assert pool_shards == {0, 1}, "the fixture's pool must span both shards"
