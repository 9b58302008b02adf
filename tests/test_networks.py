"""Corporate and sovereign networks (docs/operations.md): `tls.ca_file` on every client, `azure.cloud`,
and the AWS partitions, each against the wire-level fakes with the clouds' real hostnames.

The hostnames reach loopback the way a corporate network reaches the clouds: through a proxy. HTTPS_PROXY
points the SDKs, unpatched, at `fakes.network.ConnectProxy`, which tunnels `CONNECT <real host>:443` to the
fake serving that host, with a certificate signed by a test CA (`TestCA`): the "TLS-inspecting proxy's"
CA that `tls.ca_file` names. Nothing edits /etc/hosts and nothing patches an SDK.
"""

from __future__ import annotations

import dataclasses
import ssl
import tempfile
import threading
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import TypeVar

import certifi
import pytest

from exporter.app import App
from exporter.config import ConfigError, load_config
from exporter.config.sources.aws import AwsPricingSettings, AwsSpotSettings
from exporter.config.sources.azure import AzureCloudSettings, AzureCostSettings, AzureRetailSettings
from exporter.config.sources.gcp import GcpBigQuerySettings, GcpCatalogSettings
from exporter.health import Health, Reason
from exporter.inventory.kube import KubeNodeWatcher
from exporter.inventory.node import CapacityType, Node, ProviderRef
from exporter.inventory.parse import DEFAULT_SPOT_LABELS
from exporter.pricing.sources.aws.price_list import AwsOnDemandPrices
from exporter.pricing.sources.aws.spot import AwsSpotPrices
from exporter.pricing.sources.azure.cost_management import AzureCostBilling
from exporter.pricing.sources.azure.retail import AzureRetailPrices
from exporter.pricing.sources.gcp.bigquery import GcpBigQueryBilling
from exporter.pricing.sources.gcp.catalog import GcpCatalogPrices
from exporter.tls import sdk_bundle
from fakes.aws_api import Ec2Api, PricingApi, ec2_product
from fakes.azure_api import FakeRetailPricesAPI, vm_items
from fakes.bigquery_api import BILLING_COLUMNS, FakeBigQuery
from fakes.cost_management_api import FakeCostManagement, UsageRecord
from fakes.entra_api import FakeEntraID
from fakes.gcp_api import FakeCatalogAPI, write_adc
from fakes.kube_api import FakeKubeAPI, RecordingSink, make_node, self_signed_cert, wait_for, write_kubeconfig
from fakes.network import ConnectProxy, TestCA
from fakes.server import FakeServer, Fault
from tests import test_source_contract as contract
from tests.conftest import FakeClock, context, node

PROXY_VARIABLES = ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy", "NO_PROXY", "no_proxy")


@pytest.fixture(scope="module")
def ca(tmp_path_factory: pytest.TempPathFactory) -> TestCA:
    return TestCA(tmp_path_factory.mktemp("corporate-ca"))


@pytest.fixture
def proxy(monkeypatch: pytest.MonkeyPatch) -> Iterator[ConnectProxy]:
    """The corporate egress: every SDK's HTTPS goes through it (routes are added by each test)."""
    for name in PROXY_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    for name in ("AWS_CA_BUNDLE", "REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE", "SSL_CERT_FILE", "AZURE_AUTHORITY_HOST"):
        monkeypatch.delenv(name, raising=False)
    with ConnectProxy() as egress:
        monkeypatch.setenv("HTTPS_PROXY", egress.url)
        yield egress


F = TypeVar("F", bound=FakeServer)


@contextmanager
def serve(fake: F, ca: TestCA, proxy: ConnectProxy, *hosts: str) -> Iterator[F]:
    """`fake` over TLS with a certificate for `hosts` from the corporate CA, reachable by those names."""
    fake.tls = ca.issue(*hosts, label=hosts[0])
    with fake:
        proxy.routes.update(dict.fromkeys(hosts, fake.port))
        yield fake


# -- tls.ca_file: the configuration -------------------------------------------------------------------------


def test_a_ca_file_is_checked_at_start_and_named_never_at_the_first_handshake(tmp_path: Path, ca: TestCA) -> None:
    assert load_config(None, env={"NODECOST_TLS__CA_FILE": ca.ca_file}).tls.ca_file == ca.ca_file
    (tmp_path / "key.pem").write_text("-----BEGIN PRIVATE KEY-----\nMIIB\n-----END PRIVATE KEY-----\n")
    (tmp_path / "der.crt").write_bytes(b"\x30\x82\x01\x0a" + bytes(64))
    cases = {
        str(tmp_path / "absent.pem"): "does not exist",
        str(tmp_path / "key.pem"): "holds no PEM certificate",
        str(tmp_path / "der.crt"): "holds no PEM certificate",
        str(tmp_path): "is not a file",
    }
    for path, problem in cases.items():
        with pytest.raises(ConfigError, match=rf"^tls\.ca_file: .*{problem}") as caught:
            load_config(None, env={"NODECOST_TLS__CA_FILE": path})
        assert caught.value.key == "tls.ca_file"


def test_the_sdk_bundle_trusts_the_public_roots_and_the_corporate_ca(ca: TestCA) -> None:
    bundle = Path(sdk_bundle(ca.ca_file))
    assert sdk_bundle(ca.ca_file) == str(bundle)  # written once per process
    public = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    public.load_verify_locations(cafile=certifi.where())
    both = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    both.load_verify_locations(cafile=str(bundle))
    subjects = {dict(item[0] for item in cert["subject"]).get("commonName") for cert in both.get_ca_certs()}
    assert len(both.get_ca_certs()) == len(public.get_ca_certs()) + 1
    assert {"Corporate Inspection CA", "ISRG Root X1"} <= subjects  # the proxy's CA and a public root


def test_a_bundle_that_cannot_be_written_stops_the_start_naming_the_key(
    tmp_path: Path, ca: TestCA, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A read-only root filesystem and no TMPDIR: refused when the app builds its sources, not at their first
    call (the CLI turns the ConfigError into exit 2)."""
    corporate = tmp_path / "proxy-ca.pem"  # a path of its own: bundles are written once per file
    corporate.write_text(Path(ca.ca_file).read_text())
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "not-there"))  # stdlib's cached $TMPDIR
    with pytest.raises(ConfigError, match=r"^tls\.ca_file: cannot write the CA bundle .* set TMPDIR"):
        env = {"NODECOST_TLS__CA_FILE": str(corporate), "NODECOST_AZURE__RETAIL__ENABLED": "true", "NODECOST_DEMO": "true"}
        App(load_config(None, env=env))


# -- Kubernetes ----------------------------------------------------------------------------------------------


def watch(health: Health, **options: object) -> tuple[KubeNodeWatcher, threading.Event, threading.Thread]:
    watcher = KubeNodeWatcher(
        RecordingSink(),
        health.integration("kubernetes"),
        health,
        spot_labels=DEFAULT_SPOT_LABELS,
        backoff_initial=0.01,
        backoff_max=0.05,
        **options,  # type: ignore[arg-type]
    )
    stop = threading.Event()
    thread = threading.Thread(target=watcher.run, args=(stop,), daemon=True)
    thread.start()
    return watcher, stop, thread


def test_a_kubeconfig_cluster_behind_the_corporate_ca_is_trusted_with_ca_file(tmp_path: Path, ca: TestCA) -> None:
    with FakeKubeAPI(token="t", tls=ca.issue(label="apiserver")) as api:
        api.load([make_node("ip-10-0-1-10.ec2.internal")])
        kubeconfig = str(write_kubeconfig(tmp_path / "kubeconfig", api.url, "t"))  # no certificate-authority
        for ca_file in ("", ca.ca_file):
            health = Health()
            status = health.integration("kubernetes")
            watcher, stop, thread = watch(health, kubeconfig=kubeconfig, ca_file=ca_file)
            try:
                if ca_file:
                    wait_for(watcher.synced.is_set, "synced through the corporate CA")
                    assert status.up
                else:
                    wait_for(lambda s=status: s.reason is Reason.CONFIG, "certificate refused")
                    assert "CERTIFICATE_VERIFY_FAILED" in status.detail
                    assert not watcher.synced.is_set()
            finally:
                stop.set()
                thread.join(timeout=5)


def test_in_cluster_the_api_server_is_verified_with_the_service_account_ca_only(
    tmp_path: Path, ca: TestCA, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Decided: tls.ca_file never widens who may sign the in-cluster API server (docs/operations.md)."""
    unrelated, _ = self_signed_cert(tmp_path)
    sa = tmp_path / "serviceaccount"
    sa.mkdir()
    (sa / "ca.crt").write_text(Path(unrelated).read_text())
    (sa / "token").write_text("t\n")
    with FakeKubeAPI(token="t", tls=ca.issue(label="in-cluster")) as api:
        monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "127.0.0.1")
        monkeypatch.setenv("KUBERNETES_SERVICE_PORT", str(api.port))
        health = Health()
        status = health.integration("kubernetes")
        watcher, stop, thread = watch(health, service_account_dir=str(sa), ca_file=ca.ca_file)
        try:
            wait_for(lambda: status.reason is Reason.CONFIG, "the service account CA alone decides")
            assert not watcher.synced.is_set()
        finally:
            stop.set()
            thread.join(timeout=5)


# -- AWS: partitions -----------------------------------------------------------------------------------------

CHINA_PRICING = "api.pricing.cn-northwest-1.amazonaws.com.cn"
COMMERCIAL_PRICING = "api.pricing.us-east-1.amazonaws.com"


@pytest.fixture
def aws_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """The contract suite's static credentials, and no IRSA from the machine either."""
    contract.aws_env(monkeypatch, tmp_path)
    for name in ("AWS_ROLE_ARN", "AWS_WEB_IDENTITY_TOKEN_FILE"):
        monkeypatch.delenv(name, raising=False)


def ec2_node(region: str, instance_type: str = "m5.large") -> Node:
    zone = f"{region}a"
    return node(
        f"ip-10-0-3-{len(region)}.{region}.compute.internal",
        provider_id=f"aws:///{zone}/i-0c0ffee0c0ffee001",
        ref=ProviderRef("aws", zone=zone, instance_id="i-0c0ffee0c0ffee001"),
        instance_type=instance_type,
        region=region,
        zone=zone,
    )


def on_demand(ca_file: str, currency: str) -> AwsOnDemandPrices:
    settings = AwsPricingSettings(enabled=True, retries=0, timeout_seconds=5.0)  # no endpoint_url: the real hosts
    return AwsOnDemandPrices(settings, context(currency=currency, ca_file=ca_file))


@pytest.mark.usefixtures("aws_env")
def test_a_china_node_is_priced_at_the_china_endpoint_in_cny(ca: TestCA, proxy: ConnectProxy) -> None:
    with serve(PricingApi(), ca, proxy, CHINA_PRICING, COMMERCIAL_PRICING) as api:
        api.add(ec2_product("cn-north-1", "m5.large", "0.9580000000", currency="CNY"))
        china = ec2_node("cn-north-1")

        source = on_demand(ca.ca_file, "CNY")
        source.wanted([china])
        source.refresh()
        quote = source.quote(china)
        assert quote is not None and quote.hourly == Decimal("0.958") and quote.currency == "CNY"
        assert proxy.hosts() == [CHINA_PRICING]
        assert [call.region for call in api.calls] == ["cn-northwest-1"]  # signed for the China endpoint

        # Without the proxy's CA the SDK refuses the certificate, and health says what to set.
        source = on_demand("", "CNY")
        source.wanted([china])
        source.refresh()
        assert source.quote(china) is None
        assert source.status.reason is Reason.CONFIG and "tls.ca_file" in source.status.detail
        assert len(api.calls) == 1  # the handshake failed: nothing reached the fake

        # The caller's ARN in a China error is in the China partition (the fake answers as AWS does).
        api.inject(Fault.PERMISSION)
        source = on_demand(ca.ca_file, "CNY")
        source.wanted([china])
        source.refresh()
        assert source.status.reason is Reason.PERMISSION
        assert "arn:aws-cn:sts::" in source.status.detail and "pricing:GetProducts" in source.status.detail
        calls = len(api.calls)

        # A China node in a USD configuration is refused by name, not priced from CNY figures.
        source = on_demand(ca.ca_file, "USD")
        source.wanted([china])
        source.refresh()
        assert source.quote(china) is None
        assert source.status.reason is Reason.CONFIG
        assert "pricing.currency: CNY" in source.status.detail and len(api.calls) == calls


@pytest.mark.usefixtures("aws_env")
def test_a_china_spot_node_is_priced_by_ec2_in_its_own_region(ca: TestCA, proxy: ConnectProxy) -> None:
    with serve(Ec2Api(), ca, proxy, "ec2.cn-north-1.amazonaws.com.cn") as api:
        api.add("cn-north-1a", "m5.large", "0.305000", "2026-11-22T10:00:00.000Z")
        spot_node = dataclasses.replace(ec2_node("cn-north-1"), capacity_type=CapacityType.SPOT)
        source = AwsSpotPrices(
            AwsSpotSettings(enabled=True, retries=0, timeout_seconds=5.0), context(currency="CNY", ca_file=ca.ca_file)
        )
        source.wanted([spot_node])
        source.refresh()
        quote = source.quote(spot_node)
        assert quote is not None and quote.hourly == Decimal("0.305"), source.status.detail
        assert proxy.hosts() == ["ec2.cn-north-1.amazonaws.com.cn"]
        assert [call.region for call in api.calls] == ["cn-north-1"]


@pytest.mark.usefixtures("aws_env")
def test_commercial_and_govcloud_nodes_are_priced_at_the_commercial_endpoint(ca: TestCA, proxy: ConnectProxy) -> None:
    with serve(PricingApi(), ca, proxy, CHINA_PRICING, COMMERCIAL_PRICING) as api:
        api.add(ec2_product("us-gov-west-1", "m5.large", "0.1210000000"), ec2_product("us-east-2", "m5.large", "0.0960000000"))
        nodes = [ec2_node("us-gov-west-1"), ec2_node("us-east-2")]
        source = on_demand(ca.ca_file, "USD")
        source.wanted(nodes)
        source.refresh()
        assert [q.hourly if q else None for q in map(source.quote, nodes)] == [Decimal("0.121"), Decimal("0.096")]
        assert set(proxy.hosts()) == {COMMERCIAL_PRICING}  # aws-us-gov has no Price List endpoint of its own
        assert {call.region for call in api.calls} == {"us-east-1"}


# -- Azure: sovereign clouds -----------------------------------------------------------------------------------

SUB = "0b1f6471-1bf0-4dda-aec3-cb9272f09590"
SCOPE = f"/subscriptions/{SUB}/resourceGroups/MC_gov-rg_gov-aks_usgovvirginia"
VM = f"{SCOPE}/providers/Microsoft.Compute/virtualMachines/aks-nodepool1-19574989-0"
NOW = datetime(2024, 6, 6, 10, 0, tzinfo=UTC)
VM_NODE = node(
    "aks-nodepool1-19574989-0",
    provider_id=f"azure://{VM}",
    ref=ProviderRef(
        "azure", account=SUB, resource_group="MC_gov-rg_gov-aks_usgovvirginia", instance_id="aks-nodepool1-19574989-0"
    ),
    instance_type="Standard_D2s_v3",
    region="usgovvirginia",
    zone="",
    created=(NOW - timedelta(days=10)).timestamp(),
)
CLOUD_HOSTS = {
    "AzureUSGovernment": ("login.microsoftonline.us", "management.usgovcloudapi.net"),
    "AzureChinaCloud": ("login.partner.microsoftonline.cn", "management.chinacloudapi.cn"),
}


@pytest.fixture
def entra_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """EnvironmentCredential's variables: DefaultAzureCredential's first credential, with a client secret."""
    monkeypatch.setenv("AZURE_TENANT_ID", "72f988bf-86f1-41af-91ab-2d7cd011db47")
    monkeypatch.setenv("AZURE_CLIENT_ID", "6dd0c4e8-0f6b-4d67-9a4b-6d1f2b7c3a10")
    monkeypatch.setenv("AZURE_CLIENT_SECRET", "client-secret-value")
    for name in ("AZURE_FEDERATED_TOKEN_FILE", "AZURE_CLIENT_CERTIFICATE_PATH", "AZURE_USERNAME", "IDENTITY_ENDPOINT"):
        monkeypatch.delenv(name, raising=False)


def cost_source(cloud: str, ca_file: str, **settings: object) -> AzureCostBilling:
    options = {"enabled": True, "scope": SCOPE, "timeout_seconds": 5.0, "retries": 0, **settings}
    return AzureCostBilling(
        AzureCostSettings(**options),  # type: ignore[arg-type]
        context(FakeClock(NOW), ca_file=ca_file, clouds={"azure": AzureCloudSettings(cloud=cloud)}),
    )


@contextmanager
def sovereign(
    tmp_path: Path, ca: TestCA, proxy: ConnectProxy, cloud: str, arm_host: str = ""
) -> Iterator[tuple[FakeEntraID, FakeCostManagement]]:
    """Entra ID and Cost Management of `cloud`, under their own names (ARM's under `arm_host` when set),
    Cost Management holding five days of one VM at $0.10/h."""
    login, management = CLOUD_HOSTS[cloud]
    with ExitStack() as stack:
        entra = stack.enter_context(serve(FakeEntraID(), ca, proxy, login))
        host = arm_host or management
        arm = FakeCostManagement(tmp_path, token=entra.token, tls=ca.issue(host, label=host))
        arm = stack.enter_context(serve(arm, ca, proxy, host))
        arm.scopes.update((SCOPE, f"/subscriptions/{SUB}"))
        arm.records.extend(
            UsageRecord(date(2024, 6, day), VM, "OnDemand", 2.4, 2.4, quantity=24.0) for day in range(1, 6)
        )
        yield entra, arm


@pytest.mark.usefixtures("entra_env")
@pytest.mark.parametrize("cloud", list(CLOUD_HOSTS))
def test_a_sovereign_cloud_moves_the_token_authority_audience_and_endpoint(
    cloud: str, tmp_path: Path, ca: TestCA, proxy: ConnectProxy
) -> None:
    login, management = CLOUD_HOSTS[cloud]
    with sovereign(tmp_path, ca, proxy, cloud) as (entra, arm):
        source = cost_source(cloud, ca.ca_file)
        source.wanted([VM_NODE])
        assert source.refresh() is True, source.status.detail
    assert source.status.up, source.status.detail
    assert entra.scopes and set(entra.scopes) == {f"https://{management}/.default"}  # the token's audience
    assert proxy.hosts()[0] == login and set(proxy.hosts()) == {login, management}
    assert {call["headers"].get("authorization") for call in arm.calls} == {f"Bearer {entra.token}"}
    quote = source.quote(VM_NODE)
    assert quote is not None and abs(float(quote.hourly) - 0.10) < 1e-9


def test_workload_identity_asks_the_clouds_authority_whatever_azure_authority_host_says(
    tmp_path: Path, ca: TestCA, proxy: ConnectProxy, monkeypatch: pytest.MonkeyPatch
) -> None:
    """AKS's Workload Identity webhook sets AZURE_FEDERATED_TOKEN_FILE (and AZURE_AUTHORITY_HOST); here the
    latter names the public cloud, and azure.cloud must still win."""
    with sovereign(tmp_path, ca, proxy, "AzureUSGovernment") as (entra, arm):
        token_file = tmp_path / "azure-identity-token"
        token_file.write_text(entra.federated_token)
        monkeypatch.setenv("AZURE_FEDERATED_TOKEN_FILE", str(token_file))
        monkeypatch.setenv("AZURE_TENANT_ID", entra.tenant)
        monkeypatch.setenv("AZURE_CLIENT_ID", entra.client_id)
        monkeypatch.setenv("AZURE_AUTHORITY_HOST", "https://login.microsoftonline.com/")
        monkeypatch.delenv("AZURE_CLIENT_SECRET", raising=False)
        source = cost_source("AzureUSGovernment", ca.ca_file)
        source.wanted([VM_NODE])
        assert source.refresh() is True, source.status.detail
    assert entra.scopes == ["https://management.usgovcloudapi.net/.default"]
    assert set(proxy.hosts()) == {"login.microsoftonline.us", "management.usgovcloudapi.net"}
    assert {call["headers"].get("authorization") for call in arm.calls} == {f"Bearer {entra.token}"}


@pytest.mark.usefixtures("entra_env")
def test_an_explicit_endpoint_wins_but_the_audience_follows_the_cloud(
    tmp_path: Path, ca: TestCA, proxy: ConnectProxy
) -> None:
    with sovereign(tmp_path, ca, proxy, "AzureUSGovernment", "arm-proxy.corp.example") as (entra, _arm):
        source = cost_source("AzureUSGovernment", ca.ca_file, endpoint_url="https://arm-proxy.corp.example")
        source.wanted([VM_NODE])
        assert source.refresh() is True, source.status.detail
    assert set(entra.scopes) == {"https://management.usgovcloudapi.net/.default"}
    assert set(proxy.hosts()) == {"login.microsoftonline.us", "arm-proxy.corp.example"}


@pytest.mark.usefixtures("entra_env")
def test_without_the_proxys_ca_the_token_request_fails_with_a_certificate_reason(
    tmp_path: Path, ca: TestCA, proxy: ConnectProxy
) -> None:
    with sovereign(tmp_path, ca, proxy, "AzureUSGovernment") as (entra, arm):
        source = cost_source("AzureUSGovernment", "")
        source.wanted([VM_NODE])
        assert source.refresh() is False
    assert source.status.reason is Reason.CONFIG
    assert "tls.ca_file" in source.status.detail and "login.microsoftonline.us" in source.status.detail
    assert entra.scopes == [] and arm.calls == []


def test_china_refuses_retail_prices_at_start_and_government_keeps_them() -> None:
    with pytest.raises(ConfigError, match=r"^azure\.retail\.enabled: the Retail Prices API .* no Azure China"):
        load_config(None, env={"NODECOST_AZURE__CLOUD": "AzureChinaCloud", "NODECOST_AZURE__RETAIL__ENABLED": "true"})
    with pytest.raises(ConfigError, match=r"^azure\.cloud: must be one of AzurePublicCloud, AzureUSGovernment"):
        load_config(None, env={"NODECOST_AZURE__CLOUD": "AzureGermanCloud"})
    config = load_config(None, env={"NODECOST_AZURE__CLOUD": "AzureUSGovernment", "NODECOST_AZURE__RETAIL__ENABLED": "true"})
    assert config.clouds["azure"] == AzureCloudSettings(cloud="AzureUSGovernment")


def test_retail_prices_through_the_proxy_trust_the_ca_file(ca: TestCA, proxy: ConnectProxy) -> None:
    vm = node(
        "aks-nodepool1-12345678-vmss000000",
        provider_id=f"azure://{VM}",
        ref=ProviderRef("azure", account=SUB, resource_group="rg", instance_id="vm0"),
        instance_type="Standard_D2s_v3",
        region="usgovvirginia",
        zone="",
    )
    retail = FakeRetailPricesAPI(vm_items("usgovvirginia", "Standard_D2s_v3", "DSv3", linux="0.115"))
    with serve(retail, ca, proxy, "prices.azure.com"):
        for ca_file in (ca.ca_file, ""):
            source = AzureRetailPrices(AzureRetailSettings(enabled=True, retries=0, timeout_seconds=5.0), context(ca_file=ca_file))
            source.wanted([vm])
            source.refresh()
            quote = source.quote(vm)
            if ca_file:
                assert quote is not None and quote.hourly == Decimal("0.115")
            else:
                assert quote is None and source.status.reason is Reason.CONFIG
                assert "tls.ca_file" in source.status.detail
        assert set(proxy.hosts()) == {"prices.azure.com"}


# -- GCP ------------------------------------------------------------------------------------------------------


def test_the_billing_catalog_through_the_proxy_trusts_the_ca_file(ca: TestCA, proxy: ConnectProxy) -> None:
    gke = node(
        "gke-prod-e2-standard-2",
        provider_id="gce://prod-project/us-central1-b/gke-prod-e2-standard-2",
        ref=ProviderRef("gcp", account="prod-project", zone="us-central1-b", instance_id="gke-prod-e2-standard-2"),
        instance_type="e2-standard-2",
        region="us-central1",
        zone="us-central1-b",
    )
    with serve(FakeCatalogAPI(api_key="AIzaSy-test-key"), ca, proxy, "cloudbilling.googleapis.com"):
        for ca_file in (ca.ca_file, ""):
            settings = GcpCatalogSettings(enabled=True, api_key="AIzaSy-test-key", retries=0, timeout_seconds=5.0)
            source = GcpCatalogPrices(settings, context(ca_file=ca_file))
            source.wanted([gke])
            source.refresh()
            if ca_file:
                quote = source.quote(gke)
                assert quote is not None and quote.hourly == 2 * Decimal("0.021811") + 8 * Decimal("0.002923")
            else:
                assert source.status.reason is Reason.CONFIG and "tls.ca_file" in source.status.detail
        assert set(proxy.hosts()) == {"cloudbilling.googleapis.com"}


GKE_VM = node(
    "gke-a-1",
    provider_id="gce://billing-admin/us-central1-b/gke-a-1",
    ref=ProviderRef("gcp", account="billing-admin", zone="us-central1-b", instance_id="gke-a-1"),
)


def test_bigquery_and_its_token_refreshes_through_the_proxy_trust_the_ca_file(
    tmp_path: Path, ca: TestCA, proxy: ConnectProxy, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The query and the workforce-identity token refresh (at sts.googleapis.com here) both verify with the
    bundle: without it, the token request fails its handshake first."""
    table = "billing-admin.billing_export.gcp_billing_export_resource_v1_010101_ABCDEF_123456"
    adc = write_adc(tmp_path / "adc.json", "https://sts.googleapis.com/token")
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(adc))
    tokens = FakeCatalogAPI(token="ya29.test-token")
    with serve(tokens, ca, proxy, "sts.googleapis.com"), serve(FakeBigQuery(), ca, proxy, "bigquery.googleapis.com") as bq:
        bq.create_table(table, BILLING_COLUMNS, [])
        project, dataset, name = table.split(".")
        settings = GcpBigQuerySettings(
            enabled=True, project=project, dataset=dataset, table=name, retries=0, timeout_seconds=10.0
        )
        for ca_file in (ca.ca_file, ""):
            source = GcpBigQueryBilling(settings, context(FakeClock(NOW), ca_file=ca_file))
            source.wanted([GKE_VM])
            source.refresh()
            if ca_file:  # the query ran over TLS and answered: an empty bill, so no_data
                assert source.status.reason is Reason.NO_DATA, source.status.detail
                assert {"sts.googleapis.com", "bigquery.googleapis.com"} <= set(proxy.hosts())
                asked = len(bq.requests)
                assert asked and all(r.headers["authorization"] == "Bearer ya29.test-token" for r in bq.requests)
            else:
                assert source.status.reason is Reason.CONFIG and "tls.ca_file" in source.status.detail
                assert len(bq.requests) == asked
