"""Which GCE machine types carry which GPUs, and what a node of each can hold.

GKE attaches GPUs to fixed machine families (G2 for L4, A2 for A100, A3 for H100/H200); only T4
is attached to general N1 machines. The catalogue answers two questions at admission time:
which machine type to use when the user names none, and whether the requested pod fits.
"""

import functools
from dataclasses import dataclass
from decimal import Decimal

from mlworkload.api.quantity import GIB

_EVICTION_THRESHOLD = Decimal(100 * 2**20)


def _reserved(total: Decimal, tiers: tuple[tuple[int, Decimal], ...], beyond: Decimal) -> Decimal:
    """GKE's tiered reservation: a share of each successive slice of the node, then a flat share."""
    reserved, remaining = Decimal(0), total
    for size, share in tiers:
        portion = min(remaining, Decimal(size))
        reserved += portion * share
        remaining -= portion
    return reserved + remaining * beyond


@dataclass(frozen=True, slots=True)
class MachineType:
    name: str
    vcpus: int
    memory_gib: Decimal

    @property
    def allocatable_cpu(self) -> Decimal:
        """vCPUs left for pods after GKE's kubelet/system reservation (Standard clusters)."""
        return _allocatable_cpu(self.vcpus)

    @property
    def allocatable_memory(self) -> Decimal:
        """Bytes left for pods after GKE's memory reservation and the 100Mi eviction threshold."""
        return _allocatable_memory(self.memory_gib)


# Cached: admission compares a pod against the whole catalogue, and Decimal arithmetic is slow enough to show at
# thousands of workloads (5 % of the operator's CPU before). The catalogue is fixed, so the caches stay small.
@functools.cache
def _allocatable_cpu(vcpus: int) -> Decimal:
    cores = Decimal(vcpus)
    tiers = ((1, Decimal("0.06")), (1, Decimal("0.01")), (2, Decimal("0.005")))
    return cores - _reserved(cores, tiers, beyond=Decimal("0.0025"))


@functools.cache
def _allocatable_memory(memory_gib: Decimal) -> Decimal:
    total = Decimal(memory_gib)
    tiers = ((4, Decimal("0.25")), (4, Decimal("0.20")), (8, Decimal("0.10")), (112, Decimal("0.06")))
    return (total - _reserved(total, tiers, beyond=Decimal("0.02"))) * GIB - _EVICTION_THRESHOLD


def _machines(*specs: tuple[str, int, int]) -> dict[str, MachineType]:
    return {name: MachineType(name, vcpus, Decimal(memory)) for name, vcpus, memory in specs}


# General-purpose and compute/memory-optimized families GKE node pools use, as (family, GiB per vCPU, sizes)
# from GCE's machine family pages; custom and shared-core types are left out (admission names the families).
_CPU_FAMILIES: tuple[tuple[str, str, tuple[int, ...]], ...] = (
    ("e2-standard", "4", (2, 4, 8, 16, 32)), ("e2-highmem", "8", (2, 4, 8, 16)),
    ("e2-highcpu", "1", (2, 4, 8, 16, 32)),
    ("n2-standard", "4", (2, 4, 8, 16, 32, 48, 64, 80, 96, 128)),
    ("n2-highmem", "8", (2, 4, 8, 16, 32, 48, 64, 80, 96, 128)),
    ("n2-highcpu", "1", (2, 4, 8, 16, 32, 48, 64, 80, 96)),
    ("n2d-standard", "4", (2, 4, 8, 16, 32, 48, 64, 80, 96, 128, 224)),
    ("n2d-highmem", "8", (2, 4, 8, 16, 32, 48, 64, 80, 96)),
    ("n2d-highcpu", "1", (2, 4, 8, 16, 32, 48, 64, 80, 96, 128, 224)),
    ("n4-standard", "4", (2, 4, 8, 16, 32, 48, 64, 80)), ("n4-highmem", "8", (2, 4, 8, 16, 32, 48, 64, 80)),
    ("n4-highcpu", "2", (2, 4, 8, 16, 32, 48, 64, 80)),
    ("c3-standard", "4", (4, 8, 22, 44, 88, 176)), ("c3-highmem", "8", (4, 8, 22, 44, 88, 176)),
    ("c3-highcpu", "2", (4, 8, 22, 44, 88, 176)),
    ("c2-standard", "4", (4, 8, 16, 30, 60)), ("t2d-standard", "4", (1, 2, 4, 8, 16, 32, 48, 60)),
    ("c2d-standard", "4", (2, 4, 8, 16, 32, 56, 112)), ("c2d-highmem", "8", (2, 4, 8, 16, 32, 56, 112)),
    ("c2d-highcpu", "2", (2, 4, 8, 16, 32, 56, 112)),
    ("c3d-standard", "4", (4, 8, 16, 30, 60, 90, 180, 360)), ("c3d-highmem", "8", (4, 8, 16, 30, 60, 90, 180, 360)),
    ("c3d-highcpu", "2", (4, 8, 16, 30, 60, 90, 180, 360)),
    ("c4-standard", "3.75", (2, 4, 8, 16, 32, 48, 96, 192)), ("c4-highmem", "7.75", (2, 4, 8, 16, 32, 48, 96, 192)),
    ("c4-highcpu", "2", (2, 4, 8, 16, 32, 48, 96, 192)),
    ("n4d-standard", "4", (2, 4, 8, 16, 32, 48, 64, 80, 96)), ("n4d-highmem", "8", (2, 4, 8, 16, 32, 48, 64, 80, 96)),
    ("n4d-highcpu", "2", (2, 4, 8, 16, 32, 48, 64, 80, 96)),
    ("m3-ultramem", "30.5", (32, 64, 128)), ("m3-megamem", "15.25", (64, 128)),
    ("n1-standard", "3.75", (1, 2, 4, 8, 16, 32, 64, 96)), ("n1-highmem", "6.5", (2, 4, 8, 16, 32, 64, 96)),
    ("n1-highcpu", "0.9", (2, 4, 8, 16, 32, 64, 96)),
)  # fmt: skip
CPU_MACHINES: dict[str, MachineType] = {
    f"{family}-{size}": MachineType(f"{family}-{size}", size, Decimal(per_vcpu) * size)
    for family, per_vcpu, sizes in _CPU_FAMILIES
    for size in sizes
}
CPU_FAMILIES: tuple[str, ...] = tuple(family for family, _, _ in _CPU_FAMILIES)


_G2 = _machines(
    ("g2-standard-4", 4, 16), ("g2-standard-8", 8, 32), ("g2-standard-12", 12, 48),
    ("g2-standard-16", 16, 64), ("g2-standard-24", 24, 96), ("g2-standard-32", 32, 128),
    ("g2-standard-48", 48, 192), ("g2-standard-96", 96, 384),
)  # fmt: skip
_A2 = _machines(
    ("a2-highgpu-1g", 12, 85), ("a2-highgpu-2g", 24, 170), ("a2-highgpu-4g", 48, 340),
    ("a2-highgpu-8g", 96, 680), ("a2-megagpu-16g", 96, 1360),
)  # fmt: skip
_A2_ULTRA = _machines(
    ("a2-ultragpu-1g", 12, 170), ("a2-ultragpu-2g", 24, 340), ("a2-ultragpu-4g", 48, 680),
    ("a2-ultragpu-8g", 96, 1360),
)  # fmt: skip
_A3 = _machines(
    ("a3-highgpu-1g", 26, 234), ("a3-highgpu-2g", 52, 468), ("a3-highgpu-4g", 104, 936),
    ("a3-highgpu-8g", 208, 1872), ("a3-megagpu-8g", 208, 1872), ("a3-ultragpu-8g", 224, 2952),
)  # fmt: skip
# B200 and GB200 machines: known as machine types (a group names them with its accelerator), not yet
# catalogued as defaults for their accelerators.
_A4 = _machines(("a4-highgpu-8g", 224, 3968), ("a4x-highgpu-4g", 140, 884))
# T4 attaches to N1 machines (in CPU_MACHINES); the vCPU ceiling per GPU count is GCE's.
_T4_MAX_VCPUS = {1: 48, 2: 48, 4: 96}

MACHINES: dict[str, MachineType] = {**_G2, **_A2, **_A2_ULTRA, **_A3, **_A4, **CPU_MACHINES}


def general_machine_for(cpu: Decimal, memory: Decimal) -> MachineType | None:
    """The smallest general-purpose machine a pod of this size fits on, if any (the cluster's own nodes are
    of some such type; a pod no machine can hold would stay Pending forever)."""
    fitting = [m for m in CPU_MACHINES.values() if m.allocatable_cpu >= cpu and m.allocatable_memory >= memory]
    return min(fitting, key=lambda m: (m.vcpus, m.memory_gib), default=None)


# (accelerator type, count) -> machine types that carry exactly that, default first.
_ATTACHED: dict[tuple[str, int], tuple[str, ...]] = {
    ("nvidia-l4", 1): ("g2-standard-8", "g2-standard-4", "g2-standard-12", "g2-standard-16", "g2-standard-32"),
    ("nvidia-l4", 2): ("g2-standard-24",),
    ("nvidia-l4", 4): ("g2-standard-48",),
    ("nvidia-l4", 8): ("g2-standard-96",),
    ("nvidia-tesla-a100", 1): ("a2-highgpu-1g",),
    ("nvidia-tesla-a100", 2): ("a2-highgpu-2g",),
    ("nvidia-tesla-a100", 4): ("a2-highgpu-4g",),
    ("nvidia-tesla-a100", 8): ("a2-highgpu-8g",),
    ("nvidia-tesla-a100", 16): ("a2-megagpu-16g",),
    ("nvidia-a100-80gb", 1): ("a2-ultragpu-1g",),
    ("nvidia-a100-80gb", 2): ("a2-ultragpu-2g",),
    ("nvidia-a100-80gb", 4): ("a2-ultragpu-4g",),
    ("nvidia-a100-80gb", 8): ("a2-ultragpu-8g",),
    ("nvidia-h100-80gb", 1): ("a3-highgpu-1g",),
    ("nvidia-h100-80gb", 2): ("a3-highgpu-2g",),
    ("nvidia-h100-80gb", 4): ("a3-highgpu-4g",),
    ("nvidia-h100-80gb", 8): ("a3-highgpu-8g",),
    ("nvidia-h100-mega-80gb", 8): ("a3-megagpu-8g",),
    ("nvidia-h200-141gb", 8): ("a3-ultragpu-8g",),
    ("nvidia-tesla-t4", 1): ("n1-standard-8", "n1-standard-4", "n1-standard-16", "n1-standard-32"),
    ("nvidia-tesla-t4", 2): ("n1-standard-16", "n1-standard-4", "n1-standard-8", "n1-standard-32"),
    ("nvidia-tesla-t4", 4): ("n1-standard-32", "n1-standard-8", "n1-standard-16", "n1-standard-64",
                             "n1-standard-96"),
}  # fmt: skip

KNOWN_ACCELERATORS: tuple[str, ...] = tuple(sorted({accelerator for accelerator, _ in _ATTACHED}))
# Every accelerator type GKE names (About GPUs in GKE), catalogued above or not: a policy or a group
# with `machineType` may use the others; a name outside this list is a typo GKE would refuse.
GKE_ACCELERATORS: tuple[str, ...] = tuple(sorted({
    *KNOWN_ACCELERATORS, "nvidia-gb200", "nvidia-b200", "nvidia-rtx-pro-6000", "nvidia-tesla-v100",
    "nvidia-tesla-p100", "nvidia-tesla-p4", "nvidia-tesla-k80",
}))  # fmt: skip


class UnknownMachine(ValueError):
    """No machine type is known to carry the requested accelerators."""


def machines_for(accelerator: str, count: int) -> tuple[str, ...]:
    """Machine types that carry `count` GPUs of `accelerator`, the default first."""
    machines = _ATTACHED.get((accelerator, count))
    if machines is None:
        counts = sorted(c for (a, c) in _ATTACHED if a == accelerator)
        if counts:
            raise UnknownMachine(
                f"{accelerator} comes in {', '.join(map(str, counts))} GPUs per node on GKE, not {count}"
            )
        raise UnknownMachine(
            f"no machine type is known for accelerator {accelerator!r}; known: {', '.join(KNOWN_ACCELERATORS)}"
            " (or set machineType explicitly)"
        )
    return machines


def default_machine(accelerator: str, count: int) -> str:
    return machines_for(accelerator, count)[0]


def accelerator_fits_machine(accelerator: str, count: int, machine: str) -> bool:
    """Whether GKE can attach `count` x `accelerator` to `machine`."""
    if accelerator == "nvidia-tesla-t4":
        family, _, size = machine.rpartition("-")
        return (
            family in {"n1-standard", "n1-highmem", "n1-highcpu"}
            and size.isdigit()
            and (int(size) <= _T4_MAX_VCPUS.get(count, 0))
        )
    return machine in _ATTACHED.get((accelerator, count), ())


def short_accelerator_name(accelerator: str) -> str:
    """nvidia-tesla-a100 -> a100, nvidia-l4 -> l4, nvidia-h100-80gb -> h100-80gb."""
    return accelerator.removeprefix("nvidia-").removeprefix("tesla-")


# --- boot disks -----------------------------------------------------------------------------------------

DISK_TYPES: tuple[str, ...] = ("pd-standard", "pd-balanced", "pd-ssd", "hyperdisk-balanced")
_PD = frozenset({"pd-standard", "pd-balanced", "pd-ssd"})
_PD_FAST = frozenset({"pd-balanced", "pd-ssd"})
_PD_FAST_AND_HYPERDISK = frozenset({"pd-balanced", "pd-ssd", "hyperdisk-balanced"})
_HYPERDISK = frozenset({"hyperdisk-balanced"})
# Boot disk types of each machine series, from GCE's machine series pages (the "Supported disk types" of
# each): Persistent Disk on the older series, Hyperdisk only on the Titanium ones (N4, C4, A3 Ultra, A4), no
# Standard PD on G2, C3 and A3. A series not listed here is not checked (GKE answers for it).
# Longest prefix first: a3-ultragpu before a3.
_DISKS_BY_SERIES: tuple[tuple[str, frozenset[str]], ...] = (
    ("a3-ultragpu-", _HYPERDISK), ("a4x-", _HYPERDISK), ("a4-", _HYPERDISK),
    ("n4d-", _HYPERDISK), ("n4-", _HYPERDISK), ("c4d-", _HYPERDISK), ("c4-", _HYPERDISK),
    ("a3-", _PD_FAST_AND_HYPERDISK), ("c3d-", _PD_FAST_AND_HYPERDISK), ("c3-", _PD_FAST_AND_HYPERDISK),
    ("g2-", _PD_FAST),
    ("a2-", _PD), ("n1-", _PD), ("n2d-", _PD), ("n2-", _PD), ("e2-", _PD), ("c2d-", _PD), ("c2-", _PD),
    ("t2d-", _PD),
)  # fmt: skip
# Accelerators with no default machine above, by the machines GKE attaches them to.
_OTHER_ACCELERATOR_MACHINES: dict[str, tuple[str, ...]] = {
    "nvidia-b200": ("a4-highgpu-8g",),
    "nvidia-gb200": ("a4x-highgpu-4g",),
    "nvidia-tesla-v100": ("n1-standard-8",),
    "nvidia-tesla-p100": ("n1-standard-8",),
    "nvidia-tesla-p4": ("n1-standard-8",),
    "nvidia-tesla-k80": ("n1-standard-8",),
}


def _disk_series(machine_type: str) -> tuple[str, frozenset[str]] | None:
    for prefix, disks in _DISKS_BY_SERIES:
        if machine_type.startswith(prefix):
            return prefix.rstrip("-"), disks
    return None


def boot_disk_types(machine_type: str) -> frozenset[str] | None:
    """The boot disk types GCE offers on a machine type's series; None for a series this table does not know."""
    series = _disk_series(machine_type)
    return None if series is None else series[1]


def accelerator_machines(accelerator: str) -> tuple[str, ...]:
    """Every machine type GKE attaches `accelerator` to (for any count) that this catalogue knows."""
    attached = {machine for (name, _), machines in _ATTACHED.items() if name == accelerator for machine in machines}
    return tuple(sorted(attached)) or _OTHER_ACCELERATOR_MACHINES.get(accelerator, ())


def disk_type_problem(disk_type: str, machine_type: str) -> str | None:
    """Why `machine_type` cannot boot from `disk_type`, or None when it can (or the series is unknown)."""
    series = _disk_series(machine_type)
    if series is None or disk_type in series[1]:
        return None
    name, disks = series
    *others, last = sorted(disks)
    choices = f"{', '.join(others)} or {last}" if others else last
    return f"{name} machines boot from {choices} only, not {disk_type}"
