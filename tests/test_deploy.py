"""Deployment artefacts: deploy/base and deploy/overlays/* built with the real `kubectl kustomize`, every
built-in object validated against the Kubernetes schemas, the pod's security posture, RBAC, the shipped
config loaded by the exporter's own loader, and the Dockerfile / .dockerignore held to lint rules.

Not covered here (no engine, no cluster on CI): building the image and applying the manifests.
"""

from __future__ import annotations

import copy
import json
import os
import re
import shlex
import shutil
import subprocess
import tomllib
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path, PurePosixPath
from typing import Any

import kubernetes_validate
import pytest
import yaml

from exporter.cli import build_config, parse_args
from exporter.config import Config, load_config
from exporter.config.sources.gcp import GcpCatalogSettings
from exporter.inventory.quantity import parse_quantity

pytestmark = pytest.mark.slow  # runs kubectl kustomize and schema validation

ROOT = Path(__file__).resolve().parents[1]
DEPLOY = ROOT / "deploy"
PERSISTENT_CACHE = DEPLOY / "components" / "persistent-cache"
PROMETHEUS_OPERATOR = DEPLOY / "components" / "prometheus-operator"
RULES_FILE = DEPLOY / "alerts" / "node-cost-exporter.rules.yml"
OVERLAYS = ("aws", "gcp", "azure", "sidecar", "persistent-cache", "sharded")
TARGETS = ("base", *OVERLAYS)
STANDALONE = ("base", "aws", "gcp", "azure", "persistent-cache")  # the exporter in its own Deployment
# These include the prometheus-operator component; the rest need no CRD.
WITH_OPERATOR = ("aws", "gcp", "azure", "sharded")
K8S_VERSION = "1.30"  # oldest minor the manifests must be valid for; kubernetes-validate bundles 1.25+
NAME = "node-cost-exporter"
PORT = 9798
UID = 65534
CRD_KINDS = {"ServiceMonitor", "PrometheusRule"}
MiB = Decimal(2**20)

PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
VERSION = PYPROJECT["project"]["version"]
CLOUD_EXTRAS = ("aws", "gcp", "azure")


def target_dir(target: str) -> Path:
    return DEPLOY / "base" if target == "base" else DEPLOY / "overlays" / target


# ---------------------------------------------------------------------------------------------------------
# building


@pytest.fixture(scope="session")
def kubectl() -> str:
    """kubectl (its built-in kustomize builds the manifests); CI must have it, elsewhere its absence skips."""
    path = shutil.which("kubectl")
    if path is None:
        if os.environ.get("CI"):
            pytest.fail("kubectl is not installed (it carries kustomize; .ci/run installs it)")
        pytest.skip("kubectl is not installed")
    return path


def kustomize(kubectl: str, directory: Path) -> list[dict[str, Any]]:
    result = subprocess.run(
        [kubectl, "kustomize", str(directory)], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, f"kubectl kustomize {directory} failed:\n{result.stderr}"
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc is not None]


@pytest.fixture(scope="session")
def built(kubectl: str) -> dict[str, list[dict[str, Any]]]:
    return {target: kustomize(kubectl, target_dir(target)) for target in TARGETS}


def only(objs: list[dict[str, Any]], kind: str, name: str | None = None) -> dict[str, Any]:
    found = [o for o in objs if o["kind"] == kind and (name is None or o["metadata"]["name"] == name)]
    assert len(found) == 1, f"expected one {kind} {name or ''}, found {len(found)}"
    return found[0]


def workload(objs: list[dict[str, Any]], target: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """The Deployment (sharded: the StatefulSet) running the exporter, and the exporter's container in it."""
    kind = "StatefulSet" if target == "sharded" else "Deployment"
    deployment = only(objs, kind, "prometheus-server" if target == "sidecar" else NAME)
    containers = deployment["spec"]["template"]["spec"]["containers"]
    exporter = [c for c in containers if c["name"] == NAME]
    assert len(exporter) == 1, f"{target}: no container named {NAME}"
    return deployment, exporter[0]


def config_map(objs: list[dict[str, Any]]) -> dict[str, Any]:
    """The generated ConfigMap (its name carries a content hash)."""
    maps = [o for o in objs if o["kind"] == "ConfigMap" and o["metadata"]["name"].startswith(f"{NAME}-")]
    assert len(maps) == 1, [o["metadata"]["name"] for o in maps]
    return maps[0]


def load_shipped_config(objs: list[dict[str, Any]], tmp_path: Path) -> Config:
    """The ConfigMap's config.yaml through the exporter's own loader and validation (as at start)."""
    path = tmp_path / "config.yaml"
    path.write_text(config_map(objs)["data"]["config.yaml"])
    return load_config(str(path), env={})


def mib(quantity: str) -> Decimal:
    return parse_quantity(quantity) / MiB


@pytest.mark.parametrize("target", TARGETS)
def test_builds_with_kustomize(built: dict[str, list[dict[str, Any]]], target: str) -> None:
    objs = built[target]
    assert objs
    seen = set()
    for obj in objs:
        key = (obj["kind"], obj["metadata"].get("namespace"), obj["metadata"]["name"])
        assert key not in seen, f"{key} twice"
        seen.add(key)
        if obj["kind"] not in ("ClusterRole", "ClusterRoleBinding"):
            assert obj["metadata"].get("namespace") == "monitoring", key
    kinds = sorted(obj["kind"] for obj in objs)
    if target == "sidecar":
        # Only what the Prometheus pod needs: no exporter Deployment, Service, identity or CRDs.
        assert kinds == ["ClusterRole", "ClusterRoleBinding", "ConfigMap", "Deployment"]
    else:
        assert kinds == sorted(
            [
                "ServiceAccount",
                "ClusterRole",
                "ClusterRoleBinding",
                "ConfigMap",
                "StatefulSet" if target == "sharded" else "Deployment",
                "Service",
                *(["ServiceMonitor", "PrometheusRule"] if target in WITH_OPERATOR else []),
                *(["PersistentVolumeClaim"] if target == "persistent-cache" else []),
                *(["Role", "RoleBinding", "PodDisruptionBudget"] if target == "sharded" else []),
            ]
        )


def test_an_overlay_can_move_everything_to_another_namespace(kubectl: str, tmp_path: Path) -> None:
    """The ClusterRoleBinding's subject follows the ServiceAccount, or the exporter would get no access."""
    overlay = tmp_path / "elsewhere"
    overlay.mkdir()
    base = os.path.relpath(DEPLOY / "base", overlay)
    (overlay / "kustomization.yaml").write_text(f"namespace: cost\nresources: [{base}]\n")
    objs = kustomize(kubectl, overlay)
    for obj in objs:
        if obj["kind"] not in ("ClusterRole", "ClusterRoleBinding"):
            assert obj["metadata"]["namespace"] == "cost", obj["kind"]
    subjects = only(objs, "ClusterRoleBinding")["subjects"]
    assert subjects == [{"kind": "ServiceAccount", "name": NAME, "namespace": "cost"}]


@pytest.mark.parametrize("target", TARGETS)
def test_only_overlays_with_the_operator_component_need_its_crds(
    built: dict[str, list[dict[str, Any]]], target: str
) -> None:
    """`kubectl apply -k deploy/base` must work on a cluster without prometheus-operator's CRDs."""
    crd_objs = [o for o in built[target] if o["apiVersion"].startswith("monitoring.coreos.com/")]
    crd_kinds = {o["kind"] for o in crd_objs}
    if target in WITH_OPERATOR:
        assert crd_kinds == CRD_KINDS
        overlay = yaml.safe_load((target_dir(target) / "kustomization.yaml").read_text())
        assert "../../components/prometheus-operator" in overlay.get("components", [])
    else:
        assert crd_objs == [], f"{target} needs the prometheus-operator CRDs: {sorted(crd_kinds)}"


def test_prometheus_operator_component_fits_the_base_in_another_namespace(
    kubectl: str, tmp_path: Path
) -> None:
    """The documented way to add the operator objects to any overlay: its component. They follow the
    overlay's namespace, and the ServiceMonitor still selects the exporter's Service."""
    overlay = tmp_path / "operator"
    overlay.mkdir()
    base, component = (os.path.relpath(d, overlay) for d in (DEPLOY / "base", PROMETHEUS_OPERATOR))
    (overlay / "kustomization.yaml").write_text(
        f"namespace: cost\nresources: [{base}]\ncomponents: [{component}]\n"
    )
    objs = kustomize(kubectl, overlay)
    base_kinds = sorted(o["kind"] for o in kustomize(kubectl, DEPLOY / "base"))
    assert sorted(o["kind"] for o in objs) == sorted([*base_kinds, *CRD_KINDS])
    monitor, rule, service = (
        only(objs, kind, NAME) for kind in ("ServiceMonitor", "PrometheusRule", "Service")
    )
    assert monitor["metadata"]["namespace"] == rule["metadata"]["namespace"] == "cost"
    assert service["metadata"]["namespace"] == "cost"
    assert monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    assert monitor["metadata"]["labels"]["app.kubernetes.io/name"] == NAME
    assert rule["spec"]["groups"] == yaml.safe_load(RULES_FILE.read_text())["groups"]
    component = yaml.safe_load((PROMETHEUS_OPERATOR / "kustomization.yaml").read_text())
    assert component["kind"] == "Component"


def test_persistent_cache_component_fits_a_cloud_overlay(kubectl: str, tmp_path: Path) -> None:
    """The documented way to keep the cache with the aws overlay: its component, in another namespace."""
    overlay = tmp_path / "eks"
    overlay.mkdir()
    aws, component = (os.path.relpath(d, overlay) for d in (DEPLOY / "overlays" / "aws", PERSISTENT_CACHE))
    (overlay / "kustomization.yaml").write_text(
        f"namespace: cost\nresources: [{aws}]\ncomponents: [{component}]\n"
    )
    objs = kustomize(kubectl, overlay)
    deployment, _ = workload(objs, "aws")
    (volume,) = [v for v in deployment["spec"]["template"]["spec"]["volumes"] if v["name"] == "cache"]
    claim = only(objs, "PersistentVolumeClaim")
    assert volume == {"name": "cache", "persistentVolumeClaim": {"claimName": claim["metadata"]["name"]}}
    assert claim["metadata"]["namespace"] == deployment["metadata"]["namespace"] == "cost"
    assert "eks.amazonaws.com/role-arn" in service_account(objs)["metadata"]["annotations"]


def test_sidecar_patch_also_fits_a_statefulset(kubectl: str, tmp_path: Path) -> None:
    """Prometheus often runs as a StatefulSet: the same patch must add the container there too."""
    shutil.copy(DEPLOY / "overlays" / "sidecar" / "prometheus-server-patch.yaml", tmp_path)
    (tmp_path / "prometheus.yaml").write_text(
        yaml.safe_dump(
            {
                "apiVersion": "apps/v1",
                "kind": "StatefulSet",
                "metadata": {"name": "prometheus-server"},
                "spec": {
                    "serviceName": "prometheus-server",
                    "selector": {"matchLabels": {"app": "prometheus"}},
                    "template": {
                        "metadata": {"labels": {"app": "prometheus"}},
                        "spec": {"containers": [{"name": "prometheus-server", "image": "prometheus"}]},
                    },
                },
            }
        )
    )
    target = {"group": "apps", "kind": "Deployment|StatefulSet", "name": "prometheus-server"}
    kustomization = {
        "resources": ["prometheus.yaml"],
        "patches": [{"path": "prometheus-server-patch.yaml", "target": target}],
    }
    (tmp_path / "kustomization.yaml").write_text(yaml.safe_dump(kustomization))
    sts = only(kustomize(kubectl, tmp_path), "StatefulSet")
    assert sts["kind"] == "StatefulSet"
    names = [c["name"] for c in sts["spec"]["template"]["spec"]["containers"]]
    assert sorted(names) == sorted(["prometheus-server", NAME])
    kubernetes_validate.validate(sts, K8S_VERSION, strict=True)
    # The overlay's own target is the one tested here.
    overlay = yaml.safe_load((DEPLOY / "overlays" / "sidecar" / "kustomization.yaml").read_text())
    assert target in [p.get("target") for p in overlay["patches"]]


# ---------------------------------------------------------------------------------------------------------
# schemas


@pytest.mark.parametrize("target", TARGETS)
def test_builtin_kinds_validate_against_the_kubernetes_schemas(
    built: dict[str, list[dict[str, Any]]], target: str
) -> None:
    for obj in built[target]:
        if obj["kind"] in CRD_KINDS:
            continue
        try:
            kubernetes_validate.validate(obj, K8S_VERSION, strict=True)
        except kubernetes_validate.ValidationError as err:
            path = ".".join(str(p) for p in err.path)
            pytest.fail(f"{target}: {obj['kind']}/{obj['metadata']['name']}: {path}: {err.message}")


def test_schema_validation_is_strict(built: dict[str, list[dict[str, Any]]]) -> None:
    """A misspelt field is caught, so the validation above is not vacuous."""
    deployment, _ = workload(built["base"], "base")
    broken = copy.deepcopy(deployment)
    broken["spec"]["template"]["spec"]["containers"][0]["readinesProbe"] = {}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, K8S_VERSION, strict=True)


@pytest.mark.parametrize("target", WITH_OPERATOR)
def test_servicemonitor_scrapes_the_service(built: dict[str, list[dict[str, Any]]], target: str) -> None:
    objs = built[target]
    monitor = only(objs, "ServiceMonitor", NAME)
    service = only(objs, "Service", NAME)
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    assert monitor["metadata"]["namespace"] == service["metadata"]["namespace"]
    spec = monitor["spec"]
    assert set(spec) <= {"jobLabel", "selector", "endpoints", "namespaceSelector"}
    labels = service["metadata"]["labels"]
    assert spec["selector"]["matchLabels"].items() <= labels.items()
    assert "matchExpressions" not in spec["selector"]
    # job="node-cost-exporter", the job the alert rules and the dashboard select on.
    assert labels[spec["jobLabel"]] == NAME
    (endpoint,) = spec["endpoints"]
    assert endpoint["port"] in [p["name"] for p in service["spec"]["ports"]]
    assert endpoint["path"] == "/metrics"
    assert endpoint["interval"] == "60s"
    assert endpoint["scrapeTimeout"] == "30s"
    # The Service reaches the exporter's pod and its metrics port.
    deployment, container = workload(objs, target)
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= pod_labels.items()
    (port,) = [p for p in service["spec"]["ports"] if p["name"] == endpoint["port"]]
    assert port["port"] == PORT
    assert port["targetPort"] in [p["name"] for p in container["ports"]]


@pytest.mark.parametrize("target", WITH_OPERATOR)
def test_prometheusrule_is_well_formed(built: dict[str, list[dict[str, Any]]], target: str) -> None:
    rule = only(built[target], "PrometheusRule", NAME)
    assert rule["apiVersion"] == "monitoring.coreos.com/v1"
    assert rule["metadata"]["namespace"] == "monitoring"
    assert isinstance(rule["spec"]["groups"], list)
    for group in rule["spec"]["groups"]:
        assert group["name"]
        for r in group["rules"]:
            assert ("alert" in r) != ("record" in r)
            assert isinstance(r["expr"], str) and r["expr"].strip()


def test_prometheusrule_carries_exactly_the_plain_rules_file(built: dict[str, list[dict[str, Any]]]) -> None:
    """The operator's rules and the plain rules file must not drift apart."""
    if not RULES_FILE.is_file():
        pytest.skip(
            f"{RULES_FILE.relative_to(ROOT)} not written yet: nothing to compare the PrometheusRule to"
        )
    plain = yaml.safe_load(RULES_FILE.read_text())["groups"]
    operator = only(built["aws"], "PrometheusRule", NAME)["spec"]["groups"]
    assert operator == plain, (
        "deploy/components/prometheus-operator/prometheusrule.yaml spec.groups differs from deploy/alerts/node-cost-exporter.rules.yml: "
        "paste the rules file's groups into it"
    )


# ---------------------------------------------------------------------------------------------------------
# the pod


@pytest.mark.parametrize("target", TARGETS)
def test_security_posture(built: dict[str, list[dict[str, Any]]], target: str) -> None:
    deployment, container = workload(built[target], target)
    pod = deployment["spec"]["template"]["spec"]
    pod_sc = pod.get("securityContext", {})
    sc = container["securityContext"]
    if target == "sidecar":
        # The Prometheus pod's own securityContext is not ours: the container must carry everything.
        pod_sc = {}
    else:
        assert pod_sc["runAsNonRoot"] is True
        assert pod_sc["runAsUser"] == pod_sc["runAsGroup"] == pod_sc["fsGroup"] == UID
        assert pod_sc["seccompProfile"] == {"type": "RuntimeDefault"}

    def effective(key: str) -> Any:
        return sc.get(key, pod_sc.get(key))

    assert effective("runAsNonRoot") is True
    assert effective("runAsUser") == UID
    assert effective("runAsGroup") == UID
    assert effective("seccompProfile") == {"type": "RuntimeDefault"}
    assert sc["readOnlyRootFilesystem"] is True
    assert sc["allowPrivilegeEscalation"] is False
    assert sc["capabilities"] == {"drop": ["ALL"]}
    assert "privileged" not in sc
    assert pod.get("hostNetwork") is not True and pod.get("hostPID") is not True
    assert pod["automountServiceAccountToken"] is True  # the exporter reads the token to watch Nodes


@pytest.mark.parametrize("target", TARGETS)
def test_probes_use_the_named_metrics_port(built: dict[str, list[dict[str, Any]]], target: str) -> None:
    _, container = workload(built[target], target)
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert list(ports.values()) == [PORT]
    (port_name,) = ports
    for probe, path in (("startupProbe", "/healthz"), ("livenessProbe", "/healthz")):
        assert container[probe]["httpGet"] == {"path": path, "port": port_name}, probe
    # Liveness must outlast a slow scrape, and not kill the exporter on one missed answer.
    assert container["livenessProbe"]["failureThreshold"] >= 3
    if target == "sidecar":
        # A sidecar's readiness would gate the whole Prometheus pod.
        assert "readinessProbe" not in container
    else:
        readiness = container["readinessProbe"]
        assert readiness["httpGet"] == {"path": "/readyz", "port": port_name}
        # Ready ~3.2 s after the API answers at 15,000 nodes: polled often enough to notice within seconds.
        assert readiness["periodSeconds"] <= 10
        assert readiness.get("initialDelaySeconds", 0) <= 5


def peak_rss_mib() -> dict[int, Decimal]:
    """Peak RSS per cluster size from docs/performance.md's summary row (in-cluster, no cloud SDK)."""
    lines = (ROOT / "docs" / "performance.md").read_text().splitlines()
    header = next((line for line in lines if line.startswith("| measurement |")), None)
    row = next((line for line in lines if line.startswith("| 5. peak RSS")), None)
    assert header and row, "docs/performance.md has no summary table with a '5. peak RSS' row"
    columns = zip(header.strip("|").split("|")[2:], row.strip("|").split("|")[2:], strict=True)
    return {  # "15,000 nodes" → "106.9 MiB PASS"; the sharded column ("65,000 nodes, 4 replicas") is blank
        int(size.split()[0].replace(",", "")): Decimal(value.split()[0]) for size, value in columns if value.strip()
    }


@pytest.mark.parametrize("target", TARGETS)
def test_resources_follow_the_measured_memory(built: dict[str, list[dict[str, Any]]], target: str) -> None:
    _, container = workload(built[target], target)
    resources = container["resources"]
    assert set(resources["requests"]) == {"cpu", "memory"}
    assert set(resources["limits"]) == {"memory"}  # no CPU limit: the start-up burst is not throttled
    request, limit = mib(resources["requests"]["memory"]), mib(resources["limits"]["memory"])
    assert parse_quantity(resources["requests"]["cpu"]) >= Decimal("0.05")
    peaks = peak_rss_mib()
    aws_sdk = Decimal(35)  # boto3 with two clients, the largest cloud SDK the exporter loads
    # The request holds a 5,000-node cluster with AWS; the limit a 15,000-node one with 2x headroom.
    assert request >= peaks[5000] + aws_sdk, (request, peaks)
    assert limit >= 2 * peaks[15000], (limit, peaks)
    assert request <= limit


@pytest.mark.parametrize("target", TARGETS)
def test_config_and_cache_mounts(built: dict[str, list[dict[str, Any]]], target: str, tmp_path: Path) -> None:
    objs = built[target]
    deployment, container = workload(objs, target)
    volumes = {v["name"]: v for v in deployment["spec"]["template"]["spec"]["volumes"]}
    mounts = {m["mountPath"]: m for m in container["volumeMounts"]}
    config = load_shipped_config(objs, tmp_path)

    # --config.file points into the ConfigMap's mount, at its config.yaml key.
    (flag,) = [a for a in container["args"] if a.startswith("--config.file=")]
    config_path = PurePosixPath(flag.split("=", 1)[1])
    mount = mounts[str(config_path.parent)]
    assert mount["readOnly"] is True
    assert volumes[mount["name"]]["configMap"]["name"] == config_map(objs)["metadata"]["name"]
    assert config_path.name in config_map(objs)["data"]

    # The cache lives on the emptyDir (or the claim), the only writable place with a read-only root filesystem.
    assert config.cache.enabled
    cache_dir = PurePosixPath(config.cache.path).parent
    cache_mount = mounts[str(cache_dir)]
    assert not cache_mount.get("readOnly", False)
    cache_volume = volumes[cache_mount["name"]]
    if target == "persistent-cache":
        assert set(cache_volume) == {"name", "persistentVolumeClaim"}  # the emptyDir is gone, not beside it
        claim = only(objs, "PersistentVolumeClaim", cache_volume["persistentVolumeClaim"]["claimName"])
        assert claim["spec"]["accessModes"] == ["ReadWriteOnce"]  # one pod: the Deployment recreates
    else:
        assert cache_volume["emptyDir"]["sizeLimit"]
    # Nothing else is writable.
    for path, m in mounts.items():
        if path != str(cache_dir):
            assert m.get("readOnly") is True, path

    # The exporter listens where the probes and the Service look.
    assert config.web.listen_address == f":{PORT}"
    assert config.web.telemetry_path == "/metrics"
    assert container["image"] == f"{NAME}:{VERSION}"


@pytest.mark.parametrize("target", STANDALONE)
def test_standalone_deployment(built: dict[str, list[dict[str, Any]]], target: str) -> None:
    objs = built[target]
    deployment, _ = workload(objs, target)
    spec = deployment["spec"]
    assert spec["replicas"] == 1  # every replica would export every node: sums would double
    assert spec["strategy"] == {"type": "Recreate"}  # no overlap of two exporters (see deployment.yaml)
    pod = spec["template"]["spec"]
    assert pod["serviceAccountName"] == only(objs, "ServiceAccount")["metadata"]["name"]
    assert "priorityClassName" not in pod
    labels = deployment["metadata"]["labels"]
    assert labels["app.kubernetes.io/name"] == NAME
    assert labels["app.kubernetes.io/version"] == VERSION
    assert spec["selector"]["matchLabels"] == {
        "app.kubernetes.io/name": NAME,
        "app.kubernetes.io/instance": NAME,
    }


# ---------------------------------------------------------------------------------------------------------
# RBAC


@pytest.mark.parametrize("target", TARGETS)
def test_clusterrole_reads_nodes_and_nothing_else(
    built: dict[str, list[dict[str, Any]]], target: str
) -> None:
    objs = built[target]
    if target != "sharded":  # its Role reads the exporter's own Pod and StatefulSet (tested below)
        assert not [o for o in objs if o["kind"] in ("Role", "RoleBinding")]
    role = only(objs, "ClusterRole")
    assert "aggregationRule" not in role
    (rule,) = role["rules"]
    assert rule["apiGroups"] == [""]
    assert rule["resources"] == ["nodes"]
    assert sorted(rule["verbs"]) == ["get", "list", "watch"]
    assert set(rule) == {"apiGroups", "resources", "verbs"}  # no resourceNames, nonResourceURLs

    binding = only(objs, "ClusterRoleBinding")
    assert binding["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io",
        "kind": "ClusterRole",
        "name": role["metadata"]["name"],
    }
    # Bound to exactly the identity the exporter's pod runs as.
    deployment, _ = workload(objs, target)
    expected = {
        "kind": "ServiceAccount",
        "name": deployment["spec"]["template"]["spec"]["serviceAccountName"],
        "namespace": deployment["metadata"]["namespace"],
    }
    assert binding["subjects"] == [expected]


# ---------------------------------------------------------------------------------------------------------
# config and identity per overlay

ENABLED = {
    "base": set(),
    "sidecar": set(),
    "aws": {"aws.pricing", "aws.spot"},
    "gcp": {"gcp.catalog"},
    "azure": {"azure.retail"},
    "persistent-cache": set(),
    "sharded": set(),
}


@pytest.mark.parametrize("target", TARGETS)
def test_shipped_config_loads_and_enables_its_cloud(
    built: dict[str, list[dict[str, Any]]], target: str, tmp_path: Path
) -> None:
    config = load_shipped_config(built[target], tmp_path)
    shelves = {key: config.sources[key] for key in ("aws.pricing", "aws.spot", "gcp.catalog", "azure.retail")}
    assert {key for key, shelf in shelves.items() if shelf.enabled} == ENABLED[target]
    assert config.log.format == "logfmt"
    assert config.kubernetes.kubeconfig == ""  # in-cluster service account
    assert config.kubernetes.nodes_file == ""
    assert not config.demo
    assert config.pricing.offline.enabled
    catalog = config.sources["gcp.catalog"]
    assert isinstance(catalog, GcpCatalogSettings) and catalog.api_key == ""  # a key belongs in a Secret


def service_account(objs: list[dict[str, Any]]) -> dict[str, Any]:
    return only(objs, "ServiceAccount", NAME)


def test_base_is_cloud_neutral(built: dict[str, list[dict[str, Any]]]) -> None:
    objs = built["base"]
    assert not service_account(objs)["metadata"].get("annotations")
    deployment, _ = workload(objs, "base")
    assert not any(k.startswith("azure.") for k in deployment["spec"]["template"]["metadata"]["labels"])


def test_aws_overlay_uses_irsa(built: dict[str, list[dict[str, Any]]]) -> None:
    annotations = service_account(built["aws"])["metadata"]["annotations"]
    assert re.fullmatch(r"arn:aws:iam::\d{12}:role/[\w+=,.@/-]+", annotations["eks.amazonaws.com/role-arn"])


def test_aws_iam_policy_grants_only_the_two_price_calls() -> None:
    policy = json.loads((DEPLOY / "overlays" / "aws" / "iam-policy.json").read_text())
    assert policy["Version"] == "2012-10-17"
    actions = set()
    for statement in policy["Statement"]:
        assert statement["Effect"] == "Allow"
        assert re.fullmatch(r"[A-Za-z0-9]+", statement["Sid"])  # IAM accepts only alphanumerics here
        assert statement["Resource"] == "*"  # neither action supports resource-level permissions
        actions.update(statement["Action"])
    assert actions == {"pricing:GetProducts", "ec2:DescribeSpotPriceHistory"}


def test_gcp_overlay_uses_workload_identity(built: dict[str, list[dict[str, Any]]]) -> None:
    annotations = service_account(built["gcp"])["metadata"]["annotations"]
    assert re.fullmatch(
        r"[a-z][a-z0-9-]{4,28}[a-z0-9]@[A-Za-z0-9_-]+\.iam\.gserviceaccount\.com",
        annotations["iam.gke.io/gcp-service-account"],
    )


def test_azure_overlay_uses_workload_identity(built: dict[str, list[dict[str, Any]]]) -> None:
    objs = built["azure"]
    annotations = service_account(objs)["metadata"]["annotations"]
    assert re.fullmatch(
        r"[0-9a-f]{8}(-[0-9a-f]{4}){3}-[0-9a-f]{12}", annotations["azure.workload.identity/client-id"]
    )
    deployment, _ = workload(objs, "azure")
    assert deployment["spec"]["template"]["metadata"]["labels"]["azure.workload.identity/use"] == "true"
    # On the pod only: a Deployment's selector cannot change after creation.
    assert "azure.workload.identity/use" not in deployment["spec"]["selector"]["matchLabels"]


def test_sidecar_scrape_config_targets_the_exporter() -> None:
    scrape = yaml.safe_load((DEPLOY / "overlays" / "sidecar" / "scrape-config.yml").read_text())
    (job,) = scrape["scrape_configs"]
    assert job["job_name"] == NAME  # the job the alert rules select on
    assert job["static_configs"] == [{"targets": [f"localhost:{PORT}"]}]


# ---------------------------------------------------------------------------------------------------------
# sharded: deploy/overlays/sharded, deploy/components/sharded

SHARDED = DEPLOY / "components" / "sharded"
SHARD_ENV = {
    "POD_NAME": {"valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
    "POD_NAMESPACE": {"valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}},
}
SHARD_ARGS = ["--pod=$(POD_NAME)", "--pod-namespace=$(POD_NAMESPACE)"]


def test_sharded_runs_one_statefulset_and_no_deployment(built: dict[str, list[dict[str, Any]]]) -> None:
    objs = built["sharded"]
    assert not [o for o in objs if o["kind"] == "Deployment"]  # it would export every node a second time
    statefulset, _ = workload(objs, "sharded")
    spec = statefulset["spec"]
    assert spec["replicas"] == 2
    assert spec["podManagementPolicy"] == "Parallel"
    assert spec["updateStrategy"] == {"type": "RollingUpdate"}
    assert spec["serviceName"] == only(objs, "Service")["metadata"]["name"]
    assert spec["selector"]["matchLabels"] == {
        "app.kubernetes.io/name": NAME,
        "app.kubernetes.io/instance": NAME,
    }
    assert spec["selector"]["matchLabels"].items() <= spec["template"]["metadata"]["labels"].items()
    assert statefulset["metadata"]["labels"]["app.kubernetes.io/version"] == VERSION
    assert "volumeClaimTemplates" not in spec  # each replica's cache is its own emptyDir


def test_sharded_replicas_are_disrupted_one_at_a_time(built: dict[str, list[dict[str, Any]]]) -> None:
    """Each replica is its shard's only exporter: a drain must not take two down together."""
    objs = built["sharded"]
    statefulset, _ = workload(objs, "sharded")
    budget = only(objs, "PodDisruptionBudget")
    assert budget["apiVersion"] == "policy/v1"
    assert budget["spec"] == {"maxUnavailable": 1, "selector": statefulset["spec"]["selector"]}
    assert budget["metadata"]["namespace"] == statefulset["metadata"]["namespace"]


def test_sharded_pod_is_the_base_pod_with_its_own_name_and_namespace(
    built: dict[str, list[dict[str, Any]]],
) -> None:
    """The pod template is copied from the base Deployment, so security context, probes, resources and
    volumes cannot drift; only the downward-API env and the two flags are added."""
    statefulset, container = workload(built["sharded"], "sharded")
    deployment, base_container = workload(built["base"], "base")
    assert container["args"] == [*base_container["args"], *SHARD_ARGS]
    assert {e["name"]: {k: v for k, v in e.items() if k != "name"} for e in container["env"]} == SHARD_ENV
    # Kubernetes expands $(VAR) in args only from variables the container defines.
    for arg in container["args"]:
        assert set(re.findall(r"\$\((\w+)\)", arg)) <= set(SHARD_ENV), arg
    template = copy.deepcopy(statefulset["spec"]["template"])
    (sharded,) = template["spec"]["containers"]
    del sharded["env"]
    sharded["args"] = base_container["args"]
    assert template == deployment["spec"]["template"]


def test_sharded_service_is_headless_and_the_one_the_servicemonitor_scrapes(
    built: dict[str, list[dict[str, Any]]],
) -> None:
    """One Service, headless: the ServiceMonitor selects it and Prometheus scrapes each pod behind it, one
    target per replica. A second Service with the same labels would get every replica scraped twice."""
    objs = built["sharded"]
    service, monitor = only(objs, "Service"), only(objs, "ServiceMonitor", NAME)
    assert service["spec"]["clusterIP"] == "None"
    assert service["spec"]["type"] == "ClusterIP"
    statefulset, container = workload(objs, "sharded")
    assert service["spec"]["selector"] == statefulset["spec"]["selector"]["matchLabels"]
    (port,) = service["spec"]["ports"]
    assert port["name"] == "metrics" and port["port"] == PORT
    assert port["targetPort"] == "metrics" and container["ports"][0]["name"] == "metrics"
    assert monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    assert [e["port"] for e in monitor["spec"]["endpoints"]] == ["metrics"]
    # The operator labels each target with its pod: alerts name the replica without any relabeling.
    assert "podTargetLabels" not in monitor["spec"]


def test_sharded_role_reads_only_its_own_pod_and_statefulset(built: dict[str, list[dict[str, Any]]]) -> None:
    objs = built["sharded"]
    role, binding = only(objs, "Role"), only(objs, "RoleBinding")
    statefulset, _ = workload(objs, "sharded")
    namespace = statefulset["metadata"]["namespace"]
    assert role["metadata"]["namespace"] == binding["metadata"]["namespace"] == namespace
    rules = sorted(role["rules"], key=lambda r: r["apiGroups"])
    assert rules == [
        {"apiGroups": [""], "resources": ["pods"], "verbs": ["get"]},
        {"apiGroups": ["apps"], "resources": ["statefulsets"], "verbs": ["get"]},
    ]
    assert binding["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io",
        "kind": "Role",
        "name": role["metadata"]["name"],
    }
    account = statefulset["spec"]["template"]["spec"]["serviceAccountName"]
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": account, "namespace": namespace}]


def test_sharded_component_fits_a_cloud_overlay_in_another_namespace(kubectl: str, tmp_path: Path) -> None:
    """The documented way to shard a cloud overlay: its pod patch (Azure's workload identity label) is
    carried over, `replicas:` sets the shard count, and everything follows the overlay's namespace."""
    overlay = tmp_path / "aks"
    overlay.mkdir()
    azure, component = (os.path.relpath(d, overlay) for d in (DEPLOY / "overlays" / "azure", SHARDED))
    (overlay / "kustomization.yaml").write_text(
        f"namespace: cost\nresources: [{azure}]\ncomponents: [{component}]\n"
        f"replicas: [{{name: {NAME}, count: 4}}]\n"
    )
    objs = kustomize(kubectl, overlay)
    assert not [o for o in objs if o["kind"] == "Deployment"]
    statefulset, container = workload(objs, "sharded")
    assert statefulset["spec"]["replicas"] == 4
    assert statefulset["spec"]["template"]["metadata"]["labels"]["azure.workload.identity/use"] == "true"
    assert container["args"][-2:] == SHARD_ARGS
    for obj in objs:
        if obj["kind"] not in ("ClusterRole", "ClusterRoleBinding"):
            assert obj["metadata"]["namespace"] == "cost", obj["kind"]
    assert only(objs, "RoleBinding")["subjects"][0]["namespace"] == "cost"
    assert only(objs, "Service")["spec"]["clusterIP"] == "None"
    for obj in objs:
        if obj["kind"] not in CRD_KINDS:
            kubernetes_validate.validate(obj, K8S_VERSION, strict=True)


def test_sharded_container_args_are_accepted_by_the_exporter_cli(
    built: dict[str, list[dict[str, Any]]], tmp_path: Path
) -> None:
    """The args as Kubernetes expands them, through the exporter's own flag parser and config loader: a
    flag it did not know would crash-loop every replica."""
    objs = built["sharded"]
    _, container = workload(objs, "sharded")
    config_file = tmp_path / "config.yaml"
    config_file.write_text(config_map(objs)["data"]["config.yaml"])
    pod = {"POD_NAME": f"{NAME}-1", "POD_NAMESPACE": "monitoring"}
    args = [re.sub(r"\$\((\w+)\)", lambda m: pod[m[1]], arg) for arg in container["args"]]
    args = [f"--config.file={config_file}" if a.startswith("--config.file=") else a for a in args]
    config = build_config(parse_args(args))
    assert config.sharding.pod == f"{NAME}-1"
    assert config.sharding.pod_namespace == "monitoring"


def test_readme_deploying_table_names_every_overlay() -> None:
    readme = (ROOT / "README.md").read_text()
    deploying = readme.split("\n## Deploying\n", 1)[1].split("\n### ", 1)[0]
    rows = [line for line in deploying.splitlines() if line.startswith("|")]
    for overlay in sorted(p.name for p in (DEPLOY / "overlays").iterdir() if p.is_dir()):
        assert any(f"deploy/overlays/{overlay}" in row for row in rows), overlay
    assert any("`kubectl apply -k deploy/overlays/sharded`" in row for row in rows)


# ---------------------------------------------------------------------------------------------------------
# Dockerfile and .dockerignore (no hadolint or Docker engine here: the rules that matter, by hand)


def dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs: continuation lines joined, comment lines dropped."""
    out: list[tuple[str, str]] = []
    pending = ""
    for raw in (ROOT / "Dockerfile").read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        line, pending = pending + line, ""
        keyword, _, args = line.partition(" ")
        out.append((keyword.upper(), args.strip()))
    assert not pending, "Dockerfile ends inside a continued line"
    return out


def stages() -> list[list[tuple[str, str]]]:
    result: list[list[tuple[str, str]]] = []
    for keyword, args in dockerfile_instructions():
        if keyword == "FROM":
            result.append([])
        assert result, f"{keyword} before the first FROM"
        result[-1].append((keyword, args))
    return result


def key_values(args: str) -> dict[str, str]:
    return dict(token.split("=", 1) for token in shlex.split(args))


def arg_default(name: str) -> str:
    for keyword, args in dockerfile_instructions():
        if keyword == "ARG" and args.split("=", 1)[0] == name:
            return args.split("=", 1)[1] if "=" in args else ""
    raise AssertionError(f"no ARG {name}")


def assert_pinned(image: str) -> None:
    name, _, digest = image.partition("@")
    assert "$" not in image, f"{image}: base image from a variable cannot be checked"
    last = name.rsplit("/", 1)[-1]
    assert ":" in last or digest, f"{image}: pin a tag (or a digest)"
    if ":" in last:
        assert last.split(":", 1)[1] != "latest", f"{image}: 'latest' is not a pin"


def test_dockerfile_is_multi_stage_on_pinned_images() -> None:
    all_stages = stages()
    assert len(all_stages) >= 2
    names = set()
    for stage in all_stages:
        words = stage[0][1].split()
        image = words[0]
        if image not in names:
            assert_pinned(image)
        if len(words) == 3 and words[1].upper() == "AS":
            names.add(words[2])
        for keyword, args in stage:
            source = re.match(r"--from=(\S+)", args)
            if keyword == "COPY" and source and source[1] not in names:
                assert_pinned(source[1])  # COPY --from=<image> pulls an image too
    # The final stage takes only the virtualenv from the builder: no sources, no build tools.
    copies = [args for keyword, args in all_stages[-1] if keyword in ("COPY", "ADD")]
    assert copies == ["--from=builder /opt/venv /opt/venv"]


def test_dockerfile_python_base_is_pinned_by_digest_the_same_in_every_stage() -> None:
    """Both stages start from one multi-arch index digest, its tag kept for readers, so that the builder's
    venv runs on the very Python it was built with."""
    bases = [stage[0][1].split()[0] for stage in stages()]
    python = [image for image in bases if image.startswith("python:")]
    assert len(python) == len(bases) == 2, bases
    for image in python:
        assert re.fullmatch(r"python:3\.11-slim-bookworm@sha256:[0-9a-f]{64}", image), image
    assert len(set(python)) == 1, python


def test_dockerfile_final_stage_runs_the_exporter_unprivileged() -> None:
    final = stages()[-1]
    users = [args for keyword, args in final if keyword == "USER"]
    assert users and re.fullmatch(rf"{UID}(:{UID})?", users[-1]), users  # numeric: runAsNonRoot can check it
    (entrypoint,) = [args for keyword, args in final if keyword == "ENTRYPOINT"]
    assert json.loads(entrypoint) == [NAME]  # exec form: signals reach the exporter, no shell
    assert ("EXPOSE", str(PORT)) in final
    env: dict[str, str] = {}
    for keyword, args in final:
        if keyword == "ENV":
            env.update(key_values(args))
    assert env["PYTHONDONTWRITEBYTECODE"] == "1"  # read-only root filesystem
    assert env["PATH"].startswith("/opt/venv/bin:")


def test_dockerfile_labels_and_version() -> None:
    labels: dict[str, str] = {}
    for keyword, args in stages()[-1]:
        if keyword == "LABEL":
            labels.update(key_values(args))
    for key in ("title", "description", "source", "licenses", "version"):
        assert labels.get(f"org.opencontainers.image.{key}"), key
    assert labels["org.opencontainers.image.licenses"] == PYPROJECT["project"]["license"]["text"]
    assert labels["org.opencontainers.image.version"] == "${VERSION}"
    assert arg_default("VERSION") == VERSION


def test_dockerfile_installs_the_locked_runtime_set() -> None:
    runs = [args for keyword, args in dockerfile_instructions() if keyword == "RUN"]
    text = "\n".join(runs)
    assert re.search(r"uv export --frozen --no-dev\b", text)
    assert "--require-hashes" in text
    # The uv that resolves the lock in the image is the one scripts/uv.py (the README's and CI's) pins.
    (pinned_uv,) = re.findall(r'^PINNED = "([\d.]+)"$', (ROOT / "scripts" / "uv.py").read_text(), re.M)
    copies = [args for keyword, args in dockerfile_instructions() if keyword == "COPY"]
    assert any(args.startswith(f"--from=ghcr.io/astral-sh/uv:{pinned_uv} ") for args in copies), copies
    # EXTRAS: by default every cloud extra, and only real ones (dev is an extra too: never by default).
    extras = arg_default("EXTRAS").split(",")
    assert sorted(extras) == sorted(CLOUD_EXTRAS)
    assert set(extras) <= set(PYPROJECT["project"]["optional-dependencies"])
    for keyword, args in dockerfile_instructions():
        assert not (keyword == "ADD" and re.search(r"https?://", args)), (
            "ADD of a URL: use a pinned, checked download"
        )
    for run in runs:
        if "apt-get install" in run:
            assert "--no-install-recommends" in run, run
            assert "rm -rf /var/lib/apt/lists" in run, run
        if re.search(r"(?<!uv )pip install", run):
            assert "--no-cache-dir" in run, run


def dockerignored(path: str, patterns: list[str]) -> bool:
    """Docker's rule: the last pattern matching the path or one of its parent directories decides."""

    def regex(pattern: str) -> re.Pattern[str]:
        out = ""
        i = 0
        while i < len(pattern):
            if pattern.startswith("**", i):
                out += ".*"
                i += 2
            elif pattern[i] == "*":
                out += "[^/]*"
                i += 1
            elif pattern[i] == "?":
                out += "[^/]"
                i += 1
            else:
                out += re.escape(pattern[i])
                i += 1
        return re.compile(out)

    def prefixes(p: str) -> Iterator[str]:
        parts = p.split("/")
        for n in range(1, len(parts) + 1):
            yield "/".join(parts[:n])

    ignored = False
    for pattern in patterns:
        negate = pattern.startswith("!")
        body = pattern[1:] if negate else pattern
        body = body.strip("/")
        if any(regex(body).fullmatch(prefix) for prefix in prefixes(path)):
            ignored = not negate
    return ignored


def test_dockerignore_sends_only_what_the_build_copies() -> None:
    patterns = [
        line.strip()
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.strip().startswith("#")
    ]
    for path in (
        ".git/HEAD",
        ".venv/bin/python",
        "tests/test_deploy.py",
        "bench/__main__.py",
        ".mypy_cache/x",
        "exporter/__pycache__/cli.cpython-311.pyc",
        "node_cost_exporter.egg-info/PKG-INFO",
    ):
        assert dockerignored(path, patterns), path
    # Everything the Dockerfile copies from the context is in it.
    sources = []
    for keyword, args in dockerfile_instructions():
        if keyword in ("COPY", "ADD") and not args.startswith("--from="):
            sources += shlex.split(args)[:-1]
    assert sources
    for source in sources:
        path = source.rstrip("/")
        assert (ROOT / path).exists(), path
        files = (
            [p for p in (ROOT / path).rglob("*") if p.is_file()] if (ROOT / path).is_dir() else [ROOT / path]
        )
        for file in files:
            rel = file.relative_to(ROOT).as_posix()
            if "__pycache__" not in rel:
                assert not dockerignored(rel, patterns), rel
