"""GCP machine types as billed: vCPUs, GiB (custom, extended) and the GPUs a name implies.

GCP prices no machine type as such: a VM costs its vCPUs and GiB at its family's unit rates, so the
catalog source needs each type's shape, read from its name (predefined, custom, shared-core, GPU types).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from decimal import Decimal

# -- machine types ----------------------------------------------------------------------------------------

# GiB of memory per vCPU of predefined types, by class, and where a family differs from the class's rule.
_GIB_PER_VCPU = {"standard": Decimal(4), "highmem": Decimal(8), "highcpu": Decimal(1)}
_FAMILY_GIB_PER_VCPU = {
    ("n1", "standard"): Decimal("3.75"),
    ("n1", "highmem"): Decimal("6.5"),
    ("n1", "highcpu"): Decimal("0.9"),
    ("c2d", "highcpu"): Decimal(2),
    ("c3", "highcpu"): Decimal(2),
    ("c3d", "highcpu"): Decimal(2),
    ("n4", "highcpu"): Decimal(2),
}
# Types named by GPU count (a2-highgpu-1g): vCPUs and GiB per GPU, as the name does not carry them.
_PER_GPU = {
    ("a2", "highgpu"): (Decimal(12), Decimal(85)),
    ("a2", "megagpu"): (Decimal(6), Decimal(85)),
    ("a2", "ultragpu"): (Decimal(12), Decimal(170)),
}
# Shared-core sizes: the billed fraction of a vCPU and GiB (e2-micro bills 0.25 vCPU and 1 GiB).
_SHARED_CORE = {
    "micro": (Decimal("0.25"), Decimal(1)),
    "small": (Decimal("0.5"), Decimal(2)),
    "medium": (Decimal(1), Decimal(4)),
}
# Custom types: memory per vCPU above which the "-ext" part is billed at the extended-memory rate.
_MAX_CUSTOM_GIB_PER_VCPU = {"n1": Decimal("6.5")}
_DEFAULT_MAX_CUSTOM_GIB_PER_VCPU = Decimal(8)

_CUSTOM_TYPE = re.compile(
    r"(?:(?P<family>[a-z][a-z0-9]*)-)?custom-(?P<cpus>\d+|micro|small|medium)-(?P<mib>\d+)(?P<ext>-ext)?"
)
_PREDEFINED_TYPE = re.compile(r"(?P<family>[a-z][a-z0-9]*)-(?P<cls>[a-z]+)-(?P<n>\d+)(?P<gpus>g)?")
_SHARED_TYPE = re.compile(r"(?P<family>[a-z][a-z0-9]*)-(?P<size>micro|small|medium)")


@dataclass(frozen=True, slots=True)
class MachineShape:
    """What a machine type is billed for: vCPUs, GiB at the (custom) RAM rate, GiB at the extended-memory
    rate, and the GPUs its name implies."""

    family: str
    vcpus: Decimal
    ram_gib: Decimal
    custom: bool = False
    extended_gib: Decimal = Decimal(0)
    gpus: int = 0


def machine_shape(machine_type: str) -> MachineShape | None:
    """Parse `<family>-<class>-<vcpus>`, `<family>-<class>-<n>g`, `<family>-micro|small|medium` and custom
    types (`n2-custom-4-16384`, `custom-2-7680` = N1, `…-ext`, `e2-custom-medium-4096`); None if unknown."""
    name = machine_type.lower()
    if m := _CUSTOM_TYPE.fullmatch(name):
        family = m["family"] or "n1"  # the family-less custom-N-M is N1's
        cpus = m["cpus"]
        vcpus = Decimal(cpus) if cpus.isdigit() else _SHARED_CORE[cpus][0]
        memory = Decimal(m["mib"]) / 1024
        extended = Decimal(0)
        if m["ext"]:
            limit = vcpus * _MAX_CUSTOM_GIB_PER_VCPU.get(family, _DEFAULT_MAX_CUSTOM_GIB_PER_VCPU)
            extended = max(Decimal(0), memory - limit)
        return MachineShape(family, vcpus, memory - extended, custom=True, extended_gib=extended)
    if m := _SHARED_TYPE.fullmatch(name):
        vcpus, memory = _SHARED_CORE[m["size"]]
        return MachineShape(m["family"], vcpus, memory)
    if m := _PREDEFINED_TYPE.fullmatch(name):
        family, cls, n = m["family"], m["cls"], int(m["n"])
        if m["gpus"]:
            per_gpu = _PER_GPU.get((family, cls))
            if per_gpu is None:
                return None
            return MachineShape(family, per_gpu[0] * n, per_gpu[1] * n, gpus=n)
        ratio = _FAMILY_GIB_PER_VCPU.get((family, cls), _GIB_PER_VCPU.get(cls))
        if ratio is None:
            return None
        return MachineShape(family, Decimal(n), n * ratio)
    return None


def implied_gpus(machine_type: str) -> int:
    """GPUs a machine type's name includes (a2-highgpu-2g → 2); 0 when GPUs are attached separately."""
    m = _PREDEFINED_TYPE.fullmatch(machine_type.lower())
    return int(m["n"]) if m and m["gpus"] else 0


def gpu_id(model: str) -> str:
    """One spelling for GKE's accelerator label and the SKU's model: the set of words without "tesla", so
    `nvidia-tesla-t4` = "Nvidia Tesla T4" and `nvidia-a100-80gb` = "Nvidia Tesla A100 80GB"."""
    words = set(re.split(r"[\s_-]+", model.lower())) - {"", "tesla", "gpu"}
    return "-".join(sorted(words))
