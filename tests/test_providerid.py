import pytest

from exporter.inventory.node import ProviderRef
from exporter.inventory.providerid import parse_provider_id

SUB = "72c8e8ca-dc16-47dc-b65c-6b5875eb600a"


@pytest.mark.parametrize(
    ("provider_id", "expected"),
    [
        # AWS: canonical form (EKS sample), loose forms, Fargate
        (
            "aws:///us-east-1a/i-03dc801fd988ab620",
            ProviderRef("aws", zone="us-east-1a", instance_id="i-03dc801fd988ab620"),
        ),
        (
            "aws:///us-east-2a/i-0fea4fd46592d050b",
            ProviderRef("aws", zone="us-east-2a", instance_id="i-0fea4fd46592d050b"),
        ),
        (
            "aws://us-east-2a/i-0fea4fd46592d050b",
            ProviderRef("aws", zone="us-east-2a", instance_id="i-0fea4fd46592d050b"),
        ),
        ("aws:///i-0fea4fd46592d050b", ProviderRef("aws", instance_id="i-0fea4fd46592d050b")),
        (
            "aws:///us-east-2b/ac8d81ab19-1c2b3d4e5f6a/fargate-ip-192-168-120-45.us-east-2.compute.internal",
            ProviderRef(
                "aws",
                zone="us-east-2b",
                instance_id="fargate-ip-192-168-120-45.us-east-2.compute.internal",
            ),
        ),
        # GCP (GKE autopilot sample)
        (
            "gce://nais-io/europe-north1-c/gk3-nais-io-nap-1acv0bno-8e1cf148-kkdf",
            ProviderRef(
                "gcp",
                account="nais-io",
                zone="europe-north1-c",
                instance_id="gk3-nais-io-nap-1acv0bno-8e1cf148-kkdf",
            ),
        ),
        # Azure availability set (AKS 2019 sample)
        (
            f"azure:///subscriptions/{SUB}/resourceGroups/MC_dilipr-health-test_dilipr-health-test_eastus"
            "/providers/Microsoft.Compute/virtualMachines/aks-nodepool1-19574989-0",
            ProviderRef(
                "azure",
                account=SUB,
                instance_id="aks-nodepool1-19574989-0",
                resource_group="MC_dilipr-health-test_dilipr-health-test_eastus",
            ),
        ),
        # Azure VMSS (giantswarm sample)
        (
            "azure:///subscriptions/1be3b2e6-497b-45b9-915f-eb35cae23c6a/resourceGroups/fg0ge/providers"
            "/Microsoft.Compute/virtualMachineScaleSets/fg0ge-worker/virtualMachines/4",
            ProviderRef(
                "azure",
                account="1be3b2e6-497b-45b9-915f-eb35cae23c6a",
                instance_id="4",
                resource_group="fg0ge",
                scale_set="fg0ge-worker",
            ),
        ),
        # Azure VMSS as AKS writes it (domain notes), keywords in lower case: same result, values as written
        (
            "azure:///subscriptions/SUB/resourcegroups/mc_rg_cluster_region/providers/microsoft.compute"
            "/virtualmachinescalesets/aks-nodepool1-12345678-vmss/virtualmachines/0",
            ProviderRef(
                "azure",
                account="SUB",
                instance_id="0",
                resource_group="mc_rg_cluster_region",
                scale_set="aks-nodepool1-12345678-vmss",
            ),
        ),
        # other schemes: provider = scheme, instance = the rest
        ("digitalocean://123456789", ProviderRef("digitalocean", instance_id="123456789")),
        (
            "kind://docker/kind/kind-control-plane",
            ProviderRef("kind", instance_id="docker/kind/kind-control-plane"),
        ),
        (
            "openstack:///7b1c3c4e-90c1-4c53-b9b0-123456789abc",
            ProviderRef("openstack", instance_id="7b1c3c4e-90c1-4c53-b9b0-123456789abc"),
        ),
        ("AWS:///us-east-1a/i-1", ProviderRef("aws", zone="us-east-1a", instance_id="i-1")),
        # absent and garbage: never raises
        ("", ProviderRef("")),
        ("   ", ProviderRef("")),
        ("i-0fea4fd46592d050b", ProviderRef("")),
        ("://nothing", ProviderRef("")),
        ("1abc://x", ProviderRef("")),
        ("aws://", ProviderRef("aws")),
        ("aws:////", ProviderRef("aws")),
        ("gce://project-only", ProviderRef("gcp")),
        ("gce://p//name", ProviderRef("gcp")),
        ("gce://a/b/c/d", ProviderRef("gcp")),
        ("azure://", ProviderRef("azure")),
        ("azure:///subscriptions/SUB/resourceGroups", ProviderRef("azure")),
        ("azure:///subscriptions/SUB/resourceGroups/RG/providers/Microsoft.Network/virtualMachines/x",
         ProviderRef("azure")),
        ("azure:///subscriptions/SUB/resourceGroups/RG/providers/Microsoft.Compute/disks/d1", ProviderRef("azure")),
    ],
)
def test_parse_provider_id(provider_id: str, expected: ProviderRef) -> None:
    assert parse_provider_id(provider_id) == expected
