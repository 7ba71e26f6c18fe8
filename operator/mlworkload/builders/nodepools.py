"""Node pool shapes: which pools a worker group needs, their names, taints and labels.

A pool is a shape (accelerator type and count, machine type, capacity) for a tenant: the governing
policy under `nodePools.sharing: Policy` (the default), or nobody under `Cluster`, where pools are
shared by shape across every such policy. The name is a function of tenant and shape alone. A
tenant's pools carry its node label and a taint only its pods tolerate, so one team's pods never
share a node with another's. A SpotWithFallback shape has its own pair of pools: GKE requires
pools used by a ComputeClass to carry the class's node label and taint, which pods of a plain
Spot group would not tolerate.

The policy's node settings (`nodePools.serviceAccount`, disks, image, Secure Boot, image streaming) and its
GCP labels ride along on every pool it plans; the operator's own GCP labels win over the policy's (the policy
cannot name them: `mlworkload.gcp.labels`). Who keeps a pool at which settings is `mlworkload.gcp.pools`'s job.
"""

import hashlib
import re
from dataclasses import dataclass

from mlworkload.api.workload import Capacity
from mlworkload.constants import (
    GCP_LABEL_MANAGED_BY,
    GCP_LABEL_POOL_SHAPE,
    GCP_LABEL_POOL_TENANT,
    GKE_COMPUTE_CLASS_LABEL,
    GPU_TAINT_KEY,
    GPU_TAINT_VALUE,
    LABEL_POOL_TENANT,
    MANAGED_BY,
    POOL_TENANT_TAINT_KEY,
    SPOT_TAINT_KEY,
    SPOT_TAINT_VALUE,
)
from mlworkload.gcp.machines import default_machine, short_accelerator_name
from mlworkload.gcp.plan import AcceleratorPlan, NodePoolPlan, Taint
from mlworkload.policy.resolve import ResolvedGroup, ResolvedWorkload

GKE_POOL_NAME_MAX = 40
GKE_POOL_NAME_PATTERN = re.compile(r"^[a-z]([-a-z0-9]{0,38}[a-z0-9])?$")
_PREFIX = "mlw"


@dataclass(frozen=True, slots=True)
class PoolShape:
    machine_type: str
    capacity: Capacity
    accelerator: str | None = None
    count: int = 0
    tenant: str | None = None

    @property
    def stem(self) -> str:
        """l4x1, l4x1-g2-standard-16 (non-default machine), n2-standard-8 (CPU)."""
        if self.accelerator is None:
            return self.machine_type
        stem = f"{short_accelerator_name(self.accelerator)}x{self.count}"
        try:
            default = default_machine(self.accelerator, self.count)
        except ValueError:
            default = None
        return stem if self.machine_type == default else f"{stem}-{self.machine_type}"

    @property
    def _prefix(self) -> str:
        return f"{self.tenant}-{self.stem}" if self.tenant else self.stem

    @property
    def compute_class(self) -> str | None:
        """The GKE ComputeClass of a SpotWithFallback shape."""
        if self.capacity is not Capacity.SPOT_WITH_FALLBACK:
            return None
        return gke_name(f"{self._prefix}-swf")

    def pools(self) -> list[tuple[str, bool]]:
        """(pool name, is spot) for each pool of the shape; the spot pool first."""
        match self.capacity:
            case Capacity.SPOT:
                return [(gke_name(f"{self._prefix}-spot"), True)]
            case Capacity.ON_DEMAND:
                return [(gke_name(f"{self._prefix}-ondemand"), False)]
            case Capacity.SPOT_WITH_FALLBACK:
                return [
                    (gke_name(f"{self._prefix}-swf-spot"), True),
                    (gke_name(f"{self._prefix}-swf-ondemand"), False),
                ]


def gke_name(body: str) -> str:
    """`mlw-<body>` within GKE's 40 characters; a long body keeps a hash so names stay unique."""
    name = re.sub(r"[^a-z0-9-]", "-", f"{_PREFIX}-{body}".lower()).strip("-")
    if len(name) <= GKE_POOL_NAME_MAX:
        return name
    digest = hashlib.sha256(name.encode()).hexdigest()[:8]
    return f"{name[: GKE_POOL_NAME_MAX - len(digest) - 1].rstrip('-')}-{digest}"


def pool_shape(group: ResolvedGroup) -> PoolShape | None:
    """The pool shape a group needs; None for a CPU group left to the cluster's general nodes."""
    if group.machine_type is None:
        return None
    accelerator = group.spec.accelerator
    if accelerator is None:
        return PoolShape(group.machine_type, group.capacity, tenant=group.tenant)
    return PoolShape(group.machine_type, group.capacity, accelerator.type, accelerator.count, group.tenant)


def _taints(shape: PoolShape, spot: bool) -> list[Taint]:
    taints = []
    if shape.accelerator is not None:
        taints.append(Taint(key=GPU_TAINT_KEY, value=GPU_TAINT_VALUE))
    if spot:
        taints.append(Taint(key=SPOT_TAINT_KEY, value=SPOT_TAINT_VALUE))
    if shape.compute_class is not None:
        taints.append(Taint(key=GKE_COMPUTE_CLASS_LABEL, value=shape.compute_class))
    if shape.tenant is not None:
        taints.append(Taint(key=POOL_TENANT_TAINT_KEY, value=shape.tenant))
    return taints


def _node_labels(shape: PoolShape) -> dict[str, str]:
    labels = {GKE_COMPUTE_CLASS_LABEL: shape.compute_class} if shape.compute_class else {}
    if shape.tenant is not None:
        labels[LABEL_POOL_TENANT] = shape.tenant
    return labels


def _gcp_labels(shape: PoolShape, policy_labels: dict[str, str]) -> dict[str, str]:
    labels = {**policy_labels, GCP_LABEL_MANAGED_BY: MANAGED_BY, GCP_LABEL_POOL_SHAPE: gke_name(shape.stem)}
    if shape.tenant is not None:
        labels[GCP_LABEL_POOL_TENANT] = shape.tenant
    return labels


def build_node_pools(resolved: ResolvedWorkload, project: str, location: str, cluster: str) -> list[NodePoolPlan]:
    """Every node pool the workload's groups need, one per distinct (shape, capacity), by name."""
    rules = resolved.policy
    settings = rules.node_pools
    locations = list(resolved.gcp.node_locations) if resolved.gcp else []
    pools: dict[str, NodePoolPlan] = {}
    for group in resolved.groups:
        shape = pool_shape(group)
        if shape is None:
            continue
        for name, spot in shape.pools():
            pools[name] = NodePoolPlan(
                name=name,
                project=project,
                location=location,
                cluster=cluster,
                machine_type=shape.machine_type,
                accelerator=None
                if shape.accelerator is None
                else AcceleratorPlan(type=shape.accelerator, count=shape.count),
                spot=spot,
                min_nodes=0,
                max_nodes=settings.max_nodes_per_pool,
                locations=locations,
                location_policy=settings.location_policy.value,
                labels=_gcp_labels(shape, settings.resource_labels),
                node_labels=_node_labels(shape),
                taints=_taints(shape, spot),
                service_account=settings.service_account,
                secure_boot=settings.secure_boot,
                disk_type=None if settings.disk_type is None else settings.disk_type.value,
                disk_size_gb=settings.disk_size_gb,
                image_type=None if settings.image_type is None else settings.image_type.value,
                image_streaming=settings.image_streaming,
            )
    return [pools[name] for name in sorted(pools)]
