"""Bounded time: with `timeout_seconds: 5` and `retries: 0`, every fault of the contract suite is reported,
with its reason, within 20 s of wall time, on every source, library retries included (docs/pricing.md,
"Time budget"). The harnesses are the contract suite's own, with the deadline and retries overridden, and
faults that hold a request far longer than any deadline.

These wait in real time (a held request ends only at the client's deadline), so they are `slow`.
"""

from __future__ import annotations

import contextlib
import http.server
import ssl
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from exporter.health import Reason
from fakes.server import Fault
from tests import test_source_contract as contract
from tests.conftest import FakeClock, context, node

BUDGET_SECONDS = 20.0
DEADLINE = 5.0
FAULTS = [
    (Fault.AUTH, Reason.AUTH),
    (Fault.PERMISSION, Reason.PERMISSION),
    (Fault.NOT_FOUND, Reason.NOT_FOUND),
    (Fault.THROTTLED, Reason.THROTTLED),
    (Fault.TIMEOUT, Reason.TIMEOUT),
    (Fault.UNAVAILABLE, Reason.UNAVAILABLE),
    (Fault.DROPPED, Reason.UNAVAILABLE),
    (Fault.CUT, Reason.UNAVAILABLE),
    (Fault.BAD_RESPONSE, Reason.BAD_RESPONSE),
]

pytestmark = pytest.mark.slow


@pytest.fixture
def harness(request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """A contract harness whose source runs with timeout_seconds 5 and retries 0, having priced once."""
    monkeypatch.setattr(contract, "TIMEOUT", DEADLINE)
    monkeypatch.setattr(contract, "BIGQUERY_TIMEOUT", DEADLINE)
    monkeypatch.setattr(contract, "SHELF", {**contract.SHELF, "retries": 0})
    monkeypatch.setattr(contract, "BILLING", {**contract.BILLING, "retries": 0})
    with contract.HARNESSES[request.param](tmp_path, monkeypatch) as ready:
        ready.refresh()
        assert ready.status.up, ready.status.detail
        ready.fake.hold_seconds = 120.0  # a hung service: far past the deadline
        yield ready


def assert_reported_within_budget(refresh: Callable[[], object], status: Any, reason: Reason | tuple[Reason, ...]) -> None:
    """Run one refresh on the wall clock: it must end down, with `reason`, within BUDGET_SECONDS."""
    started = time.monotonic()
    refresh()
    took = time.monotonic() - started
    reasons = reason if isinstance(reason, tuple) else (reason,)
    assert not status.up and status.reason in reasons, status.detail
    assert took <= BUDGET_SECONDS, f"reported after {took:.1f} s: {status.detail}"


@contextlib.contextmanager
def hung_server(cert: tuple[str, str] | None = None) -> Iterator[str]:
    """A server (over TLS with `cert`) that reads each request and never answers; yields its base URL."""
    release = threading.Event()

    class Hung(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            release.wait(120)

        do_GET = do_POST

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Hung)
    if cert is not None:
        tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        tls.load_cert_chain(*cert)
        server.socket = tls.wrap_socket(server.socket, server_side=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"{'https' if cert else 'http'}://127.0.0.1:{server.server_address[1]}"
    finally:
        release.set()
        server.shutdown()
        server.server_close()


@pytest.mark.timeout(60)
@pytest.mark.parametrize("harness", list(contract.HARNESSES), indirect=True)
@pytest.mark.parametrize(("fault", "reason"), FAULTS, ids=[f.value for f, _ in FAULTS])
def test_every_fault_is_reported_within_the_budget(harness: Any, fault: Fault, reason: Reason) -> None:
    harness.fake.inject(fault, None, retry_after=1.0)
    assert_reported_within_budget(harness.refresh, harness.status, reason)


@pytest.mark.timeout(60)
@pytest.mark.parametrize("harness", ["gcp_bigquery"], indirect=True)
@pytest.mark.parametrize(
    ("fault", "reason"),
    [(Fault.TIMEOUT, Reason.TIMEOUT), (Fault.THROTTLED, Reason.THROTTLED), (Fault.DROPPED, Reason.UNAVAILABLE),
     (Fault.CUT, Reason.UNAVAILABLE), (Fault.BAD_RESPONSE, Reason.BAD_RESPONSE), ("results", Reason.UNAVAILABLE),
     ("get", Reason.UNAVAILABLE)],
    ids=["hung", "429", "dropped", "cut", "truncated", "backendError", "job_failed"],
)
def test_bigquery_results_call_faults_are_reported_within_the_budget(
    harness: Any, fault: Fault | str, reason: Reason
) -> None:
    """The query is accepted, then jobs.getQueryResults (or the job itself, "get") fails: the client raises
    a results call's timeout to at least 120 s and retries 429s and 5xx for minutes on its own; neither may
    happen here."""
    if isinstance(fault, str):  # BigQuery's backendError on that step: a 500, or a job DONE with errorResult
        harness.fake.fail_next("backendError", count=100, on=fault)
    else:
        harness.fake.inject(fault, None, retry_after=1.0, when=lambda request: "/queries/" in request.path)
    assert_reported_within_budget(harness.refresh, harness.status, reason)


@pytest.mark.timeout(60)
def test_a_hung_azure_token_endpoint_is_reported_within_the_budget(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Production Azure credentials (DefaultAzureCredential, here its workload identity) fetch a token from
    Entra ID first. A hung token endpoint must end at the deadline too: azure-identity's transport would
    wait 300 s per try, and retry. The hung server answers as login.microsoftonline.com (the authority
    azure.cloud names), through a corporate proxy whose CA is tls.ca_file (fakes/network.py)."""
    from exporter.config.sources.azure import AzureCostSettings
    from exporter.pricing.sources.azure.cost_management import AzureCostBilling
    from fakes.network import ConnectProxy, TestCA

    ca = TestCA(tmp_path)
    authority = "login.microsoftonline.com"
    token = tmp_path / "azure-identity-token"
    token.write_text("eyJhbGciOiJSUzI1NiJ9.e30.c2lnbmF0dXJl")  # a projected service account token's shape
    for name in ("HTTP_PROXY", "http_proxy", "https_proxy", "NO_PROXY", "no_proxy", "AZURE_AUTHORITY_HOST", "REQUESTS_CA_BUNDLE"):
        monkeypatch.delenv(name, raising=False)
    with hung_server(ca.issue(authority)) as hung, ConnectProxy({authority: int(hung.rsplit(":", 1)[1])}) as proxy:
        for name, value in {
            "AZURE_CLIENT_ID": "6f2a3b1c-0d4e-4f5a-9b8c-7d6e5f4a3b2c",
            "AZURE_TENANT_ID": "72f988bf-86f1-41af-91ab-2d7cd011db47",
            "AZURE_FEDERATED_TOKEN_FILE": str(token),
            "HTTPS_PROXY": proxy.url,
        }.items():
            monkeypatch.setenv(name, value)
        settings = AzureCostSettings(enabled=True, scope="/subscriptions/6f2a3b1c-0d4e-4f5a-9b8c-7d6e5f4a3b2c",
                                     endpoint_url="https://127.0.0.1:9", timeout_seconds=DEADLINE, retries=0)
        source = AzureCostBilling(settings, context(FakeClock(), ca_file=ca.ca_file))
        source.wanted([contract.aks_node("Standard_D4s_v3")])
        assert_reported_within_budget(source.refresh, source.status, Reason.TIMEOUT)
        assert authority in proxy.hosts()  # the token request went to the hung authority, and hung


@pytest.mark.timeout(60)
@pytest.mark.parametrize("source_key", ["aws.pricing", "aws.cur"])
def test_a_hung_sts_endpoint_is_reported_within_the_budget(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, source_key: str
) -> None:
    """IRSA credentials come from STS AssumeRoleWithWebIdentity, through a client botocore makes itself:
    a hung STS must end at the source's deadline too, not after botocore's 60 s a try."""
    from exporter.config.sources.aws import AwsCurSettings, AwsPricingSettings
    from exporter.pricing.sources.aws.cur import AwsCurBilling
    from exporter.pricing.sources.aws.price_list import AwsOnDemandPrices

    contract.aws_env(monkeypatch, tmp_path)
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    token = tmp_path / "eks-pod-identity-token"
    token.write_text("eyJhbGciOiJSUzI1NiJ9.e30.c2lnbmF0dXJl")
    monkeypatch.setenv("AWS_ROLE_ARN", "arn:aws:iam::111122223333:role/node-cost-exporter")
    monkeypatch.setenv("AWS_WEB_IDENTITY_TOKEN_FILE", str(token))
    with hung_server() as sts:
        monkeypatch.setenv("AWS_ENDPOINT_URL_STS", sts)
        source: Any
        if source_key == "aws.pricing":
            settings = AwsPricingSettings(enabled=True, endpoint_url="http://127.0.0.1:9",
                                          timeout_seconds=DEADLINE, retries=0)
            source = AwsOnDemandPrices(settings, context(FakeClock()))
        else:
            cur = AwsCurSettings(enabled=True, endpoint_url="http://127.0.0.1:9", database="cur", table="t",
                                 timeout_seconds=DEADLINE, retries=0)
            source = AwsCurBilling(cur, context(FakeClock()))
        source.wanted([node()])
        assert_reported_within_budget(source.refresh, source.status, (Reason.TIMEOUT, Reason.AUTH))
