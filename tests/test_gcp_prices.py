"""The GCP list-price source against a local Cloud Billing Catalog fake: exact prices from unit SKUs, the
machine-type grammar, paging, currency, auth, failures and the cache."""

from __future__ import annotations

import dataclasses
import email.utils
import json
import math
from collections.abc import Iterator
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from exporter.cache import PriceCache
from exporter.config.sources.gcp import GcpCatalogSettings
from exporter.health import IntegrationStatus, Reason
from exporter.inventory.node import CapacityType, Node, ProviderRef
from exporter.pricing.quote import Basis, Quote
from exporter.pricing.sources.gcp.catalog import GcpCatalogPrices, sku_resource
from exporter.pricing.sources.gcp.json_scan import scan_page
from exporter.pricing.sources.gcp.machine_shapes import MachineShape, gpu_id, machine_shape
from fakes.gcp_api import BELGIUM, FINLAND, FakeCatalogAPI, compute_catalog, sku, write_adc
from tests.conftest import context, node

KEY = "AIzaSy-test-key"
FAST = GcpCatalogSettings(
    enabled=True, api_key=KEY, backoff_seconds=0.01, backoff_max_seconds=0.05, timeout_seconds=2.0
)
D = Decimal


@pytest.fixture
def api() -> Iterator[FakeCatalogAPI]:
    with FakeCatalogAPI(api_key=KEY) as fake:
        yield fake


def source(
    api: FakeCatalogAPI, *, currency: str = "USD", cache: PriceCache | None = None, **settings: Any
) -> GcpCatalogPrices:
    config = dataclasses.replace(FAST, endpoint_url=api.url, **settings)
    return GcpCatalogPrices(config, context(cache=cache, currency=currency))


def gke(
    machine: str,
    *,
    region: str = "us-central1",
    spot: bool = False,
    gpus: int = 0,
    accelerator: str = "",
    name: str = "",
) -> Node:
    """A GKE node as the parser builds it from the API object."""
    name = name or f"gke-prod-{machine}-{'spot' if spot else 'std'}-{accelerator or 'cpu'}-{region}"
    zone = f"{region}-b"
    labels = {"node.kubernetes.io/instance-type": machine, "topology.kubernetes.io/region": region}
    if spot:
        labels["cloud.google.com/gke-spot"] = "true"
    if accelerator:
        labels["cloud.google.com/gke-accelerator"] = accelerator
    return node(
        name,
        provider_id=f"gce://prod-project/{zone}/{name}",
        ref=ProviderRef("gcp", account="prod-project", zone=zone, instance_id=name),
        instance_type=machine,
        region=region,
        zone=zone,
        capacity_type=CapacityType.SPOT if spot else CapacityType.ON_DEMAND,
        gpu_count=gpus,
        gpu_model=accelerator,
        labels=labels,
    )


def priced(src: GcpCatalogPrices, *nodes: Node) -> list[Quote | None]:
    src.wanted(nodes)
    src.refresh()
    return [src.quote(n) for n in nodes]


def hourly(src: GcpCatalogPrices, n: Node) -> Decimal:
    (quote,) = priced(src, n)
    assert quote is not None, n.instance_type
    return quote.hourly


# -- prices -----------------------------------------------------------------------------------------------


def test_real_a2_skus_from_the_shared_sample(shared_real: Path) -> None:
    """The sample's raw A2 core/RAM records plus the A100 list price give the published a2-highgpu-1g
    price ($3.673385/h in us-central1); its E2 records (re-serialized by opencost, in IDR) price nothing in
    USD and price e2-standard-2 when IDR is asked for."""
    sample = json.loads(
        (shared_real / "gcp_pricing" / "cloudbilling_skus_compute_A2_E2_subset.json").read_text()
    )
    a100 = sku("Nvidia Tesla A100 GPU running in Americas", "2.933908", group="GPU")
    a2 = gke("a2-highgpu-1g", gpus=1, accelerator="nvidia-tesla-a100")
    e2 = gke("e2-standard-2")
    with FakeCatalogAPI(skus=[*sample["skus"], a100], api_key=KEY) as fake:
        usd = source(fake)
        a2_quote, e2_quote = priced(usd, a2, e2)
        assert a2_quote is not None
        assert a2_quote.hourly == D("12") * D("0.031611") + D("85") * D("0.004237") + D("2.933908")
        assert a2_quote.hourly == D("3.673385")
        assert (a2_quote.cpu_core_hourly, a2_quote.memory_gib_hourly, a2_quote.gpu_hourly) == (
            D("0.031611"),
            D("0.004237"),
            D("2.933908"),
        )
        assert e2_quote is None  # the E2 rows are in IDR: never mislabelled as USD
        assert usd.status.up

        fake.rates["IDR"] = D("14999.999925")
        idr = source(fake, currency="IDR")
        (e2_idr,) = priced(idr, e2)
        assert e2_idr is not None and e2_idr.currency == "IDR"
        assert e2_idr.hourly == 2 * D("327.173848364") + 8 * D("43.852949780")


def test_e2_standard_is_vcpus_times_core_plus_gib_times_ram(api: FakeCatalogAPI) -> None:
    quote = priced(source(api), gke("e2-standard-2"))[0]
    assert quote is not None
    assert quote.hourly == 2 * D("0.021811") + 8 * D("0.002923") == D("0.067006")
    assert (quote.cpu_core_hourly, quote.memory_gib_hourly, quote.gpu_hourly) == (
        D("0.021811"),
        D("0.002923"),
        None,
    )
    assert (quote.basis, quote.currency) == (Basis.ON_DEMAND, "USD")


def test_shared_core_e2_bills_fractions_of_a_vcpu(api: FakeCatalogAPI) -> None:
    src = source(api)
    micro, small, medium = priced(src, gke("e2-micro"), gke("e2-small"), gke("e2-medium"))
    core, ram = D("0.021811"), D("0.002923")
    assert micro is not None and micro.hourly == D("0.25") * core + 1 * ram == D("0.00837575")
    assert small is not None and small.hourly == D("0.5") * core + 2 * ram == D("0.0167515")
    assert medium is not None and medium.hourly == 1 * core + 4 * ram == D("0.033503")


def test_custom_types_use_the_custom_skus(api: FakeCatalogAPI) -> None:
    src = source(api)
    n2, n1 = priced(src, gke("n2-custom-4-16384"), gke("custom-2-7680"))
    assert n2 is not None and n2.hourly == 4 * D("0.033191") + 16 * D("0.004449") == D("0.203948")
    assert (n2.cpu_core_hourly, n2.memory_gib_hourly) == (D("0.033191"), D("0.004449"))
    # custom-N-M is N1's custom type: "Custom Instance Core/Ram" SKUs, 7680 MiB = 7.5 GiB
    assert n1 is not None and n1.hourly == 2 * D("0.033174") + D("7.5") * D("0.004446") == D("0.099693")


def test_extended_memory_bills_the_part_above_the_family_limit_at_the_extended_rate(
    api: FakeCatalogAPI,
) -> None:
    """N2 custom allows 8 GiB per vCPU; n2-custom-2-20480-ext has 20 GiB: 16 at the custom RAM rate and 4 at
    the extended rate."""
    quote = priced(source(api), gke("n2-custom-2-20480-ext"))[0]
    assert quote is not None
    assert quote.hourly == 2 * D("0.033191") + 16 * D("0.004449") + 4 * D("0.00955") == D("0.175766")
    assert quote.memory_gib_hourly == D("0.004449")


def test_f1_and_g1_have_flat_skus(api: FakeCatalogAPI) -> None:
    src = source(api)
    f1, g1, f1_spot = priced(src, gke("f1-micro"), gke("g1-small"), gke("f1-micro", spot=True))
    assert f1 is not None and (f1.hourly, f1.cpu_core_hourly, f1.memory_gib_hourly) == (
        D("0.0076"),
        None,
        None,
    )
    assert g1 is not None and g1.hourly == D("0.0257")
    assert f1_spot is not None and f1_spot.hourly == D("0.0035")


def test_attached_gpus_are_counted_from_the_node(api: FakeCatalogAPI) -> None:
    quote = priced(source(api), gke("n1-standard-4", gpus=2, accelerator="nvidia-tesla-t4"))[0]
    assert quote is not None
    # n1-standard: 3.75 GiB per vCPU
    assert quote.hourly == 4 * D("0.031611") + 15 * D("0.004237") + 2 * D("0.35") == D("0.889999")
    assert quote.gpu_hourly == D("0.35")


def test_a2_types_include_their_gpus_even_before_the_device_plugin_reports_them(api: FakeCatalogAPI) -> None:
    src = source(api)
    ready = gke("a2-highgpu-2g", gpus=2, accelerator="nvidia-tesla-a100", name="a")
    booting = gke("a2-highgpu-2g", gpus=0, accelerator="nvidia-tesla-a100", name="b")
    assert (
        src.key(ready)
        == src.key(booting)
        == ("us-central1", "a2-highgpu-2g", "on_demand", "nvidia-tesla-a100", "2")
    )
    quote = priced(src, ready)[0]
    assert quote is not None
    assert quote.hourly == 24 * D("0.031611") + 170 * D("0.004237") + 2 * D("2.933908") == D("7.34677")
    assert src.quote(booting) == quote


def test_gpus_without_a_known_model_leave_the_node_unpriced(api: FakeCatalogAPI) -> None:
    src = source(api)
    no_label, unknown = priced(
        src,
        gke("n1-standard-4", gpus=1, name="no-label"),
        gke("n1-standard-4", gpus=1, accelerator="nvidia-tesla-k80", name="k80"),
    )
    assert no_label is None and unknown is None  # never the price without its GPU


def test_spot_nodes_take_the_preemptible_skus(api: FakeCatalogAPI) -> None:
    src = source(api)
    spot_node = gke("n2-standard-8", spot=True)
    quote = priced(src, spot_node)[0]
    assert quote is not None
    assert quote.hourly == 8 * D("0.007594") + 32 * D("0.001017") == D("0.093296")
    key = src.key(spot_node)
    assert key is not None and src.basis_of(key) is Basis.SPOT
    assert quote.basis is Basis.SPOT
    t4 = priced(src, gke("n1-standard-4", spot=True, gpus=1, accelerator="nvidia-tesla-t4"))[0]
    assert t4 is not None and t4.gpu_hourly == D("0.11")  # "… GPU attached to Spot Preemptible VMs …"


def test_a_new_family_prices_with_no_code_change() -> None:
    z9 = [
        sku("Z9 Instance Core running in Americas", "0.05", group="CPU"),
        sku("Z9 Instance Ram running in Americas", "0.0065", group="RAM"),
    ]
    with FakeCatalogAPI(skus=[*compute_catalog(), *z9], api_key=KEY) as fake:
        standard, highmem = priced(source(fake), gke("z9-standard-4"), gke("z9-highmem-4"))
    assert standard is not None and standard.hourly == 4 * D("0.05") + 16 * D("0.0065") == D("0.304")
    assert highmem is not None and highmem.hourly == 4 * D("0.05") + 32 * D("0.0065") == D("0.408")


def test_unknown_types_are_unpriced_not_zero_and_not_asked_again(api: FakeCatalogAPI) -> None:
    src = source(api)
    unknown = [gke("y7-standard-4"), gke("n2-weirdclass-4"), gke("n2-standard-4", region="mars-north1")]
    assert priced(src, *unknown) == [None, None, None]
    assert not src.pending() and src.status.up
    calls = len(api.sku_calls)
    assert priced(src, *unknown) == [None, None, None]
    assert len(api.sku_calls) == calls  # remembered as unpriced until the TTL


def test_a_region_the_catalog_does_not_know_is_unpriced_not_a_failure(api: FakeCatalogAPI) -> None:
    src = source(api)
    assert priced(src, gke("n2-standard-4", region="mars-north1")) == [None]
    assert src.status.up and len(api.sku_calls) == 1


def test_prices_only_in_another_currency_are_no_data(shared_real: Path) -> None:
    sample = json.loads(
        (shared_real / "gcp_pricing" / "cloudbilling_skus_compute_A2_E2_subset.json").read_text()
    )
    with FakeCatalogAPI(skus=sample["skus"][2:], api_key=KEY) as fake:  # the two E2 records, in IDR
        src = source(fake)
        assert priced(src, gke("e2-standard-2")) == [None]
    assert (src.status.up, src.status.reason) == (False, Reason.NO_DATA)
    assert "in USD" in src.status.detail and "2 SKUs came in another currency" in src.status.detail


def test_commitments_and_sole_tenancy_never_pass_for_on_demand_rates() -> None:
    decoys = [
        sku("N2 Instance Core running in Americas", "0.019915", group="CPU", usage="Commit1Yr"),
        sku("N2 Instance Ram running in Americas", "0.002669", group="RAM", usage="Commit3Yr"),
        sku("N2 Sole Tenancy Instance Core running in Americas", "0.9", group="CPU"),
    ]
    with FakeCatalogAPI(skus=[*decoys, *compute_catalog()], api_key=KEY) as fake:
        assert hourly(source(fake), gke("n2-standard-4")) == 4 * D("0.031611") + 16 * D("0.004237")


def test_the_last_tier_is_the_rate() -> None:
    tiered = [
        sku("C3 Instance Core running in Americas", "0.03398", group="CPU", tiers=[(0, "0")], last_start=1),
        sku("C3 Instance Ram running in Americas", "0.00455", group="RAM", tiers=[(0, "0.1")], last_start=10),
    ]
    with FakeCatalogAPI(skus=tiered, api_key=KEY) as fake:
        assert (
            hourly(source(fake), gke("c3-standard-4")) == 4 * D("0.03398") + 16 * D("0.00455") == D("0.20872")
        )


def test_regions_come_from_service_regions(api: FakeCatalogAPI) -> None:
    src = source(api)
    east, belgium, finland = priced(
        src,
        gke("n2-standard-2", region="us-east1"),  # listed by the multi-regional "Americas" SKU
        gke("n2-standard-2", region=BELGIUM[0]),
        gke("n2-standard-2", region=FINLAND[0]),
    )
    assert east is not None and east.hourly == 2 * D("0.031611") + 8 * D("0.004237")
    assert belgium is not None and belgium.hourly == 2 * D("0.034802") + 8 * D("0.004664")
    assert finland is not None and finland.hourly == 2 * D("0.034773") + 8 * D("0.004661")


# -- the listing --------------------------------------------------------------------------------------------


def test_pages_are_followed_and_the_request_is_what_the_api_expects() -> None:
    catalog = compute_catalog()
    with FakeCatalogAPI(skus=catalog, api_key=KEY, page_size_cap=7) as fake:
        src = source(fake)
        # the last SKUs listed are Finland's: only reached through every page
        assert hourly(src, gke("e2-standard-4", region=FINLAND[0])) == 4 * D("0.023974") + 16 * D("0.003213")
        calls = fake.sku_calls
    assert len(calls) == math.ceil(len(catalog) / 7) > 3
    assert [c.path for c in calls] == ["/v1/services/6F81-5844-456A/skus"] * len(calls)
    assert all(c.query["currencyCode"] == "USD" and c.query["pageSize"] == "5000" for c in calls)
    assert "pageToken" not in calls[0].query and all(c.query["pageToken"] for c in calls[1:])
    assert all(c.headers["x-goog-api-key"] == KEY and "key" not in c.query for c in calls)  # never in a URL
    assert src.status.requests == len(calls) and not src.status.errors


def test_the_catalog_is_listed_once_for_every_key_and_reused_within_the_ttl(api: FakeCatalogAPI) -> None:
    src = source(api)
    priced(src, gke("n2-standard-4"), gke("e2-medium"), gke("c3-highcpu-4", spot=True))
    assert len(api.sku_calls) == 1
    # a new type in a listed region: priced from the table, no call
    assert hourly(src, gke("t2d-standard-1")) == D("0.027502") + 4 * D("0.003686")
    assert len(api.sku_calls) == 1
    # a new region: one more listing
    assert hourly(src, gke("e2-standard-2", region=BELGIUM[0])) == 2 * D("0.023999") + 8 * D("0.003216")
    assert len(api.sku_calls) == 2


def test_currency_is_asked_for_and_used(api: FakeCatalogAPI) -> None:
    src = source(api, currency="EUR")
    quote = priced(src, gke("e2-standard-2"))[0]
    assert quote is not None and quote.currency == "EUR"
    assert quote.hourly == 2 * D("0.021811") * D("0.9") + 8 * D("0.002923") * D("0.9") == D("0.0603054")
    assert {c.query["currencyCode"] for c in api.sku_calls} == {"EUR"}


def test_an_unsupported_currency_is_a_config_problem(api: FakeCatalogAPI) -> None:
    src = source(api, currency="XYZ")
    assert priced(src, gke("e2-standard-2")) == [None]
    assert (src.status.up, src.status.reason) == (False, Reason.CONFIG)
    assert "pricing.currency" in src.status.detail and len(api.sku_calls) == 1


def test_the_sqlite_cache_serves_a_second_source_with_no_calls(api: FakeCatalogAPI, tmp_path: Path) -> None:
    cache = PriceCache(str(tmp_path / "prices.db"), IntegrationStatus("cache"))
    nodes = [gke("n2-standard-8", spot=True), gke("n1-standard-4", gpus=2, accelerator="nvidia-tesla-t4")]
    first = priced(source(api, cache=cache), *nodes)
    assert len(api.sku_calls) == 1
    second = source(api, cache=cache)
    assert [second.quote(n) for n in nodes] == first  # straight from the cache, before any refresh
    assert priced(second, *nodes) == first
    assert len(api.sku_calls) == 1 and second.status.up and second.status.requests == 0


# -- failures -----------------------------------------------------------------------------------------------


def test_messages_and_accounting(api: FakeCatalogAPI) -> None:
    """What tests/test_source_contract.py leaves to each cloud: a Retry-After in its HTTP-date form, every
    call counted with its reason, and the detail of an empty catalog."""
    src = source(api, ttl_seconds=0.2)
    in_30s = datetime.fromtimestamp(src.clock.time() + 30, UTC)
    api.fail(429, retry_after=email.utils.format_datetime(in_30s, usegmt=True))
    good = hourly(src, gke("e2-standard-2"))
    assert good == D("0.067006")
    assert len(src.clock.sleeps) == 1 and 29 <= src.clock.sleeps[0] <= 30  # the backoff alone: ≤ 0.01 s
    assert (src.status.requests, src.status.errors) == (2, {Reason.THROTTLED: 1})
    src.clock.advance(0.25)
    api.skus = []
    priced(src, gke("e2-standard-2"))
    assert src.status.reason is Reason.NO_DATA and "listed no Compute Engine SKUs" in src.status.detail


def test_a_refused_connection_is_unavailable() -> None:
    fake = FakeCatalogAPI(api_key=KEY)
    fake.start()
    fake.stop()  # the port is now closed
    src = source(fake, retries=1)
    assert priced(src, gke("e2-standard-2")) == [None]
    assert (src.status.up, src.status.reason) == (False, Reason.UNAVAILABLE)
    assert src.status.errors[Reason.UNAVAILABLE] == 2


def test_a_disabled_api_is_a_permission_problem_with_the_fix(api: FakeCatalogAPI) -> None:
    api.disabled = True
    src = source(api)
    assert priced(src, gke("e2-standard-2")) == [None]
    assert (src.status.up, src.status.reason) == (False, Reason.PERMISSION)
    assert "enable the Cloud Billing API" in src.status.detail and "has not been used" in src.status.detail
    assert len(api.sku_calls) == 1  # not retried


def test_a_wrong_api_key_is_an_auth_problem(api: FakeCatalogAPI) -> None:
    src = source(api, api_key="AIzaSy-revoked")
    assert priced(src, gke("e2-standard-2")) == [None]
    assert (src.status.up, src.status.reason) == (False, Reason.AUTH)
    assert "API key not valid" in src.status.detail and "gcp.catalog.api_key" in src.status.detail


def test_without_an_api_key_application_default_credentials_are_used(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """ADC from GOOGLE_APPLICATION_CREDENTIALS, with its token endpoint on the fake."""
    with FakeCatalogAPI(token="ya29.test-token") as fake:
        adc = write_adc(tmp_path / "adc.json", f"{fake.url}/token", universe_domain="fake.test")
        monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(adc))
        src = source(fake, api_key="")
        assert hourly(src, gke("e2-standard-2")) == D("0.067006")
        assert [c.headers["authorization"] for c in fake.sku_calls] == ["Bearer ya29.test-token"]
        assert [r["refresh_token"] for r in fake.token_requests] == ["refresh-1"]


def test_no_credentials_at_all_says_how_to_give_some(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(tmp_path / "missing.json"))
    with FakeCatalogAPI(token="ya29.test-token") as fake:
        src = source(fake, api_key="")
        assert priced(src, gke("e2-standard-2")) == [None]
        assert not fake.calls
    assert (src.status.up, src.status.reason) == (False, Reason.AUTH)
    assert "api_key" in src.status.detail and "Workload Identity" in src.status.detail


# -- the pieces -------------------------------------------------------------------------------------------


def test_keys() -> None:
    src = GcpCatalogPrices(FAST, context())
    assert src.key(gke("n2-standard-4")) == ("us-central1", "n2-standard-4", "on_demand", "", "0")
    assert src.key(gke("g2-standard-8", spot=True, gpus=1, accelerator="nvidia-l4")) == (
        "us-central1",
        "g2-standard-8",
        "spot",
        "nvidia-l4",
        "1",
    )
    assert src.key(node()) is None  # an EKS node
    assert src.key(gke("n2-standard-4", region="")) is None
    assert src.batches([("a",), ("b",)]) == [[("a",), ("b",)]]


@pytest.mark.parametrize(
    ("machine", "shape"),
    [
        ("n2-standard-4", MachineShape("n2", D(4), D(16))),
        ("N2-HIGHMEM-8", MachineShape("n2", D(8), D(64))),
        ("e2-highcpu-16", MachineShape("e2", D(16), D(16))),
        ("n1-standard-1", MachineShape("n1", D(1), D("3.75"))),
        ("n1-highmem-2", MachineShape("n1", D(2), D(13))),
        ("n1-highcpu-16", MachineShape("n1", D(16), D("14.4"))),
        ("c3-highcpu-4", MachineShape("c3", D(4), D(8))),
        ("g2-standard-24", MachineShape("g2", D(24), D(96))),
        ("a2-highgpu-1g", MachineShape("a2", D(12), D(85), gpus=1)),
        ("a2-megagpu-16g", MachineShape("a2", D(96), D(1360), gpus=16)),
        ("a2-ultragpu-2g", MachineShape("a2", D(24), D(340), gpus=2)),
        ("e2-micro", MachineShape("e2", D("0.25"), D(1))),
        ("custom-2-7680", MachineShape("n1", D(2), D("7.5"), custom=True)),
        ("custom-2-15360-ext", MachineShape("n1", D(2), D(13), custom=True, extended_gib=D("2"))),
        ("n2-custom-2-20480-ext", MachineShape("n2", D(2), D(16), custom=True, extended_gib=D(4))),
        ("n2-custom-2-12288-ext", MachineShape("n2", D(2), D(12), custom=True)),  # -ext within the limit
        ("e2-custom-medium-6144", MachineShape("e2", D(1), D(6), custom=True)),
        ("n2d-custom-4-4096", MachineShape("n2d", D(4), D(4), custom=True)),
        ("n2-ultramem-4", None),
        ("a3-highgpu-8g", None),
        ("m1", None),
        ("", None),
    ],
)
def test_machine_type_grammar(machine: str, shape: MachineShape | None) -> None:
    assert machine_shape(machine) == shape


@pytest.mark.parametrize(
    ("description", "group", "unit", "resource"),
    [
        ("N1 Predefined Instance Core running in Americas", "N1Standard", "h", ("n1", "core")),
        ("Spot Preemptible N2D AMD Instance Ram running in Japan", "RAM", "GiBy.h", ("n2d", "ram")),
        ("T2A Arm Instance Core running in Americas", "CPU", "h", ("t2a", "core")),
        ("M3 Memory-optimized Instance Core running in Americas", "CPU", "h", ("m3", "core")),
        ("Spot Preemptible E2 Custom Instance Core running in Tokyo", "CPU", "h", ("e2", "custom core")),
        ("Custom Extended Instance Ram running in Americas", "RAM", "GiBy.h", ("n1", "extended ram")),
        ("N2 Custom Extended Instance Ram running in Americas", "RAM", "GiBy.h", ("n2", "extended ram")),
        ("Compute optimized Core running in Americas", "CPU", "h", ("c2", "core")),
        ("Spot Preemptible Compute optimized Ram running in Japan", "RAM", "GiBy.h", ("c2", "ram")),
        ("Micro Instance with burstable CPU running in EMEA", "F1Micro", "h", ("", "flat:f1-micro")),
        (
            "Spot Preemptible Small Instance with 1 VCPU running in Paris",
            "G1Small",
            "h",
            ("", "flat:g1-small"),
        ),
        ("Nvidia Tesla A100 80GB GPU running in Americas", "GPU", "h", ("", "gpu:80gb-a100-nvidia")),
        (
            "Nvidia L4 GPU attached to Spot Preemptible VMs running in Tokyo",
            "GPU",
            "h",
            ("", "gpu:l4-nvidia"),
        ),
        ("N2 Instance Ram running in Americas", "RAM", "GiBy.mo", None),  # not hourly
        ("N2 Sole Tenancy Instance Core running in Americas", "CPU", "h", None),
        ("Memory-optimized Instance Core running in Americas", "CPU", "h", None),  # M1: family unknown
        ("Commitment v1: Nvidia Tesla T4 GPU in Americas for 1 Year", "GPU", "h", None),
        ("Licensing Fee for NVIDIA L4", "GPU", "h", None),
        ("Storage PD Capacity", "PDStandard", "GiBy.mo", None),
    ],
)
def test_sku_descriptions(description: str, group: str, unit: str, resource: tuple[str, str] | None) -> None:
    assert sku_resource(description, group, unit) == resource


def test_gke_accelerator_labels_match_sku_models() -> None:
    assert gpu_id("nvidia-tesla-t4") == gpu_id("Nvidia Tesla T4")
    assert gpu_id("nvidia-a100-80gb") == gpu_id("Nvidia Tesla A100 80GB") != gpu_id("nvidia-tesla-a100")
    assert gpu_id("nvidia-h100-mega-80gb") == gpu_id("Nvidia H100 80GB Mega")


def test_pages_are_scanned_one_sku_at_a_time() -> None:
    seen: list[object] = []
    assert (
        scan_page(' {\n "skus" : [ {"a": 1} ,\n{"b": [2]} ], "nextPageToken": "t2"\n} \n', seen.append)
        == "t2"
    )
    assert seen == [{"a": 1}, {"b": [2]}]
    assert scan_page('{"nextPageToken": "", "skus": []}', seen.append) == ""
    assert scan_page("{}", seen.append) == ""
    for broken in ["", "[]", '{"skus": [{"a": 1}', '{"skus": {}}', '{"skus": []} x', '{"nextPageToken": 5}']:
        with pytest.raises(ValueError):
            scan_page(broken, seen.append)
