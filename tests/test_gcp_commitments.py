"""GCP committed use discounts in the BigQuery billing source: the real google-cloud-bigquery client against
the local BigQuery that runs the exporter's GoogleSQL (via DuckDB) over a detailed export holding both CUD
data models, as one account can have them since 2026-01-21.

Where each shape comes from:
- Credit model (resource-based CUDs; spend-based CUDs before their migration): Google's "Committed use
  discounts" billing pages (cloud.google.com/compute/docs/instances/committed-use-discounts-overview and
  cloud.google.com/docs/cuds-multiprice, "legacy CUD model using credits": list price charge plus a credit
  offset) and the detailed-export schema (…/export-data-bigquery-tables/detailed-usage). The fee is billed
  hourly on its own Compute Engine rows, one per commitment resource type, SKU "Commitment v1: C3 Cpu in
  Americas for 1 Year" / "Commitment v1: N2 Ram in Americas for 1 Year" (Google's own CUD attribution
  queries in GoogleCloudPlatform/professional-services parse that wording), with no instance global name;
  usage.amount in vCPU-seconds or byte-seconds and amount_in_pricing_units in vCPU-hours or GiB-hours; cost =
  the fee. The VM's usage rows stay at on-demand price and a COMMITTED_USAGE_DISCOUNT credit offsets the
  full on-demand cost of the part the commitment covered (Google's example: $50 of usage, a -$50 credit and
  a $37.50 fee cost $37.50). An hour with more usage than commitment has the rest at on-demand, uncredited;
  an hour with less leaves part of the fee unused. What `credits.id` holds for such a credit is not
  documented: here the C3 credits carry their commitment's name (the fee rows' `resource.name`), the N2
  ones an opaque id, so that both matchings (by id, by region/family/resource) are exercised.
- Legacy spend-based CUDs: fee "Commitment - dollar based v1: GCE …", credit type
  COMMITTED_USAGE_DISCOUNT_DOLLAR_BASE offsetting the covered on-demand spend (Google's sample KPI queries
  for the legacy data model, cloud.google.com/docs/cuds-example-queries).
- New model (Compute flexible CUDs, "Spend-based CUDs data model updates",
  cloud.google.com/docs/cuds-multiprice-datamodel): covered usage rows carry the discounted cost and a
  `consumption_model` (id, description), no credit; the fee is billed on Compute's new CUD fee SKUs (ids from
  the sample KPI query for the new model) at $1 per unit of hourly commitment, and a FEE_UTILIZATION_OFFSET
  credit on the fee row negates its used part; the rest of the fee is unused commitment.
Prices are us-central1 list prices rounded; SKU ids other than the fee SKU are made up (the query reads none).
"""

from __future__ import annotations

import logging
import math
import zlib
from collections import defaultdict
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from exporter.config import ConfigError, load_config
from exporter.config.sources.gcp import GcpBigQuerySettings
from exporter.health import Health
from exporter.inventory.node import Node, ProviderRef
from exporter.pricing.sources.gcp.bigquery import GcpBigQueryBilling
from fakes.bigquery_api import BILLING_COLUMNS, FakeBigQuery
from fakes.gcp_api import FakeCatalogAPI, write_adc
from tests.conftest import FakeClock, context, node

TABLE = "billing-admin.billing_export.gcp_billing_export_resource_v1_010101_ABCDEF_123456"
NOW = datetime(2026, 3, 6, 10, tzinfo=UTC)
FIRST, LANDED = datetime(2026, 3, 1, tzinfo=UTC), datetime(2026, 3, 5, 15, tzinfo=UTC)
USED_DAYS = ("2026-03-02", "2026-03-03", "2026-03-04")  # the latest 3 settled days at NOW
PROJECT, REGION, ZONE = "shop-prod", "us-central1", "us-central1-a"
COMPUTE = {"id": "6F81-5844-456A", "description": "Compute Engine"}
GIB = 2**30
DISCOUNT = 0.28  # the flexible CUD's discount (1 year), the source's default spend_based_cud_discount
FLEX_FEE_SKU = {"id": "B22F-51BE-D599", "description": "Compute Engine Flexible Commitment fee - 1 Year"}
FLEX_MODEL = {"id": "F3A9-13C4-7D21", "description": "Compute Flexible CUD - 1 Year"}

# (family, resource) → (on-demand, 1-year commitment) per vCPU-hour or GiB-hour
PRICES = {
    ("C3", "Core"): (0.03465, 0.02183),
    ("C3", "Ram"): (0.003938, 0.002481),
    ("N2", "Core"): (0.031611, 0.019915),
    ("N2", "Ram"): (0.004237, 0.002669),
    ("E2", "Core"): (0.021811, 0.0),
    ("E2", "Ram"): (0.002923, 0.0),
    ("N2D AMD", "Core"): (0.027502, 0.0),
    ("N2D AMD", "Ram"): (0.003686, 0.0),
}
# VM → (family, vCPUs, GiB, the UTC hours it runs each day); the *-other VMs are no node of the cluster
VMS = {
    "gke-shop-c3-pool-1a2b-x7k2": ("C3", 8, 32, range(24)),
    "batch-c3-worker": ("C3", 4, 16, range(12)),
    "gke-shop-n2-pool-3c4d-p9q1": ("N2", 4, 16, range(24)),
    "gke-shop-e2-pool-5e6f-m3n4": ("E2", 4, 16, range(24)),
    "batch-e2-worker": ("E2", 4, 16, range(12)),
    "gke-shop-n2d-pool-7a8b-r5s6": ("N2D AMD", 2, 8, range(24)),
}
C3_NODE, N2_NODE, E2_NODE, N2D_NODE = (
    "gke-shop-c3-pool-1a2b-x7k2", "gke-shop-n2-pool-3c4d-p9q1", "gke-shop-e2-pool-5e6f-m3n4",
    "gke-shop-n2d-pool-7a8b-r5s6",
)
# resource-based commitments: (family, resource) → (name on the fee rows or None, committed vCPUs / GiB)
RESOURCE_CUDS = {
    ("C3", "Core"): ("c3-cpu-commitment", 10),  # 12 vCPUs run 00-12 (over-used), 8 after (under-used)
    ("C3", "Ram"): ("c3-ram-commitment", 40),  # 48 GiB, then 32
    ("N2", "Core"): (None, 6),  # 4 vCPUs all day: under-used
    ("N2", "Ram"): (None, 8),  # 16 GiB all day: over-used
}
IDLE_CUD = ("N2D AMD", "Core", 4)  # a commitment none of the cluster's VMs uses
FLEX_HOURLY = 0.12  # the flexible CUD's hourly commitment, in dollars of discounted spend
DOLLAR_HOURLY = 0.05  # the legacy dollar-based CUD's hourly commitment
COMMIT_SKU = {"Core": "Cpu", "Ram": "Ram"}


def commitment_sku(family: str, resource: str) -> str:
    return f"Commitment v1: {family} {COMMIT_SKU[resource]} in Americas for 1 Year"


def commitment_id(family: str, resource: str) -> str:
    """What the source reports: the fee row's resource.name, else its region and SKU."""
    if (family, resource) == IDLE_CUD[:2]:
        return f"{REGION}: {commitment_sku(family, resource)}"
    name = RESOURCE_CUDS[family, resource][0]
    return name or f"{REGION}: {commitment_sku(family, resource)}"


def row(
    sku: str,
    at: datetime,
    cost: float,
    usage: tuple[float, str, float, str],
    *,
    vm: str | None = None,
    resource: tuple[str | None, str | None] = (None, None),
    credits: tuple[tuple[str, float, str], ...] = (),
    model: dict[str, str] | None = None,
    sku_id: str | None = None,
) -> tuple[Any, ...]:
    """One detailed-export row in BILLING_COLUMNS' order; `vm` makes it that VM's instance row."""
    start = at.replace(tzinfo=None)
    if vm is not None:
        resource = (vm, f"//compute.googleapis.com/projects/{PROJECT}/zones/{ZONE}/instances/{vm}")
    exported = start + timedelta(hours=5)
    return (
        "010101-ABCDEF-123456",
        COMPUTE,
        {"id": sku_id or f"{zlib.crc32(sku.encode()):08X}", "description": sku},
        start,
        start + timedelta(hours=1),
        {"id": PROJECT, "number": "123456789012", "name": PROJECT},
        [],
        [],
        {"location": ZONE if vm else REGION, "country": "US", "region": REGION, "zone": ZONE if vm else None},
        {"name": resource[0], "global_name": resource[1]},
        exported,
        cost,
        "USD",
        1.0,
        {"amount": usage[0], "unit": usage[1], "amount_in_pricing_units": usage[2], "pricing_unit": usage[3]},
        [{"name": t, "amount": a, "full_name": t, "id": i, "type": t} for t, a, i in credits],
        {"month": f"{start:%Y%m}"},
        "regular",
        model,
        exported.replace(hour=0, minute=0, second=0, microsecond=0),
    )


def quantity(resource: str, amount: float) -> tuple[float, str, float, str]:
    """vCPUs or GiB for one hour: vCPU-seconds / byte-seconds (vCPU-hours / GiB-hours in pricing units)."""
    if resource == "Core":
        return (amount * 3600, "seconds", amount, "hour")
    return (amount * GIB * 3600, "byte-seconds", amount, "gibibyte hour")


class Bill:
    """The fixture bill, and the truth kept while writing it: per commitment and day, (fee, used)."""

    def __init__(self) -> None:
        self.rows: list[tuple[Any, ...]] = []
        self.commitments: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(lambda: [0.0, 0.0]))
        at = FIRST
        while at < LANDED:
            self.hour(at)
            at += timedelta(hours=1)

    def hour(self, at: datetime) -> None:
        day = at.date().isoformat()
        running = {vm: spec for vm, spec in VMS.items() if at.hour in spec[3]}
        for resource in ("Core", "Ram"):
            # resource-based (credit model): C3 and N2
            for family in ("C3", "N2"):
                name, committed = RESOURCE_CUDS[family, resource]
                on_demand, commit_price = PRICES[family, resource]
                users = {vm: spec[1] if resource == "Core" else spec[2] for vm, spec in running.items()
                         if spec[0] == family}
                total = sum(users.values())
                covered = min(total, committed)
                fee = committed * commit_price
                cid = commitment_id(family, resource)
                resource_ids = (name, f"//compute.googleapis.com/projects/{PROJECT}/regions/{REGION}/commitments/{name}")
                self.rows.append(row(commitment_sku(family, resource), at, fee, quantity(resource, committed),
                                     resource=resource_ids if name else (None, None)))
                self.commitments[cid][day][0] += fee
                self.commitments[cid][day][1] += covered * commit_price
                for vm, amount in users.items():
                    share = covered * amount / total  # the credit covers each VM's part pro rata
                    credit_id = name or f"{zlib.crc32(cid.encode()):010d}"
                    self.rows.append(row(
                        f"{family} Instance {resource} running in Americas", at, amount * on_demand,
                        quantity(resource, amount), vm=vm,
                        credits=(("COMMITTED_USAGE_DISCOUNT", -share * on_demand, credit_id),),
                    ))
            # the idle commitment: its fee only
            family, kind, committed = IDLE_CUD
            if resource == kind:
                fee = committed * 0.0173
                self.rows.append(row(commitment_sku(family, kind), at, fee, quantity(kind, committed)))
                self.commitments[commitment_id(family, kind)][day][0] += fee
            # the flexible CUD (new model) on E2: covered usage at the discounted price with a consumption
            # model, the rest at on-demand
        e2 = {vm: spec for vm, spec in running.items() if spec[0] == "E2"}
        spend = {vm: sum(PRICES["E2", r][0] * (s[1] if r == "Core" else s[2]) for r in ("Core", "Ram")) * (1 - DISCOUNT)
                 for vm, s in e2.items()}
        used = min(FLEX_HOURLY, sum(spend.values()))
        covered_share = used / sum(spend.values())
        for vm, spec in e2.items():
            for resource in ("Core", "Ram"):
                amount = spec[1] if resource == "Core" else spec[2]
                on_demand = PRICES["E2", resource][0]
                sku = f"E2 Instance {resource} running in Americas"
                part = amount * covered_share
                self.rows.append(row(sku, at, part * on_demand * (1 - DISCOUNT), quantity(resource, part), vm=vm,
                                     model=FLEX_MODEL))
                if covered_share < 1:
                    rest = amount - part
                    self.rows.append(row(sku, at, rest * on_demand, quantity(resource, rest), vm=vm))
        flex_id = f"{REGION}: {FLEX_FEE_SKU['description']}"
        self.rows.append(row(FLEX_FEE_SKU["description"], at, FLEX_HOURLY, (FLEX_HOURLY, "hour", FLEX_HOURLY, "hour"),
                             credits=(("FEE_UTILIZATION_OFFSET", -used, "flex"),), sku_id=FLEX_FEE_SKU["id"]))
        self.commitments[flex_id][day][0] += FLEX_HOURLY
        self.commitments[flex_id][day][1] += used
        # the legacy dollar-based CUD on N2D: usage at on-demand, a DOLLAR_BASE credit for the covered spend
        _, vcpus, gib, _ = VMS[N2D_NODE]
        on_demand_spend = vcpus * PRICES["N2D AMD", "Core"][0] + gib * PRICES["N2D AMD", "Ram"][0]
        covered_spend = min(on_demand_spend, DOLLAR_HOURLY / (1 - DISCOUNT))
        for resource, amount in (("Core", vcpus), ("Ram", gib)):
            cost = amount * PRICES["N2D AMD", resource][0]
            self.rows.append(row(
                f"N2D AMD Instance {resource} running in Americas", at, cost, quantity(resource, amount), vm=N2D_NODE,
                credits=(("COMMITTED_USAGE_DISCOUNT_DOLLAR_BASE", -covered_spend * cost / on_demand_spend, "GCE"),),
            ))
        dollar_id = f"{REGION}: Commitment - dollar based v1: GCE for 1 year"
        self.rows.append(row(dollar_id.split(": ", 1)[1], at, DOLLAR_HOURLY,
                             (DOLLAR_HOURLY, "hour", DOLLAR_HOURLY, "hour")))
        self.commitments[dollar_id][day][0] += DOLLAR_HOURLY
        self.commitments[dollar_id][day][1] += covered_spend * (1 - DISCOUNT)


BILL = Bill()


def commit_price(sku: str) -> float:
    """A covered usage SKU's commitment unit price, from the fixture's price list (not from the fee rows)."""
    family, resource = sku.split(" Instance ")[0], sku.split(" Instance ")[1].split(" ")[0]
    return PRICES[family, resource][1]


def truth(vm: str, days: tuple[str, ...], credit_types: tuple[str, ...] = ()) -> tuple[float, float]:
    """(effective cost, covered share) of a VM over these days, from its rows by the documented rule:
    cost + counted credits + |CUD credit| x commitment price ÷ the row's on-demand unit price, DOLLAR_BASE
    credits at (1 - discount); covered share = covered on-demand value ÷ on-demand value."""
    cost = on_demand = covered = 0.0
    for r in BILL.rows:
        if r[9]["name"] != vm or r[3].date().isoformat() not in days:
            continue
        usage, sku = r[14], r[2]["description"]
        cost += r[11]
        for c in r[15]:
            counted = not credit_types or c["type"] in credit_types
            if c["type"] == "COMMITTED_USAGE_DISCOUNT":
                covered += -c["amount"]
                if counted:
                    cost += c["amount"] - c["amount"] * commit_price(sku) / (r[11] / usage["amount_in_pricing_units"])
            elif c["type"] == "COMMITTED_USAGE_DISCOUNT_DOLLAR_BASE":
                covered += -c["amount"]
                if counted:
                    cost += c["amount"] * DISCOUNT
        if r[18] is not None:  # consumption model: at its effective price, its on-demand value undiscounted
            on_demand += r[11] / (1 - DISCOUNT)
            covered += r[11] / (1 - DISCOUNT)
        else:
            on_demand += r[11]
    return cost, covered / on_demand


def gke(name: str) -> Node:
    return node(
        name,
        uid=f"uid-{name}",
        provider_id=f"gce://{PROJECT}/{ZONE}/{name}",
        ref=ProviderRef("gcp", account=PROJECT, zone=ZONE, instance_id=name),
        region=REGION,
        zone=ZONE,
    )


NODES = [gke(vm) for vm in (C3_NODE, N2_NODE, E2_NODE, N2D_NODE)]


@pytest.fixture(scope="module")
def bigquery() -> Iterator[FakeBigQuery]:
    with FakeBigQuery(page_size=200) as fake:
        fake.create_table(TABLE, BILLING_COLUMNS, BILL.rows)
        yield fake


@pytest.fixture(scope="module")
def adc(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    with FakeCatalogAPI(token="ya29.test-token") as tokens:
        yield write_adc(tmp_path_factory.mktemp("adc") / "adc.json", f"{tokens.url}/token")


def refreshed(
    bigquery: FakeBigQuery, adc: Path, monkeypatch: pytest.MonkeyPatch, **settings: Any
) -> GcpBigQueryBilling:
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(adc))
    project, dataset, table = TABLE.split(".")
    health = Health()
    source = GcpBigQueryBilling(
        GcpBigQuerySettings(enabled=True, project=project, dataset=dataset, table=table, endpoint_url=bigquery.url,
                            retries=0, timeout_seconds=10.0, **settings),
        context(FakeClock(NOW), health=health),
    )
    source.wanted(NODES)
    assert source.refresh() is True, health.integration("gcp_bigquery").detail
    assert not bigquery.errors
    return source


def test_the_fixture_has_the_shapes_it_claims() -> None:
    """Over- and under-used hours of the resource-based commitments, fee rows on no VM, both models."""
    fees = [r for r in BILL.rows if r[2]["description"].startswith("Commitment v1:")]
    assert fees and all(r[9]["global_name"] is None or "/commitments/" in r[9]["global_name"] for r in fees)
    c3 = BILL.commitments["c3-cpu-commitment"]["2026-03-02"]
    assert c3[1] < c3[0]  # 2 of 10 vCPUs unused from 12:00
    over = [r for r in BILL.rows if r[9]["name"] == C3_NODE and r[3].hour == 3 and "Core" in r[2]["description"]]
    assert -over[0][15][0]["amount"] < over[0][11]  # 00-12: more usage than commitment, part uncredited
    modelled = [r for r in BILL.rows if r[18] is not None]
    assert modelled and all(not r[15] for r in modelled)
    assert any(c["type"] == "FEE_UTILIZATION_OFFSET" for r in BILL.rows for c in r[15])


@pytest.mark.parametrize("vm", [C3_NODE, N2_NODE, E2_NODE, N2D_NODE])
def test_a_covered_node_costs_its_usage_at_the_commitment_rate(
    bigquery: FakeBigQuery, adc: Path, monkeypatch: pytest.MonkeyPatch, vm: str
) -> None:
    """Not ~$0/h (cost + credits of a fully covered VM): the covered usage at the commitment's price, the
    rest at on-demand; consumption-model rows as billed. Coverage is the covered share of on-demand value."""
    source = refreshed(bigquery, adc, monkeypatch)
    target = next(n for n in NODES if n.name == vm)
    facts, quote = source.facts(target), source.quote(target)
    assert facts is not None and quote is not None and facts.day_names == USED_DAYS
    cost, share = truth(vm, USED_DAYS)
    assert math.isclose(float(quote.hourly) * facts.hours, cost, rel_tol=0.005), vm
    assert facts.coverage is not None and facts.coverage == pytest.approx(share, abs=0.005), vm
    naive = sum(r[11] + sum(c["amount"] for c in r[15]) for r in BILL.rows
                if r[9]["name"] == vm and r[3].date().isoformat() in USED_DAYS)
    if vm != E2_NODE:  # the credit model's cost + credits undercounts the node
        assert float(quote.hourly) * facts.hours > naive * 1.05


def test_coverage_ratios(bigquery: FakeBigQuery, adc: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """C3 node: CPU 10/12 covered half the day and 8/8 the other, RAM likewise; N2: all its CPU, half its
    RAM; E2: 0.12 of 0.193 discounted spend half the day, all the other half."""
    source = refreshed(bigquery, adc, monkeypatch)
    coverage = {n.name: (f.coverage if (f := source.facts(n)) else None) for n in NODES}
    c3 = [PRICES["C3", r][0] * q for r, q in (("Core", 8), ("Ram", 32))]
    c3_share = (sum(c * 10 / 12 for c in c3[:1]) + c3[1] * 40 / 48 + sum(c3)) / (2 * sum(c3))
    n2 = [PRICES["N2", r][0] * q for r, q in (("Core", 4), ("Ram", 16))]
    assert coverage[C3_NODE] == pytest.approx(c3_share, abs=0.005)
    assert coverage[N2_NODE] == pytest.approx((n2[0] + n2[1] / 2) / sum(n2), abs=0.005)
    e2_spend = (4 * PRICES["E2", "Core"][0] + 16 * PRICES["E2", "Ram"][0]) * (1 - DISCOUNT)
    assert coverage[E2_NODE] == pytest.approx((FLEX_HOURLY / (2 * e2_spend) + 1) / 2, abs=0.005)


def test_unused_commitment_and_utilization(
    bigquery: FakeBigQuery, adc: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Per commitment over its latest settled days: unused = fee - covered usage at the commitment's price
    (credit model), fee + FEE_UTILIZATION_OFFSET credits (new model); the commitment no cluster VM uses is
    logged once at INFO, and its fee is all unused."""
    with caplog.at_level(logging.INFO, logger="exporter.pricing.sources.gcp.bigquery"):
        source = refreshed(bigquery, adc, monkeypatch)
    got = {c.commitment: c for c in source.commitments()}
    assert set(got) == set(BILL.commitments)
    for commitment, by_day in BILL.commitments.items():
        committed = sum(by_day[d][0] for d in USED_DAYS)
        used = sum(by_day[d][1] for d in USED_DAYS)
        entry = got[commitment]
        assert entry.provider == "gcp" and entry.days == USED_DAYS
        assert entry.unused_hourly == pytest.approx((committed - used) / 72, rel=0.01, abs=1e-9), commitment
        assert entry.utilization == pytest.approx(used / committed, abs=0.005), commitment
    idle = commitment_id(*IDLE_CUD[:2])
    assert got[idle].utilization == 0
    assert got["c3-cpu-commitment"].utilization == pytest.approx((12 * 10 + 12 * 8) / 240, abs=0.005)
    logged = [r.getMessage() for r in caplog.records if r.levelno == logging.INFO and "none of its credits" in r.getMessage()]
    assert len(logged) == 1 and idle in logged[0]
    caplog.clear()
    clock = source.clock
    assert isinstance(clock, FakeClock)
    clock.advance(source.settings.refresh_interval_seconds)
    with caplog.at_level(logging.INFO, logger="exporter.pricing.sources.gcp.bigquery"):
        source.refresh()
    assert not [r for r in caplog.records if "none of its credits" in r.getMessage()]


def test_credit_types_without_cud_leave_covered_usage_at_on_demand(
    bigquery: FakeBigQuery, adc: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """credit_types filters first: a CUD credit left out is neither subtracted nor re-priced, so the covered
    node costs its on-demand price; coverage still counts it."""
    source = refreshed(bigquery, adc, monkeypatch, credit_types=("SUSTAINED_USAGE_DISCOUNT",))
    target = NODES[0]
    facts, quote = source.facts(target), source.quote(target)
    assert facts is not None and quote is not None
    cost, share = truth(C3_NODE, USED_DAYS, ("SUSTAINED_USAGE_DISCOUNT",))
    on_demand = sum(r[11] for r in BILL.rows if r[9]["name"] == C3_NODE and r[3].date().isoformat() in USED_DAYS)
    assert cost == pytest.approx(on_demand)
    assert math.isclose(float(quote.hourly) * facts.hours, cost, rel_tol=0.005)
    assert facts.coverage == pytest.approx(share, abs=0.005)


@pytest.mark.parametrize("discount", [-0.1, 1.0])
def test_spend_based_cud_discount_is_a_fraction(tmp_path: Path, discount: float) -> None:
    text = (
        "gcp:\n  bigquery:\n    enabled: true\n    project: p\n    dataset: d\n    table: t\n"
        f"    spend_based_cud_discount: {discount}\n"
    )
    (tmp_path / "config.yaml").write_text(text)
    with pytest.raises(ConfigError) as caught:
        load_config(tmp_path / "config.yaml", env={})
    assert caught.value.key == "gcp.bigquery.spend_based_cud_discount"


def test_a_cud_credit_no_fee_row_prices_counts_as_billed_and_is_logged(
    adc: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Without the commitments' fee rows (a bill the parse cannot read), the N2 node's CUD credits stay as
    billed (cost + credits) and a warning names the VM, once."""
    rows = [r for r in BILL.rows if r[9]["name"] == N2_NODE]
    with FakeBigQuery(page_size=200) as fake:
        fake.create_table(TABLE, BILLING_COLUMNS, rows)
        with caplog.at_level(logging.WARNING, logger="exporter.pricing.sources.gcp.bigquery"):
            source = refreshed(fake, adc, monkeypatch)
        facts, quote = source.facts(NODES[1]), source.quote(NODES[1])
        assert facts is not None and quote is not None
        billed = sum(r[11] + sum(c["amount"] for c in r[15]) for r in rows if r[3].date().isoformat() in USED_DAYS)
        assert math.isclose(float(quote.hourly) * facts.hours, billed, rel_tol=0.005)
        warned = [r.getMessage() for r in caplog.records if "match no commitment fee row" in r.getMessage()]
        assert len(warned) == 1 and N2_NODE in warned[0]
        assert source.commitments() == ()  # no fee row: no commitment


def test_a_credit_naming_its_commitment_is_priced_at_that_commitment(
    adc: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two N2 CPU commitments in one region, 1 year ($0.019915) and 3 years ($0.014225), 3 vCPUs each; the
    node's 4 vCPUs are covered 3 by the first and 1 by the second, each credit naming its commitment (the
    fee rows' resource.name). Each credit is re-priced at its own commitment's rate, not the region's
    average, and the 3-year one is used 1 of 3 vCPUs."""
    prices = {"n2-cpu-1y": 0.019915, "n2-cpu-3y": 0.014225}
    covered = {"n2-cpu-1y": 3, "n2-cpu-3y": 1}
    on_demand = PRICES["N2", "Core"][0]
    rows = []
    at = FIRST
    while at < LANDED:
        for name, term in (("n2-cpu-1y", "1 Year"), ("n2-cpu-3y", "3 Years")):
            rows.append(row(f"Commitment v1: N2 Cpu in Americas for {term}", at, 3 * prices[name],
                            quantity("Core", 3), resource=(name, f"//compute.googleapis.com/projects/{PROJECT}/regions/{REGION}/commitments/{name}")))
        credits = tuple(("COMMITTED_USAGE_DISCOUNT", -n * on_demand, name) for name, n in covered.items())
        rows.append(row("N2 Instance Core running in Americas", at, 4 * on_demand, quantity("Core", 4), vm=N2_NODE,
                        credits=credits))
        rows.append(row("N2 Instance Ram running in Americas", at, 16 * PRICES["N2", "Ram"][0], quantity("Ram", 16),
                        vm=N2_NODE))
        at += timedelta(hours=1)
    with FakeBigQuery(page_size=200) as fake:
        fake.create_table(TABLE, BILLING_COLUMNS, rows)
        source = refreshed(fake, adc, monkeypatch)
        quote = source.quote(NODES[1])
        assert quote is not None
        own = sum(n * prices[name] for name, n in covered.items()) + 16 * PRICES["N2", "Ram"][0]
        assert float(quote.hourly) == pytest.approx(own, rel=0.005)
        averaged = 4 * sum(prices.values()) / 2 + 16 * PRICES["N2", "Ram"][0]
        assert abs(float(quote.hourly) - averaged) > 0.03 * own  # the two rules tell apart
        got = {c.commitment: c.utilization for c in source.commitments()}
        assert got == {"n2-cpu-1y": pytest.approx(1.0), "n2-cpu-3y": pytest.approx(1 / 3)}
