"""Sharded replicas and the clouds: each replica's billing query and price-list queries name its own nodes'
resources and types only, a node is priced the same on its shard as unsharded (a scale set split over shards
included), and the account's commitments are queried and exported by shard 0 alone."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Sequence
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from exporter.app import App
from exporter.config import load_config
from exporter.config.sources.aws import AwsCurSettings
from exporter.health import Health
from exporter.inventory.node import Node, ProviderRef
from exporter.inventory.sharding import Shard, shard_of
from exporter.pricing.sources.billing import BillingSource, BillRow, CommitmentDay, midnight
from exporter.pricing.sources.context import SourceContext
from fakes.athena_api import CUR_COLUMNS, FakeAthena, cur_row
from fakes.kube_api import make_node
from tests.conftest import FakeClock, node, scrape, turn

NOW = datetime(2024, 6, 6, 10, tzinfo=UTC)  # June 2-4 are the latest settled days (settle_hours 24)
BILLED_DAYS = [date(2024, 5, 29) + timedelta(days=n) for n in range(8)]  # May 29 - June 5, all landed
NODES = [make_node(f"ip-10-0-7-{i}.ec2.internal", images=1) for i in range(12)]


def _instance(obj: dict[str, Any]) -> str:
    return str(obj["spec"]["providerID"].rsplit("/", 1)[1])


def _rate(i: int) -> float:
    return round(0.1 + 0.013 * i, 4)  # a different rate per node: a mixed-up price shows


def _cur_table() -> tuple[list[tuple[str, str]], list[tuple[Any, ...]]]:
    """Hourly CUR 2.0 Usage line items of every node (and of an instance outside the cluster)."""
    columns = [*CUR_COLUMNS, ("resource_tags", "MAP(VARCHAR, VARCHAR)"), ("billing_period", "VARCHAR")]
    instances = [(_instance(obj), _rate(i)) for i, obj in enumerate(NODES)] + [("i-0ffffffffffffffff", 0.5)]
    rows = []
    for day in BILLED_DAYS:
        for hour in range(24):
            start = datetime(day.year, day.month, day.day, hour)
            for instance, rate in instances:
                base = (
                    "111122223333", "Usage", start, start + timedelta(hours=1), "AmazonEC2",
                    "BoxUsage:m5.xlarge", "RunInstances", instance, 1.0, "USD", rate, rate, 0.192,
                    "m5.xlarge", 0.0, 0.0, 0.0, 0.0,
                )  # fmt: skip
                rows.append((*cur_row(base), {}, f"{start:%Y-%m}"))
    return columns, rows


@pytest.fixture(scope="module")
def athena() -> Iterator[FakeAthena]:
    with FakeAthena(page_size=1000, polls_before_done=1) as fake:
        columns, rows = _cur_table()
        fake.create_table("cur", "data_exports", columns, rows)
        yield fake


@pytest.fixture(autouse=True)
def aws_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIDEXAMPLE")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY")
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.delenv("AWS_PROFILE", raising=False)


def _app(tmp_path: Path, athena: FakeAthena, shard: Shard) -> App:
    nodes = tmp_path / "nodes.json"
    nodes.write_text(json.dumps({"kind": "NodeList", "apiVersion": "v1", "items": NODES}))
    overrides = {
        "kubernetes.nodes_file": str(nodes),
        "cache.enabled": False,
        "aws.cur.enabled": True,
        "aws.cur.endpoint_url": athena.url,
        "aws.cur.database": "cur",
        "aws.cur.table": "data_exports",
        "aws.cur.retries": 0,
        "aws.cur.poll_interval_seconds": 0.01,
        "sharding.shard": shard.index,
        "sharding.total_shards": shard.total,
    }
    app = App(load_config(None, env={}, overrides=overrides), clock=FakeClock(NOW))
    turn(app)
    return app


def _costs(app: App) -> dict[str, str]:
    """Node name → the `nodecost_node_hourly_cost` line's source and value."""
    pattern = re.compile(r'^nodecost_node_hourly_cost\{node="([^"]+)",source="([^"]+)".*\} (\S+)$', re.MULTILINE)
    return {name: f"{source} {value}" for name, source, value in pattern.findall(scrape(app))}


def test_each_shard_queries_the_bill_for_its_own_instances_and_prices_them_as_unsharded(
    tmp_path: Path, athena: FakeAthena
) -> None:
    unsharded = _costs(_app(tmp_path, athena, Shard()))
    assert len(unsharded) == 12 and all(line.startswith("aws_cur ") for line in unsharded.values())
    union: dict[str, str] = {}
    for index in range(3):
        before = len(athena.queries)
        app = _app(tmp_path, athena, Shard(index, 3))
        sql = [q["QueryString"] for q in athena.queries[before:]]
        mine = {_instance(o) for o in NODES if shard_of(o["metadata"]["uid"], 3) == index}
        named = set(re.findall(r"i-[0-9a-f]{17}", sql[0]))
        assert mine and named == mine, f"shard {index} asked the bill for {sorted(named)}"
        # Commitments are the account's, queried by shard 0 only.
        assert len(sql) == (2 if index == 0 else 1)
        costs = _costs(app)
        assert {n["metadata"]["name"] for n in NODES if _instance(n) in mine} == set(costs)
        union.update(costs)
    assert union == unsharded  # the same node, the same price, on its shard as unsharded


# -- a scale set whose instances are on two shards -------------------------------------------------------


class ScaleSetBill(BillingSource[AwsCurSettings]):
    """A bill of one scale set (its day's cost and instance-hours) and one commitment, from lists."""

    name = "aws_cur"
    provider = "aws"
    resource_kind = "instance"
    reports_commitments = True

    def __init__(self, rows: list[BillRow], context: SourceContext) -> None:
        settings = AwsCurSettings(enabled=True, database="cur", table="t", retries=0)
        super().__init__(settings, context)
        self.rows = rows
        self.commitment_queries = 0

    def resource(self, n: Node) -> str | None:
        return n.ref.instance_id or None

    def shared(self, resource: str) -> bool:
        return True

    def where(self) -> str:
        return "the listed bill"

    def query(self, resources: Sequence[str], start: datetime, end: datetime) -> Iterator[BillRow]:
        return iter(self.rows)

    def commitment_days(self, start: datetime, end: datetime) -> Iterator[CommitmentDay]:
        self.commitment_queries += 1
        for d in (2, 3, 4):
            yield CommitmentDay("sp-1", date(2024, 6, d), 24.0, 18.0)


def _member(i: int, created: datetime | None = None) -> Node:
    return node(
        f"vmss00000{i}",
        uid=f"0b5a3c9e-6f1d-4e2a-9c47-2d8f1e6a7b{i:02d}",
        ref=ProviderRef("azure", instance_id="vmss-pool1"),
        created=(created or datetime(2024, 5, 1, tzinfo=UTC)).timestamp(),
    )


def test_a_scale_set_split_over_shards_prices_each_member_as_unsharded() -> None:
    """Five instances, one of them launched at noon on June 3: 108 instance-hours that day, 120 the others.
    Each shard knows only some of them, yet finds the same usable days and the same rate per node."""
    members = [_member(i) for i in range(4)] + [_member(4, datetime(2024, 6, 3, 12, tzinfo=UTC))]
    by_shard = {i: [m for m in members if shard_of(m.uid, 2) == i] for i in range(2)}
    assert all(by_shard.values()), "the fixture must put members on both shards"
    hours = {2: 96.0, 3: 108.0, 4: 120.0}
    cost = {2: 96.0 * 0.2, 3: 108.0 * 0.21, 4: 120.0 * 0.22}
    rows = [
        BillRow("vmss-pool1", date(2024, 6, d), midnight(date(2024, 6, d)) + timedelta(days=1), cost[d], hours[d])
        for d in (2, 3, 4)
    ]

    def facts(known: list[Node], shard: int) -> dict[str, tuple[float, tuple[str, ...]]]:
        context = SourceContext(Health(), None, "USD", FakeClock(NOW), account_wide=lambda: shard == 0)
        source = ScaleSetBill(rows, context)
        source.wanted(known)
        assert source.refresh() is True, source.status.detail
        out = {}
        for m in known:
            f = source.facts(m)
            assert f is not None, m.name
            out[m.name] = (round(f.hourly, 9), f.day_names)
        return out

    whole = facts(members, 0)
    assert whole["vmss000004"][1] == ("2024-06-03", "2024-06-04")
    assert facts(by_shard[0], 0) | facts(by_shard[1], 1) == whole


def test_commitments_are_queried_and_exported_by_shard_zero_only() -> None:
    rows = [BillRow("i-a", date(2024, 6, d), midnight(date(2024, 6, d)) + timedelta(days=1), 4.8, 24) for d in (2, 3, 4)]
    got = {}
    for shard in (0, 1):
        context = SourceContext(Health(), None, "USD", FakeClock(NOW), account_wide=lambda s=shard: s == 0)
        source = ScaleSetBill(rows, context)
        source.wanted([node("a", ref=ProviderRef("aws", instance_id="i-a"), created=datetime(2024, 5, 1, tzinfo=UTC).timestamp())])
        assert source.refresh() is True
        got[shard] = (source.commitment_queries, [c.commitment for c in source.commitments()])
    assert got == {0: (1, ["sp-1"]), 1: (0, [])}


def test_exporter_info_names_the_shard(tmp_path: Path) -> None:
    nodes = tmp_path / "nodes.json"
    nodes.write_text(json.dumps({"kind": "NodeList", "apiVersion": "v1", "items": NODES}))
    for overrides, labels in (
        ({}, 'shard="0",total_shards="1"'),
        ({"sharding.shard": 2, "sharding.total_shards": 3}, 'shard="2",total_shards="3"'),
    ):
        config = load_config(None, env={}, overrides={"kubernetes.nodes_file": str(nodes), "cache.enabled": False,
                                                      **overrides})
        app = App(config, clock=FakeClock(NOW))
        turn(app)
        text = scrape(app)
        assert f"nodecost_exporter_info{{{labels}}} 1.0" in text
        expected = sum(1 for n in NODES if app.inventory.shard.owns(n))
        assert 0 < expected <= len(NODES)
        assert sum(1 for line in text.splitlines() if line.startswith("nodecost_node_info{")) == expected


def test_each_shard_asks_the_price_list_for_its_own_nodes_types(tmp_path: Path) -> None:
    from fakes.azure_api import FakeRetailPricesAPI, vm_items

    sizes = ("Standard_D2s_v3", "Standard_D4s_v3", "Standard_DS1_v2", "Standard_NC6s_v3")
    regions = ("eastus", "westeurope")
    cluster = [
        make_node(f"aks-pool{i}-vmss00000{i}", provider="azure", instance_type=sizes[i % 4], zone=f"{regions[i % 2]}-1",
                  images=1)
        for i in range(8)
    ]
    nodes = tmp_path / "azure-nodes.json"
    nodes.write_text(json.dumps({"kind": "NodeList", "apiVersion": "v1", "items": cluster}))
    items = [item for region in regions for size in sizes for item in vm_items(region, size, "Dv3", linux="0.1")]
    asked: list[set[str]] = []
    with FakeRetailPricesAPI(items) as fake:
        for index in range(2):
            before = len(fake.filters)
            overrides = {"kubernetes.nodes_file": str(nodes), "cache.enabled": False, "azure.retail.enabled": True,
                         "azure.retail.endpoint_url": fake.url, "sharding.shard": index, "sharding.total_shards": 2}
            turn(App(load_config(None, env={}, overrides=overrides), clock=FakeClock(NOW)))
            asked.append({
                f"{r}/{s}" for text in fake.filters[before:] for r in regions for s in sizes
                if f"'{r}'" in text and f"'{s}'" in text
            })
            mine = [o for o in cluster if Shard(index, 2).owns(o)]
            want = {f"{o['metadata']['labels']['topology.kubernetes.io/region']}/"
                    f"{o['metadata']['labels']['node.kubernetes.io/instance-type']}" for o in mine}
            assert mine and asked[-1] == want, (index, asked[-1], want)
    assert asked[0] != asked[1]
