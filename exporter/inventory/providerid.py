"""Take a node's `spec.providerID` apart into the identifiers billing data is keyed by.

Pure and total: a providerID is written by whatever cloud controller a cluster runs, so any string may show
up; garbage yields a `ProviderRef` with empty fields rather than an exception.
"""

from __future__ import annotations

import re

from exporter.inventory.node import ProviderRef

_SCHEME = re.compile(r"[a-z][a-z0-9+.-]*")
_PROVIDER_BY_SCHEME = {"aws": "aws", "gce": "gcp", "azure": "azure"}


def parse_provider_id(provider_id: str) -> ProviderRef:
    """Split `aws:///ZONE/ID`, `gce://PROJECT/ZONE/NAME`, Azure resource IDs, or `SCHEME://REST`."""
    scheme, sep, rest = provider_id.strip().partition("://")
    scheme = scheme.lower()
    if not sep or not _SCHEME.fullmatch(scheme):
        return ProviderRef("")
    if scheme == "aws":
        return _aws(rest)
    if scheme == "gce":
        return _gce(rest)
    if scheme == "azure":
        return _azure(rest)
    return ProviderRef(scheme, instance_id=rest.lstrip("/"))


def _aws(rest: str) -> ProviderRef:
    # aws:///us-east-2a/i-0fea4fd46592d050b; loose forms aws://us-east-2a/i-… and aws:///i-… exist too,
    # and EKS Fargate writes aws:///us-east-2b/<task hash>/fargate-ip-….compute.internal.
    parts = [p for p in rest.split("/") if p]
    if not parts:
        return ProviderRef("aws")
    return ProviderRef("aws", zone=parts[0] if len(parts) > 1 else "", instance_id=parts[-1])


def _gce(rest: str) -> ProviderRef:
    parts = rest.split("/")
    if len(parts) != 3 or not all(parts):
        return ProviderRef("gcp")
    project, zone, name = parts
    return ProviderRef("gcp", account=project, zone=zone, instance_id=name)


def _azure(rest: str) -> ProviderRef:
    # /subscriptions/S/resourceGroups/RG/providers/Microsoft.Compute/
    #   virtualMachineScaleSets/VMSS/virtualMachines/INDEX   (VMSS instance)
    #   virtualMachines/NAME                                 (availability set, VMSS Flex)
    # Path keywords are case-insensitive in ARM resource IDs; values are kept as written.
    parts = rest.strip("/").split("/")
    if len(parts) % 2 or not all(parts):
        return ProviderRef("azure")
    pairs = dict(zip((k.lower() for k in parts[0::2]), parts[1::2], strict=True))
    subscription = pairs.get("subscriptions", "")
    group = pairs.get("resourcegroups", "")
    vm = pairs.get("virtualmachines", "")
    if not (subscription and group and vm) or pairs.get("providers", "").lower() != "microsoft.compute":
        return ProviderRef("azure")
    return ProviderRef(
        "azure",
        account=subscription,
        instance_id=vm,
        resource_group=group,
        scale_set=pairs.get("virtualmachinescalesets", ""),
    )
