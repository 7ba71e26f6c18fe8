"""Where each Ray pod may run on GKE: node selectors, tolerations and affinity per group.

The facts behind these choices are in api.md ("How the spec maps onto GKE"): a ComputeClass is
the only way to make the autoscaler fall back from spot to on-demand, and GKE refuses pods that
select a ComputeClass together with gke-spot or gke-accelerator selectors.
"""

from dataclasses import dataclass, field
from typing import Any

from mlworkload.api.workload import Capacity
from mlworkload.builders.nodepools import pool_shape
from mlworkload.constants import (
    GKE_ACCELERATOR_LABEL,
    GKE_COMPUTE_CLASS_LABEL,
    GKE_SPOT_LABEL,
    GPU_TAINT_KEY,
    LABEL_POOL_TENANT,
    POOL_TENANT_TAINT_KEY,
    SPOT_TAINT_KEY,
    SPOT_TAINT_VALUE,
)
from mlworkload.policy.resolve import ResolvedGroup

INSTANCE_TYPE_LABEL = "node.kubernetes.io/instance-type"

_GPU_TOLERATION = {"key": GPU_TAINT_KEY, "operator": "Exists", "effect": "NoSchedule"}
_SPOT_TOLERATION = {
    "key": SPOT_TAINT_KEY,
    "operator": "Equal",
    "value": SPOT_TAINT_VALUE,
    "effect": "NoSchedule",
}
_NOT_SPOT = {"key": GKE_SPOT_LABEL, "operator": "NotIn", "values": [SPOT_TAINT_VALUE]}
_IS_SPOT = {"key": GKE_SPOT_LABEL, "operator": "In", "values": [SPOT_TAINT_VALUE]}


@dataclass(frozen=True, slots=True)
class Placement:
    node_selector: dict[str, str] = field(default_factory=dict)
    tolerations: list[dict[str, Any]] = field(default_factory=list)
    affinity: dict[str, Any] = field(default_factory=dict)

    def apply_to(self, pod_spec: dict[str, Any]) -> None:
        if self.node_selector:
            pod_spec["nodeSelector"] = dict(self.node_selector)
        if self.tolerations:
            pod_spec["tolerations"] = [dict(toleration) for toleration in self.tolerations]
        if self.affinity:
            pod_spec["affinity"] = self.affinity


def _required(*expressions: dict[str, Any]) -> dict[str, Any]:
    return {
        "nodeAffinity": {
            "requiredDuringSchedulingIgnoredDuringExecution": {
                "nodeSelectorTerms": [{"matchExpressions": [dict(expression) for expression in expressions]}]
            }
        }
    }


def _preferred(expression: dict[str, Any]) -> dict[str, Any]:
    return {
        "nodeAffinity": {
            "preferredDuringSchedulingIgnoredDuringExecution": [
                {"weight": 100, "preference": {"matchExpressions": [dict(expression)]}}
            ]
        }
    }


HEAD_PLACEMENT = Placement(affinity=_required(_NOT_SPOT))
"""The head holds the GCS: losing it to a preemption loses the cluster, so it never runs on spot."""


def _equal(key: str, value: str) -> dict[str, str]:
    return {"key": key, "operator": "Equal", "value": value, "effect": "NoSchedule"}


def worker_placement(group: ResolvedGroup) -> Placement:
    """Scheduling constraints for one worker group's pods."""
    shape = pool_shape(group)
    accelerator = group.spec.accelerator
    tolerations = [_GPU_TOLERATION] if accelerator is not None else []
    # The policy's own pools: select their label and tolerate their taint (nobody else's pods do).
    selector = {LABEL_POOL_TENANT: shape.tenant} if shape is not None and shape.tenant else {}
    if shape is not None and shape.tenant:
        tolerations.append(_equal(POOL_TENANT_TAINT_KEY, shape.tenant))
    if shape is not None and shape.compute_class is not None:
        tolerations += [_SPOT_TOLERATION, _equal(GKE_COMPUTE_CLASS_LABEL, shape.compute_class)]
        return Placement({GKE_COMPUTE_CLASS_LABEL: shape.compute_class, **selector}, tolerations)
    if accelerator is not None:
        selector[GKE_ACCELERATOR_LABEL] = accelerator.type
    if group.spec.machine_type is not None:
        # The user chose the machine: hold the pods to it rather than any node that fits.
        selector[INSTANCE_TYPE_LABEL] = group.spec.machine_type
    match group.capacity:
        case Capacity.SPOT:
            selector[GKE_SPOT_LABEL] = SPOT_TAINT_VALUE
            return Placement(selector, [*tolerations, _SPOT_TOLERATION])
        case Capacity.ON_DEMAND:
            return Placement(selector, tolerations, _required(_NOT_SPOT))
        case Capacity.SPOT_WITH_FALLBACK:
            # No pool of our own (CPU group on general nodes): a preference is all there is to steer.
            return Placement(selector, [*tolerations, _SPOT_TOLERATION], _preferred(_IS_SPOT))
