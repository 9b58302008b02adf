"""Azure reservations and savings plans: coverage per node and unused cost per commitment, through the real
SDK against the local Cost Management fake.

The bill is tests/test_azure_billing.py's AKS cluster plus what Cost Management shows of two commitments
(shapes: learn.microsoft.com, "View amortized benefit costs" and the usage-details fields ChargeType,
PricingModel, ReservationId, BenefitId; see fakes/cost_management_api.py):
- a reservation for 3 Standard_D2s_v3 instances (72 instance-hours a day at RI): it covers pool instances
  0 and 1 on June 2 and 3 (tests/test_azure_billing.py's RESERVED) and a VM in another resource group of
  the subscription on June 1 and 4; the rest of each day is an `UnusedReservation` row without a resource;
- a savings plan committing SP_COMMIT $/h: it covers 10 hours a day of an availability-set VM of the
  cluster from June 2, at SP_RATE; the rest is an `UnusedSavingsPlan` row.
The expected figures are computed here from those records with docs/pricing.md's rules.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import pytest

from exporter.config import load_config
from exporter.config.errors import ConfigError
from exporter.config.sources.azure import AzureCostSettings
from exporter.health import Health
from exporter.inventory.node import ProviderRef
from exporter.pricing.sources.azure.cost_management import AzureCostBilling
from fakes.cost_management_api import FakeCostManagement, UsageRecord
from fakes.server import Fault
from tests.conftest import FakeClock, node
from tests.test_azure_billing import (
    ARM,
    CLUSTER,
    LATE,
    NOW,
    P0,
    P1,
    POOL,
    RESERVATION,
    RI,
    SCOPE,
    SUB,
    VM_CREATED,
    VM_RATE,
    D,
    alive,
    bill,
    day_bill,
    make_source,
    truth,
)

SUBSCRIPTION_SCOPE = f"/subscriptions/{SUB}"
OTHER_VM = f"/subscriptions/{SUB}/resourceGroups/batch-rg/providers/Microsoft.Compute/virtualMachines/batch-0"
SP_VM = f"{ARM}/virtualMachines/aks-sp-vm-0"
SAVINGS_PLAN = (
    "/providers/Microsoft.BillingBenefits/savingsPlanOrders/2a7c9e41-3b5d-4f60-8e1a-9c2b4d6f8a01"
    "/savingsPlans/7e4b1a2c-9d3f-4c5e-b6a7-1f2e3d4c5b6a"
)
SP_RATE, SP_COMMIT, SP_HOURS = 0.07, 0.05, 10.0  # $/h covered, $/h committed, covered hours a day
RI_INSTANCES = 3
SP_NODE = node(
    "aks-sp-vm-0",
    provider_id=f"azure://{SP_VM}",
    ref=ProviderRef("azure", account=SUB, resource_group=SCOPE.split("/")[-1], instance_id="aks-sp-vm-0"),
    instance_type="Standard_D2s_v3",
    region="eastus",
    created=VM_CREATED.timestamp(),
)


def records() -> list[UsageRecord]:
    out = bill()
    for day in D[:4]:  # the bill is in up to June 4 for the commitments
        if day in (D[0], D[3]):  # the reservation covers a VM of another resource group these days
            out.append(
                UsageRecord(
                    day, OTHER_VM, "Reservation", 24 * RI, 0.0, quantity=24.0, reservation_id=RESERVATION
                )
            )
        used_hours = sum(r.quantity for r in out if r.reservation_id == RESERVATION and r.date == day)
        unused_hours = RI_INSTANCES * 24 - used_hours
        out.append(
            UsageRecord(
                day,
                "",
                "Reservation",
                unused_hours * RI,
                0.0,
                quantity=unused_hours,
                charge_type="UnusedReservation",
                reservation_id=RESERVATION,
                subscription=SUB,
            )
        )
        if day >= D[1]:
            out.append(
                UsageRecord(
                    day,
                    SP_VM,
                    "SavingsPlan",
                    SP_HOURS * SP_RATE,
                    0.0,
                    quantity=SP_HOURS,
                    benefit_id=SAVINGS_PLAN,
                    benefit_name="compute-sp",
                )
            )
            rest = 24 - SP_HOURS
            out.append(UsageRecord(day, SP_VM, "OnDemand", rest * VM_RATE, rest * VM_RATE, quantity=rest))
            unused = 24 * SP_COMMIT - SP_HOURS * SP_RATE
            out.append(
                UsageRecord(
                    day,
                    "",
                    "SavingsPlan",
                    unused,
                    0.0,
                    charge_type="UnusedSavingsPlan",
                    benefit_id=SAVINGS_PLAN,
                    subscription=SUB,
                )
            )
    # the purchase: in ActualCost only (AmortizedCost spreads it over the term); it must not count
    out.append(
        UsageRecord(
            D[0],
            "",
            "Reservation",
            0.0,
            RI_INSTANCES * 24 * RI * 365,
            charge_type="Purchase",
            reservation_id=RESERVATION,
            subscription=SUB,
        )
    )
    return out


def expected_commitment(commitment: str, days: list[date]) -> tuple[float, float]:
    """(unused per hour, utilization) of a commitment over these days, from the amortized records."""
    rows = [r for r in records() if commitment in (r.reservation_id, r.benefit_id) and r.date in days]
    used = sum(r.amortized_cost for r in rows if r.charge_type == "Usage")
    unused = sum(r.amortized_cost for r in rows if r.charge_type.startswith("Unused"))
    return unused / (24 * len(days)), used / (used + unused)


def expected_coverage(resource: str, created: datetime, days: list[date]) -> float:
    """A node's share of the covered hours of its resource ÷ its alive hours, over its used days."""
    rows = records()
    covered = alive_total = 0.0
    for day in days:
        _, billed, _ = day_bill(rows, resource, day, "AmortizedCost")
        reserved = sum(
            r.quantity
            for r in rows
            if r.resource_id == resource
            and r.date == day
            and r.pricing_model in ("Reservation", "SavingsPlan")
            and r.charge_type == "Usage"
        )
        own = alive(created, None, day)
        covered += reserved / billed * own
        alive_total += own
    return covered / alive_total


@pytest.fixture(scope="module")
def arm(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FakeCostManagement]:
    with FakeCostManagement(tmp_path_factory.mktemp("arm")) as fake:
        yield fake


@pytest.fixture
def fake(arm: FakeCostManagement) -> FakeCostManagement:
    arm.reset()
    arm.scopes.update((SCOPE, SUBSCRIPTION_SCOPE))
    arm.records.extend(records())
    return arm


def ready(
    fake: FakeCostManagement, tmp_path: Path, **settings: Any
) -> tuple[AzureCostBilling, Health, FakeClock]:
    health, clock = Health(), FakeClock(NOW)
    source = make_source(fake, tmp_path, health, clock, **settings)
    source.wanted([*CLUSTER, SP_NODE])
    return source, health, clock


def test_reservation_and_savings_plan_unused_cost_and_utilization(
    fake: FakeCostManagement, tmp_path: Path
) -> None:
    source, _, _ = ready(fake, tmp_path)
    assert source.refresh() is True
    commitments = {c.commitment: c for c in source.commitments()}
    assert set(commitments) == {RESERVATION.lower(), SAVINGS_PLAN.lower()}
    days = D[1:4]  # the latest 3 settled days (June 5 has not settled)
    for commitment in (RESERVATION, SAVINGS_PLAN):
        found = commitments[commitment.lower()]
        unused_hourly, utilization = expected_commitment(commitment, days)
        assert found.provider == "azure" and found.days == tuple(d.isoformat() for d in days)
        assert math.isclose(found.unused_hourly, unused_hourly, rel_tol=0.01), commitment
        assert math.isclose(found.utilization, utilization, rel_tol=0.01), commitment
    # By hand for the reservation: June 2 and 3 cover 48 pool hours, June 4 24 hours of the other group's VM,
    # of 72 a day: 216 - 120 = 96 unused hours at RI over 72 hours; 120 of 216 used.
    reservation = commitments[RESERVATION.lower()]
    assert reservation.unused_hourly == pytest.approx(96 * RI / 72)
    assert reservation.utilization == pytest.approx(120 / 216)
    # The commitments are read at the subscription (the Unused* rows have no resource group), AmortizedCost,
    # by ReservationId / BenefitId and ChargeType.
    asked = [c for c in fake.calls if f"/subscriptions/{SUB}/providers/" in c["path"]]
    assert [c["body"]["type"] for c in asked] == ["AmortizedCost", "AmortizedCost"]
    assert [[g["name"] for g in c["body"]["dataset"]["grouping"]] for c in asked] == [
        ["ReservationId", "ChargeType"],
        ["BenefitId", "ChargeType"],
    ]


def test_covered_nodes_keep_exact_rates_and_report_coverage(fake: FakeCostManagement, tmp_path: Path) -> None:
    source, _, _ = ready(fake, tmp_path)
    source.refresh()
    for n in (P0, P1, LATE):
        facts, quote = source.facts(n), source.quote(n)
        assert facts is not None and quote is not None and facts.coverage is not None
        days = [date.fromisoformat(d) for d, _ in facts.days]
        expected = truth(n, days)  # the amortized cost: covered hours at the reservation's rate
        rate = sum(c for c, _, _ in expected.values()) / sum(h for _, h, _ in expected.values())
        assert math.isclose(float(quote.hourly), rate, rel_tol=0.005), n.name
        created = P0.created if n is not LATE else LATE.created
        coverage = expected_coverage(POOL, _utc(created), days)
        assert math.isclose(facts.coverage, coverage, rel_tol=0.005), n.name
    # A scale set is shared: each node's coverage is the pool's covered share of the days it used.
    p0, late = source.facts(P0), source.facts(LATE)
    assert p0 is not None and late is not None and late.coverage is not None
    assert p0.coverage == pytest.approx((48 / 84 * 24 + 48 / 86.5 * 24) / 72)
    assert late.coverage == pytest.approx(48 / 86.5)  # only June 3 is its day
    # The savings-plan VM: 10 of its 24 hours covered each day, priced at the plan's rate for those hours.
    sp_facts, sp_quote = source.facts(SP_NODE), source.quote(SP_NODE)
    assert sp_facts is not None and sp_quote is not None
    assert sp_facts.coverage == pytest.approx(SP_HOURS / 24)
    expected_rate = (SP_HOURS * SP_RATE + (24 - SP_HOURS) * VM_RATE) / 24
    assert math.isclose(float(sp_quote.hourly), expected_rate, rel_tol=0.005)
    # The coverage query: the same resources, only Virtual Machines usage of Reservation / SavingsPlan.
    coverage_body = next(
        c["body"]
        for c in fake.calls
        if c["body"]["dataset"].get("grouping")
        and [g["name"] for g in c["body"]["dataset"]["grouping"]] == ["ResourceId"]
    )
    filters = {
        f["dimensions"]["name"]: f["dimensions"]["values"] for f in coverage_body["dataset"]["filter"]["and"]
    }
    assert filters["MeterCategory"] == ["Virtual Machines"]
    assert filters["PricingModel"] == ["Reservation", "SavingsPlan"]


def test_a_refusal_at_the_subscription_keeps_node_rates(
    fake: FakeCostManagement, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The identity may be Cost Management Reader on the node resource group only."""
    source, health, clock = ready(fake, tmp_path, retries=0)
    at_subscription = f"/subscriptions/{SUB}/providers/".lower()
    fake.inject(Fault.PERMISSION, None, when=lambda request: request.path.lower().startswith(at_subscription))
    with caplog.at_level(logging.WARNING):
        assert source.refresh() is True
    status = health.integration("azure_cost_management")
    assert status.up and status.reason is None
    facts, quote = source.facts(P0), source.quote(P0)
    assert facts is not None and quote is not None and facts.coverage is not None and facts.coverage > 0
    expected = truth(P0, [date.fromisoformat(d) for d, _ in facts.days])
    rate = sum(c for c, _, _ in expected.values()) / sum(h for _, h, _ in expected.values())
    assert math.isclose(float(quote.hourly), rate, rel_tol=0.005)
    assert source.commitments() == ()
    warning = next(r.getMessage() for r in caplog.records if "commitments" in r.getMessage())
    assert "Cost Management Reader" in warning and "azure.cost_management.commitment_scope" in warning
    # Once granted, the commitments come; a later refusal keeps the last ones.
    fake.clear_faults()
    clock.now += 6 * 3600 + 1
    source.refresh()
    kept = source.commitments()
    assert {c.commitment for c in kept} == {RESERVATION.lower(), SAVINGS_PLAN.lower()}
    fake.inject(Fault.PERMISSION, None, when=lambda request: request.path.lower().startswith(at_subscription))
    clock.now += 6 * 3600 + 1
    source.refresh()
    assert source.commitments() == kept


def test_actual_cost_prices_covered_hours_at_zero_but_commitments_stay_amortized(
    fake: FakeCostManagement, tmp_path: Path
) -> None:
    source, _, _ = ready(fake, tmp_path, cost_type="ActualCost")
    source.refresh()
    facts, quote = source.facts(P0), source.quote(P0)
    assert facts is not None and quote is not None
    days = [date.fromisoformat(d) for d, _ in facts.days]
    actual = truth(P0, days, "ActualCost")
    rate = sum(c for c, _, _ in actual.values()) / sum(h for _, h, _ in actual.values())
    assert math.isclose(float(quote.hourly), rate, rel_tol=0.005)  # below the amortized rate: 0 for covered
    assert facts.coverage == pytest.approx(expected_coverage(POOL, _utc(P0.created), days))
    reservation = {c.commitment: c for c in source.commitments()}[RESERVATION.lower()]
    assert reservation.unused_hourly == pytest.approx(96 * RI / 72)  # the purchase row is not counted


def test_commitment_scope_is_configurable(fake: FakeCostManagement, tmp_path: Path) -> None:
    account = "/providers/Microsoft.Billing/billingAccounts/12345678"
    fake.scopes.add(account)
    source, _, _ = ready(fake, tmp_path, commitment_scope=account)
    source.refresh()
    assert {c.commitment for c in source.commitments()} == {RESERVATION.lower(), SAVINGS_PLAN.lower()}
    assert (
        sum(1 for c in fake.calls if c["path"].startswith(f"{account}/providers/Microsoft.CostManagement"))
        == 2
    )
    path = tmp_path / "config.yaml"
    for value, fine in ((account, True), (SUBSCRIPTION_SCOPE, True), (SCOPE, False), ("billing", False)):
        path.write_text(
            f"azure:\n  cost_management:\n    enabled: true\n    scope: {SCOPE}\n    commitment_scope: {value}\n"
        )
        if fine:
            settings = load_config(str(path), env={}).sources["azure.cost_management"]
            assert isinstance(settings, AzureCostSettings) and settings.commitment_scope == value
        else:
            with pytest.raises(ConfigError, match="commitment_scope"):
                load_config(str(path), env={})


def _utc(timestamp: float | None) -> datetime:
    return datetime.fromtimestamp(timestamp or 0, UTC)


def test_a_commitment_billed_in_another_currency_is_skipped(fake: FakeCostManagement, tmp_path: Path) -> None:
    fake.records[:] = [
        r
        if r.benefit_id != SAVINGS_PLAN or r.charge_type != "UnusedSavingsPlan"
        else UsageRecord(
            r.date,
            "",
            "SavingsPlan",
            r.amortized_cost,
            0.0,
            charge_type="UnusedSavingsPlan",
            benefit_id=SAVINGS_PLAN,
            subscription=SUB,
            currency="EUR",
        )
        for r in fake.records
    ]
    source, health, _ = ready(fake, tmp_path)
    source.refresh()
    plan = {c.commitment: c for c in source.commitments()}[SAVINGS_PLAN.lower()]
    assert plan.utilization == 1.0 and plan.unused_hourly == 0.0  # its EUR unused rows are not summed in
    assert health.invalid_counts()["billing_row"] == 3  # its unused rows of June 2, 3 and 4
