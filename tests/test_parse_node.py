import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from exporter.inventory.node import CapacityType, Node, ProviderRef
from exporter.inventory.parse import DEFAULT_SPOT_LABELS, InvalidNode, SpotLabel, parse_node, parse_wire_node
from exporter.inventory.wire import NODE_LIST

REAL = Path(__file__).resolve().parents[2] / "shared" / "fixtures" / "real" / "nodes"
GiB = 2**30


def real_items(name: str) -> list[dict[str, Any]]:
    path = REAL / name
    if not path.exists():
        pytest.skip(f"shared fixture {path} is absent")
    if path.suffix == ".yaml":
        yaml = pytest.importorskip("yaml")
        doc = yaml.safe_load(path.read_text())
    else:
        doc = json.loads(path.read_text())
    return doc.get("items", [doc])


def summary(node: Node) -> dict[str, Any]:
    """Every field but labels, for exact comparison."""
    return {
        "name": node.name,
        "uid": node.uid,
        "provider_id": node.provider_id,
        "ref": node.ref,
        "instance_type": node.instance_type,
        "region": node.region,
        "zone": node.zone,
        "capacity_type": node.capacity_type,
        "os": node.os,
        "arch": node.arch,
        "cpu_cores": node.cpu_cores,
        "memory_bytes": node.memory_bytes,
        "gpu_count": node.gpu_count,
        "gpu_model": node.gpu_model,
    }


def parse(obj: Any) -> Node:
    return parse_node(obj, DEFAULT_SPOT_LABELS)


# -- real samples ---------------------------------------------------------------------------------------------


def test_eks_graviton_managed_nodegroup() -> None:
    items = real_items("eks_graviton_m6gd_managed_nodegroup.nodelist.json")
    node = parse(items[0])
    assert summary(node) == {
        "name": "duckboat-01",
        "uid": "757c743d-83c3-4bd7-9966-1eeac736ef84",
        "provider_id": "aws:///us-east-1a/i-03dc801fd988ab620",
        "ref": ProviderRef("aws", zone="us-east-1a", instance_id="i-03dc801fd988ab620"),
        "instance_type": "m6gd.2xlarge",
        "region": "us-east-1",
        "zone": "us-east-1a",
        "capacity_type": CapacityType.ON_DEMAND,
        "os": "linux",
        "arch": "arm64",
        "cpu_cores": 8.0,
        "memory_bytes": 32144656 * 1024,
        "gpu_count": 0,
        "gpu_model": "",
    }
    assert node.labels == items[0]["metadata"]["labels"]
    # The second node shares the first one's providerID (a redacted sample) but its labels say another
    # region: labels win, and the two stay distinct nodes by uid.
    second = parse(items[1])
    assert (second.region, second.zone, second.ref.zone) == ("us-east-2", "us-east-2d", "us-east-1a")
    assert second.uid != node.uid and second.provider_id == node.provider_id


def test_gke_autopilot_yaml() -> None:
    (obj,) = real_items("gke_autopilot_e2-standard-2.node.yaml")
    node = parse(obj)
    assert summary(node) == {
        "name": "gk3-nais-io-nap-1acv0bno-8e1cf148-kkdf",
        "uid": "fec44164-6b53-4443-83ac-1a93761a798c",
        "provider_id": "gce://nais-io/europe-north1-c/gk3-nais-io-nap-1acv0bno-8e1cf148-kkdf",
        "ref": ProviderRef(
            "gcp", account="nais-io", zone="europe-north1-c", instance_id="gk3-nais-io-nap-1acv0bno-8e1cf148-kkdf"
        ),
        "instance_type": "e2-standard-2",
        "region": "europe-north1",
        "zone": "europe-north1-c",
        "capacity_type": CapacityType.ON_DEMAND,
        "os": "linux",
        "arch": "amd64",
        "cpu_cores": 2.0,
        "memory_bytes": 8152028 * 1024,
        "gpu_count": 0,
        "gpu_model": "",
    }


def test_aks_availability_set_beta_labels_only() -> None:
    items = real_items("aks_availability_set_2019.nodelist.json")
    nodes = [parse(obj) for obj in items]
    assert [n.name for n in nodes] == [f"aks-nodepool1-19574989-{i}" for i in range(4)]
    first = nodes[0]
    assert summary(first) == {
        "name": "aks-nodepool1-19574989-0",
        "uid": "9012b16c-44e5-11e9-9920-423525a6b683",
        "provider_id": items[0]["spec"]["providerID"],
        "ref": ProviderRef(
            "azure",
            account="72c8e8ca-dc16-47dc-b65c-6b5875eb600a",
            instance_id="aks-nodepool1-19574989-0",
            resource_group="MC_dilipr-health-test_dilipr-health-test_eastus",
        ),
        "instance_type": "Standard_DS1_v2",
        "region": "eastus",
        "zone": "",  # failure-domain zone "0" is a fault domain, not a zone
        "capacity_type": CapacityType.ON_DEMAND,
        "os": "linux",
        "arch": "amd64",
        "cpu_cores": 1.0,
        "memory_bytes": 3524612 * 1024,
        "gpu_count": 0,
        "gpu_model": "",
    }
    assert {n.zone for n in nodes} == {""}  # fault domains 0 and 1
    assert [n.memory_bytes for n in nodes] == [k * 1024 for k in (3524612, 3524612, 3500452, 3500448)]


def test_azure_vmss_giantswarm() -> None:
    items = real_items("azure_vmss_selfmanaged_giantswarm.nodelist.json")
    nodes = {n.name: n for n in map(parse, items)}
    worker = nodes["fg0ge-worker-000004"]
    assert summary(worker) == {
        "name": "fg0ge-worker-000004",
        "uid": "c736139d-e6b4-11e9-8147-000d3a267334",
        "provider_id": "azure:///subscriptions/1be3b2e6-497b-45b9-915f-eb35cae23c6a/resourceGroups/fg0ge"
        "/providers/Microsoft.Compute/virtualMachineScaleSets/fg0ge-worker/virtualMachines/4",
        "ref": ProviderRef(
            "azure",
            account="1be3b2e6-497b-45b9-915f-eb35cae23c6a",
            instance_id="4",
            resource_group="fg0ge",
            scale_set="fg0ge-worker",
        ),
        "instance_type": "Standard_D2s_v3",
        "region": "westeurope",
        "zone": "",
        "capacity_type": CapacityType.ON_DEMAND,
        "os": "linux",
        "arch": "amd64",
        "cpu_cores": 2.0,
        "memory_bytes": 8145236 * 1024,
        "gpu_count": 0,
        "gpu_model": "",
    }
    assert nodes["fg0ge-master-000000"].ref.scale_set == "fg0ge-master"
    assert {(n.ref.scale_set, n.ref.instance_id) for n in nodes.values()} == {
        ("fg0ge-master", "0"),
        ("fg0ge-worker", "0"),
        ("fg0ge-worker", "1"),
        ("fg0ge-worker", "4"),
    }


def test_minikube_without_provider_id() -> None:
    (obj,) = real_items("minikube_no_providerid.node.json")
    assert summary(parse(obj)) == {
        "name": "minikube",
        "uid": "3a554aa2-fee7-435b-ae1b-e67bdaac069a",
        "provider_id": "",
        "ref": ProviderRef(""),
        "instance_type": "",
        "region": "",
        "zone": "",
        "capacity_type": CapacityType.ON_DEMAND,
        "os": "linux",
        "arch": "amd64",
        "cpu_cores": 4.0,
        "memory_bytes": 8165556 * 1024,
        "gpu_count": 0,
        "gpu_model": "",
    }


# -- realistic hand-written nodes -----------------------------------------------------------------------------


def node_obj(
    name: str = "n1",
    uid: str = "uid-1",
    *,
    labels: dict[str, str] | None = None,
    provider_id: str | None = None,
    capacity: dict[str, str] | None = None,
    node_info: dict[str, str] | None = None,
) -> dict[str, Any]:
    metadata: dict[str, Any] = {"name": name, "uid": uid, "resourceVersion": "7"}
    if labels is not None:
        metadata["labels"] = labels
    spec = {"providerID": provider_id} if provider_id is not None else {}
    status: dict[str, Any] = {"capacity": capacity or {"cpu": "2", "memory": "8Gi", "pods": "110"}}
    if node_info is not None:
        status["nodeInfo"] = node_info
    return {"kind": "Node", "apiVersion": "v1", "metadata": metadata, "spec": spec, "status": status}


def test_karpenter_spot_node() -> None:
    obj = node_obj(
        "ip-192-168-12-34.us-west-2.compute.internal",
        "0b5b0d4c-3a2e-4c7e-9f57-5d0f1c2b9e11",
        labels={
            "karpenter.sh/capacity-type": "spot",
            "karpenter.sh/nodepool": "default",
            "karpenter.k8s.aws/instance-category": "c",
            "karpenter.k8s.aws/instance-family": "c6i",
            "node.kubernetes.io/instance-type": "c6i.2xlarge",
            "topology.kubernetes.io/region": "us-west-2",
            "topology.kubernetes.io/zone": "us-west-2b",
            "kubernetes.io/arch": "amd64",
            "kubernetes.io/os": "linux",
        },
        provider_id="aws:///us-west-2b/i-0a1b2c3d4e5f67890",
        capacity={"cpu": "8", "memory": "15896988Ki", "pods": "58"},
    )
    node = parse(obj)
    assert node.capacity_type is CapacityType.SPOT
    assert (node.instance_type, node.region, node.zone) == ("c6i.2xlarge", "us-west-2", "us-west-2b")
    assert node.ref == ProviderRef("aws", zone="us-west-2b", instance_id="i-0a1b2c3d4e5f67890")
    assert (node.cpu_cores, node.memory_bytes) == (8.0, 15896988 * 1024)


def test_gke_spot_node_with_gpus() -> None:
    obj = node_obj(
        "gke-ml-t4-pool-5d1c9e2a-x7kq",
        "6d7c1f08-8f1e-4d9a-a9f4-2b3c4d5e6f70",
        labels={
            "cloud.google.com/gke-nodepool": "t4-pool",
            "cloud.google.com/gke-spot": "true",
            "cloud.google.com/gke-provisioning": "spot",
            "cloud.google.com/gke-accelerator": "nvidia-tesla-t4",
            "node.kubernetes.io/instance-type": "n1-standard-8",
            "topology.kubernetes.io/region": "us-central1",
            "topology.kubernetes.io/zone": "us-central1-a",
        },
        provider_id="gce://ml-prod/us-central1-a/gke-ml-t4-pool-5d1c9e2a-x7kq",
        capacity={"cpu": "8", "memory": "30811440Ki", "nvidia.com/gpu": "2", "pods": "110"},
    )
    node = parse(obj)
    assert node.capacity_type is CapacityType.SPOT
    assert (node.gpu_count, node.gpu_model) == (2, "nvidia-tesla-t4")
    assert node.ref.account == "ml-prod"
    assert node.memory_bytes == 30811440 * 1024


def test_gpu_count_sums_vendors_and_model_precedence() -> None:
    obj = node_obj(
        labels={"nvidia.com/gpu.product": "Tesla-V100-SXM2-16GB", "k8s.amazonaws.com/accelerator": "V100"},
        capacity={"cpu": "8", "memory": "61Gi", "nvidia.com/gpu": "4", "amd.com/gpu": "1"},
    )
    node = parse(obj)
    assert (node.gpu_count, node.gpu_model) == (5, "Tesla-V100-SXM2-16GB")


def test_aks_vmss_spot_node() -> None:
    name = "aks-nodepool1-12345678-vmss000000"
    obj = node_obj(
        name,
        "3f0c2a71-5b9e-4d3a-8e6f-1a2b3c4d5e6f",
        labels={
            "agentpool": "nodepool1",
            "kubernetes.azure.com/agentpool": "nodepool1",
            "kubernetes.azure.com/scalesetpriority": "spot",
            "node.kubernetes.io/instance-type": "Standard_D4s_v3",
            "topology.kubernetes.io/region": "eastus",
            "topology.kubernetes.io/zone": "eastus-1",
            "kubernetes.io/os": "linux",
            "kubernetes.io/arch": "amd64",
        },
        provider_id="azure:///subscriptions/SUB/resourceGroups/MC_rg_cluster_eastus/providers/Microsoft.Compute"
        "/virtualMachineScaleSets/aks-nodepool1-12345678-vmss/virtualMachines/0",
    )
    node = parse(obj)
    assert node.capacity_type is CapacityType.SPOT
    assert node.zone == "eastus-1" and node.region == "eastus"
    assert node.ref == ProviderRef(
        "azure",
        account="SUB",
        instance_id="0",
        resource_group="MC_rg_cluster_eastus",
        scale_set="aks-nodepool1-12345678-vmss",
    )
    assert node.memory_bytes == 8 * GiB


def test_kind_node() -> None:
    obj = node_obj(
        "kind-control-plane",
        labels={"kubernetes.io/os": "linux", "kubernetes.io/arch": "amd64", "kubernetes.io/hostname": "kind"},
        provider_id="kind://docker/kind/kind-control-plane",
    )
    node = parse(obj)
    assert node.ref == ProviderRef("kind", instance_id="docker/kind/kind-control-plane")
    assert (node.instance_type, node.region, node.zone) == ("", "", "")


def test_node_without_labels_falls_back_to_node_info() -> None:
    obj = node_obj(node_info={"operatingSystem": "windows", "architecture": "amd64"})
    node = parse(obj)
    assert node.labels == {}
    assert (node.os, node.arch, node.instance_type, node.capacity_type) == (
        "windows",
        "amd64",
        "",
        CapacityType.ON_DEMAND,
    )
    assert (node.cpu_cores, node.memory_bytes) == (2.0, 8 * GiB)


def test_garbage_provider_id_does_not_raise() -> None:
    for garbage in ("not a provider id", "aws:", "gce://x", "azure:///subscriptions", "\x00://", "://"):
        node = parse(node_obj(provider_id=garbage))
        assert node.provider_id == garbage
        assert node.ref.instance_id == ""


def test_long_label_values_kept_intact() -> None:
    long_value = "v" * 10_000
    labels = {"example.com/blob": long_value, "node.kubernetes.io/instance-type": "m5.large"}
    node = parse(node_obj(labels=labels))
    assert node.labels["example.com/blob"] == long_value
    assert node.instance_type == "m5.large"


def test_region_derived_from_zone_when_label_absent() -> None:
    cases = [
        ("aws:///us-east-1a/i-1", {"topology.kubernetes.io/zone": "us-east-1a"}, "us-east-1", "us-east-1a"),
        ("aws:///us-gov-west-1b/i-1", {}, "us-gov-west-1", "us-gov-west-1b"),  # zone from providerID
        ("aws:///us-west-2-lax-1a/i-1", {}, "us-west-2", "us-west-2-lax-1a"),  # Local Zone
        ("gce://p/europe-north1-c/n", {}, "europe-north1", "europe-north1-c"),
        ("gce://p/us-central1-a/n", {"failure-domain.beta.kubernetes.io/zone": "us-central1-f"}, "us-central1",
         "us-central1-f"),
    ]
    for provider_id, labels, region, zone in cases:
        node = parse(node_obj(labels=labels, provider_id=provider_id))
        assert (node.region, node.zone) == (region, zone), provider_id
    # Unknown provider: no guessing.
    node = parse(node_obj(labels={"topology.kubernetes.io/zone": "zone-a"}, provider_id="vsphere://42"))
    assert (node.region, node.zone) == ("", "zone-a")


def test_topology_labels_win_over_beta_ones() -> None:
    labels = {
        "node.kubernetes.io/instance-type": "m5.large",
        "beta.kubernetes.io/instance-type": "m4.large",
        "topology.kubernetes.io/region": "eu-west-1",
        "failure-domain.beta.kubernetes.io/region": "us-east-1",
        "topology.kubernetes.io/zone": "eu-west-1b",
        "failure-domain.beta.kubernetes.io/zone": "us-east-1a",
        "kubernetes.io/arch": "arm64",
        "beta.kubernetes.io/arch": "amd64",
    }
    node = parse(node_obj(labels=labels, provider_id="aws:///us-east-1a/i-1"))
    assert (node.instance_type, node.region, node.zone, node.arch) == ("m5.large", "eu-west-1", "eu-west-1b", "arm64")


def test_bad_quantities_become_zero() -> None:
    node = parse(node_obj(capacity={"cpu": "lots", "memory": "12XB", "nvidia.com/gpu": "-1"}))
    assert (node.cpu_cores, node.memory_bytes, node.gpu_count) == (0.0, 0, 0)
    node = parse(node_obj(capacity={"memory": "1e99"}))  # beyond int64: not a real node
    assert (node.cpu_cores, node.memory_bytes) == (0.0, 0)
    node = parse(node_obj(capacity={"cpu": "3920m", "memory": "129e6"}))
    assert (node.cpu_cores, node.memory_bytes) == (3.92, 129_000_000)


def test_odd_shapes_degrade_instead_of_raising() -> None:
    obj: dict[str, Any] = {
        "metadata": {"name": "n", "uid": "u", "labels": ["not", "a", "dict"]},
        "spec": "nope",
        "status": {"capacity": {"cpu": 4, "memory": None}, "nodeInfo": []},
    }
    node = parse(obj)
    assert (node.labels, node.provider_id, node.cpu_cores, node.os) == ({}, "", 0.0, "")
    obj["metadata"]["labels"] = {"kubernetes.io/os": "linux", "bad": 3, "n": None}
    assert parse(obj).labels == {"kubernetes.io/os": "linux"}


@pytest.mark.parametrize(
    "obj",
    [
        None,
        [],
        "node",
        {},
        {"metadata": None},
        {"metadata": {"name": "n"}},
        {"metadata": {"uid": "u"}},
        {"metadata": {"name": "n", "uid": 42}},
        {"metadata": {"name": ["n"], "uid": "u"}},
        {"metadata": {"name": "", "uid": "u"}},
    ],
)
def test_invalid_nodes(obj: Any) -> None:
    with pytest.raises(InvalidNode):
        parse(obj)


def test_raw_object_not_kept() -> None:
    labels = {"kubernetes.io/os": "linux"}
    obj = node_obj(labels=labels)
    node = parse(obj)
    labels["kubernetes.io/os"] = "windows"
    assert node.labels == {"kubernetes.io/os": "linux"}
    assert not hasattr(node, "__dict__")  # slots: nothing else can hang on to the object


def test_equal_objects_parse_equal() -> None:
    """What lets the watcher skip no-op MODIFIED events."""
    a, b = node_obj(labels={"a": "1"}), node_obj(labels={"a": "1"})
    b["metadata"]["resourceVersion"] = "8"
    b["status"]["conditions"] = [{"type": "Ready", "lastHeartbeatTime": "2024-01-01T00:00:00Z"}]
    assert parse(a) == parse(b)
    b["metadata"]["labels"]["a"] = "2"
    assert parse(a) != parse(b)


# -- spot labels ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("karpenter.sh/capacity-type=spot", SpotLabel("karpenter.sh/capacity-type", "spot")),
        (" lifecycle = Ec2Spot ", SpotLabel("lifecycle", "Ec2Spot")),
        ("example.com/spot", SpotLabel("example.com/spot", None)),
        ("example.com/spot=", SpotLabel("example.com/spot", "")),
    ],
)
def test_spot_label_parse(text: str, expected: SpotLabel) -> None:
    assert SpotLabel.parse(text) == expected


@pytest.mark.parametrize("text", ["", "  ", "=spot"])
def test_spot_label_parse_rejects(text: str) -> None:
    with pytest.raises(ValueError, match="spot label"):
        SpotLabel.parse(text)


@pytest.mark.parametrize(
    ("labels", "spot"),
    [
        ({"eks.amazonaws.com/capacityType": "SPOT"}, True),
        ({"eks.amazonaws.com/capacityType": "spot"}, True),  # case-insensitive
        ({"eks.amazonaws.com/capacityType": "ON_DEMAND"}, False),
        ({"karpenter.sh/capacity-type": "on-demand"}, False),
        ({"cloud.google.com/gke-preemptible": "true"}, True),
        ({"cloud.google.com/gke-spot": "True"}, True),
        ({"cloud.google.com/gke-spot": "false"}, False),
        ({"kubernetes.azure.com/scalesetpriority": "Spot"}, True),
        ({"kubernetes.azure.com/scalesetpriority": "regular"}, False),
        ({"lifecycle": "ec2spot"}, True),
        ({"node.kubernetes.io/lifecycle": "spot"}, True),
        ({"node.kubernetes.io/lifecycle": "normal"}, False),
        ({}, False),
    ],
)
def test_default_spot_labels(labels: dict[str, str], spot: bool) -> None:
    node = parse(node_obj(labels=labels))
    assert (node.capacity_type is CapacityType.SPOT) is spot


def test_custom_spot_labels() -> None:
    presence = [SpotLabel.parse("example.com/interruptible")]
    assert parse_node(node_obj(labels={"example.com/interruptible": ""}), presence).capacity_type is CapacityType.SPOT
    assert parse_node(node_obj(labels={"lifecycle": "Ec2Spot"}), presence).capacity_type is CapacityType.ON_DEMAND
    assert parse_node(node_obj(labels={"lifecycle": "Ec2Spot"}), []).capacity_type is CapacityType.ON_DEMAND


def test_gke_provisioning_label_alone_marks_spot() -> None:
    """Newer GKE spot pools carry gke-provisioning=spot; OpenCost #2081 missed such nodes."""
    obj = node_obj(labels={"cloud.google.com/gke-provisioning": "spot", "node.kubernetes.io/instance-type": "e2-standard-4"})
    assert parse(obj).capacity_type is CapacityType.SPOT
    obj = node_obj(labels={"cloud.google.com/gke-provisioning": "standard"})
    assert parse(obj).capacity_type is CapacityType.ON_DEMAND


def test_creation_time_is_read_for_billing_completeness() -> None:
    """metadata.creationTimestamp decides from when a node counts as alive on its bill."""
    items = real_items("eks_graviton_m6gd_managed_nodegroup.nodelist.json")
    stamp = items[0]["metadata"]["creationTimestamp"]
    node = parse(items[0])
    assert node.created is not None
    assert datetime.fromtimestamp(node.created, UTC).strftime("%Y-%m-%dT%H:%M:%SZ") == stamp
    for absent in ({}, {"creationTimestamp": 1700000000}, {"creationTimestamp": "yesterday"}):
        obj = {"metadata": {"name": "n", "uid": "u", **absent}}
        assert parse(obj).created is None, absent  # unknown: billing counts the node alive all day


def test_lone_surrogates_become_replacement_characters() -> None:
    """Legal JSON ("\\udc80"), but not UTF-8: every later stage encodes these strings."""
    obj = json.loads(
        '{"metadata": {"name": "n\\udc80", "uid": "u", "labels": {"node.kubernetes.io/instance-type": '
        '"m5\\ud800", "k\\udfff": "v"}}, "spec": {"providerID": "aws:///us-east-1a/i-1\\udc80"}}'
    )
    node = parse_node(obj, DEFAULT_SPOT_LABELS)
    assert (node.name, node.instance_type, node.provider_id) == ("n\ufffd", "m5\ufffd", "aws:///us-east-1a/i-1\ufffd")
    assert node.labels["k\ufffd"] == "v"


def test_keep_labels_keeps_only_those_and_still_reads_every_label() -> None:
    labels = {
        "node.kubernetes.io/instance-type": "m5.large",
        "topology.kubernetes.io/zone": "us-east-1a",
        "eks.amazonaws.com/capacityType": "SPOT",
        "example.com/team": "web",
        "example.com/drain": "true",
    }
    obj = node_obj(labels=labels, provider_id="aws:///us-east-1a/i-0abc")
    everything = parse_node(obj, DEFAULT_SPOT_LABELS)
    keep = ("example.com/team", "example.com/absent")
    kept = parse_node(obj, DEFAULT_SPOT_LABELS, keep)
    assert kept.labels == {"example.com/team": "web"}
    assert parse_wire_node(NODE_LIST.decode(json.dumps({"items": [obj]})).items[0], DEFAULT_SPOT_LABELS, keep) == kept
    assert (kept.instance_type, kept.region, kept.capacity_type) == ("m5.large", "us-east-1", CapacityType.SPOT)
    assert everything.labels["example.com/drain"] == "true" and len(everything.labels) > 2
    assert summary(kept) == summary(everything)  # instance type, zone, spot… come from all labels
    assert parse_node(obj, DEFAULT_SPOT_LABELS, ()).labels == {}
