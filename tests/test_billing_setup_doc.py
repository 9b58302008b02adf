"""docs/billing-setup.md and deploy/overlays/aws/billing-iam-policy.json held to the code.

The Athena actions of the policy are the ones the CUR source really sends: the real boto3 client runs a CUR
2.0 refresh (node and commitment queries), a legacy one (with its column probe) and one that times out
(cancelled) against the local Athena, which records each call's X-Amz-Target. The Glue and S3 actions are
what Athena itself does for the caller (AWS's Athena user guide, "Identity and access management in Athena"
and "Configure access to databases and tables in the AWS Glue Data Catalog"); no fake can observe those, so
they are checked for shape and placeholders only.
"""

from __future__ import annotations

import dataclasses
import json
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from exporter.config.sections import sections
from exporter.health import Health, Reason
from exporter.pricing.sources.aws.cur import _ACTIONS
from exporter.pricing.sources.azure.cost_management import _ROLE
from exporter.pricing.sources.gcp.bigquery import _ROLES
from fakes.athena_api import FakeAthena
from fakes.bigquery_api import BILLING_COLUMNS, FakeBigQuery
from fakes.cost_management_api import FakeCostManagement
from fakes.gcp_api import FakeCatalogAPI, write_adc
from tests import test_azure_billing, test_gcp_billing
from tests.conftest import FakeClock
from tests.test_aws_billing import NOW, athena_with_curs, make_source

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "billing-setup.md"
OVERLAYS = ROOT / "deploy" / "overlays"
POLICY = OVERLAYS / "aws" / "billing-iam-policy.json"
PLACEHOLDERS = {
    "REGION",
    "ACCOUNT_ID",
    "WORKGROUP",
    "CUR_DATABASE",
    "CUR_TABLE",
    "CUR_BUCKET",
    "CUR_PREFIX",
    "RESULTS_BUCKET",
    "RESULTS_PREFIX",
}
BILLING_SECTIONS = ("aws.cur", "gcp.bigquery", "azure.cost_management")


def policy() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(POLICY.read_text())
    return loaded


def granted() -> dict[str, set[str]]:
    """Action → the resource ARNs the policy allows it on."""
    out: dict[str, set[str]] = {}
    for statement in policy()["Statement"]:
        resources = statement["Resource"]
        for action in statement["Action"]:
            out.setdefault(action, set()).update([resources] if isinstance(resources, str) else resources)
    return out


def doc_section(title_start: str) -> str:
    text = DOC.read_text()
    start = text.index(f"\n## {title_start}")
    end = text.find("\n## ", start + 1)
    return text[start : end if end > 0 else len(text)]


def words(text: str) -> str:
    return " ".join(text.split())


@pytest.fixture(scope="module")
def athena() -> Iterator[FakeAthena]:
    with athena_with_curs() as fake:
        yield fake


def test_the_billing_policy_is_a_policy_of_named_resources_only() -> None:
    document = policy()
    assert document["Version"] == "2012-10-17"
    for statement in document["Statement"]:
        assert statement["Effect"] == "Allow"
        assert re.fullmatch(r"[A-Za-z0-9]+", statement["Sid"])  # IAM accepts only alphanumerics here
        assert all(re.fullmatch(r"(athena|glue|s3):[A-Z][A-Za-z]+", a) for a in statement["Action"])
    for action, resources in granted().items():
        for arn in resources:
            assert "*" not in arn.removesuffix("/*"), f"{action} on {arn}: no wildcard resource"
            assert arn.startswith(f"arn:aws:{action.split(':')[0]}:"), arn
    used = set(re.findall(r"\b[A-Z][A-Z_]+[A-Z]\b", POLICY.read_text()))
    assert used == PLACEHOLDERS
    explained = set(re.findall(r"\| `([A-Z_]+)`(?:, `([A-Z_]+)`)? \|", doc_section("AWS")))
    assert {name for pair in explained for name in pair if name} == PLACEHOLDERS


def test_the_doc_sed_fills_in_every_placeholder(tmp_path: Path) -> None:
    """The doc's `sed` line, run as written on a copy of the policy, leaves a policy with no placeholder."""
    (command,) = re.findall(
        r"^sed .*?> billing-policy\.json$", doc_section("AWS"), flags=re.MULTILINE | re.DOTALL
    )
    copy = tmp_path / POLICY.relative_to(ROOT)
    copy.parent.mkdir(parents=True)
    shutil.copy(POLICY, copy)
    subprocess.run(["bash", "-euo", "pipefail", "-c", command], cwd=tmp_path, check=True, timeout=30)
    filled = (tmp_path / "billing-policy.json").read_text()
    assert not PLACEHOLDERS & set(re.findall(r"[A-Z][A-Z_]+[A-Z]", filled))
    statements = json.loads(filled)["Statement"]
    resources = {
        arn
        for s in statements
        for arn in ([s["Resource"]] if isinstance(s["Resource"], str) else s["Resource"])
    }
    assert "arn:aws:athena:us-east-1:111122223333:workgroup/primary" in resources
    assert "arn:aws:s3:::my-cur-bucket/cur/my-export/data/*" in resources


def test_the_policy_allows_exactly_the_athena_calls_the_cur_source_makes(
    athena: FakeAthena, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIDEXAMPLE")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY")
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    health = Health()
    status = health.integration("aws_cur")
    first = len(athena.calls)
    for version, table in (("2.0", "data_exports"), ("legacy", "cost_and_usage")):
        make_source(athena, health, FakeClock(NOW), cur_version=version, table=table).refresh()
        assert status.up, status.detail
    athena.polls_before_done = 100
    try:
        slow = make_source(
            athena, health, FakeClock(NOW), retries=0, timeout_seconds=30.0, poll_interval_seconds=2.0
        )
        slow.refresh()
    finally:
        athena.polls_before_done = 1
    assert status.reason is Reason.TIMEOUT
    called = {f"athena:{operation}" for operation in athena.calls[first:]}
    allowed = {action for action in granted() if action.startswith("athena:")}
    assert called == allowed  # nothing the code sends is missing, nothing is granted that it never sends
    for action in called:
        assert granted()[action] == {"arn:aws:athena:REGION:ACCOUNT_ID:workgroup/WORKGROUP"}


def test_the_bigquery_source_runs_jobs_in_the_job_project_reading_only_the_export_table(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """What the two roles cover: query jobs created, polled and read in `job_project` only (jobUser there;
    a job's creator may read its results), and no table but the export (dataViewer on its dataset)."""
    with FakeBigQuery() as bigquery, FakeCatalogAPI(token="ya29.test-token") as tokens:
        bigquery.create_table(test_gcp_billing.TABLE, BILLING_COLUMNS, test_gcp_billing.bill())
        adc = write_adc(tmp_path / "adc.json", f"{tokens.url}/token")
        health = Health()
        clock = FakeClock(test_gcp_billing.NOW)
        source = test_gcp_billing.make_source(
            bigquery, adc, monkeypatch, health, clock, job_project="ci-jobs"
        )
        source.refresh()
        assert health.integration("gcp_bigquery").up
        calls = bigquery.calls
        queries = [job["query"] for job in bigquery.jobs]
    assert len(queries) == 2  # the node query and the commitments query
    for call in calls:
        assert re.fullmatch(r"(POST|GET) /bigquery/v2/projects/ci-jobs/(jobs|queries)(/[\w-]+)?", call), call
    for sql in queries:
        assert set(re.findall(r"`([^`]+)`", sql)) == {test_gcp_billing.TABLE}


@pytest.mark.parametrize("commitment_scope", ["", "/subscriptions/5c8a3e7d-0b7e-4a44-9d0c-2f3b9a6e1d42"])
def test_cost_management_is_queried_on_the_two_scopes_the_doc_grants_the_role_on(
    tmp_path: Path, commitment_scope: str
) -> None:
    """Only the Query API (`Microsoft.CostManagement/query/action`), on `scope` for the nodes and on
    `commitment_scope` (empty: the subscription of `scope`) for the commitments, as the doc's table says."""
    subscription = f"/subscriptions/{test_azure_billing.SUB}"
    commitments = commitment_scope or subscription
    with FakeCostManagement(tmp_path / "arm") as fake:
        fake.scopes.update((test_azure_billing.SCOPE, commitments))
        fake.records.extend(test_azure_billing.bill())
        health, clock = Health(), FakeClock(test_azure_billing.NOW)
        source = test_azure_billing.make_source(
            fake, tmp_path, health, clock, commitment_scope=commitment_scope
        )
        source.wanted(test_azure_billing.CLUSTER)
        source.refresh()
        assert health.integration("azure_cost_management").up
        calls = fake.calls
    query = "/providers/Microsoft.CostManagement/query"
    assert {call["method"] for call in calls} == {"POST"}
    assert {call["path"].removesuffix(query) for call in calls} == {test_azure_billing.SCOPE, commitments}
    per_scope = {
        scope: sum(c["path"] == scope + query for c in calls)
        for scope in (test_azure_billing.SCOPE, commitments)
    }
    assert per_scope == {
        test_azure_billing.SCOPE: 2,
        commitments: 2,
    }  # nodes and coverage; per commitment kind


def test_the_permission_message_names_what_the_policy_grants() -> None:
    named = set(re.findall(r"\b(?:athena|glue|s3):[A-Za-z]+", _ACTIONS))
    assert named <= set(granted())
    assert {a for a in granted() if not a.startswith("s3:")} <= named  # every Athena and Glue grant named
    assert str(POLICY.relative_to(ROOT)) in _ACTIONS


def test_the_doc_lists_exactly_the_actions_of_the_policy() -> None:
    listed = set(re.findall(r"`((?:athena|glue|s3):[A-Za-z]+)`", doc_section("AWS")))
    assert listed == set(granted())


def test_every_config_key_the_doc_names_is_a_setting() -> None:
    types = sections()
    named = set(re.findall(r"`(aws\.cur|gcp\.bigquery|azure\.cost_management)\.([a-z_]+)`", DOC.read_text()))
    assert {key for key, _ in named} == set(BILLING_SECTIONS)
    for key, name in sorted(named):
        fields = {f.name for f in dataclasses.fields(types[key])}
        assert name in fields, f"docs/billing-setup.md names {key}.{name}, which {key} does not have"


def test_the_roles_the_code_asks_for_are_the_roles_the_doc_grants() -> None:
    gcp, azure = words(doc_section("GCP")), words(doc_section("Azure"))
    assert _ROLES in gcp  # the permission message, word for word
    assert "--role roles/bigquery.jobUser" in gcp  # on the job project
    assert "GRANT \\`roles/bigquery.dataViewer\\` ON SCHEMA" in gcp  # on the dataset alone
    role = re.match(r"the (.+?) role", _ROLE)
    assert role is not None
    assert f'--role "{role[1]}"' in azure and "azure.cost_management.commitment_scope" in azure


def manifest(path: Path) -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load(path.read_text())
    return loaded


def test_the_overlays_carry_the_identity_the_doc_promises() -> None:
    aws = manifest(OVERLAYS / "aws" / "serviceaccount-irsa.yaml")["metadata"]["annotations"]
    gcp = manifest(OVERLAYS / "gcp" / "serviceaccount-workload-identity.yaml")["metadata"]["annotations"]
    azure = manifest(OVERLAYS / "azure" / "serviceaccount-workload-identity.yaml")["metadata"]["annotations"]
    pod = manifest(OVERLAYS / "azure" / "deployment-workload-identity.yaml")["spec"]["template"]["metadata"]
    promised = {
        "AWS": ("eks.amazonaws.com/role-arn", aws),
        "GCP": ("iam.gke.io/gcp-service-account", gcp),
        "Azure": ("azure.workload.identity/client-id", azure),
    }
    for cloud, (key, carried) in promised.items():
        assert f"`{key}`" in doc_section(cloud), cloud
        assert key in carried, cloud
    assert pod["labels"]["azure.workload.identity/use"] == "true"
    assert '`azure.workload.identity/use: "true"`' in doc_section("Azure")
    # The Kubernetes identity every command trusts is the one deploy/base makes.
    base = ROOT / "deploy" / "base"
    account = manifest(base / "serviceaccount.yaml")["metadata"]["name"]
    namespace = manifest(base / "kustomization.yaml")["namespace"]
    text = DOC.read_text()
    assert f"system:serviceaccount:{namespace}:{account}" in text
    assert f"svc.id.goog[{namespace}/{account}]" in text
    assert f"--namespace {namespace} \\\n      --service-account {account}" in text


def test_the_how_tos_link_to_files_and_sections_that_exist() -> None:
    docs = ROOT / "docs"
    for page in (DOC, docs / "backfill.md", docs / "operations.md"):
        for target in re.findall(r"\]\(([^)\s]+)\)", page.read_text()):
            if target.startswith(("http://", "https://")):
                continue
            path, _, anchor = target.partition("#")
            linked = (page.parent / path).resolve()
            assert linked.is_file(), f"{page.name} links to {target}, which does not exist"
            if anchor:
                titles = re.findall(r"^#+ (.+)$", linked.read_text(), flags=re.MULTILINE)
                slugs = {re.sub(r"[^\w\- ]", "", t.lower()).replace(" ", "-") for t in titles}
                assert anchor in slugs, f"{page.name} links to {target}: no such section"
