"""Which GCE machine types carry which GPUs, and what a node of each can hold.

GKE attaches GPUs to fixed machine families (G2 for L4, A2 for A100, A3 for H100/H200); only T4
is attached to general N1 machines. The catalogue answers two questions at admission time:
which machine type to use when the user names none, and whether the requested pod fits.
"""

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
    memory_gib: int

    @property
    def allocatable_cpu(self) -> Decimal:
        """vCPUs left for pods after GKE's kubelet/system reservation (Standard clusters)."""
        cores = Decimal(self.vcpus)
        tiers = ((1, Decimal("0.06")), (1, Decimal("0.01")), (2, Decimal("0.005")))
        return cores - _reserved(cores, tiers, beyond=Decimal("0.0025"))

    @property
    def allocatable_memory(self) -> Decimal:
        """Bytes left for pods after GKE's memory reservation and the 100Mi eviction threshold."""
        total = Decimal(self.memory_gib)
        tiers = ((4, Decimal("0.25")), (4, Decimal("0.20")), (8, Decimal("0.10")), (112, Decimal("0.06")))
        return (total - _reserved(total, tiers, beyond=Decimal("0.02"))) * GIB - _EVICTION_THRESHOLD


def _machines(*specs: tuple[str, int, int]) -> dict[str, MachineType]:
    return {name: MachineType(name, vcpus, memory) for name, vcpus, memory in specs}


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
# N1 standard sizes for T4: the vCPU ceiling per GPU count is GCE's (24 for 1 GPU is a
# conservative reading of the documented 1-48 range, matching common practice).
_N1 = _machines(
    ("n1-standard-4", 4, 15), ("n1-standard-8", 8, 30), ("n1-standard-16", 16, 60),
    ("n1-standard-32", 32, 120), ("n1-standard-64", 64, 240), ("n1-standard-96", 96, 360),
)  # fmt: skip
_T4_MAX_VCPUS = {1: 48, 2: 48, 4: 96}

MACHINES: dict[str, MachineType] = {**_G2, **_A2, **_A2_ULTRA, **_A3, **_N1}

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
