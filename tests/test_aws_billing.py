"""AWS CUR through Athena: the real boto3 client against a local Athena that runs the exporter's SQL.

The fixture bill is hourly CUR line items for an EKS cluster: an on-demand node, a reserved-instance node
(DiscountedUsage), a savings-plan node (SavingsPlanCoveredUsage + SavingsPlanNegation), a spot node, a node
launched mid-day, EDP discounts (net columns and EdpDiscount lines), data transfer, an EBS volume and an
instance outside the cluster; the last day is half-landed for everyone, the day before is half-landed
for one node only (the export fills line items in unevenly), and one node is missing from the bill. The
truth of each node is computed here from the line items, by AWS's definitions, not by the exporter's SQL.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from exporter.config import DiscountConfig, PricingConfig, load_config
from exporter.config.sources.aws import AwsCurSettings
from exporter.health import Health, Reason
from exporter.inventory.node import CapacityType, Node, ProviderRef
from exporter.pricing.engine import PricingEngine
from exporter.pricing.quote import Basis
from exporter.pricing.sources.aws.cur import (
    MAX_IDS_IN_QUERY,
    RESERVATION_COLUMNS,
    SAVINGS_PLAN_COLUMNS,
    AwsCurBilling,
    commitment_query,
    cur_query,
    tag_column,
    tag_name,
)
from exporter.pricing.sources.offline import OfflinePrices
from fakes.athena_api import CUR_COLUMNS, FakeAthena, cur_row
from fakes.server import Answer
from tests.conftest import FakeClock, context, node

ROOT = Path(__file__).resolve().parents[1]
NOW = datetime(2024, 6, 3, 10, 0, tzinfo=UTC)  # the window spans May and June partitions
LANDED = datetime(2024, 6, 2, 14, 0, tzinfo=UTC)  # the bill holds usage up to here
USED = [date(2024, 5, 30), date(2024, 5, 31), date(2024, 6, 1)]  # the latest 3 complete days
EDP = 0.05  # a 5 % enterprise discount, in the net columns and as EdpDiscount lines


@dataclass(frozen=True)
class Line:
    kind: str
    start: datetime
    usage_type: str
    resource: str
    amount: float
    unblended: float
    net_unblended: float | None = None
    ri: float = 0.0
    ri_net: float = 0.0
    sp: float = 0.0
    sp_net: float = 0.0
    instance_type: str = "m5.xlarge"
    team: str = ""
    end: datetime | None = None  # a RIFee's month end; an hour after `start` otherwise
    extra: dict[str, Any] = field(default_factory=dict)  # commitment columns (fakes.athena_api.cur_row)


def eks(name: str, instance: str, *, spot: bool = False, zone: str = "us-east-1a",
        created: datetime | None = None) -> Node:
    return node(
        name,
        uid=f"uid-{instance}",
        provider_id=f"aws:///{zone}/{instance}",
        ref=ProviderRef("aws", zone=zone, instance_id=instance),
        capacity_type=CapacityType.SPOT if spot else CapacityType.ON_DEMAND,
        labels={"eks.amazonaws.com/nodegroup": "general", "cost-center": "cc-1234"} if not spot else {},
        created=(created or datetime(2024, 5, 1, 7, 12, tzinfo=UTC)).timestamp(),
    )


ON_DEMAND = eks("ip-10-0-12-87.ec2.internal", "i-0fea4fd46592d050b")
RESERVED = eks("ip-10-0-44-102.ec2.internal", "i-03dc801fd988ab620")
SAVINGS = eks("ip-10-0-70-9.ec2.internal", "i-0b22a22eec53b9321", zone="us-east-1b")
SPOT = eks("ip-10-0-91-23.ec2.internal", "i-0e5b1a4f3c2d1e0f9", spot=True, zone="us-east-1c")
# launched May 31, 13:30; its Node object registered a minute later
LATE = eks("ip-10-0-3-200.ec2.internal", "i-07c9e1d2f3a4b5c6d", created=datetime(2024, 5, 31, 13, 31, 8, tzinfo=UTC))
HALF = eks("ip-10-0-5-77.ec2.internal", "i-05a5a5a5a5a5a5a5a")  # June 1: only 11 of its 24 h landed so far
MISSING = eks("ip-10-0-9-9.ec2.internal", "i-0123456789abcdef0", created=datetime(2024, 6, 3, 7, tzinfo=UTC))
# an m5.large the RI (size-flexible, bought for m5.xlarge) covers until 16:00 each day but June 1
PART = eks("ip-10-0-6-51.ec2.internal", "i-06f0e1d2c3b4a5968")
NODES = [ON_DEMAND, RESERVED, SAVINGS, SPOT, LATE, HALF, MISSING, PART]
HALF_USED = [date(2024, 5, 29), *USED[:2]]  # June 1 is still being filled: the older May 29 counts instead
OD_RATE, RI_RATE, SP_RATE = 0.192, 0.121, 0.138
# The RI: 2 m5.xlarge (normalization factor 8), partial upfront: 0.071/h recurring + 0.05/h upfront per
# instance, so 0.121 per m5.xlarge hour and 0.121 / 8 per normalized unit-hour.
RI_ARN = "arn:aws:ec2:us-east-1:111122223333:reserved-instances/6f1f3c39-bf35-4b1d-9a0e-0c8f2f4f2b41"
RI_COUNT, RI_RECURRING, RI_UPFRONT, XLARGE, LARGE = 2, 0.071, 0.05, 8.0, 4.0
# The savings plan commits 0.20/h (0.08 upfront + 0.12 recurring, amortized): SAVINGS uses 0.138 of it and
# an instance of another team 0.062, except in the afternoon of May 31, when that one is stopped.
SP_ARN = "arn:aws:savingsplans::111122223333:savingsplan/3b7c1e2a-5d4f-4e8a-9b6c-2f1d0e9a8b7c"
SP_UPFRONT, SP_RECURRING, OTHER_SP_USE = 0.08, 0.12, 0.062
OTHER_STOPPED = (datetime(2024, 5, 31, 12, tzinfo=UTC), datetime(2024, 6, 1, tzinfo=UTC))


def other_runs(at: datetime) -> bool:
    return not OTHER_STOPPED[0] <= at < OTHER_STOPPED[1]


def hours(first: datetime, last: datetime) -> Iterator[datetime]:
    at = first
    while at < last:
        yield at
        at += timedelta(hours=1)


def bill_lines() -> list[Line]:
    start = datetime(2024, 5, 27, tzinfo=UTC)
    lines: list[Line] = []
    for at in hours(start, LANDED):
        spot_price = 0.0712 + 0.0004 * (at.hour % 5)  # the spot market moves
        lines += [
            Line("Usage", at, "BoxUsage:m5.xlarge", ON_DEMAND.ref.instance_id, 1, OD_RATE, OD_RATE * (1 - EDP),
                 team="payments"),
            Line("EdpDiscount", at, "BoxUsage:m5.xlarge", ON_DEMAND.ref.instance_id, 0, -OD_RATE * EDP, 0.0),
            Line("DiscountedUsage", at, "BoxUsage:m5.xlarge", RESERVED.ref.instance_id, 1, 0.0, 0.0,
                 ri=RI_RATE, ri_net=RI_RATE * (1 - EDP), team="search", extra=ri_use(XLARGE)),
            Line("SavingsPlanCoveredUsage", at, "BoxUsage:m5.xlarge", SAVINGS.ref.instance_id, 1, OD_RATE,
                 OD_RATE * (1 - EDP), sp=SP_RATE, sp_net=SP_RATE * (1 - EDP),
                 extra={"savings_plan_savings_plan_a_r_n": SP_ARN}),
            sp_fee(at),
            Line("SavingsPlanNegation", at, "BoxUsage:m5.xlarge", SAVINGS.ref.instance_id, 1, -OD_RATE,
                 -OD_RATE * (1 - EDP)),
            Line("Usage", at, "SpotUsage:m5.xlarge", SPOT.ref.instance_id, 1, spot_price, spot_price),
            Line("Usage", at, "EBS:VolumeUsage.gp3", "vol-0a1b2c3d4e5f60718", 0.0013, 0.0001, 0.0001),
            Line("Usage", at, "BoxUsage:c5.large", "i-0ffffffffffffffff", 1, 0.085, 0.085),  # not ours
        ]
        launched = datetime(2024, 5, 31, 13, tzinfo=UTC)
        if at >= launched:
            amount = 0.5 if at == launched else 1.0  # launched at 13:30: per-second billing
            lines.append(Line("Usage", at, "BoxUsage:m5.xlarge", LATE.ref.instance_id, amount, OD_RATE * amount,
                              OD_RATE * amount * (1 - EDP)))
        if at.date() != date(2024, 6, 1) or at.hour < 11:
            lines.append(Line("Usage", at, "BoxUsage:m5.xlarge", HALF.ref.instance_id, 1, OD_RATE, OD_RATE * (1 - EDP)))
        if at.hour < 16 and at.date() != date(2024, 6, 1):  # PART: the RI's spare units cover it
            lines.append(Line("DiscountedUsage", at, "BoxUsage:m5.large", PART.ref.instance_id, 1, 0.0, 0.0,
                              ri=RI_RATE * LARGE / XLARGE, ri_net=RI_RATE * LARGE / XLARGE * (1 - EDP),
                              instance_type="m5.large", extra=ri_use(LARGE)))
        else:
            lines.append(Line("Usage", at, "BoxUsage:m5.large", PART.ref.instance_id, 1, OD_RATE / 2,
                              OD_RATE / 2 * (1 - EDP), instance_type="m5.large"))
        if other_runs(at):  # the other team's instance the savings plan also covers
            lines.append(Line("SavingsPlanCoveredUsage", at, "BoxUsage:c5.large", "i-0ddddddddddddddd1", 1, 0.085,
                              0.085 * (1 - EDP), sp=OTHER_SP_USE, sp_net=OTHER_SP_USE * (1 - EDP),
                              instance_type="c5.large", extra={"savings_plan_savings_plan_a_r_n": SP_ARN}))
        if at.hour == 0:  # a day's data transfer out, one line
            lines.append(Line("Usage", at, "DataTransfer-Out-Bytes", ON_DEMAND.ref.instance_id, 2.0, 0.18, 0.171))
            lines.append(Line("Usage", at, "DataTransfer-Out-Bytes", HALF.ref.instance_id, 1.0, 0.09 + at.day / 1000,
                              0.0855))
    return lines + [ri_fee(month) for month in (date(2024, 5, 1), date(2024, 6, 1))]


def ri_use(factor: float) -> dict[str, Any]:
    """The columns of an hour of DiscountedUsage the RI covered, for an instance of this size."""
    return {"reservation_reservation_a_r_n": RI_ARN, "line_item_normalization_factor": factor,
            "line_item_normalized_usage_amount": factor}


def month_hours(month: date) -> int:
    following = (month.replace(day=28) + timedelta(days=4)).replace(day=1)
    return (following - month).days * 24


def ri_fee(month: date) -> Line:
    """The RI's RIFee line of a month ("Reservation details": usage = the month's reserved hours, unblended =
    the recurring fee, amortized upfront fee for the billing period); it starts before the query's window."""
    hours_ = RI_COUNT * month_hours(month)
    start = datetime(month.year, month.month, 1, tzinfo=UTC)
    upfront = RI_UPFRONT * hours_
    return Line("RIFee", start, "HeavyUsage:m5.xlarge", "", hours_, RI_RECURRING * hours_,
                RI_RECURRING * hours_ * (1 - EDP), end=start + timedelta(hours=month_hours(month)),
                extra={"reservation_reservation_a_r_n": RI_ARN, "line_item_normalization_factor": XLARGE,
                       "line_item_normalized_usage_amount": hours_ * XLARGE,
                       "reservation_amortized_upfront_fee_for_billing_period": upfront,
                       "reservation_net_amortized_upfront_fee_for_billing_period": upfront * (1 - EDP)})


def sp_fee(at: datetime) -> Line:
    """The savings plan's SavingsPlanRecurringFee line of an hour ("Savings Plans details": the hour's
    commitment to date and the part of it covered usage used); its unblended cost is the recurring fee."""
    used = SP_RATE + (OTHER_SP_USE if other_runs(at) else 0.0)
    return Line("SavingsPlanRecurringFee", at, "ComputeSP:1yrNoUpfront", SP_ARN, 1, SP_RECURRING,
                SP_RECURRING * (1 - EDP),
                extra={"savings_plan_savings_plan_a_r_n": SP_ARN,
                       "savings_plan_total_commitment_to_date": SP_UPFRONT + SP_RECURRING,
                       "savings_plan_used_commitment": used,
                       "savings_plan_amortized_upfront_commitment_for_billing_period": SP_UPFRONT,
                       "savings_plan_recurring_commitment_for_billing_period": SP_RECURRING,
                       "savings_plan_net_amortized_upfront_commitment_for_billing_period": SP_UPFRONT * (1 - EDP),
                       "savings_plan_net_recurring_commitment_for_billing_period": SP_RECURRING * (1 - EDP)})


def amortized(line: Line, basis: str) -> float:
    """AWS's definition of a line's cost in each basis (docs: "Understanding your amortized costs")."""
    net = basis in ("amortized_net", "net_unblended")
    unblended = line.net_unblended if net and line.net_unblended is not None else line.unblended
    if basis.startswith("amortized"):
        return {
            "SavingsPlanCoveredUsage": line.sp_net if net else line.sp,
            "DiscountedUsage": line.ri_net if net else line.ri,
            "Usage": unblended,
        }.get(line.kind, 0.0)
    return unblended if line.kind in ("Usage", "DiscountedUsage", "SavingsPlanCoveredUsage",
                                      "SavingsPlanNegation") else 0.0


def truth(instance: str, basis: str, days: list[date] | None = None) -> tuple[float, float]:
    """(cost, billed hours) of an instance's compute over the used days."""
    days = days or (HALF_USED if instance == HALF.ref.instance_id else USED)
    cost = hours_ = 0.0
    for line in bill_lines():
        if line.resource == instance and line.start.date() in days and "Usage:" in line.usage_type:
            cost += amortized(line, basis)
            if line.kind in ("Usage", "DiscountedUsage", "SavingsPlanCoveredUsage"):
                hours_ += line.amount
    return cost, hours_


def covered(instance: str) -> float:
    """The share of an instance's billed hours over its used days that a commitment covered."""
    days = HALF_USED if instance == HALF.ref.instance_id else USED
    lines = [line for line in bill_lines() if line.resource == instance and line.start.date() in days
             and "Usage:" in line.usage_type and line.kind in ("Usage", "DiscountedUsage", "SavingsPlanCoveredUsage")]
    return sum(line.amount for line in lines if line.kind != "Usage") / sum(line.amount for line in lines)


def table_rows(version: str) -> tuple[list[tuple[str, str]], list[tuple[Any, ...]]]:
    if version == "2.0":
        columns = [*CUR_COLUMNS, ("resource_tags", "MAP(VARCHAR, VARCHAR)"), ("billing_period", "VARCHAR")]
    else:
        columns = [*CUR_COLUMNS, ("resource_tags_user_team", "VARCHAR"), ("resource_tags_user_cost_center", "VARCHAR"),
                   ("year", "VARCHAR"), ("month", "VARCHAR")]
    rows = []
    for line in bill_lines():
        start = line.start.replace(tzinfo=None)
        end = (line.end or line.start + timedelta(hours=1)).replace(tzinfo=None)
        common = cur_row((
            "111122223333", line.kind, start, end, "AmazonEC2", line.usage_type,
            "RunInstances", line.resource, line.amount, "USD", line.unblended, line.net_unblended,
            OD_RATE * line.amount if "BoxUsage" in line.usage_type else line.unblended,
            line.instance_type, line.ri, line.ri_net, line.sp, line.sp_net,
        ), **line.extra)
        if version == "2.0":
            tags = {"user_team": line.team} if line.team else {}
            rows.append((*common, tags, f"{start:%Y-%m}"))
        else:
            rows.append((*common, line.team or None, None, str(start.year), str(start.month)))
    return columns, rows


@contextmanager
def athena_with_curs() -> Iterator[FakeAthena]:
    """The fake Athena holding the test bill as a CUR 2.0 export (`cur.data_exports`) and as a legacy CUR
    (`cur.cost_and_usage`)."""
    with FakeAthena(page_size=1000, polls_before_done=1) as fake:
        for version, table in (("2.0", "data_exports"), ("legacy", "cost_and_usage")):
            columns, rows = table_rows(version)
            fake.create_table("cur", table, columns, rows)
        yield fake


@pytest.fixture(scope="module")
def athena() -> Iterator[FakeAthena]:
    with athena_with_curs() as fake:
        # A legacy CUR where `team` is a cost allocation tag and `cost-center` is not (yet): no column.
        fake.create_table_as(
            "cur", "team_only", 'SELECT * EXCLUDE (resource_tags_user_cost_center) FROM awsdatacatalog."cur"."cost_and_usage"'
        )
        # Legacy CURs of accounts that never had a savings plan, or neither a savings plan nor an RI.
        sp_columns = ", ".join(c for c, _ in CUR_COLUMNS if c.startswith("savings_plan_") and "effective" not in c)
        ri_columns = ", ".join(RESERVATION_COLUMNS)
        for name, excluded in (("no_savings_plans", sp_columns), ("no_commitments", f"{sp_columns}, {ri_columns}")):
            fake.create_table_as("cur", name, f'SELECT * EXCLUDE ({excluded}) FROM awsdatacatalog."cur"."cost_and_usage"')
        yield fake


@pytest.fixture(autouse=True)
def aws_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIDEXAMPLE")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY")
    monkeypatch.delenv("AWS_PROFILE", raising=False)


def make_source(athena: FakeAthena, health: Health, clock: FakeClock, **settings: Any) -> AwsCurBilling:
    options: dict[str, Any] = {
        "database": "cur",
        "table": "data_exports",
        "retries": 1,
        "backoff_seconds": 0.01,
        "backoff_max_seconds": 0.02,
        "poll_interval_seconds": 0.01,
        "timeout_seconds": 5.0,
        "tags": ("team", "cost-center"),
    }
    options.update(settings)
    source = AwsCurBilling(
        AwsCurSettings(enabled=True, endpoint_url=athena.url, **options), context(clock, health=health)
    )
    source.wanted(NODES)
    return source


@pytest.mark.parametrize(
    ("version", "table"), [("2.0", "data_exports"), ("legacy", "cost_and_usage")]
)
@pytest.mark.parametrize("basis", ["amortized", "amortized_net", "unblended", "net_unblended"])
def test_billed_rate_times_billed_hours_is_the_bill(athena: FakeAthena, version: str, table: str, basis: str) -> None:
    health = Health()
    source = make_source(athena, health, FakeClock(NOW), cur_version=version, table=table, cost_basis=basis)
    queries = len(athena.queries)
    assert source.refresh() is True, health.integration("aws_cur").detail
    # the nodes' query and the commitments'; a legacy CUR is first asked for its columns (LIMIT 0)
    assert len(athena.queries) == queries + (3 if version == "legacy" else 2)
    status = health.integration("aws_cur")
    assert status.up, status.detail
    assert status.data_timestamp == datetime(2024, 6, 2, tzinfo=UTC).timestamp()  # June 1 is the newest
    for instance in (ON_DEMAND, RESERVED, SAVINGS, SPOT, LATE, HALF, PART):
        cost, billed_hours = truth(instance.ref.instance_id, basis)
        facts = source.facts(instance)
        quote = source.quote(instance)
        assert facts is not None and quote is not None and quote.basis is Basis.BILLED
        assert facts.hours == pytest.approx(billed_hours)
        if cost == 0:  # unblended: a savings plan's covered usage nets to zero against its negation
            assert float(quote.hourly) == pytest.approx(0.0, abs=1e-9)
        else:
            assert math.isclose(float(quote.hourly) * billed_hours, cost, rel_tol=0.005), instance.name
        used = {LATE.name: USED[1:], HALF.name: HALF_USED}.get(instance.name, USED)  # LATE: launched May 31
        assert [d for d, _ in facts.days] == [d.isoformat() for d in used]
        for day, day_cost in facts.days:  # the daily cost of each usable day is that day's bill
            expected, _ = truth(instance.ref.instance_id, basis, [date.fromisoformat(day)])
            assert day_cost == pytest.approx(expected, rel=0.005, abs=1e-9), (instance.name, day)
        assert facts.coverage == pytest.approx(covered(instance.ref.instance_id)), instance.name
    assert source.quote(MISSING) is None and source.facts(MISSING) is None
    assert {c.commitment for c in source.commitments()} == {RI_ARN, SP_ARN}


def test_query_prunes_partitions_filters_ids_and_reads_tags_and_network(athena: FakeAthena) -> None:
    health = Health()
    source = make_source(athena, health, FakeClock(NOW))
    source.refresh()
    nodes, commitments = (q["QueryString"] for q in athena.queries[-2:])  # the nodes', then the commitments'
    for sql in (nodes, commitments):
        assert "billing_period IN ('2024-05', '2024-06')" in sql
    assert "line_item_resource_id IN (" in nodes and "i-0ffffffffffffffff" not in nodes
    assert athena.queries[-1]["QueryExecutionContext"]["Database"] == "cur"
    assert athena.queries[-1]["WorkGroup"] == "primary"
    assert source.scanned_bytes > 0 and source.rows_ingested == 6 * 5 + 3  # May 29 - June 2 (LATE: 3)
    facts = source.facts(ON_DEMAND)
    assert facts is not None and facts.network_hourly == pytest.approx(3 * 0.18 / 72)
    half = source.facts(HALF)  # the network of its three complete days, not of the half-landed one
    assert half is not None and half.network_hourly == pytest.approx((0.27 + (29 + 30 + 31) / 1000) / 72)
    assert dict(facts.tags) == {"team": "payments"}
    reserved = source.facts(RESERVED)
    assert reserved is not None and reserved.network_hourly == 0.0 and dict(reserved.tags) == {"team": "search"}
    legacy = cur_query(AwsCurSettings(cur_version="legacy", database="cur", table="t", tags=("aws:eks:cluster-name",)),
                       ["i-1"], datetime(2024, 12, 30, tzinfo=UTC), datetime(2025, 1, 2, tzinfo=UTC))
    assert "((year = '2024' AND month = '12') OR (year = '2025' AND month = '1'))" in legacy
    assert "resource_tags_aws_eks_cluster_name" in legacy


def test_too_many_ids_for_one_query_still_reads_only_the_cluster(athena: FakeAthena) -> None:
    ids = [f"i-{n:017x}" for n in range(MAX_IDS_IN_QUERY + 1)]
    assert len(cur_query(AwsCurSettings(database="cur", table="t"), ids, NOW - timedelta(days=5), NOW)) < 262_144
    health = Health()
    source = make_source(athena, health, FakeClock(NOW))
    many = NODES + [eks(f"ip-{n}", i) for n, i in enumerate(ids)]
    source.wanted(many)
    source.refresh()
    assert "LIKE 'i-%'" in athena.queries[-2]["QueryString"]
    assert health.integration("aws_cur").up
    assert source.facts(eks("x", "i-0ffffffffffffffff")) is None  # the foreign instance was dropped


def test_discount_applies_to_on_demand_usage_of_a_gross_bill_only(athena: FakeAthena) -> None:
    health = Health()
    config = PricingConfig(discounts=DiscountConfig(aws=Decimal("0.05")))
    gross = make_source(athena, health, FakeClock(NOW))
    gross.refresh()
    engine = PricingEngine([gross], config, health)
    od = engine.price(ON_DEMAND)
    ri = engine.price(RESERVED)
    spot = engine.price(SPOT)
    assert od is not None and ri is not None and spot is not None
    assert math.isclose(float(od.hourly), OD_RATE * 0.95, rel_tol=1e-6)  # billed at list: discounted
    assert math.isclose(float(ri.hourly), RI_RATE, rel_tol=1e-6)  # the reservation's rate: untouched
    assert float(spot.hourly) == pytest.approx(truth(SPOT.ref.instance_id, "amortized")[0] / 72)
    net = make_source(athena, health, FakeClock(NOW), cost_basis="amortized_net")
    net.refresh()
    net_engine = PricingEngine([net], config, health)
    od_net = net_engine.price(ON_DEMAND)
    assert od_net is not None and math.isclose(float(od_net.hourly), OD_RATE * 0.95, rel_tol=1e-6)  # once
    # docs/pricing.md's EDP example: a gross basis misses the EDP on a savings plan, the net one has it.
    sp, sp_net = engine.price(SAVINGS), net_engine.price(SAVINGS)
    assert sp is not None and math.isclose(float(sp.hourly), SP_RATE, rel_tol=1e-6)
    assert sp_net is not None and math.isclose(float(sp_net.hourly), SP_RATE * (1 - EDP), rel_tol=1e-6)


def test_a_results_page_failing_fails_the_query_then_recovers(athena: FakeAthena) -> None:
    """A 500 on GetQueryResults, after the query itself succeeded: the whole query is the failure."""
    health = Health()
    clock = FakeClock(NOW)
    source = make_source(athena, health, clock, retries=0)
    athena.fail_next("GetQueryResults", "InternalServerException")
    source.refresh()
    status = health.integration("aws_cur")
    assert (status.up, status.reason) == (False, Reason.UNAVAILABLE) and "HTTP 500" in status.detail
    assert source.quote(ON_DEMAND) is None  # never succeeded: nothing cached, the shelf prices it
    clock.now += 600
    assert source.refresh() is True
    assert status.up and source.quote(ON_DEMAND) is not None


def test_messages_and_accounting(athena: FakeAthena) -> None:
    """What tests/test_source_contract.py leaves to each cloud: the detail names the IAM actions or the
    credentials to check, each query is counted with its reason, and retries back off with jitter."""
    health = Health()
    clock = FakeClock(NOW)
    source = make_source(athena, health, clock, retries=2)
    athena.fail_next("StartQueryExecution", "ThrottlingException", count=2)
    source.refresh()
    status = health.integration("aws_cur")
    # 3 tries of the nodes' query, then the commitments' query
    assert (status.up, status.requests, status.errors) == (True, 4, {Reason.THROTTLED: 2})
    backoffs = [s for s in clock.sleeps if s != 0.01]  # the rest are polls of the running query
    assert len(backoffs) == 2 and 0.005 <= backoffs[0] <= 0.01 and 0.01 <= backoffs[1] <= 0.02
    for error, says in (
        ("AccessDeniedException", "the exporter's role needs athena:StartQueryExecution"),
        ("UnrecognizedClientException", "IAM role"),
    ):
        clock.now += 6 * 3600 + 1  # the next query is due
        athena.fail_next("StartQueryExecution", error)
        source.refresh()
        assert not status.up and says in status.detail, status.detail


def test_missing_table_empty_bill_malformed_rows_and_timeouts(athena: FakeAthena) -> None:
    health = Health()
    clock = FakeClock(NOW)
    status = health.integration("aws_cur")
    missing = make_source(athena, health, clock, table="no_such_table", retries=0)
    missing.refresh()
    assert status.reason is Reason.NOT_FOUND and "aws.cur.table" in status.detail
    # An empty bill (a month with no data for the cluster): no_data, nothing priced from it.
    empty = make_source(athena, health, FakeClock(datetime(2024, 9, 3, tzinfo=UTC)), retries=0)
    empty.refresh()
    assert status.reason is Reason.NO_DATA and "no usage" in status.detail
    # Malformed rows are skipped and counted; the rest of the bill still prices its nodes.
    athena.mangle = lambda rows: [[*r[:2], "n/a", *r[3:]] if r[0] == SPOT.ref.instance_id else r for r in rows]
    try:
        source = make_source(athena, health, clock, retries=0)
        source.refresh()
    finally:
        athena.mangle = None
    assert status.up and source.quote(SPOT) is None and source.quote(ON_DEMAND) is not None
    assert health.invalid_counts()["billing_row"] == 5
    # A query still running at the deadline is cancelled and reported as a timeout (the SDK's own
    # timeouts are as long as the deadline: time passes on the source's clock, which only polls move).
    slow = make_source(athena, health, clock, retries=0, timeout_seconds=30.0, poll_interval_seconds=2.0)
    athena.polls_before_done = 100
    try:
        slow.refresh()
    finally:
        athena.polls_before_done = 1
    assert status.reason is Reason.TIMEOUT and "cancelled" in status.detail
    assert "StopQueryExecution" in athena.calls
    assert clock.sleeps[-16:] == [2.0] * 16  # polled every poll_interval_seconds until past the deadline


def test_an_unforeseen_answer_is_a_bad_response_and_the_refresh_does_not_raise(
    athena: FakeAthena, caplog: pytest.LogCaptureFixture
) -> None:
    """A results page whose rows are not objects (a shape no mapping foresaw): the refresh reports it
    and logs the exception once, instead of raising into the scheduler."""
    health = Health()
    clock = FakeClock(NOW)
    source = make_source(athena, health, clock, retries=1)
    rows_not_objects = Answer.json(
        200, {"ResultSet": {"Rows": ["resource", "usage_day"]}}, content_type="application/x-amz-json-1.1"
    )
    athena.enqueue(rows_not_objects, when=lambda request: request.headers.get("x-amz-target", "").endswith("Results"))
    calls = len(athena.calls)
    with caplog.at_level(logging.ERROR, "exporter.pricing.sources"):
        assert source.refresh() is False
    status = health.integration("aws_cur")
    assert (status.up, status.reason) == (False, Reason.BAD_RESPONSE), status.detail
    assert athena.calls[calls:].count("StartQueryExecution") == 1  # not retried: the same answer would come back
    assert [r.exc_info is not None for r in caplog.records] == [True]
    clock.now += 600
    assert source.refresh() is True and status.up


def test_shipped_example_reads_its_tags_from_both_cur_versions(
    athena: FakeAthena, caplog: pytest.LogCaptureFixture
) -> None:
    """config/aws.yaml's `tags:` as shipped: one list for both layouts. In CUR 2.0 a tag nobody activated is
    an absent map key; a legacy CUR has no column for it, which the query must survive (read as empty, said
    once), so a legacy bill whose `cost-center` is not a cost allocation tag still prices every node."""
    shipped = load_config(str(ROOT / "config" / "aws.yaml"), env={}).sources["aws.cur"]
    assert isinstance(shipped, AwsCurSettings) and shipped.tags == ("team", "cost-center")
    for version, table in (("2.0", "data_exports"), ("legacy", "cost_and_usage"), ("legacy", "team_only")):
        health = Health()
        source = make_source(athena, health, FakeClock(NOW), cur_version=version, table=table, tags=shipped.tags)
        caplog.clear()
        with caplog.at_level(logging.WARNING, "exporter.pricing.sources"):
            assert source.refresh() is True
            source.refresh()  # said once, not at every refresh
        status = health.integration("aws_cur")
        assert status.up, (version, table, status.detail)
        facts = source.facts(ON_DEMAND)
        assert facts is not None and dict(facts.tags) == {"team": "payments"}, table
        warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
        if table == "team_only":
            assert len(warnings) == 1 and "resource_tags_user_cost_center" in warnings[0]
            assert "'cost-center'" in warnings[0] and "cost allocation tag" in warnings[0]
        else:
            assert warnings == []


def test_tag_keys_are_written_as_in_aws_and_read_in_each_version_s_form() -> None:
    legacy = AwsCurSettings(cur_version="legacy", database="cur", table="t")
    for key, name in (("team", "user_team"), ("user:team", "user_team"), ("cost-center", "user_cost_center"),
                      ("aws:eks:cluster-name", "aws_eks_cluster_name"), ("app.kubernetes.io/name", "user_app_kubernetes_io_name")):
        assert tag_name(key) == name
        assert tag_column(key, "legacy") == f"resource_tags_{name}"
        assert tag_column(key, "2.0") == f"element_at(resource_tags, '{name}')"
    window = (["i-1"], datetime(2024, 6, 1, tzinfo=UTC), datetime(2024, 6, 3, tzinfo=UTC))
    sql = cur_query(replace(legacy, tags=("team", "owner")), *window, absent={"owner"})
    assert "MAX(resource_tags_user_team) AS tag_0" in sql and "MAX(CAST(NULL AS VARCHAR)) AS tag_1" in sql


def test_wrong_cur_version_names_the_setting(athena: FakeAthena) -> None:
    health = Health()
    source = make_source(athena, health, FakeClock(NOW), cur_version="legacy", retries=0)  # a CUR 2.0 table
    source.refresh()
    status = health.integration("aws_cur")
    assert status.reason is Reason.CONFIG and "aws.cur.cur_version" in status.detail


def test_engine_falls_back_to_shelf_when_stale_and_returns(athena: FakeAthena) -> None:
    health = Health()
    clock = FakeClock(NOW)
    source = make_source(athena, health, clock, retries=0)
    engine = PricingEngine([source, OfflinePrices.load("", currency="USD")], PricingConfig(), health)
    source.refresh()
    price = engine.price(RESERVED)
    assert price is not None and price.source == "aws_cur" and price.list_source == "offline"
    assert price.hourly < price.list_hourly  # type: ignore[operator]  # the reservation shows
    missing = engine.price(MISSING)
    assert missing is not None and missing.source == "offline"
    athena.fail_next("StartQueryExecution", "AccessDeniedException")
    clock.now += 3 * 86400 + 60  # every query in between failed: past max_staleness_seconds
    assert source.refresh() is True
    assert health.integration("aws_cur").reason is Reason.PERMISSION
    price = engine.price(RESERVED)
    assert price is not None and price.source == "offline"
    clock.now += 600
    source.refresh()
    price = engine.price(RESERVED)
    assert price is not None and price.source == "aws_cur"


def test_backfill_writes_each_usable_day_and_skips_days_still_being_filled(athena: FakeAthena, tmp_path: Path) -> None:
    """`backfill` applies the same rule as the live rates: a settled day counts for a node only when its
    billed hours cover the hours the exporter saw it (HALF's June 1 is skipped, the others are written)."""
    import io

    from exporter.backfill import METRIC, write_backfill
    from exporter.cache import PriceCache

    health = Health()
    clock = FakeClock(datetime(2024, 5, 29, 0, 30, tzinfo=UTC))
    cache = PriceCache(str(tmp_path / "cache.sqlite"), health.integration("cache"))
    source = AwsCurBilling(
        AwsCurSettings(enabled=True, endpoint_url=athena.url, database="cur", table="data_exports", retries=0,
                       poll_interval_seconds=0.01, timeout_seconds=5.0),
        context(clock, health=health, cache=cache),
    )
    while clock.now < NOW.timestamp():  # the exporter watched the cluster every hour
        source.wanted([n for n in NODES if n.created is not None and n.created <= clock.now])
        clock.now += 3600
    source.refresh()  # writes today's hours to the cache
    out = io.StringIO()
    counts = write_backfill([source], date(2024, 5, 29), date(2024, 6, 2), out, now=NOW.timestamp())
    assert counts["incomplete_days"] == 1  # June 2 has not settled
    assert counts["unfilled_node_days"] == 1  # HALF on June 1
    per_day: dict[tuple[str, str], float] = {}
    for line in out.getvalue().splitlines():
        if line.startswith(METRIC):
            labels, value, stamp = line.rsplit(" ", 2)
            name = labels.split('node="')[1].split('"')[0]
            day = datetime.fromtimestamp(int(stamp), UTC).date().isoformat()
            per_day[name, day] = per_day.get((name, day), 0.0) + float(value)
    for instance in (ON_DEMAND, RESERVED, HALF):
        for day in (date(2024, 5, 29), date(2024, 5, 30), date(2024, 5, 31), date(2024, 6, 1)):
            expected, _ = truth(instance.ref.instance_id, "amortized", [day])
            if instance is HALF and day == date(2024, 6, 1):
                assert (instance.name, day.isoformat()) not in per_day
            else:
                assert per_day[instance.name, day.isoformat()] == pytest.approx(expected, rel=0.005)
    late_cost, late_hours = truth(LATE.ref.instance_id, "amortized", [date(2024, 5, 31)])
    # LATE (created 13:31) was first seen at the 14:30 look: 10 hours of May 31, each at the day's rate
    assert per_day[LATE.name, "2024-05-31"] == pytest.approx(10 * late_cost / late_hours, rel=0.005)
    assert out.getvalue().endswith("# EOF\n")


def commitment_truth(basis: str) -> dict[str, tuple[float, float]]:
    """(unused per hour, utilization) of each commitment over the used days, from the fixture's lines by the
    CUR dictionary's definitions: a savings plan's hourly fee rows; an RI's monthly fee spread over its
    month's hours, its use the normalized units its DiscountedUsage lines carry, at most its size."""
    net = basis in ("amortized_net", "net_unblended")
    lines = bill_lines()
    committed = {RI_ARN: 0.0, SP_ARN: 0.0}
    used = {RI_ARN: 0.0, SP_ARN: 0.0}
    for line in lines:
        if line.kind == "SavingsPlanRecurringFee" and line.start.date() in USED:
            total = line.extra["savings_plan_total_commitment_to_date"]
            scale = (1 - EDP) if net else 1.0  # the net fee columns carry the EDP
            committed[SP_ARN] += total * scale
            used[SP_ARN] += line.extra["savings_plan_used_commitment"] * scale
    for day in USED:
        (fee,) = [x for x in lines if x.kind == "RIFee" and x.start.date() == day.replace(day=1)]
        recurring = fee.net_unblended if net and fee.net_unblended is not None else fee.unblended
        upfront = fee.extra["reservation_net_amortized_upfront_fee_for_billing_period" if net else
                            "reservation_amortized_upfront_fee_for_billing_period"]
        units = fee.extra["line_item_normalized_usage_amount"]
        rate = (recurring + upfront) / units  # per normalized unit-hour
        size = units / month_hours(fee.start.date())  # normalized units each hour
        day_units = sum(x.extra["line_item_normalized_usage_amount"] for x in lines if x.kind == "DiscountedUsage"
                        and x.extra.get("reservation_reservation_a_r_n") == RI_ARN and x.start.date() == day)
        committed[RI_ARN] += size * 24 * rate
        used[RI_ARN] += min(day_units, size * 24) * rate
    hours_ = 24 * len(USED)
    return {arn: ((committed[arn] - used[arn]) / hours_, used[arn] / committed[arn]) for arn in committed}


@pytest.mark.parametrize(("version", "table"), [("2.0", "data_exports"), ("legacy", "cost_and_usage")])
@pytest.mark.parametrize("basis", ["amortized", "amortized_net"])
def test_unused_commitments_and_utilization(athena: FakeAthena, version: str, table: str, basis: str) -> None:
    """The RI (2 m5.xlarge) covers RESERVED all day and, size-flexibly, PART (an m5.large: half the units)
    16 h a day but June 1; the savings plan is used in full but for May 31's afternoon. The RIFee rows are
    monthly and start on May 1 and June 1, before the window."""
    health = Health()
    source = make_source(athena, health, FakeClock(NOW), cur_version=version, table=table, cost_basis=basis)
    assert source.refresh() is True, health.integration("aws_cur").detail
    got = {c.commitment: c for c in source.commitments()}
    truth_ = commitment_truth(basis)
    assert set(got) == set(truth_) == {RI_ARN, SP_ARN}
    for arn, (unused_hourly, utilization) in truth_.items():
        assert got[arn].provider == "aws"
        assert got[arn].days == tuple(d.isoformat() for d in USED)
        assert got[arn].unused_hourly == pytest.approx(unused_hourly, rel=0.01), arn
        assert got[arn].utilization == pytest.approx(utilization, rel=0.01), arn
    # the same by hand: the RI's 16 normalized units an hour cover 8 + 4 for 16 h, 8 for 8 h, and June 1 8
    scale = 1 - EDP if basis == "amortized_net" else 1.0
    ri_used_units = 2 * (8 * 24 + 4 * 16) + 8 * 24
    assert got[RI_ARN].utilization == pytest.approx(ri_used_units / (3 * 16 * 24))
    assert got[RI_ARN].unused_hourly == pytest.approx((3 * 16 * 24 - ri_used_units) * RI_RATE / XLARGE / 72 * scale)
    assert got[SP_ARN].unused_hourly == pytest.approx(12 * (0.2 - SP_RATE) / 72 * scale)
    assert got[SP_ARN].utilization == pytest.approx(1 - 12 * (0.2 - SP_RATE) / (72 * 0.2))
    # each covered node's rate stays its commitment's effective rate: the unused part is not spread onto it
    reserved, part = source.quote(RESERVED), source.quote(PART)
    assert reserved is not None and float(reserved.hourly) == pytest.approx(RI_RATE * scale, rel=0.005)
    part_cost = (2 * 16 * RI_RATE / 2 + (2 * 8 + 24) * OD_RATE / 2) * scale
    assert part is not None and float(part.hourly) == pytest.approx(part_cost / 72, rel=0.005)
    facts = {n.name: source.facts(n) for n in (RESERVED, SAVINGS, ON_DEMAND, SPOT, PART)}
    coverage = {name: f.coverage if f else None for name, f in facts.items()}
    assert coverage == {RESERVED.name: 1.0, SAVINGS.name: 1.0, ON_DEMAND.name: 0.0, SPOT.name: 0.0,
                        PART.name: pytest.approx(32 / 72)}


@pytest.mark.parametrize(("table", "kinds"), [("no_savings_plans", {RI_ARN}), ("no_commitments", set())])
def test_a_legacy_cur_without_commitment_columns_reads_the_commitments_it_has(
    athena: FakeAthena, table: str, kinds: set[str]
) -> None:
    """A legacy CUR has reservation and savings plan columns only once the account had such a commitment: the
    table's columns (asked first anyway) decide which parts the commitments' query has, and with neither
    there is no such query; node rates are unaffected."""
    health = Health()
    source = make_source(athena, health, FakeClock(NOW), cur_version="legacy", table=table)
    queries = len(athena.queries)
    assert source.refresh() is True, health.integration("aws_cur").detail
    assert {c.commitment for c in source.commitments()} == kinds
    assert len(athena.queries) == queries + (3 if kinds else 2)
    reserved = source.quote(RESERVED)
    assert reserved is not None and float(reserved.hourly) == pytest.approx(RI_RATE)
    columns = {c for c, _ in CUR_COLUMNS} - set(SAVINGS_PLAN_COLUMNS)
    settings = AwsCurSettings(cur_version="legacy", database="cur", table="t")
    sql = commitment_query(settings, NOW - timedelta(days=5), NOW, columns)
    assert sql is not None and "RIFee" in sql and "SavingsPlanRecurringFee" not in sql
    assert commitment_query(settings, NOW - timedelta(days=5), NOW, columns - set(RESERVATION_COLUMNS)) is None


def test_a_failed_commitments_query_keeps_the_node_rates_and_the_last_commitments(
    athena: FakeAthena, caplog: pytest.LogCaptureFixture
) -> None:
    health = Health()
    clock = FakeClock(NOW)
    source = make_source(athena, health, clock, retries=0)
    assert source.refresh() is True
    before = source.commitments()
    assert len(before) == 2
    clock.now += 6 * 3600 + 1
    athena.enqueue(  # the commitments' query (the second of the refresh) is refused
        Answer.json(400, {"__type": "AccessDeniedException", "message": "denied"},
                    content_type="application/x-amz-json-1.1"),
        when=lambda r: "RIFee" in r.body.decode(errors="replace"),
    )
    with caplog.at_level(logging.WARNING, "exporter.pricing.sources"):
        source.refresh()
    assert [r.getMessage() for r in caplog.records if "querying commitments failed" in r.getMessage()]
    assert health.integration("aws_cur").up and source.quote(RESERVED) is not None
    assert source.commitments() == before
