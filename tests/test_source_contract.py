"""One contract every price list ("shelf") and billing source must keep, checked against the same faults.

Each source runs with its real SDK against its wire-level fake (fakes/), which answers a generic `Fault`
in that cloud's own error shape. For every fault the contract is: after `refresh()` the integration is
down with the matching `Reason` (or, for a fault that clears, up again after a retry), the last good
quote is still served, and once the fault is gone the next refresh is up with quotes again, with no
restart.

The harnesses below are the only code that knows how a source is built and how its SDK reaches the fake;
when source constructors change, only they change.

Per-fault expectations, and why:
- auth, permission, not_found: down with that reason. Permission is not retried (one call); auth may be
  (google-auth refreshes its token and tries again on a 401), and a missing table is a failed query,
  after several calls, in Athena.
- throttled once, with a retry-after of `RETRY_AFTER` seconds: retried within the same refresh, so the
  source is up, and the refresh took at least the retry-after where the cloud sends one (BigQuery sends
  none: the source's own backoff is all it waits). Throttled until cleared: down with THROTTLED after the retries.
- timeout: the fake holds the request past the client timeout (`TIMEOUT` s); down with TIMEOUT.
- unavailable (5xx until cleared): retried, then down with UNAVAILABLE.
- dropped (the connection closed with no answer, until cleared): retried, then down with UNAVAILABLE, not
  TIMEOUT: no deadline passed, the server or something in between hung up.
- cut (the connection closed midway through the body, short of its Content-Length): the same as dropped,
  never a half answer parsed as a whole one.
- bad_response (a 200 with a truncated body): down with BAD_RESPONSE, not retried (one call).
- no_data (a valid, empty answer): depends on what an empty answer means.
  * Billing: an empty bill for the cluster's resources is a broken export or the wrong table, never a
    fact about prices: down with NO_DATA, last rates kept.
  * GCP catalog: the whole Compute Engine SKU list comes in one listing; an empty listing is broken, not
    "every machine is free": down with NO_DATA, last prices kept.
  * Azure retail: one query asks for every Virtual Machines meter of a few sizes in a region; nothing at
    all for a region that had prices is the API failing (meters do not vanish overnight): down with
    NO_DATA, last prices kept, the empty answer not cached.
  * AWS price list, AWS spot: each query asks about one key (a type in a region); an empty answer is the
    list saying it has no price for that key, which the source remembers ("no price"): up, and the node is
    unpriced.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from exporter.cache import PriceCache
from exporter.config import PricingConfig
from exporter.config.sections import sections
from exporter.config.sources.aws import AwsCurSettings, AwsPricingSettings, AwsSpotSettings
from exporter.config.sources.azure import AzureCostSettings, AzureRetailSettings
from exporter.config.sources.gcp import GcpBigQuerySettings, GcpCatalogSettings
from exporter.health import Health, IntegrationStatus, Reason
from exporter.inventory.node import CapacityType, Node, ProviderRef
from exporter.pricing.quote import Quote
from fakes.athena_api import CUR_COLUMNS, FakeAthena, cur_row
from fakes.aws_api import Ec2Api, PricingApi, ec2_product
from fakes.azure_api import FakeRetailPricesAPI, vm_items
from fakes.bigquery_api import BILLING_COLUMNS, FakeBigQuery
from fakes.cost_management_api import FakeCostManagement, StaticToken, UsageRecord
from fakes.gcp_api import FakeCatalogAPI, write_adc
from fakes.server import Answer, FakeServer, Fault
from tests.conftest import FakeClock, context, node

TIMEOUT = 0.3  # every client's timeout, seconds
# The BigQuery fake runs the query's SQL (DuckDB) inside jobs.insert: on a loaded machine that took over
# 0.3 s, so a bad_response case first timed out and was retried. Its client gets a timeout it can meet.
BIGQUERY_TIMEOUT = 2.0
RETRY_AFTER = 0.3  # what a throttled answer asks the client to wait, seconds
SHELF = {"ttl_seconds": 0.0, "retries": 1, "backoff_seconds": 0.01, "backoff_max_seconds": 0.05}
BILLING = {"retries": 1, "backoff_seconds": 0.01, "backoff_max_seconds": 0.05}
NOW = datetime(2024, 6, 6, 10, tzinfo=UTC)  # billing sources' clock: June 2-4 are complete days
BILLED_DAYS = [date(2024, 6, d) for d in range(1, 6)]


@dataclass
class Harness:
    """One source wired to its fake, with a node it prices."""

    fake: FakeServer
    source: Any  # a ShelfSource or a BillingSource
    status: IntegrationStatus
    node: Node
    clock: FakeClock  # sleeps return at once and are recorded; moving it makes a billing query due
    sends_retry_after: bool = True  # the cloud tells a throttled client how long to wait
    no_data: Reason | None = Reason.NO_DATA  # None: an empty answer is a valid "no price"

    def refresh(self) -> None:
        """One refresh, due now (billing sources query only every refresh_interval_seconds)."""
        self.clock.advance(self.source.settings.refresh_interval_seconds)
        self.source.wanted([self.node])
        self.source.refresh()

    def quote(self) -> Quote | None:
        return self.source.quote(self.node)


HarnessFactory = Callable[[Path, pytest.MonkeyPatch], contextlib.AbstractContextManager[Harness]]


# -- shelves --------------------------------------------------------------------------------------------------


def aws_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Static credentials from the environment, and nothing from the machine's own AWS setup."""
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIAIOSFODNN7EXAMPLE")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY")
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-aws-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-aws-credentials"))
    for name in ("AWS_SESSION_TOKEN", "AWS_PROFILE", "AWS_ENDPOINT_URL", "AWS_MAX_ATTEMPTS", "AWS_RETRY_MODE"):
        monkeypatch.delenv(name, raising=False)


@contextlib.contextmanager
def aws_pricing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Harness]:
    from exporter.pricing.sources.aws.price_list import AwsOnDemandPrices

    aws_env(monkeypatch, tmp_path)
    with PricingApi() as fake:
        fake.add(ec2_product("us-east-1", "m5.xlarge", "0.1920000000"))  # the 2026 us-east-1 list price
        settings = AwsPricingSettings(enabled=True, endpoint_url=fake.url, timeout_seconds=TIMEOUT, **SHELF)
        source = AwsOnDemandPrices(settings, context(clock := FakeClock()))
        yield Harness(fake, source, source.status, node(), clock, no_data=None)


@contextlib.contextmanager
def aws_spot(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Harness]:
    from exporter.pricing.sources.aws.spot import AwsSpotPrices

    aws_env(monkeypatch, tmp_path)
    with Ec2Api() as fake:
        fake.add("us-east-1a", "m5.xlarge", "0.071200", "2024-06-01T10:00:00.000Z")
        settings = AwsSpotSettings(enabled=True, endpoint_url=fake.url, timeout_seconds=TIMEOUT, **SHELF)
        spot = node(capacity_type=CapacityType.SPOT)
        source = AwsSpotPrices(settings, context(clock := FakeClock()))
        yield Harness(fake, source, source.status, spot, clock, no_data=None)


@contextlib.contextmanager
def gcp_catalog(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Harness]:
    from exporter.pricing.sources.gcp.catalog import GcpCatalogPrices

    with FakeCatalogAPI(api_key="AIzaSy-test-key") as fake:  # the generated Compute Engine SKU set
        settings = GcpCatalogSettings(
            enabled=True, api_key="AIzaSy-test-key", endpoint_url=fake.url, timeout_seconds=TIMEOUT, **SHELF
        )
        gke = node(
            "gke-prod-default-pool-3f1c2a9e-7xkq",
            provider_id="gce://prod-project/us-central1-b/gke-prod-default-pool-3f1c2a9e-7xkq",
            ref=ProviderRef("gcp", account="prod-project", zone="us-central1-b", instance_id="gke-7xkq"),
            instance_type="n2-standard-4",
            region="us-central1",
            zone="us-central1-b",
            labels={"node.kubernetes.io/instance-type": "n2-standard-4"},
        )
        source = GcpCatalogPrices(settings, context(clock := FakeClock()))
        yield Harness(fake, source, source.status, gke, clock)


@contextlib.contextmanager
def azure_retail(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Harness]:
    from exporter.pricing.sources.azure.retail import AzureRetailPrices

    items = vm_items("eastus", "Standard_D4s_v3", "DSv3", linux="0.192", spot="0.0384")  # published prices
    with FakeRetailPricesAPI(items) as fake:
        settings = AzureRetailSettings(enabled=True, endpoint_url=fake.url, timeout_seconds=TIMEOUT, **SHELF)
        source = AzureRetailPrices(settings, context(clock := FakeClock()))
        yield Harness(fake, source, source.status, aks_node("Standard_D4s_v3"), clock)


# -- billing --------------------------------------------------------------------------------------------------

DATA_EXPORT_COLUMNS = [*CUR_COLUMNS, ("resource_tags", "MAP(VARCHAR, VARCHAR)"), ("billing_period", "VARCHAR")]


def hours_billed() -> Iterator[datetime]:
    """Every usage hour on the bill: June 1 to June 5, 14:00 (the bill lands late)."""
    at = datetime(2024, 6, 1)
    while at < datetime(2024, 6, 5, 14):
        yield at
        at += timedelta(hours=1)


@contextlib.contextmanager
def aws_cur(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Harness]:
    from exporter.pricing.sources.aws.cur import AwsCurBilling

    aws_env(monkeypatch, tmp_path)
    instance = "i-0fea4fd46592d050b"
    rows = [
        (*cur_row(("111122223333", "Usage", at, at + timedelta(hours=1), "AmazonEC2", "BoxUsage:m5.xlarge",
                   "RunInstances", instance, 1.0, "USD", 0.192, 0.192, 0.192, "m5.xlarge", 0.0, 0.0, 0.0, 0.0)),
         {}, f"{at:%Y-%m}")
        for at in hours_billed()
    ]
    with FakeAthena() as fake:
        fake.create_table("cur", "data_exports", DATA_EXPORT_COLUMNS, rows)
        health, clock = Health(), FakeClock(NOW)
        settings = AwsCurSettings(
            enabled=True,
            endpoint_url=fake.url,
            database="cur",
            table="data_exports",
            timeout_seconds=TIMEOUT,
            poll_interval_seconds=0.01,
            **BILLING,
        )
        source = AwsCurBilling(settings, context(clock, health=health))
        yield Harness(fake, source, health.integration("aws_cur"), node(), clock)


@contextlib.contextmanager
def gcp_bigquery(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Harness]:
    from exporter.pricing.sources.gcp.bigquery import GcpBigQueryBilling

    project, dataset, table = "billing-admin", "billing_export", "gcp_billing_export_resource_v1_010101_ABCDEF_123456"
    vm, zone = "gke-shop-default-pool-3f1c2a9e-m2pd", "europe-west1-b"
    rows = [
        ("010101-ABCDEF-123456", {"id": "6F81-5844-456A", "description": "Compute Engine"},
         {"id": "CF4E-A0C7-E3BF", "description": sku}, at, at + timedelta(hours=1),
         {"id": "shop-prod", "number": "123456789012", "name": "shop-prod"}, [], [],
         {"location": "europe-west1", "country": "BE", "region": "europe-west1", "zone": zone},
         {"name": vm, "global_name": f"//compute.googleapis.com/projects/shop-prod/zones/{zone}/instances/{vm}"},
         at + timedelta(hours=5), cost, "USD", 1.0,
         {"amount": 3600.0, "unit": "seconds", "amount_in_pricing_units": 1.0, "pricing_unit": "hour"},
         [], {"month": f"{at:%Y%m}"}, "regular", None, at.replace(hour=0))
        for at in hours_billed()
        for sku, cost in (("N2 Instance Core running in EMEA", 0.1245), ("N2 Instance Ram running in EMEA", 0.0668))
    ]
    with FakeCatalogAPI(token="ya29.test-token") as tokens, FakeBigQuery() as fake:
        adc = write_adc(tmp_path / "adc.json", f"{tokens.url}/token")
        monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(adc))
        fake.create_table(f"{project}.{dataset}.{table}", BILLING_COLUMNS, rows)
        health, clock = Health(), FakeClock(NOW)
        settings = GcpBigQuerySettings(
            enabled=True,
            project=project,
            dataset=dataset,
            table=table,
            endpoint_url=fake.url,
            timeout_seconds=BIGQUERY_TIMEOUT,
            **BILLING,
        )
        source = GcpBigQueryBilling(settings, context(clock, health=health))
        gke = node(
            vm,
            provider_id=f"gce://shop-prod/{zone}/{vm}",
            ref=ProviderRef("gcp", account="shop-prod", zone=zone, instance_id=vm),
            instance_type="n2-standard-4",
            region="europe-west1",
            zone=zone,
        )
        yield Harness(fake, source, health.integration("gcp_bigquery"), gke, clock, sends_retry_after=False)


@contextlib.contextmanager
def azure_cost(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Harness]:
    from exporter.pricing.sources.azure.cost_management import AzureCostBilling

    aks = aks_node("Standard_D2s_v3")
    group = aks.ref.resource_group
    scale_set = f"/subscriptions/{SUBSCRIPTION}/resourceGroups/{group}/providers/Microsoft.Compute/virtualMachineScaleSets/{aks.ref.scale_set}"
    with FakeCostManagement(tmp_path) as fake:
        fake.scopes.add(f"/subscriptions/{SUBSCRIPTION}/resourceGroups/{group}")
        fake.scopes.add(f"/subscriptions/{SUBSCRIPTION}")  # where unused commitments are read
        fake.records.extend(
            UsageRecord(day, scale_set, "OnDemand", 24 * 0.096, 24 * 0.096, quantity=24.0) for day in BILLED_DAYS
        )
        health, clock = Health(), FakeClock(NOW)
        settings = AzureCostSettings(
            enabled=True,
            scope=f"/subscriptions/{SUBSCRIPTION}/resourceGroups/{group}",
            endpoint_url=fake.url,
            timeout_seconds=TIMEOUT,
            **BILLING,
        )
        source = AzureCostBilling(
            settings,
            context(clock, health=health, cache=PriceCache(str(tmp_path / "cache.sqlite"), health.integration("cache"))),
            credential=StaticToken(fake.token),
            connection_verify=fake.ca_file,
        )
        yield Harness(fake, source, health.integration("azure_cost_management"), aks, clock)


SUBSCRIPTION = "8ecadfc9-d1a3-4ea4-b844-0d9f87e4d7c8"


def aks_node(size: str) -> Node:
    """An AKS scale-set node in eastus."""
    group, vmss = "mc_rg_cluster_eastus", "aks-nodepool1-12345678-vmss"
    return node(
        f"{vmss}000000",
        provider_id=f"azure:///subscriptions/{SUBSCRIPTION}/resourceGroups/{group}/providers/Microsoft.Compute/virtualMachineScaleSets/{vmss}/virtualMachines/0",
        ref=ProviderRef("azure", account=SUBSCRIPTION, instance_id="0", resource_group=group, scale_set=vmss),
        instance_type=size,
        region="eastus",
        zone="eastus-1",
        labels={"node.kubernetes.io/instance-type": size, "kubernetes.io/os": "linux"},
    )


HARNESSES: dict[str, HarnessFactory] = {
    "aws_pricing": aws_pricing,
    "aws_spot": aws_spot,
    "gcp_catalog": gcp_catalog,
    "azure_retail": azure_retail,
    "aws_cur": aws_cur,
    "gcp_bigquery": gcp_bigquery,
    "azure_cost": azure_cost,
}


# -- the contract -----------------------------------------------------------------------------------------------


@pytest.fixture
def harness(request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Harness]:
    """A source that has priced its node once: the "last good" quote every case starts from."""
    with HARNESSES[request.param](tmp_path, monkeypatch) as ready:
        ready.refresh()
        assert ready.status.up, ready.status.detail
        assert ready.quote() is not None
        yield ready


@dataclass(frozen=True)
class Case:
    fault: Fault
    persists: bool  # True: until cleared; False: the next request only
    reason: Reason | None  # expected after the refresh; None: up (the fault was retried away)

    def __str__(self) -> str:
        return f"{self.fault.value}{'' if self.persists else '_once'}"


CASES = [
    Case(Fault.AUTH, True, Reason.AUTH),
    Case(Fault.PERMISSION, True, Reason.PERMISSION),
    Case(Fault.NOT_FOUND, True, Reason.NOT_FOUND),
    Case(Fault.THROTTLED, False, None),
    Case(Fault.THROTTLED, True, Reason.THROTTLED),
    Case(Fault.TIMEOUT, True, Reason.TIMEOUT),
    Case(Fault.UNAVAILABLE, True, Reason.UNAVAILABLE),
    Case(Fault.DROPPED, True, Reason.UNAVAILABLE),
    Case(Fault.CUT, True, Reason.UNAVAILABLE),
    Case(Fault.BAD_RESPONSE, True, Reason.BAD_RESPONSE),
    Case(Fault.NO_DATA, True, Reason.NO_DATA),
]
# Where a source breaks the contract today: (source, case) → (why, whether to run it at all). Strict: once a
# source is fixed, its entry must go.
GAPS: dict[tuple[str, str], tuple[str, bool]] = {}


def params() -> list[Any]:
    out = []
    for source in HARNESSES:
        for case in CASES:
            gap = GAPS.get((source, str(case)))
            marks = [] if gap is None else [pytest.mark.xfail(reason=gap[0], strict=True, run=gap[1])]
            out.append(pytest.param(source, case, id=f"{source}-{case}", marks=marks))
    return out


@pytest.mark.timeout(60)
@pytest.mark.parametrize(("harness", "case"), params(), indirect=["harness"])
def test_fault_then_recovery(harness: Harness, case: Case) -> None:
    good = harness.quote()
    harness.fake.inject(case.fault, None if case.persists else 1, retry_after=RETRY_AFTER)
    asked, slept = len(harness.fake.requests), len(harness.clock.sleeps)
    harness.refresh()
    waits = harness.clock.sleeps[slept:]
    status = harness.status
    expected = harness.no_data if case.fault is Fault.NO_DATA else case.reason
    if case.fault is Fault.NO_DATA and expected is None:
        assert status.up and harness.quote() is None, "an empty answer is this key's 'no price'"
    elif expected is None:
        assert status.up, status.detail
        assert harness.quote() == good
        if harness.sends_retry_after:
            assert max(waits, default=0.0) >= RETRY_AFTER, "the retry waited less than the server's retry-after"
    else:
        assert (status.up, status.reason) == (False, expected), status.detail
        assert harness.quote() == good, "a failed refresh must keep the last good quote"
        assert not unknown_keys(status.detail), f"the detail names keys that do not exist: {status.detail}"
    answered = len(harness.fake.requests) - asked
    if case.fault in (Fault.THROTTLED, Fault.TIMEOUT, Fault.UNAVAILABLE, Fault.DROPPED, Fault.CUT):
        assert answered > 1, "a transient fault is retried"
    elif case.fault in (Fault.PERMISSION, Fault.BAD_RESPONSE):
        assert not waits, "retrying cannot help: the source must not back off and retry"
        sent = [(r.method, r.path, r.status) for r in harness.fake.requests[asked:]]
        assert answered == 1, f"retrying cannot help: one call, not {sent}"

    harness.fake.clear_faults()
    harness.refresh()
    assert status.up, status.detail
    assert harness.quote() == good


@pytest.mark.timeout(60)
@pytest.mark.parametrize("harness", list(HARNESSES), indirect=True)
def test_a_refused_connection_is_unavailable_and_retried(harness: Harness) -> None:
    """Nothing listening (the endpoint down, a wrong port): UNAVAILABLE, not TIMEOUT, since no deadline
    passed; retried like any transient failure, and the last good quote kept."""
    good = harness.quote()
    harness.fake.stop()
    failed = harness.status.errors[Reason.UNAVAILABLE]
    harness.refresh()
    assert (harness.status.up, harness.status.reason) == (False, Reason.UNAVAILABLE), harness.status.detail
    assert harness.status.errors[Reason.UNAVAILABLE] - failed > 1, "a refused connection is retried"
    assert harness.quote() == good


@pytest.mark.timeout(60)
@pytest.mark.parametrize("harness", ["gcp_catalog", "gcp_bigquery", "azure_retail", "azure_cost"], indirect=True)
def test_a_bare_408_is_a_timeout_and_retried(harness: Harness) -> None:
    """HTTP 408 Request Timeout (RFC 9110, 15.5.9), as a proxy or load balancer sends it: the one status
    table (fetch.reason_for_status) makes it TIMEOUT on every HTTP cloud, retried like a client timeout."""
    harness.fake.enqueue(Answer(408, b"request timed out", content_type="text/plain"), None)
    asked = len(harness.fake.requests)
    harness.refresh()
    assert (harness.status.up, harness.status.reason) == (False, Reason.TIMEOUT), harness.status.detail
    assert len(harness.fake.requests) - asked > 1, "a timeout is retried"


_KEY = re.compile(r"\b((?:aws|gcp|azure)\.[a-z_]+|pricing)\.([a-z_]+)")


def unknown_keys(detail: str) -> list[str]:
    """Every `section.key` a detail names (a hint) that is not a setting of that section."""
    known = {key: {f.name for f in dataclasses.fields(cls)} for key, cls in sections().items()}
    known["pricing"] = {f.name for f in dataclasses.fields(PricingConfig)}
    return [f"{s}.{k}" for s, k in _KEY.findall(detail) if k not in known.get(s, set())]


def test_unknown_keys_finds_a_key_no_section_has() -> None:
    assert unknown_keys("check aws.spot.region, aws.pricing.region and pricing.currency") == ["aws.spot.region"]


@pytest.mark.timeout(60)
@pytest.mark.parametrize("harness", list(HARNESSES), indirect=True)
def test_a_failing_sources_log_lines_carry_its_integration_and_source(
    harness: Harness, caplog: pytest.LogCaptureFixture
) -> None:
    """Its retry lines (and any warning) say which source logged them as fields, not in the message."""
    harness.fake.inject(Fault.UNAVAILABLE, None)
    with caplog.at_level(logging.DEBUG, "exporter.pricing.sources"):
        harness.refresh()
    lines = [r for r in caplog.records if r.name.startswith("exporter.pricing.sources")]
    assert any("retrying in" in r.getMessage() for r in lines)
    name = harness.status.name
    for record in lines:
        assert (getattr(record, "integration", None), getattr(record, "source", None)) == (name, name)
        assert not record.getMessage().startswith(f"{name}:"), "the name is a field, not part of the message"
